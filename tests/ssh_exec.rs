//! `bootstrap exec` end to end: the real binary against rack nodes, with its
//! own HOME (known_hosts) so the user's ~/.ssh is never touched.

use std::process::Command;

use xtask::rack::Rack;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn exec(home: &std::path::Path, inventory: &std::path::Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_bootstrap"))
        .arg("-i")
        .arg(inventory)
        .arg("exec")
        .args(args)
        .env("HOME", home)
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn exec_runs_on_selected_nodes_prefixes_output_and_fails_when_one_fails() {
    let Some(rack) = Rack::for_test(3) else { return };
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
    let inv = home.path().join("rack.toml");
    std::fs::write(&inv, rack.inventory_toml()).unwrap();

    // Unknown hosts: refused, named, non-zero exit.
    let r = exec(home.path(), &inv, &["--", "hostname"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("rack-1: error: rack-1 (198.18.0."), "{}", r.stderr);
    assert!(r.stderr.contains("--accept-new"), "{}", r.stderr);
    assert!(r.stdout.contains("0 node(s) ok, 3 failed"), "{}", r.stdout);

    let r = exec(home.path(), &inv, &["--accept-new", "--", "hostname"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    for n in rack.nodes() {
        assert!(r.stdout.contains(&format!("{0} | {0}\n", n.name)), "{}", r.stdout);
    }
    assert!(r.stdout.contains("exec: 3 node(s) ok, 0 failed"), "{}", r.stdout);

    let r = exec(home.path(), &inv, &["--role", "worker", "--", "echo", "w"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        !r.stdout.contains("rack-1 |") && r.stdout.contains("rack-3 | w"),
        "{}",
        r.stdout
    );

    let r = exec(
        home.path(),
        &inv,
        &["--nodes", "rack-1,rack-2", "--", "test $(hostname) = rack-1"],
    );
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("rack-2: exit status 1"), "{}", r.stderr);
    assert!(r.stdout.contains("1 node(s) ok, 1 failed (rack-2)"), "{}", r.stdout);

    let r = exec(home.path(), &inv, &["--nodes", "nope", "--", "true"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no node `nope`"), "{}", r.stderr);
}
