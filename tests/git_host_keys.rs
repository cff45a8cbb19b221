//! Git over SSH: phase 0 writes the deploy-key Secret as `flux bootstrap`
//! does (`identity`, `identity.pub`, `known_hosts`), with the Git host's key
//! scanned from an SSH server on 127.0.0.1 (russh) under the node host-key
//! policy: unknown → refused unless --accept-new (then pinned in the state
//! dir), changed → always refused, an inventory fingerprint must match; a
//! refusal applies nothing.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bootstrap::artifacts::ArtifactStore;
use bootstrap::engine::progress::{Reporter, Style};
use bootstrap::engine::{self, Phase, RunCtx};
use bootstrap::phases::{ClusterRun, KUBECONFIG, Timeouts, git_host, prerequisites};
use bootstrap::state::StateStore;
use russh::keys::PrivateKey;
use xtask::kube_sim::{Behaviour, KubeSim, SimOptions};

/// TEST-ONLY keys (ed25519, generated for these tests).
const DEPLOY_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACDnnpyC8o7U3BydIdjxkki2/6ZP+ohGS7EKVclQY7GvYAAAAIiGIZqmhiGa
pgAAAAtzc2gtZWQyNTUxOQAAACDnnpyC8o7U3BydIdjxkki2/6ZP+ohGS7EKVclQY7GvYA
AAAEAh7ujyAYEQ4q4EEdlhBgMLUpJOYjr3SeHKW8wo2KMg++eenILyjtTcHJ0h2PGSSLb/
pk/6iEZLsQpVyVBjsa9gAAAAAAECAwQF
-----END OPENSSH PRIVATE KEY-----
";
const DEPLOY_PUB: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOeenILyjtTcHJ0h2PGSSLb/pk/6iEZLsQpVyVBjsa9g\n";
const HOST_A: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACAZ4Mub+dMxae/KWfwmLfTeLl7IkNsKAb1UUX15jxuPvwAAAIgT3cANE93A
DQAAAAtzc2gtZWQyNTUxOQAAACAZ4Mub+dMxae/KWfwmLfTeLl7IkNsKAb1UUX15jxuPvw
AAAEAk0z47FQASJwBBFpsNoXv0UXvKjd3rf6P9GkxUvaPdoxngy5v50zFp78pZ/CYt9N4u
XsiQ2woBvVRRfXmPG4+/AAAAAAECAwQF
-----END OPENSSH PRIVATE KEY-----
";
const HOST_A_PUB: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBngy5v50zFp78pZ/CYt9N4uXsiQ2woBvVRRfXmPG4+/";

fn host_b() -> PrivateKey {
    // Any other key will do: derived deterministically so the test needs no RNG.
    let seed = [7u8; 32];
    let kp = russh::keys::ssh_key::private::Ed25519Keypair::from_seed(&seed);
    PrivateKey::from(kp)
}

struct NoAuth;
impl russh::server::Handler for NoAuth {
    type Error = russh::Error;
}

/// An SSH server on 127.0.0.1 presenting whatever key `key` holds at connect time.
struct GitHost {
    port: u16,
    key: Arc<Mutex<PrivateKey>>,
    task: tokio::task::JoinHandle<()>,
}

impl GitHost {
    async fn start() -> Self {
        let key = Arc::new(Mutex::new(PrivateKey::from_openssh(HOST_A).unwrap()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let k = key.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let config = Arc::new(russh::server::Config {
                    keys: vec![k.lock().unwrap().clone()],
                    ..Default::default()
                });
                tokio::spawn(async move {
                    if let Ok(s) = russh::server::run_stream(config, tcp, NoAuth).await {
                        let _ = s.await;
                    }
                });
            }
        });
        Self { port, key, task }
    }
}

impl Drop for GitHost {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Env {
    sim: KubeSim,
    dir: tempfile::TempDir,
    host: GitHost,
}

impl Env {
    async fn start() -> Self {
        let sim = KubeSim::start(SimOptions {
            behaviour: Behaviour::uniform(Duration::from_millis(20)),
            ..SimOptions::default()
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("deploy.key"), DEPLOY_KEY).unwrap();
        Self {
            sim,
            dir,
            host: GitHost::start().await,
        }
    }

    fn run(&self, accept_new: bool, known_hosts: Option<&str>) -> Arc<ClusterRun> {
        let extra = known_hosts
            .map(|k| format!("known_hosts = {k:?}\n"))
            .unwrap_or_default();
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/inventory/simulated.toml"))
            .unwrap()
            .replace(
                "repository = \"https://git.sim.invalid/rack/gitops.git\"",
                &format!(
                    "repository = \"ssh://git@127.0.0.1:{}/rack/gitops.git\"",
                    self.host.port
                ),
            )
            .replace(
                "path = \"./clusters/sim\"\n",
                &format!("path = \"./clusters/sim\"\ndeploy_key = \"file:deploy.key\"\n{extra}"),
            );
        let inv = self.dir.path().join("rack.toml");
        std::fs::write(&inv, text).unwrap();
        let cluster = bootstrap::inventory::load(&inv).unwrap().inventory.clusters.remove(0);
        let t = Duration::from_secs(10);
        Arc::new(ClusterRun {
            cluster,
            inventory_dir: self.dir.path().to_path_buf(),
            state_root: self.dir.path().join("state"),
            artifacts: ArtifactStore {
                offline: None,
                cache: self.dir.path().join("state/artifacts"),
            },
            limit: Default::default(),
            merge_kubeconfig: false,
            accept_new,
            require_identity: false,
            timeouts: Timeouts {
                node: t,
                api: t,
                workload: t,
                gitops: t,
            },
            restore: None,
            force_unlock: false,
        })
    }

    async fn phase0(&self, run: Arc<ClusterRun>) -> Result<(), engine::PhaseError> {
        let ctx = RunCtx {
            reporter: Arc::new(Reporter::new(Style::Silent)),
            state: bootstrap::engine::SharedState::new(StateStore::open(&run.state_root, &run.cluster.name).unwrap()),
            concurrency: 2,
            cancel: Arc::new(AtomicBool::new(false)),
        };
        ctx.state
            .write(|s| s.put_artifact(KUBECONFIG, "kubeconfig", self.sim.admin_kubeconfig().as_bytes()))
            .await
            .unwrap();
        let phases: Vec<Box<dyn Phase>> = vec![Box::new(prerequisites::Prerequisites::new(run))];
        engine::run(&phases, &ctx).await
    }

    fn pin_file(&self) -> std::path::PathBuf {
        self.dir.path().join("state/sim").join(git_host::PINNED)
    }

    fn writes(&self) -> Vec<String> {
        self.sim
            .requests()
            .iter()
            .filter(|r| r.mutating)
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    fn deploy_secret(&self) -> Option<serde_json::Value> {
        self.sim.object("", "secrets", "flux-system", "flux-system")
    }
}

fn unb64(v: &serde_json::Value) -> String {
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap(),
    )
    .unwrap()
}

fn fingerprint(public: &str) -> String {
    bootstrap::ssh::fingerprint(public).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_git_host_is_refused_then_pinned_with_accept_new_and_a_changed_key_always_refused() {
    let env = Env::start().await;
    let fp_a = fingerprint(HOST_A_PUB);

    // Unknown, no --accept-new: refused, naming the host and the fingerprint; nothing applied.
    let err = env.phase0(env.run(false, None)).await.unwrap_err().to_string();
    assert!(
        err.contains("not known") && err.contains(&fp_a) && err.contains("--accept-new"),
        "{err}"
    );
    assert!(err.contains(&format!("[127.0.0.1]:{}", env.host.port)), "{err}");
    assert_eq!(env.writes(), Vec::<String>::new(), "nothing applied");
    assert!(!env.pin_file().exists());

    // --accept-new: pinned in the state dir, Secret as `flux bootstrap` writes it.
    env.phase0(env.run(true, None)).await.unwrap();
    let pinned = std::fs::read_to_string(env.pin_file()).unwrap();
    assert!(pinned.contains(HOST_A_PUB.split(' ').nth(1).unwrap()), "{pinned}");
    let s = env.deploy_secret().expect("deploy-key Secret");
    assert_eq!(
        unb64(&s["data"]["identity"]),
        DEPLOY_KEY.trim_end(),
        "the file reference, trimmed"
    );
    assert_eq!(unb64(&s["data"]["identity.pub"]), DEPLOY_PUB);
    assert_eq!(
        unb64(&s["data"]["known_hosts"]),
        format!("[127.0.0.1]:{} {HOST_A_PUB}\n", env.host.port)
    );

    // Pinned: trusted without --accept-new.
    env.sim.clear_requests();
    env.phase0(env.run(false, None)).await.unwrap();
    assert_eq!(env.writes(), Vec::<String>::new(), "converged");

    // The host presents another key: refused even with --accept-new, nothing applied.
    *env.host.key.lock().unwrap() = host_b();
    env.sim.clear_requests();
    let err = env.phase0(env.run(true, None)).await.unwrap_err().to_string();
    assert!(err.contains("HOST KEY CHANGED") && err.contains(&fp_a), "{err}");
    assert_eq!(env.writes(), Vec::<String>::new(), "nothing applied");
    assert_eq!(
        std::fs::read_to_string(env.pin_file()).unwrap(),
        pinned,
        "the pin is kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inventory_fingerprint_must_match_the_scanned_key() {
    let env = Env::start().await;
    let fp_a = fingerprint(HOST_A_PUB);
    *env.host.key.lock().unwrap() = host_b();
    let err = env.phase0(env.run(false, Some(&fp_a))).await.unwrap_err().to_string();
    assert!(err.contains("MISMATCH") && err.contains(&fp_a), "{err}");
    assert_eq!(env.writes(), Vec::<String>::new(), "nothing applied");

    *env.host.key.lock().unwrap() = PrivateKey::from_openssh(HOST_A).unwrap();
    env.phase0(env.run(false, Some(&fp_a))).await.unwrap();
    let s = env.deploy_secret().unwrap();
    assert!(unb64(&s["data"]["known_hosts"]).ends_with(&format!("{HOST_A_PUB}\n")));
    assert!(!env.pin_file().exists(), "an inventory pin needs no state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_known_hosts_lines_are_used_as_given_without_a_scan() {
    let env = Env::start().await;
    env.host.task.abort(); // nothing answers: no scan may happen
    let line = format!("[127.0.0.1]:{} {HOST_A_PUB}", env.host.port);
    env.phase0(env.run(false, Some(&line))).await.unwrap();
    let s = env.deploy_secret().unwrap();
    assert_eq!(unb64(&s["data"]["known_hosts"]), format!("{line}\n"));

    let err = env
        .phase0(env.run(false, Some(&format!("other.example {HOST_A_PUB}"))))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no line names"), "{err}");
}
