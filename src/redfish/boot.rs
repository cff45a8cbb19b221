//! Boot source override: boot the next time (Once, when the system offers
//! it) from the network, the virtual CD or the disk. PATCHes carry
//! `If-Match` with the system's ETag when it has one.

use std::fmt;
use std::time::Duration;

use serde_json::json;
use tracing::{debug, info};

use super::{Client, ErrorKind, Result, System, system, task};

/// Where the system boots from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootTarget {
    Pxe,
    Cd,
    Hdd,
}

impl BootTarget {
    /// The Redfish name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pxe => "Pxe",
            Self::Cd => "Cd",
            Self::Hdd => "Hdd",
        }
    }
}

impl fmt::Display for BootTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The override as set: target and how long it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub target: BootTarget,
    /// `Once` or `Continuous`.
    pub enabled: String,
}

/// Sets the boot override to `target`, `Once` when the system allows it
/// (or does not say), else `Continuous`, and reads it back.
pub async fn set_override(client: &Client, sys: &System, target: BootTarget) -> Result<Override> {
    client.check_identity(sys)?;
    let b = &sys.boot;
    if !b.allowed_targets.is_empty() && !b.allowed_targets.iter().any(|t| t == target.as_str()) {
        return Err(client.err(ErrorKind::Unsupported(format!(
            "system {} cannot boot from {target} (it allows {})",
            sys.id,
            b.allowed_targets.join(", ")
        ))));
    }
    let once = b.allowed_enabled.is_empty() || b.allowed_enabled.iter().any(|e| e == "Once");
    let enabled = if once { "Once" } else { "Continuous" };
    let body = json!({ "Boot": { "BootSourceOverrideTarget": target.as_str(), "BootSourceOverrideEnabled": enabled } });
    info!(node = client.node(), bmc = client.bmc_url(), system = %sys.id, %target, enabled, "setting boot override");
    let step = format!("setting the boot override to {target}");
    let r = match client.patch(&sys.path, &body, sys.etag.as_deref(), &step).await {
        // The ETag went stale between read and write: read again, retry once.
        Err(e) if matches!(e.kind, ErrorKind::Http { status: 412, .. }) => {
            let fresh = system::get(client, &sys.path).await?;
            client.patch(&sys.path, &body, fresh.etag.as_deref(), &step).await?
        }
        other => other?,
    };
    task::follow(client, &r, &step, Duration::from_secs(300)).await?;
    let after = system::get(client, &sys.path).await?;
    if after.boot.target.as_deref() != Some(target.as_str()) {
        return Err(client.err(ErrorKind::Protocol(format!(
            "system {} accepted the boot override to {target} but reads {}",
            sys.id,
            after.boot.target.as_deref().unwrap_or("no override target")
        ))));
    }
    // Some BMCs (sushy's fake driver among them) always read back
    // `Continuous`: the target is what matters for the next boot.
    let read_enabled = after.boot.enabled.unwrap_or_else(|| enabled.to_owned());
    if read_enabled != enabled {
        debug!(node = client.node(), asked = enabled, reads = %read_enabled, "override mode reads differently");
    }
    Ok(Override {
        target,
        enabled: read_enabled,
    })
}
