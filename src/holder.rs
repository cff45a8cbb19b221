//! Who holds a lock: `user@host pid N`, as the cluster Lease and the k3s
//! host lock files name their holder, and whether such a holder is a process
//! on this workstation that is gone (its lock is stale at once, as a lock
//! file with a dead pid is).

use std::path::Path;

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown-host".into())
}

/// Who this run is: `user@host pid N`.
pub fn identity() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    format!("{user}@{} pid {}", hostname(), std::process::id())
}

/// Whether `holder` names a run on this host whose process is gone (killed, crashed).
pub fn dead_here(holder: &str) -> bool {
    let Some((who, pid)) = holder.rsplit_once(" pid ") else {
        return false;
    };
    let pid = pid.split_whitespace().next().unwrap_or_default();
    let on_this_host = who.rsplit_once('@').is_some_and(|(_, host)| host == hostname());
    on_this_host
        && pid
            .parse::<u32>()
            .is_ok_and(|p| !Path::new(&format!("/proc/{p}")).exists())
}

/// `--force-unlock`: asks on stderr whether to take over `what`, held by
/// `holder` (`detail`: since when, how fresh); yes only when the cluster's
/// name is typed on stdin.
pub fn confirm_takeover(cluster: &str, what: &str, holder: &str, detail: &str) -> bool {
    use std::io::{BufRead, Write};
    eprint!(
        "{what} is locked by {holder} ({detail}). If that run is dead, type the cluster name to take the lock over: "
    );
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    line.trim() == cluster
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_is_dead_only_when_it_is_a_gone_process_of_this_host() {
        let me = identity();
        assert!(!dead_here(&me), "this process runs");
        let (who, _) = me.rsplit_once(" pid ").unwrap();
        assert!(dead_here(&format!("{who} pid 4294967295")), "no such pid here");
        assert!(dead_here(&format!("{who} pid 4294967295 since 2026-12-02T08:00:00Z")));
        assert!(
            !dead_here("someone@another-host pid 4294967295"),
            "another host's pid says nothing"
        );
        assert!(!dead_here("not a holder"));
    }
}
