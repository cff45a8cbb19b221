//! `cargo xtask bench fanout`: run `true` on N rack nodes over cold SSH
//! connections with `bootstrap exec` (release build), with ansible and pyinfra
//! (ansible-core and pyinfra from PyPI, each in a venv this bench creates;
//! ansible with pipelining; both check host keys against the rack's
//! known_hosts) and with `xargs -P N ssh`, several rounds interleaved, then
//! print medians and ratios. Beside wall time it reports where the CPU went:
//! the tool's own (its process tree, from `getrusage(RUSAGE_CHILDREN)`) and
//! the rack sshds' (every process in the nodes' network namespaces, from
//! /proc, reaped children included), per node.

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
    /// Skip pyinfra (no venv, no PyPI).
    #[arg(long)]
    pub no_pyinfra: bool,
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

/// Creates (once) a venv in `dir` with `package` from PyPI; returns `dir/bin/<bin>`.
fn venv(dir: &str, package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    let venv = PathBuf::from(dir);
    let bin = venv.join("bin").join(bin);
    if bin.exists() {
        return Ok(bin);
    }
    eprintln!("creating {} with {package} from PyPI ...", venv.display());
    check(
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
        "python3 -m venv",
    )?;
    check(
        Command::new(venv.join("bin/pip")).args(["install", "-q", package]),
        &format!("pip install {package}"),
    )?;
    Ok(bin)
}

/// CPU seconds of every process in the rack nodes' network namespaces,
/// including the children they reaped (each sshd connection's processes end
/// up in its listener's cutime/cstime).
fn sshd_cpu(netns_inodes: &[u64]) -> f64 {
    use std::os::unix::fs::MetadataExt;
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut ticks = 0u64;
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    for p in procs.flatten() {
        let path = p.path();
        let Ok(ns) = std::fs::metadata(path.join("ns/net")) else {
            continue;
        };
        if !netns_inodes.contains(&ns.ino()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        // Fields after the `(comm)`: state is field 3, utime..cstime are 14..17.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        ticks += f[11..15].iter().filter_map(|v| v.parse::<u64>().ok()).sum::<u64>();
    }
    ticks as f64 / tick
}

/// One measured run: wall seconds, the tool's CPU seconds, the sshds' CPU seconds.
#[derive(Default)]
struct Samples {
    wall: Vec<f64>,
    client: Vec<f64>,
    sshd: Vec<f64>,
}

fn measure(cmd: &mut Command, what: &str, netns: &[u64], into: &mut Samples) -> anyhow::Result<f64> {
    let (c0, s0) = (super::cpu_seconds(libc::RUSAGE_CHILDREN), sshd_cpu(netns));
    let wall = time(cmd, what)?;
    // Let the servers finish closing the connections before reading their CPU.
    std::thread::sleep(std::time::Duration::from_millis(300));
    into.wall.push(wall);
    into.client.push(super::cpu_seconds(libc::RUSAGE_CHILDREN) - c0);
    into.sshd.push(sshd_cpu(netns) - s0);
    Ok(wall)
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
    let ansible = if a.no_ansible {
        None
    } else {
        Some(venv("/var/tmp/bootstrap-bench-ansible", "ansible-core", "ansible")?)
    };
    let pyinfra = if a.no_pyinfra {
        None
    } else {
        Some(venv("/var/tmp/bootstrap-bench-pyinfra", "pyinfra", "pyinfra")?)
    };

    let t = Instant::now();
    let rack = Rack::start(a.nodes)?;
    eprintln!("rack of {} nodes up in {:.2} s", a.nodes, t.elapsed().as_secs_f64());
    let netns: Vec<u64> = rack
        .nodes()
        .iter()
        .map(|n| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(format!("/run/netns/bsrack-{}", n.ip.octets()[3])).map(|m| m.ino())
        })
        .collect::<Result<_, _>>()
        .context("network namespaces of the rack nodes")?;
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
    // pyinfra: paramiko, host keys from the rack's known_hosts, unknown ones refused.
    let py_inv = work.join("pyinfra_inventory.py");
    let mut py = String::from("rack = ([\n");
    for ip in &ips {
        py.push_str(&format!("    \"{ip}\",\n"));
    }
    py.push_str(&format!(
        "], {{\"ssh_user\": \"root\", \"ssh_key\": \"{}\", \"ssh_known_hosts_file\": \"{}\", \"ssh_strict_host_key_checking\": \"yes\", \"ssh_allow_agent\": False, \"ssh_look_for_keys\": False}})\n",
        key.display(),
        kh.display()
    ));
    std::fs::write(&py_inv, py)?;
    let n = a.nodes.to_string();
    let ssh_cmd = format!(
        "ssh -i {} -o UserKnownHostsFile={} -o BatchMode=yes -o ControlMaster=no root@{{}} true",
        key.display(),
        kh.display()
    );

    let (mut sb, mut sa, mut sp, mut sx) = Default::default();
    for round in 1..=a.rounds {
        let b = measure(
            Command::new(&bootstrap)
                .arg("-i")
                .arg(&inv)
                .args(["exec", "--concurrency", &n, "--", "true"])
                .env("HOME", work.join("home"))
                .env_remove("SSH_AUTH_SOCK"),
            "bootstrap exec",
            &netns,
            &mut sb,
        )?;
        let x = measure(
            Command::new("sh").arg("-c").arg(format!(
                "printf '%s\\n' {} | xargs -P{n} -I{{}} {ssh_cmd}",
                ips.join(" ")
            )),
            "xargs ssh",
            &netns,
            &mut sx,
        )?;
        let mut line = format!("round {round}: bootstrap exec {b:.3} s, xargs -P{n} ssh {x:.3} s");
        if let Some(ans) = &ansible {
            // A fresh control-socket directory per round: cold connections.
            let cp = work.join(format!("cp-{round}"));
            std::fs::create_dir_all(&cp)?;
            let s = measure(
                Command::new(ans)
                    .args(["all", "-m", "command", "-a", "true", "-f", &n])
                    .env("ANSIBLE_CONFIG", &cfg)
                    .env("ANSIBLE_SSH_CONTROL_PATH_DIR", &cp)
                    .env("ANSIBLE_LOCAL_TEMP", work.join("ansible-tmp"))
                    .env("HOME", work.join("home")),
                "ansible",
                &netns,
                &mut sa,
            )?;
            line.push_str(&format!(", ansible -f{n} {s:.3} s"));
        }
        if let Some(pyi) = &pyinfra {
            let s = measure(
                Command::new(pyi)
                    .arg(&py_inv)
                    .args(["exec", "--parallel", &n, "-y", "--", "true"])
                    .env("HOME", work.join("home"))
                    .env_remove("SSH_AUTH_SOCK"),
                "pyinfra",
                &netns,
                &mut sp,
            )?;
            line.push_str(&format!(", pyinfra --parallel {n} {s:.3} s"));
        }
        println!("{line}");
    }
    let per_node = |v: &mut Vec<f64>| median(v) / a.nodes as f64 * 1000.0;
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    println!(
        "\nmedians over {} rounds, {} nodes, `true`, cold connections ({cores} cores):",
        a.rounds, a.nodes
    );
    println!("  tool                 wall      vs bootstrap   tool CPU/node   sshd CPU/node");
    let mb = median(&mut sb.wall);
    let row = |name: &str, s: &mut Samples| {
        let m = median(&mut s.wall);
        let ratio = if name == "bootstrap exec" {
            "-".to_owned()
        } else {
            format!("{:.2}x", m / mb)
        };
        println!(
            "  {name:<20} {m:>6.3} s  {ratio:>12}   {:>10.2} ms   {:>10.2} ms",
            per_node(&mut s.client),
            per_node(&mut s.sshd)
        );
        m
    };
    row("bootstrap exec", &mut sb);
    let mx = row(&format!("xargs -P{n} ssh"), &mut sx);
    let ma = (!sa.wall.is_empty()).then(|| row(&format!("ansible -f{n}"), &mut sa));
    let mp = (!sp.wall.is_empty()).then(|| row(&format!("pyinfra --parallel {n}"), &mut sp));
    // The servers' CPU alone, spread over every core, bounds any client.
    let floor = median(&mut sb.sshd) / cores as f64;
    println!(
        "sshd CPU of one bootstrap run spread over {cores} cores: {floor:.3} s ({:.0}% of its wall time)",
        floor / mb * 100.0
    );
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    let mut targets = vec![format!("no slower than xargs ssh: {}", met(mb <= mx))];
    if let Some(ma) = ma {
        targets.push(format!(">= 10x faster than ansible: {}", met(ma / mb >= 10.0)));
    }
    if let Some(mp) = mp {
        targets.push(format!(">= 2.5x faster than pyinfra: {}", met(mp / mb >= 2.5)));
    }
    println!("targets: {}", targets.join("; "));
    drop(rack);
    Ok(())
}
