//! `bootstrap render` end to end through the binary: secrets generated once
//! into the state dir (0600), files written 0600, `--check` clean then
//! detecting a change with a redacted diff, `--secrets` import.

mod render_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use render_support::*;

fn bootstrap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bootstrap"))
        .args(args)
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn out_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn render_writes_checks_and_redacts() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let out = tmp.path().join("out");
    let inv = repo("inventory/rack-k3s.toml");
    let (inv, state_s, out_s) = (inv.to_str().unwrap(), state.to_str().unwrap(), out.to_str().unwrap());

    // --check before any render: nothing to compare against, says so.
    let o = bootstrap(&["-i", inv, "--state-dir", state_s, "render", "--out", out_s, "--check"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(out_text(&o).contains("without --check first"), "{}", out_text(&o));

    let o = bootstrap(&["-i", inv, "--state-dir", state_s, "render", "--out", out_s]);
    assert!(o.status.success(), "{}", out_text(&o));
    let secrets = state.join("rack/secrets.yaml");
    assert_eq!(mode(&secrets), 0o600);
    let token = std::fs::read_to_string(&secrets).unwrap();
    let token = token
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .unwrap()
        .to_owned();
    assert!(!out_text(&o).contains(&token), "the token is never printed");
    let cfg = out.join("rack/rack-2/config.yaml");
    assert_eq!(mode(&cfg), 0o600);
    assert_eq!(mode(&out.join("rack/rack-2/install.sh")), 0o755);
    let first = std::fs::read(&cfg).unwrap();

    // A second render reuses the secrets: byte-identical output.
    let o = bootstrap(&["-i", inv, "--state-dir", state_s, "render", "--out", out_s]);
    assert!(o.status.success());
    assert_eq!(std::fs::read(&cfg).unwrap(), first);

    let o = bootstrap(&["-i", inv, "--state-dir", state_s, "render", "--out", out_s, "--check"]);
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));

    // Change a file: --check exits 1 with a diff naming it, token redacted.
    let edited = String::from_utf8(first)
        .unwrap()
        .replace("node-ip: 198.18.0.12", "node-ip: 198.18.0.99");
    std::fs::write(&cfg, edited.replace(&token, "tampered-token")).unwrap();
    std::fs::write(out.join("rack/stray.txt"), "x").unwrap();
    let o = bootstrap(&["-i", inv, "--state-dir", state_s, "render", "--out", out_s, "--check"]);
    assert_eq!(o.status.code(), Some(1));
    let diff = String::from_utf8_lossy(&o.stdout);
    assert!(
        diff.contains("a/rack/rack-2/config.yaml") && diff.contains("b/rack/rack-2/config.yaml"),
        "{diff}"
    );
    assert!(
        diff.contains("-node-ip: 198.18.0.99") && diff.contains("+node-ip: 198.18.0.12"),
        "{diff}"
    );
    assert!(diff.contains("token: <redacted sha256:"), "{diff}");
    assert!(
        !diff.contains(&token) && !diff.contains("tampered-token"),
        "secrets never in the diff: {diff}"
    );
    assert!(diff.contains("stray.txt"), "{diff}");
}

#[test]
fn secrets_import_renders_with_the_given_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let out = tmp.path().join("out");
    let inv = repo("inventory/simulated.toml");
    let fixture = repo("tests/fixtures/talos/secrets.yaml");
    let args = |extra: &[&str]| {
        let mut a = vec![
            "-i",
            inv.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "render",
        ];
        a.extend(["--out", out.to_str().unwrap()]);
        a.extend(
            extra
                .iter()
                .copied()
                .map(|s| Box::leak(s.to_owned().into_boxed_str()) as &str),
        );
        a
    };
    let o = bootstrap(&args(&["--secrets", fixture.to_str().unwrap()]));
    assert!(o.status.success(), "{}", out_text(&o));
    let imported = std::fs::read_to_string(state.join("sim/secrets.yaml")).unwrap();
    let bundle = bootstrap::render::TalosSecrets::parse(&imported).unwrap();
    let want = bootstrap::render::TalosSecrets::parse(&std::fs::read_to_string(&fixture).unwrap()).unwrap();
    assert_eq!(bundle.to_yaml(), want.to_yaml());
    assert_eq!(mode(&state.join("sim/talos-admin.yaml")), 0o600);
    let cp = std::fs::read_to_string(out.join("sim/cp-1.yaml")).unwrap();
    assert!(
        cp.contains(&want.certs.os.crt),
        "machine config uses the imported OS CA"
    );
    assert_eq!(mode(&out.join("sim/talosconfig")), 0o600);
    assert!(!out_text(&o).contains(&want.certs.os.key));

    // Importing a different bundle over an existing one is refused.
    let other = tmp.path().join("other.yaml");
    std::fs::write(&other, imported.replace(&want.cluster.id, "b3RoZXItY2x1c3Rlci1pZA==")).unwrap();
    let o = bootstrap(&args(&["--secrets", other.to_str().unwrap()]));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        out_text(&o).contains("already holds a different secrets bundle"),
        "{}",
        out_text(&o)
    );
}

#[test]
fn render_exports_the_manifests_of_phases_0_to_3_with_secret_values_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("deploy.key");
    std::fs::write(
        &key,
        "-----BEGIN OPENSSH PRIVATE KEY-----\nDEPLOY-KEY-VALUE\n-----END OPENSSH PRIVATE KEY-----\n",
    )
    .unwrap();
    let text = std::fs::read_to_string(repo("inventory/simulated.toml"))
        .unwrap()
        .replace("https://git.sim.invalid/", "ssh://git@git.sim.invalid/")
        .replace(
            "path = \"./clusters/sim\"\n",
            &format!("path = \"./clusters/sim\"\ndeploy_key = \"file:{}\"\n", key.display()),
        );
    let inv = tmp.path().join("sim.toml");
    std::fs::write(&inv, text).unwrap();
    let (state, out) = (tmp.path().join("state"), tmp.path().join("out"));
    let o = bootstrap(&[
        "-i",
        inv.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "render",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", out_text(&o));
    let dir = out.join("sim/manifests");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let docs = |f: &str| bootstrap::k8s::parse_manifests(&read(f)).unwrap();
    let kinds = |f: &str| -> Vec<String> { docs(f).iter().map(|o| o["kind"].as_str().unwrap().to_owned()).collect() };
    assert!(kinds("0-prerequisites.yaml").contains(&"Secret".to_owned()));
    assert_eq!(kinds("1-crds.yaml").len(), 11, "Flux's CRDs");
    let core = kinds("2-core.yaml");
    assert_eq!(core.iter().filter(|k| *k == "Deployment").count(), 4, "{core:?}");
    assert!(core.contains(&"HelmRelease".to_owned()) && core.contains(&"NetworkPolicy".to_owned()));
    assert_eq!(kinds("3-gitops.yaml"), ["GitRepository", "Kustomization"]);
    let deploy = docs("0-prerequisites.yaml")
        .into_iter()
        .find(|o| o["metadata"]["name"] == "flux-system" && o["kind"] == "Secret")
        .unwrap();
    for k in ["identity", "identity.pub", "known_hosts"] {
        assert_eq!(deploy["data"][k], bootstrap::phases::objects::PLACEHOLDER, "{k}");
    }
    for f in ["0-prerequisites.yaml", "1-crds.yaml", "2-core.yaml", "3-gitops.yaml"] {
        assert!(!read(f).contains("DEPLOY-KEY-VALUE"), "{f} holds a secret value");
        assert_eq!(mode(&dir.join(f)), 0o644, "no secret: readable");
    }
}
