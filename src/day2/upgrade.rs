//! `upgrade` of Talos OS as a phase: observe (every node ours and healthy,
//! etcd quorate), plan (an etcd snapshot, then control planes one at a time,
//! then workers in batches; each node cordoned, drained, upgraded, awaited
//! and uncordoned), execute through [`super::execute`]. A node already
//! running the target is skipped, and a node whose Upgrade was sent before
//! an interruption is awaited, never sent it again.

use std::collections::BTreeMap;
use std::sync::Arc;

pub use super::execute::Batch;
use super::execute::{self, Env, progress};
use super::health;
use crate::engine::{Action, CLUSTER, Phase, PhaseError, RunCtx, Step};
use crate::inventory::{Cluster, Role};

/// Phase name in state and events.
pub const PHASE: &str = "upgrade";

/// `vMAJOR.MINOR.PATCH` (a pre-release suffix allowed), as (major, minor, patch).
pub fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let core = v.strip_prefix('v')?.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(str::parse::<u64>);
    let (Some(Ok(a)), Some(Ok(b)), Some(Ok(c)), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    Some((a, b, c))
}

/// Refuses a target that is not a version, a downgrade, or a jump of more
/// than one minor (Talos docs, "Upgrading Talos Linux": upgrade through each
/// minor release in turn).
pub fn check_target(flag: &str, from: &str, to: &str) -> Result<(), String> {
    let target = parse_version(to).ok_or_else(|| format!("{flag} `{to}`: not a version (vMAJOR.MINOR.PATCH)"))?;
    let Some(current) = parse_version(from) else {
        return Ok(()); // an unreadable current version is refused by the health check
    };
    forward_one_minor(&format!("{flag} {to}: the cluster runs {from}"), current, target)
}

/// Refuses moving from `current` to `target` unless it goes forward by at
/// most one minor release; `context` starts the refusal.
pub fn forward_one_minor(context: &str, current: (u64, u64, u64), target: (u64, u64, u64)) -> Result<(), String> {
    if target < current {
        return Err(format!("{context}; downgrades are not supported"));
    }
    if target.0 != current.0 || target.1 > current.1 + 1 {
        return Err(format!(
            "{context}; upgrade one minor release at a time (v{}.{}.x first)",
            current.0,
            current.1 + 1
        ));
    }
    Ok(())
}

/// The plan of an upgrade to `to` with `image`, from what each node runs
/// (`running`: node → version) and what an earlier run recorded (`done`:
/// target → `<to>: <kind>`). Pure: no I/O.
pub fn plan(
    cluster: &Cluster,
    running: &BTreeMap<String, String>,
    done: &BTreeMap<String, String>,
    to: &str,
    image: &str,
    drain_secs: u64,
) -> Vec<Action> {
    let moves = Moves {
        to,
        before: &|_| {
            vec![
                Step::Cordon,
                Step::Drain {
                    timeout_secs: drain_secs,
                },
            ]
        },
        upgrade: &|from| Step::UpgradeTalos {
            from: from.to_owned(),
            to: to.to_owned(),
            image: image.to_owned(),
        },
        awaited: Step::AwaitUpgraded { version: to.to_owned() },
    };
    rolling(cluster, running, done, &moves)
}

/// Node name → the version it runs.
pub type Versions = BTreeMap<String, String>;
/// Target → the progress an earlier run recorded (`<to>: <kind>`).
pub type Recorded = BTreeMap<String, String>;

/// How a node moves to the target in a [`rolling`] upgrade.
pub struct Moves<'a> {
    /// The target version.
    pub to: &'a str,
    /// What comes before the upgrade on a node of this role (cordon, drain).
    pub before: &'a dyn Fn(Role) -> Vec<Step>,
    /// The upgrade itself, from the version the node runs.
    pub upgrade: &'a dyn Fn(&str) -> Step,
    /// The wait until the node runs the target and is healthy again.
    pub awaited: Step,
}

/// A rolling upgrade to `moves.to` (pure): an etcd snapshot when control planes
/// move, then the control planes, then the workers (their order; the
/// executor takes control planes one at a time and workers in batches).
/// Each node gets `before`, the upgrade, the wait and an uncordon. A node
/// already at `to` is skipped (or only finished, when a run cut short had
/// started it); a node whose upgrade was recorded as sent is awaited and
/// never sent it again.
pub fn rolling(cluster: &Cluster, running: &Versions, done: &Recorded, moves: &Moves) -> Vec<Action> {
    let to = moves.to;
    let recorded = |t: &str, step: &Step| done.get(t) == Some(&progress(to, step));
    let awaited = &moves.awaited;
    let mut out = Vec::new();
    let node_steps = |role: Role, out: &mut Vec<Action>| {
        for n in cluster.nodes.iter().filter(|n| n.role == role) {
            let from = running.get(&n.name).map_or("", String::as_str);
            let ours = done.get(&n.name).is_some_and(|p| p.starts_with(&format!("{to}: ")));
            let finished = recorded(&n.name, &Step::Uncordon);
            let steps: Vec<Step> = if from == to {
                // Upgraded already; a run cut short after the reboot still uncordons it.
                if ours && !finished {
                    vec![awaited.clone(), Step::Uncordon]
                } else {
                    vec![]
                }
            } else if recorded(&n.name, &(moves.upgrade)(from)) || recorded(&n.name, awaited) {
                // The upgrade was sent: wait for it, never send it twice.
                vec![awaited.clone(), Step::Uncordon]
            } else {
                let mut steps = (moves.before)(role);
                steps.extend([(moves.upgrade)(from), awaited.clone(), Step::Uncordon]);
                steps
            };
            out.extend(steps.into_iter().map(|s| Action::new(PHASE, &n.name, s)));
        }
    };
    node_steps(Role::Controlplane, &mut out);
    let upgrade_kind = std::mem::discriminant(&(moves.upgrade)(""));
    let control_planes_move = out.iter().any(|a| std::mem::discriminant(&a.step) == upgrade_kind);
    let snapshot = Step::Snapshot {
        node: cluster
            .control_planes()
            .next()
            .map(|n| n.name.clone())
            .unwrap_or_default(),
    };
    if control_planes_move && !recorded(CLUSTER, &snapshot) {
        out.insert(0, Action::new(PHASE, CLUSTER, snapshot));
    }
    node_steps(Role::Worker, &mut out);
    out
}

/// What earlier runs of the upgrade recorded.
pub async fn recorded(ctx: &RunCtx) -> Recorded {
    let store = ctx.state.lock().await;
    store
        .state()
        .phases
        .get(PHASE)
        .map(|p| p.steps.clone())
        .unwrap_or_default()
}

/// Whether an interrupted run to `to` had started on `node` and not finished it.
pub fn in_flight(done: &Recorded, to: &str, node: &str) -> bool {
    done.get(node)
        .is_some_and(|p| p.starts_with(&format!("{to}: ")) && !p.ends_with(": uncordon"))
}

/// `done`, with the Upgrade counted as sent on each node whose last record
/// is the drain right before it, that does not run `to` yet, and whose
/// MachineStatus says an upgrade sequence runs (stage Upgrading or
/// Rebooting) or that does not answer (rebooting): the run that recorded
/// the drain may have been killed inside its Upgrade call, after Talos took
/// it. Such a node is awaited, never sent a second Upgrade. A node that
/// answers Running with the old version did not take it.
async fn with_upgrades_under_way(
    cluster: &Cluster,
    creds: &crate::talos::TalosCredentials,
    running: &Versions,
    mut done: Recorded,
    to: &str,
) -> Recorded {
    use crate::talos::proto::definitions::enums::RuntimeMachineStage as Stage;
    let drained = format!("{to}: drain");
    for n in &cluster.nodes {
        if done.get(&n.name) != Some(&drained) || running.get(&n.name).is_some_and(|v| v == to) {
            continue;
        }
        let stage = match super::talos_client(n, creds, std::time::Duration::ZERO) {
            Ok(c) => c.machine_stage().await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        if matches!(
            stage,
            Ok(Stage::MachineStageUpgrading | Stage::MachineStageRebooting) | Err(_)
        ) {
            let sent = Step::UpgradeTalos {
                from: String::new(),
                to: to.to_owned(),
                image: String::new(),
            };
            done.insert(n.name.clone(), progress(to, &sent));
        }
    }
    done
}

/// The upgrade, as a phase of the engine.
pub struct TalosUpgrade {
    pub env: Arc<Env>,
    pub to: String,
    pub image: String,
    pub batch: Batch,
    pub drain_secs: u64,
}

#[async_trait::async_trait]
impl Phase for TalosUpgrade {
    async fn plan(&self, ctx: &RunCtx) -> Result<Vec<Action>, PhaseError> {
        let cluster = &self.env.cluster;
        let done = recorded(ctx).await;
        let seen = health::observe(
            cluster,
            self.env.creds().map_err(|e| execute::refusal(PHASE, e))?,
            &self.env.kube,
        )
        .await;
        // A node an interrupted run was upgrading may be rebooting: it is awaited, not refused.
        let in_flight = |name: &str| in_flight(&done, &self.to, name);
        let checked: Vec<&str> = cluster
            .nodes
            .iter()
            .map(|n| n.name.as_str())
            .filter(|n| !in_flight(n))
            .collect();
        let mut problems = seen.problems(cluster, &checked);
        if checked.len() == cluster.nodes.len() {
            problems.extend(
                seen.problems(cluster, &[])
                    .into_iter()
                    .filter(|p| p.starts_with("etcd member")),
            );
        }
        health::refuse_unless_healthy(PHASE, "upgrade", &problems)?;
        let running: BTreeMap<String, String> = seen
            .nodes
            .iter()
            .filter_map(|(n, s)| s.talos.as_ref().ok().map(|v| (n.clone(), v.clone())))
            .collect();
        for (node, from) in &running {
            if from != &self.to {
                check_target("--talos", from, &self.to)
                    .map_err(|e| execute::refusal(PHASE, format!("{node}: {e}; nothing was changed")))?;
            }
        }
        let done = with_upgrades_under_way(
            cluster,
            self.env.creds().map_err(|e| execute::refusal(PHASE, e))?,
            &running,
            done,
            &self.to,
        )
        .await;
        Ok(plan(cluster, &running, &done, &self.to, &self.image, self.drain_secs))
    }

    async fn apply(&self, ctx: &RunCtx, plan: &[Action]) -> Result<(), PhaseError> {
        execute::apply(ctx, &self.env, PHASE, &self.to, plan, self.batch).await
    }

    fn id(&self) -> (&'static str, &'static str) {
        (PHASE, "Upgrade: Talos OS")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::day2::testing::kinds;

    fn cluster() -> Cluster {
        crate::day2::testing::cluster("simulated.toml")
    }

    fn running(c: &Cluster, v: &str) -> BTreeMap<String, String> {
        c.nodes.iter().map(|n| (n.name.clone(), v.to_owned())).collect()
    }

    #[test]
    fn control_planes_after_a_snapshot_then_workers_each_drained() {
        let c = cluster();
        let p = plan(
            &c,
            &running(&c, "v1.13.9"),
            &BTreeMap::new(),
            "v1.14.0",
            "img:v1.14.0",
            60,
        );
        let k = kinds(&p);
        assert_eq!(k[0], "cluster snapshot");
        assert_eq!(
            &k[1..6],
            [
                "cp-1 cordon",
                "cp-1 drain",
                "cp-1 upgrade-talos",
                "cp-1 await-upgraded",
                "cp-1 uncordon"
            ]
        );
        assert_eq!(k.len(), 1 + 5 * c.nodes.len());
        let first_worker = k.iter().position(|s| s.starts_with("worker")).unwrap();
        assert!(k[..first_worker].iter().all(|s| !s.starts_with("worker")));
        let sizes = |b: Batch| -> Vec<usize> { execute::stages(&c, &p, b.size(2)).iter().map(Vec::len).collect() };
        assert_eq!(
            sizes(Batch::Percent(100)),
            [1, 1, 1, 1, 2],
            "snapshot, 3 control planes alone, 2 workers together"
        );
        assert_eq!(
            sizes(Batch::Percent(50)),
            [1, 1, 1, 1, 1, 1],
            "50% of 2 workers: one at a time"
        );
    }

    #[test]
    fn a_resumed_upgrade_skips_upgraded_nodes_and_never_resends() {
        let c = cluster();
        let mut on = running(&c, "v1.13.9");
        on.insert("cp-1".into(), "v1.14.0".into());
        let mut done = BTreeMap::new();
        done.insert("cluster".to_owned(), "v1.14.0: snapshot".to_owned());
        done.insert("cp-1".to_owned(), "v1.14.0: uncordon".to_owned());
        // cp-2's Upgrade was sent, then the run was killed: it still runs the old version.
        done.insert("cp-2".to_owned(), "v1.14.0: upgrade-talos".to_owned());
        let k = kinds(&plan(&c, &on, &done, "v1.14.0", "img", 60));
        assert!(
            !k.iter().any(|s| s.starts_with("cp-1") || s.starts_with("cluster")),
            "{k:?}"
        );
        assert_eq!(&k[..2], ["cp-2 await-upgraded", "cp-2 uncordon"]);
        assert_eq!(k[2], "cp-3 cordon");
        // Everything at the target and recorded finished: nothing to do.
        let all = running(&c, "v1.14.0");
        let finished: BTreeMap<String, String> = c
            .nodes
            .iter()
            .map(|n| (n.name.clone(), "v1.14.0: uncordon".to_owned()))
            .collect();
        assert!(plan(&c, &all, &finished, "v1.14.0", "img", 60).is_empty());
        // A node upgraded by hand (no record) is left alone.
        assert!(plan(&c, &all, &BTreeMap::new(), "v1.14.0", "img", 60).is_empty());
    }

    #[test]
    fn batches_and_targets_are_checked() {
        assert_eq!("3".parse::<Batch>(), Ok(Batch::Count(3)));
        assert_eq!("10%".parse::<Batch>().unwrap().size(100), 10);
        assert_eq!("10%".parse::<Batch>().unwrap().size(3), 1);
        for bad in ["0", "0%", "x", "101%", "-1"] {
            assert!(bad.parse::<Batch>().is_err(), "{bad}");
        }
        assert!("0".parse::<Batch>().unwrap_err().contains("at least 1"));
        assert!(check_target("--talos", "v1.13.9", "v1.14.0").is_ok());
        assert!(check_target("--talos", "v1.13.9", "v1.13.10").is_ok());
        assert!(
            check_target("--talos", "v1.13.9", "1.14")
                .unwrap_err()
                .contains("not a version")
        );
        assert!(
            check_target("--talos", "v1.13.9", "v1.15.0")
                .unwrap_err()
                .contains("one minor")
        );
        assert!(
            check_target("--talos", "v1.13.9", "v1.12.0")
                .unwrap_err()
                .contains("downgrade")
        );
    }
}
