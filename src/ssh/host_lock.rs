//! A lock file on each host a run changes over SSH, the way k0sctl's lock
//! phase does it (k0sproject/k0sctl `phase/lock.go`): created exclusively
//! with this run's identity, its mtime refreshed every [`REFRESH`] while the
//! run lasts, removed at its end. Another run's file refreshed less than
//! [`STALE`] ago refuses the host; an older one, or one whose holder is a
//! gone process on this workstation, is stale and replaced. It lives in
//! `/run/lock`, a tmpfs: a reboot clears it.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::{ExecOpts, Session, shell_quote};

/// The lock file.
pub const PATH: &str = "/run/lock/bootstrap.lock";
/// How often a held lock's mtime is refreshed.
pub const REFRESH: Duration = Duration::from_secs(10);
/// A lock not refreshed for this long belongs to a run that is gone (k0sctl: 30 s).
pub const STALE: Duration = Duration::from_secs(30);

/// This process's holder identity: `user@host pid N since <start>`, the same
/// for every lock it takes.
pub fn identity() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let since = k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ");
        format!("{} since {since}", crate::holder::identity())
    })
}

/// Why a host's lock was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Who holds it (the file's content).
    pub holder: String,
    /// Seconds since it was last refreshed.
    pub age_secs: u64,
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "another bootstrap run works on this host: {} (its lock {PATH} was refreshed {} s ago; a lock not refreshed for {} s is stale); wait for that run to finish, or take the lock over with --force-unlock",
            self.holder,
            self.age_secs,
            STALE.as_secs()
        )
    }
}

/// Creates the file with `id` unless it exists (`set -C`: exclusive), then
/// reports `acquired`, or `held <age> <holder>`; `replace`: removes the
/// file first.
fn script(id: &str, replace: bool) -> String {
    let id = shell_quote(id);
    let rm = if replace {
        format!("rm -f {PATH}\n")
    } else {
        String::new()
    };
    format!(
        r#"mkdir -p /run/lock
{rm}if ( set -C; printf '%s\n' {id} > {PATH} ) 2>/dev/null; then echo acquired; exit 0; fi
holder=$(cat {PATH} 2>/dev/null || true)
if [ "$holder" = {id} ]; then touch {PATH}; echo acquired; exit 0; fi
echo "held $(( $(date +%s) - $(stat -c %Y {PATH} 2>/dev/null || date +%s) )) $holder"
"#
    )
}

/// What the lock script printed.
fn parse(stdout: &str) -> Result<Option<Held>, String> {
    let line = stdout.trim();
    if line == "acquired" {
        return Ok(None);
    }
    let rest = line
        .strip_prefix("held ")
        .ok_or_else(|| format!("unexpected answer of the lock script: {line:?}"))?;
    let (age, holder) = rest.split_once(' ').unwrap_or((rest, ""));
    Ok(Some(Held {
        holder: holder.to_owned(),
        age_secs: age.parse().unwrap_or(0),
    }))
}

fn opts(sudo: bool) -> ExecOpts {
    ExecOpts {
        sudo,
        timeout: Some(Duration::from_secs(30)),
        ..ExecOpts::default()
    }
}

async fn run(s: &Session, sudo: bool, id: &str, replace: bool) -> Result<Option<Held>, String> {
    let out = s
        .run(&script(id, replace), opts(sudo))
        .await
        .map_err(|e| e.to_string())?;
    parse(&out.stdout_str())
}

/// The host locks one run holds, and the task refreshing them.
#[derive(Default)]
pub struct HostLocks {
    held: Mutex<Vec<(Session, bool)>>,
    refresher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl HostLocks {
    /// No lock held yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Takes the lock of the host behind `s` (again: a no-op). A stale lock
    /// is replaced; a live one is refused, unless `take_over` says yes when
    /// asked (the operator's `--force-unlock` confirmation).
    pub async fn take(
        self: &Arc<Self>,
        s: &Session,
        sudo: bool,
        take_over: &(dyn Fn(&Held) -> bool + Sync),
    ) -> Result<(), String> {
        let id = identity();
        if let Some(held) = run(s, sudo, id, false).await? {
            let stale = held.age_secs >= STALE.as_secs() || crate::holder::dead_here(&held.holder);
            if !stale && !take_over(&held) {
                return Err(held.to_string());
            }
            tracing::warn!(host = %s.label(), holder = %held.holder, "replacing its lock ({} s old)", held.age_secs);
            if let Some(again) = run(s, sudo, id, true).await? {
                return Err(again.to_string()); // another run replaced it first
            }
        }
        lock(&self.held).push((s.clone(), sudo));
        self.start_refreshing();
        Ok(())
    }

    fn start_refreshing(self: &Arc<Self>) {
        let mut refresher = lock(&self.refresher);
        if refresher.is_some() {
            return;
        }
        let me = Arc::downgrade(self);
        *refresher = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH).await;
                let Some(locks) = me.upgrade() else { return };
                let held = lock(&locks.held).clone();
                on_each(held, &if_ours(&format!("touch {PATH}")), "refreshing its lock").await;
            }
        }));
    }

    /// Stops refreshing and removes every lock file this run still holds.
    pub async fn release(&self) {
        if let Some(task) = lock(&self.refresher).take() {
            task.abort();
        }
        let held = std::mem::take(&mut *lock(&self.held));
        on_each(
            held,
            &format!("{}; true", if_ours(&format!("rm -f {PATH}"))),
            "removing its lock",
        )
        .await;
    }
}

/// `cmd`, run only while the lock file still names this run.
fn if_ours(cmd: &str) -> String {
    format!(
        "[ \"$(cat {PATH} 2>/dev/null)\" = {} ] && {cmd}",
        shell_quote(identity())
    )
}

/// Runs `cmd` on each held host in turn; a failure is logged, not fatal.
async fn on_each(held: Vec<(Session, bool)>, cmd: &str, what: &str) {
    for (s, sudo) in held {
        if let Err(e) = s.run(cmd, opts(sudo)).await {
            tracing::warn!(host = %s.label(), "{what}: {e}");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_script_answers_are_read() {
        assert_eq!(parse("acquired\n"), Ok(None));
        assert_eq!(
            parse("held 3 op@ws2 pid 42 since 2026-12-02T08:00:00Z\n"),
            Ok(Some(Held {
                holder: "op@ws2 pid 42 since 2026-12-02T08:00:00Z".into(),
                age_secs: 3
            }))
        );
        assert!(parse("bash: oops").is_err());
        assert!(identity().contains(" pid ") && identity().contains(" since "));
        assert_eq!(identity(), identity(), "one identity per process");
        let s = script("a'b", true);
        assert!(
            s.contains("rm -f /run/lock/bootstrap.lock") && s.contains("set -C"),
            "{s}"
        );
    }
}
