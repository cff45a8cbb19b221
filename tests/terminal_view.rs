//! `bootstrap up` and `plan` as a user sees them in a terminal: run inside a
//! real tmux pane (160×50) against the simulated rack, then the screen is read
//! back with `capture-pane`. Every spinner ends as a permanent `✓`/`✗` line
//! with its duration, none is left behind, and the timing summary is whole.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bootstrap::inventory;
use xtask::kube_sim::Behaviour;
use xtask::sim_rack::{RackOptions, SimRack};

const BIN: &str = env!("CARGO_BIN_EXE_bootstrap");

/// tmux on its own server socket, so the test never touches a user's sessions.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn available() -> bool {
        Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket, "-f", "/dev/null"]);
        c
    }

    /// Runs `script` in a new 160×50 pane; returns the whole pane (with
    /// scrollback) once the script printed its exit line.
    fn run(&self, name: &str, script: &str) -> String {
        let status = self
            .cmd()
            .args(["new-session", "-d", "-s", name, "-x", "160", "-y", "50"])
            .arg(format!("{script}; echo EXIT=$?; sleep 300"))
            .env("TERM", "xterm-256color")
            .status()
            .unwrap();
        assert!(status.success(), "tmux new-session failed");
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let out = self
                .cmd()
                .args(["capture-pane", "-p", "-S", "-", "-t", name])
                .output()
                .unwrap();
            let screen = String::from_utf8_lossy(&out.stdout).into_owned();
            if screen.contains("EXIT=") {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the command did not finish; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}

/// Spinner frames indicatif draws (braille patterns).
fn spinners(screen: &str) -> Vec<&str> {
    screen
        .lines()
        .filter(|l| l.chars().any(|c| ('\u{2800}'..='\u{28ff}').contains(&c)))
        .collect()
}

fn inventory_file(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/inventory/simulated.toml"))
        .unwrap()
        .replace("127.1.0.", "127.89.0.");
    let path = dir.join("rack.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn up_and_plan_in_a_terminal_leave_finished_lines_and_a_whole_summary() {
    if !Tmux::available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "tmux is missing (cargo xtask test installs it)"
        );
        eprintln!("skipped: tmux is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory_file(dir.path());
    let cluster = inventory::load(&inv).unwrap().inventory.clusters.remove(0);
    let rack = SimRack::start(
        &cluster,
        RackOptions {
            reboot_delay: Duration::from_millis(300),
            ready_delay: Duration::from_millis(100),
            behaviour: Behaviour::uniform(Duration::from_millis(100)),
        },
    )
    .await
    .unwrap();
    let crds =
        xtask::sim_rack::offline_crds(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("terminal-view-crds")).unwrap();
    let state = dir.path().join("state");
    let base = format!(
        "HOME={state} {BIN} -i {inv} --state-dir {state}",
        state = state.display(),
        inv = inv.display()
    );
    let tmux = Tmux {
        socket: format!("bootstrap-view-{}", std::process::id()),
    };

    let screen = tokio::task::block_in_place(|| {
        tmux.run("up", &format!("{base} up --artifacts {} --timeout 60", crds.display()))
    });
    assert!(screen.contains("EXIT=0"), "up failed:\n{screen}");
    assert_eq!(
        spinners(&screen),
        Vec::<&str>::new(),
        "no spinner is left on screen:\n{screen}"
    );
    for node in ["cp-1", "cp-2", "cp-3", "worker-1", "worker-2"] {
        let done: Vec<&str> = screen
            .lines()
            .filter(|l| l.starts_with('✓') && l.split_whitespace().nth(1) == Some(node))
            .collect();
        assert!(
            done.iter().any(|l| l.trim_end().ends_with("s)")),
            "{node}'s line ends as ✓ with its duration:\n{screen}"
        );
    }
    let summary: Vec<&str> = screen
        .lines()
        .skip_while(|l| !l.starts_with("phase timings:"))
        .collect();
    for phase in ["nodes", "prerequisites", "crds", "core", "gitops", "total"] {
        assert!(
            summary.iter().any(|l| l.trim_start().starts_with(phase)),
            "the summary has a line for {phase}:\n{screen}"
        );
    }
    drop(rack.kube());

    let screen =
        tokio::task::block_in_place(|| tmux.run("plan", &format!("{base} plan --artifacts {}", crds.display())));
    assert!(screen.contains("EXIT=0"), "plan failed:\n{screen}");
    assert!(screen.contains("nothing to do"), "converged:\n{screen}");
    assert_eq!(
        spinners(&screen),
        Vec::<&str>::new(),
        "plan's probes are cleared:\n{screen}"
    );
}
