//! The `bootstrap` binary as an operator meets it: exit codes and output.

use std::process::Command;

fn bootstrap(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_bootstrap"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("BOOTSTRAP_INVENTORY")
        .output()
        .unwrap()
}

#[test]
fn check_accepts_every_example_with_one_line_per_cluster() {
    for (file, clusters) in [
        ("inventory/prod-talos.toml", 2),
        ("inventory/homelab-k3s.toml", 1),
        ("inventory/simulated.toml", 1),
        ("inventory/rack-k3s.toml", 1),
    ] {
        let out = bootstrap(&["check", "-i", file]);
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_eq!(stdout.lines().count(), clusters, "{file}: {stdout}");
        assert!(stdout.lines().all(|l| l.contains(": ok, ")), "{stdout}");
    }
}

#[test]
fn check_selects_one_cluster_and_refuses_unknown_ones() {
    let out = bootstrap(&["check", "-i", "inventory/prod-talos.toml", "--cluster", "apps"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(
        stdout.starts_with("apps: ok") && stdout.lines().count() == 1,
        "{stdout}"
    );

    let out = bootstrap(&["check", "-i", "inventory/prod-talos.toml", "--cluster", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no cluster `nope`"));
}

#[test]
fn check_reports_located_errors_and_exits_1() {
    let out = bootstrap(&["check", "-i", "tests/inventory_errors/many-errors-at-once.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr.lines().filter(|l| l.contains(": error: ")).count(),
        3,
        "{stderr}"
    );
    assert!(
        stderr.contains("tests/inventory_errors/many-errors-at-once.toml:"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was changed on any node"));
}

#[test]
fn check_json_output_is_one_object_per_line() {
    let out = bootstrap(&["check", "-i", "inventory/prod-talos.toml", "--output", "json"]);
    assert!(out.status.success());
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["distribution"], "talos");
        assert_eq!(v["controlplanes"], 3);
    }
}

#[test]
fn missing_inventory_is_a_clear_error() {
    let out = bootstrap(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass -i/--inventory"));
    let out = bootstrap(&["check", "-i", "no/such/file.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the inventory"));
}

#[test]
fn completions_are_printed() {
    let out = bootstrap(&["completions", "bash"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("bootstrap"));
}

#[test]
fn status_and_kubeconfig_read_the_state_dir() {
    let state = tempfile::tempdir().unwrap();
    let sd = state.path().to_str().unwrap();
    let args = |cmd: &str| {
        vec![
            cmd.to_owned(),
            "-i".into(),
            "inventory/simulated.toml".into(),
            "--state-dir".into(),
            sd.into(),
        ]
    };
    let run = |a: Vec<String>| bootstrap(&a.iter().map(String::as_str).collect::<Vec<_>>());

    let out = run(args("status"));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("sim: nothing recorded yet"));
    let out = run(args("kubeconfig"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("run `bootstrap up` first"));

    {
        let mut s = bootstrap::state::StateStore::open(state.path(), "sim").unwrap();
        s.record_step("nodes", "cp-1", "etcd bootstrapped").unwrap();
        s.put_artifact("kubeconfig", "kubeconfig", b"apiVersion: v1\nkind: Config\n")
            .unwrap();
    }
    let out = run(args("status"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("cp-1: etcd bootstrapped") && stdout.contains("nodes: in progress"),
        "{stdout}"
    );
    let out = run(args("kubeconfig"));
    assert_eq!(out.stdout, b"apiVersion: v1\nkind: Config\n");

    let file = state.path().join("out/kubeconfig");
    let mut a = args("kubeconfig");
    a.extend(["--out".to_owned(), file.to_str().unwrap().to_owned()]);
    assert!(run(a).status.success());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
}
