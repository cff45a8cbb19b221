//! `cargo xtask bench fanout`: run `true` on N rack nodes over cold SSH
//! connections with `bootstrap exec` (release build), with ansible (ansible-core
//! from PyPI in a venv this bench creates, pipelining on, host keys checked
//! against the rack's known_hosts) and with `xargs -P N ssh`, several rounds
//! interleaved, then print medians and ratios.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};

use crate::rack::Rack;

/// Options of `cargo xtask bench fanout`.
#[derive(clap::Args)]
pub struct FanoutArgs {
    /// Rack nodes.
    #[arg(long, default_value_t = 20)]
    pub nodes: usize,
    /// Rounds per tool.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Skip ansible (no venv, no PyPI).
    #[arg(long)]
    pub no_ansible: bool,
    /// Cargo profile of the measured `bootstrap` binary (`dev` keeps
    /// dependencies at opt-level 2, see Cargo.toml).
    #[arg(long, default_value = "release")]
    pub profile: String,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

fn check(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Creates (once) a venv with ansible-core in /var/tmp/bootstrap-bench-ansible.
fn ansible_venv() -> anyhow::Result<PathBuf> {
    let venv = PathBuf::from("/var/tmp/bootstrap-bench-ansible");
    let bin = venv.join("bin/ansible");
    if bin.exists() {
        return Ok(bin);
    }
    eprintln!("creating {} with ansible-core from PyPI ...", venv.display());
    check(
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
        "python3 -m venv",
    )?;
    check(
        Command::new(venv.join("bin/pip")).args(["install", "-q", "ansible-core"]),
        "pip install ansible-core",
    )?;
    Ok(bin)
}

fn time(cmd: &mut Command, what: &str) -> anyhow::Result<f64> {
    let t = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(secs)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs the benchmark.
pub fn run(a: FanoutArgs) -> anyhow::Result<()> {
    let ws = workspace();
    eprintln!("building bootstrap (profile {}) ...", a.profile);
    check(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&ws)
            .args(["build", "--quiet", "--bin", "bootstrap", "--profile", &a.profile]),
        "cargo build",
    )?;
    let dir = if a.profile == "dev" {
        "debug"
    } else {
        a.profile.as_str()
    };
    let bootstrap = ws.join("target").join(dir).join("bootstrap");
    let ansible = if a.no_ansible { None } else { Some(ansible_venv()?) };

    let t = Instant::now();
    let rack = Rack::start(a.nodes)?;
    eprintln!("rack of {} nodes up in {:.2} s", a.nodes, t.elapsed().as_secs_f64());
    let work = rack.dir().join("bench");
    std::fs::create_dir_all(work.join("home/.ssh"))?;
    std::fs::copy(rack.known_hosts(), work.join("home/.ssh/known_hosts"))?;
    let inv = work.join("rack.toml");
    std::fs::write(&inv, rack.inventory_toml())?;
    let key = rack.client_key();
    let kh = rack.known_hosts();
    let ips: Vec<String> = rack.nodes().iter().map(|n| n.ip.to_string()).collect();
    let hosts = work.join("hosts.ini");
    let mut ini = String::from("[rack]\n");
    for ip in &ips {
        ini.push_str(&format!("{ip}\n"));
    }
    ini.push_str(&format!(
        "[rack:vars]\nansible_user=root\nansible_ssh_private_key_file={}\nansible_python_interpreter=/usr/bin/python3\n",
        key.display()
    ));
    std::fs::write(&hosts, ini)?;
    let cfg = work.join("ansible.cfg");
    std::fs::write(
        &cfg,
        format!(
            "[defaults]\nhost_key_checking = True\ninventory = {}\n[ssh_connection]\npipelining = True\nssh_args = -o UserKnownHostsFile={} -o BatchMode=yes -o ControlMaster=auto -o ControlPersist=60s\n",
            hosts.display(),
            kh.display()
        ),
    )?;
    let n = a.nodes.to_string();
    let ssh_cmd = format!(
        "ssh -i {} -o UserKnownHostsFile={} -o BatchMode=yes -o ControlMaster=no root@{{}} true",
        key.display(),
        kh.display()
    );

    let (mut tb, mut ta, mut tx) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=a.rounds {
        let b = time(
            Command::new(&bootstrap)
                .arg("-i")
                .arg(&inv)
                .args(["exec", "--concurrency", &n, "--", "true"])
                .env("HOME", work.join("home"))
                .env_remove("SSH_AUTH_SOCK"),
            "bootstrap exec",
        )?;
        tb.push(b);
        let x = time(
            Command::new("sh").arg("-c").arg(format!(
                "printf '%s\\n' {} | xargs -P{n} -I{{}} {ssh_cmd}",
                ips.join(" ")
            )),
            "xargs ssh",
        )?;
        tx.push(x);
        let mut line = format!("round {round}: bootstrap exec {b:.3} s, xargs -P{n} ssh {x:.3} s");
        if let Some(ans) = &ansible {
            // A fresh control-socket directory per round: cold connections.
            let cp = work.join(format!("cp-{round}"));
            std::fs::create_dir_all(&cp)?;
            let s = time(
                Command::new(ans)
                    .args(["all", "-m", "command", "-a", "true", "-f", &n])
                    .env("ANSIBLE_CONFIG", &cfg)
                    .env("ANSIBLE_SSH_CONTROL_PATH_DIR", &cp)
                    .env("ANSIBLE_LOCAL_TEMP", work.join("ansible-tmp"))
                    .env("HOME", work.join("home")),
                "ansible",
            )?;
            ta.push(s);
            line.push_str(&format!(", ansible -f{n} {s:.3} s"));
        }
        println!("{line}");
    }
    let (mb, mx) = (median(&mut tb), median(&mut tx));
    println!(
        "\nmedians over {} rounds, {} nodes, `true`, cold connections:",
        a.rounds, a.nodes
    );
    println!("  bootstrap exec      {mb:.3} s");
    println!(
        "  xargs -P{n} ssh      {mx:.3} s   (bootstrap is {:.2}x faster)",
        mx / mb
    );
    if !ta.is_empty() {
        let ma = median(&mut ta);
        println!(
            "  ansible -f{n}        {ma:.3} s   (bootstrap is {:.2}x faster)",
            ma / mb
        );
        println!(
            "targets: >= 10x faster than ansible: {}; no slower than xargs ssh: {}",
            if ma / mb >= 10.0 { "met" } else { "NOT met" },
            if mb <= mx { "met" } else { "NOT met" }
        );
    }
    drop(rack);
    Ok(())
}
