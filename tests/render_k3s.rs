//! k3s rendering: node configs, and install scripts that pass `bash -n` and
//! `shellcheck`, verify the binary and are idempotent when run for real
//! (under a scratch root, with a recording `systemctl`).

mod render_support;

use std::path::Path;
use std::process::Command;

use bootstrap::render::{self, SecretsBundle};
use render_support::*;

fn render(rel: &str) -> (bootstrap::inventory::Inventory, render::Rendered) {
    let inv = load(rel);
    let mut all = render::Rendered::default();
    for c in &inv.clusters {
        all.files
            .extend(render::render_cluster(c, &fixture_secrets(c)).unwrap().files);
    }
    (inv, all)
}

fn text<'a>(r: &'a render::Rendered, path: &str) -> &'a str {
    std::str::from_utf8(&r.files.get(Path::new(path)).unwrap_or_else(|| panic!("{path}")).bytes).unwrap()
}

fn yaml(r: &render::Rendered, path: &str) -> yaml_serde::Value {
    yaml_serde::from_str(text(r, path)).unwrap()
}

#[test]
fn node_configs_follow_the_inventory() {
    let (inv, r) = render("inventory/homelab-k3s.toml");
    let SecretsBundle::K3s(s) = fixture_secrets(&inv.clusters[0]) else {
        unreachable!()
    };
    let first = yaml(&r, "homelab/k8s-master-01/config.yaml");
    assert_eq!(first["token"].as_str(), Some(s.k3s.token.as_str()));
    assert_eq!(first["cluster-init"], yaml_serde::Value::Bool(true));
    assert!(first.get("server").is_none(), "the first server joins nobody");
    assert_eq!(first["node-ip"], "192.168.1.10");
    assert_eq!(first["cluster-cidr"], "10.244.0.0/16");
    assert_eq!(first["service-cidr"], "10.96.0.0/16");
    assert_eq!(
        first["disable"],
        yaml_serde::to_value(["traefik", "servicelb"]).unwrap()
    );
    assert_eq!(first["tls-san"], yaml_serde::to_value(["192.168.1.10"]).unwrap());
    assert!(first.get("flannel-backend").is_none(), "homelab keeps flannel");
    let w2 = yaml(&r, "homelab/k8s-worker-02/config.yaml");
    assert_eq!(w2["server"], "https://192.168.1.10:6443");
    assert_eq!(w2["node-label"], yaml_serde::to_value(["homelab/workload=ci"]).unwrap());
    assert_eq!(
        w2["node-taint"],
        yaml_serde::to_value(["dedicated=ci:NoSchedule"]).unwrap()
    );
    assert!(
        w2.get("cluster-cidr").is_none() && w2.get("cluster-init").is_none(),
        "server flags stay off agents"
    );

    let (_, rack) = render("inventory/rack-k3s.toml");
    let cp = yaml(&rack, "rack/rack-1/config.yaml");
    assert_eq!(cp["flannel-backend"], "none", "Cilium replaces flannel");
    assert_eq!(cp["disable-network-policy"], yaml_serde::Value::Bool(true));
    assert_eq!(cp["disable-kube-proxy"], yaml_serde::Value::Bool(true));
    let f = &rack.files[Path::new("rack/rack-1/config.yaml")];
    assert_eq!(f.mode, 0o600, "holds the token");
    assert_eq!(rack.files[Path::new("rack/rack-2/install.sh")].mode, 0o755);
    assert!(
        !text(&rack, "rack/rack-2/install.sh").contains(&s.k3s.token),
        "scripts hold no secret"
    );
}

/// `Some(path)` of shellcheck, `None` (after printing why) when it is missing outside CI.
fn shellcheck() -> Option<&'static str> {
    let found = Command::new("shellcheck")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some("shellcheck");
    }
    if std::env::var_os("CI").is_some() {
        panic!("shellcheck is not installed: `cargo xtask test` installs it (apt package shellcheck)");
    }
    eprintln!("SKIP shellcheck part: shellcheck is not installed (run `cargo xtask test` as root to install it)");
    None
}

#[test]
fn install_scripts_pass_bash_n_and_shellcheck() {
    let dir = tempfile::tempdir().unwrap();
    let mut scripts = Vec::new();
    for inv in ["inventory/homelab-k3s.toml", "inventory/rack-k3s.toml"] {
        let (_, r) = render(inv);
        render::write(dir.path(), &r).unwrap();
        scripts.extend(
            r.files
                .keys()
                .filter(|p| p.ends_with("install.sh"))
                .map(|p| dir.path().join(p)),
        );
    }
    assert_eq!(scripts.len(), 7);
    for s in &scripts {
        let o = Command::new("bash").arg("-n").arg(s).output().unwrap();
        assert!(
            o.status.success(),
            "bash -n {}: {}",
            s.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    if let Some(sc) = shellcheck() {
        let o = Command::new(sc)
            .args(["-s", "bash", "-S", "style"])
            .args(&scripts)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "shellcheck: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// Runs an install script under a scratch root; returns (success, stdout+stderr).
fn run_install(script_dir: &Path, root: &Path, systemctl: &Path) -> (bool, String) {
    let o = Command::new("bash")
        .arg(script_dir.join("install.sh"))
        .env("BOOTSTRAP_ROOT", root)
        .env("BOOTSTRAP_SYSTEMCTL", systemctl)
        .output()
        .unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

#[test]
fn install_script_verifies_the_binary_and_is_idempotent() {
    use std::os::unix::fs::PermissionsExt;
    let (_, r) = render("inventory/homelab-k3s.toml");
    let out = tempfile::tempdir().unwrap();
    render::write(out.path(), &r).unwrap();
    let node = out.path().join("homelab/k8s-worker-01");
    let root = tempfile::tempdir().unwrap();
    // A stand-in k3s "binary" (the script only copies and checksums it) and its checksum,
    // as bootstrap uploads them when the inventory pins no sha256.
    let binary = b"#!/bin/sh\necho k3s test stand-in\n";
    std::fs::write(node.join("k3s"), binary).unwrap();
    std::fs::write(node.join("k3s.sha256"), format!("{}  k3s\n", sha256_hex(binary))).unwrap();
    let log = root.path().join("systemctl.log");
    let systemctl = root.path().join("systemctl");
    std::fs::write(&systemctl, format!("#!/bin/sh\necho \"$*\" >> '{}'\n", log.display())).unwrap();
    std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755)).unwrap();

    let (ok, msg) = run_install(&node, root.path(), &systemctl);
    assert!(ok, "first run: {msg}");
    let installed = root.path().join("usr/local/bin/k3s");
    assert_eq!(std::fs::read(&installed).unwrap(), binary);
    let cfg = root.path().join("etc/rancher/k3s/config.yaml");
    assert_eq!(
        std::fs::read(&cfg).unwrap(),
        std::fs::read(node.join("config.yaml")).unwrap()
    );
    assert_eq!(std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777, 0o600);
    let unit = std::fs::read_to_string(root.path().join("etc/systemd/system/k3s-agent.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/k3s agent"), "{unit}");
    let calls = std::fs::read_to_string(&log).unwrap();
    assert_eq!(calls, "daemon-reload\nenable k3s-agent\nrestart k3s-agent\n");

    let (ok, msg) = run_install(&node, root.path(), &systemctl);
    assert!(ok && msg.contains("no change"), "second run: {msg}");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), calls, "nothing restarted");

    // A changed config is applied and the service restarted.
    let mut c = std::fs::read_to_string(node.join("config.yaml")).unwrap();
    c.push_str("kubelet-arg:\n- max-pods=200\n");
    std::fs::write(node.join("config.yaml"), &c).unwrap();
    let (ok, msg) = run_install(&node, root.path(), &systemctl);
    assert!(ok && !msg.contains("no change"), "{msg}");
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), c);
    assert!(std::fs::read_to_string(&log).unwrap().len() > calls.len());

    // A binary that does not match its checksum is refused and nothing replaced.
    let root2 = tempfile::tempdir().unwrap();
    std::fs::write(node.join("k3s"), b"tampered").unwrap();
    let (ok, msg) = run_install(&node, root2.path(), &systemctl);
    assert!(!ok && msg.contains("checksum mismatch"), "{msg}");
    assert!(!root2.path().join("usr/local/bin/k3s").exists());
}

/// `inventory/homelab-k3s.toml` with its text edited, loaded from a scratch dir.
fn homelab_with(dir: &Path, edit: impl FnOnce(String) -> String) -> bootstrap::inventory::Cluster {
    let text = edit(std::fs::read_to_string(repo("inventory/homelab-k3s.toml")).unwrap());
    let path = dir.join("homelab.toml");
    std::fs::write(&path, text).unwrap();
    bootstrap::inventory::load(&path).unwrap().inventory.clusters.remove(0)
}

fn release_names(c: &bootstrap::inventory::Cluster) -> Vec<String> {
    use bootstrap::phases::{catalog, manifests};
    manifests::releases(&catalog::core(), c, None)
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect()
}

/// k3s from v1.29.12/v1.30.8/v1.31.4 embeds Spegel (k3s docs registry-mirror.md):
/// servers turn it on, every node lists what it shares, and no Spegel chart.
#[test]
fn k3s_with_the_embedded_registry_gets_no_spegel_chart_and_shares_every_registry() {
    let (inv, r) = render("inventory/homelab-k3s.toml");
    assert_eq!(inv.clusters[0].versions.k3s, "v1.34.2+k3s1");
    let server = yaml(&r, "homelab/k8s-master-01/config.yaml");
    assert_eq!(server["embedded-registry"], yaml_serde::Value::Bool(true));
    let agent = yaml(&r, "homelab/k8s-worker-01/config.yaml");
    assert!(agent.get("embedded-registry").is_none(), "a server flag");
    for node in ["k8s-master-01", "k8s-worker-01"] {
        let reg = yaml(&r, &format!("homelab/{node}/registries.yaml"));
        assert_eq!(
            reg["mirrors"]["*"],
            yaml_serde::Value::Mapping(yaml_serde::Mapping::new()),
            "{node}: share all registries"
        );
        let script = text(&r, &format!("homelab/{node}/install.sh"));
        assert!(
            script.contains(text(&r, &format!("homelab/{node}/registries.yaml"))),
            "{node}"
        );
    }
    assert!(
        !release_names(&inv.clusters[0]).contains(&"spegel".to_owned()),
        "k3s runs Spegel itself"
    );
}

/// An older k3s has no GA embedded registry: the chart runs, with k3s's own
/// containerd paths (not Talos's /etc/cri/conf.d/hosts).
#[test]
fn older_k3s_gets_the_spegel_chart_with_k3s_containerd_paths() {
    use bootstrap::phases::{catalog, manifests};
    let dir = tempfile::tempdir().unwrap();
    let c = homelab_with(dir.path(), |t| t.replace("v1.34.2+k3s1\" }", "v1.29.11+k3s1\" }"));
    assert_eq!(c.versions.k3s, "v1.29.11+k3s1");
    let releases = manifests::releases(&catalog::core(), &c, None).unwrap();
    let spegel = releases
        .iter()
        .find(|r| r.name == "spegel")
        .expect("the chart on older k3s");
    let values = &spegel.objects[1]["spec"]["values"]["spegel"];
    assert_eq!(
        values["containerdRegistryConfigPath"],
        "/var/lib/rancher/k3s/agent/etc/containerd/certs.d"
    );
    assert_eq!(values["containerdSock"], "/run/k3s/containerd/containerd.sock");
    assert_eq!(
        values["containerdContentPath"],
        "/var/lib/rancher/k3s/agent/containerd/io.containerd.content.v1.content"
    );
    assert_eq!(values["prependExisting"], false, "no inventory mirrors to keep");
    let r = render::render_cluster(&c, &fixture_secrets(&c)).unwrap();
    let server = yaml(&r, "homelab/k8s-master-01/config.yaml");
    assert!(server.get("embedded-registry").is_none());
    assert!(!r.files.contains_key(Path::new("homelab/k8s-master-01/registries.yaml")));
}

#[test]
fn k3s_registries_yaml_carries_the_mirrors_and_installs_their_ca() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ca = rcgen::generate_simple_self_signed(vec!["mirror.example".into()]).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.cert.pem()).unwrap();
    let c = homelab_with(dir.path(), |t| {
        t.replace(
            "[cluster.gitops]",
            r#"[cluster.registries."docker.io"]
mirrors = ["https://mirror.example:5000", "https://cache.example/docker"]
ca = "file:ca.pem"

[cluster.registries."ghcr.io"]
mirrors = ["https://harbor.example/v2/ghcr.io"]
override_path = true

[cluster.gitops]"#,
        )
    });
    let r = render::render_cluster(&c, &fixture_secrets(&c)).unwrap();
    let reg = yaml(&r, "homelab/k8s-worker-01/registries.yaml");
    assert_eq!(
        reg["mirrors"]["docker.io"]["endpoint"],
        // k3s sets override_path for any path but /v2 (pkg/agent/containerd/config.go):
        // /docker gets /v2, which containerd would append without override_path.
        yaml_serde::to_value(["https://mirror.example:5000", "https://cache.example/docker/v2"]).unwrap()
    );
    assert_eq!(
        reg["mirrors"]["ghcr.io"]["endpoint"],
        yaml_serde::to_value(["https://harbor.example/v2/ghcr.io"]).unwrap()
    );
    let ca_file = "/etc/rancher/k3s/registry-ca/mirror.example_5000.pem";
    assert_eq!(reg["configs"]["mirror.example:5000"]["tls"]["ca_file"], ca_file);
    assert_eq!(
        reg["configs"]["cache.example"]["tls"]["ca_file"],
        "/etc/rancher/k3s/registry-ca/cache.example.pem"
    );
    let prepend = release_names(&c);
    assert!(!prepend.contains(&"spegel".to_owned()));

    // The install script writes registries.yaml and the CA, and is still idempotent.
    let out = tempfile::tempdir().unwrap();
    render::write(out.path(), &r).unwrap();
    let node = out.path().join("homelab/k8s-worker-01");
    std::fs::remove_file(node.join("registries.yaml")).unwrap();
    let root = tempfile::tempdir().unwrap();
    let binary = b"#!/bin/sh\necho k3s test stand-in\n";
    std::fs::write(node.join("k3s"), binary).unwrap();
    std::fs::write(node.join("k3s.sha256"), format!("{}  k3s\n", sha256_hex(binary))).unwrap();
    let systemctl = root.path().join("systemctl");
    std::fs::write(&systemctl, "#!/bin/sh\ntrue\n").unwrap();
    std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (ok, msg) = run_install(&node, root.path(), &systemctl);
    assert!(ok, "{msg}");
    let installed = std::fs::read_to_string(root.path().join("etc/rancher/k3s/registries.yaml")).unwrap();
    assert_eq!(installed, text(&r, "homelab/k8s-worker-01/registries.yaml"));
    let pem = std::fs::read_to_string(root.path().join(ca_file.trim_start_matches('/'))).unwrap();
    assert_eq!(pem.trim_end(), ca.cert.pem().trim_end());
    let (ok, msg) = run_install(&node, root.path(), &systemctl);
    assert!(ok && msg.contains("no change"), "{msg}");
    std::fs::remove_file(root.path().join(ca_file.trim_start_matches('/'))).unwrap();
    let (ok, msg) = run_install(&node, root.path(), &systemctl);
    assert!(ok && !msg.contains("no change"), "a removed CA file is put back: {msg}");
}
