//! Power: state, `ComputerSystem.Reset` with only the reset types the system
//! advertises, and waiting (with a deadline) for the change to land, since
//! BMCs apply power changes asynchronously.

use std::fmt;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;
use tracing::{debug, info};

use super::{Client, ErrorKind, Result, System, system, task};

/// A system's `PowerState`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PowerState {
    On,
    Off,
    PoweringOn,
    PoweringOff,
    Paused,
    /// Absent or not a known value.
    Unknown(String),
}

impl PowerState {
    /// From the Redfish string.
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("On") => Self::On,
            Some("Off") => Self::Off,
            Some("PoweringOn") => Self::PoweringOn,
            Some("PoweringOff") => Self::PoweringOff,
            Some("Paused") => Self::Paused,
            Some(other) => Self::Unknown(other.to_owned()),
            None => Self::Unknown("(not reported)".into()),
        }
    }
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::On => f.write_str("On"),
            Self::Off => f.write_str("Off"),
            Self::PoweringOn => f.write_str("PoweringOn"),
            Self::PoweringOff => f.write_str("PoweringOff"),
            Self::Paused => f.write_str("Paused"),
            Self::Unknown(s) => f.write_str(s),
        }
    }
}

/// `ComputerSystem.Reset` types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetType {
    On,
    ForceOn,
    ForceOff,
    GracefulShutdown,
    GracefulRestart,
    ForceRestart,
    PowerCycle,
    PushPowerButton,
    Nmi,
}

impl ResetType {
    /// The Redfish name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::On => "On",
            Self::ForceOn => "ForceOn",
            Self::ForceOff => "ForceOff",
            Self::GracefulShutdown => "GracefulShutdown",
            Self::GracefulRestart => "GracefulRestart",
            Self::ForceRestart => "ForceRestart",
            Self::PowerCycle => "PowerCycle",
            Self::PushPowerButton => "PushPowerButton",
            Self::Nmi => "Nmi",
        }
    }
}

impl fmt::Display for ResetType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long and how often to wait for power changes.
#[derive(Debug, Clone, Copy)]
pub struct Wait {
    /// Give up after this long.
    pub timeout: Duration,
    /// Time between two reads of the state.
    pub interval: Duration,
}

impl Default for Wait {
    /// Two minutes, polling every second: BMCs take seconds to tens of seconds.
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(120),
            interval: Duration::from_secs(1),
        }
    }
}

/// What a power command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The system was already in the wanted state.
    Unchanged(PowerState),
    /// It was reset with this type and reached the wanted state.
    Done(ResetType),
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unchanged(s) => write!(f, "already {s}"),
            Self::Done(t) => write!(f, "{t} done"),
        }
    }
}

/// The system's power state, read now.
pub async fn state(client: &Client, sys: &System) -> Result<PowerState> {
    Ok(system::get(client, &sys.path).await?.power)
}

/// True when the system advertises `t` (or advertises nothing, in which
/// case the BMC decides).
pub fn advertised(sys: &System, t: ResetType) -> bool {
    sys.reset_types.is_empty() || sys.reset_types.iter().any(|a| a == t.as_str())
}

/// The first of `prefs` the system advertises.
fn pick(client: &Client, sys: &System, prefs: &[ResetType], what: &str) -> Result<ResetType> {
    prefs.iter().copied().find(|t| advertised(sys, *t)).ok_or_else(|| {
        client.err(ErrorKind::Unsupported(format!(
            "system {} offers no reset type to {what} (it allows {})",
            sys.id,
            sys.reset_types.join(", ")
        )))
    })
}

/// Sends `ComputerSystem.Reset`, after the identity check and only with a
/// type the system advertises; a 202 is followed to the end of its task.
pub async fn reset(client: &Client, sys: &System, t: ResetType) -> Result<()> {
    client.check_identity(sys)?;
    if !advertised(sys, t) {
        return Err(client.err(ErrorKind::Unsupported(format!(
            "system {} does not offer ResetType {t} (it allows {})",
            sys.id,
            sys.reset_types.join(", ")
        ))));
    }
    info!(node = client.node(), bmc = client.bmc_url(), system = %sys.id, reset = %t, "resetting");
    let step = format!("ComputerSystem.Reset {t}");
    let r = client
        .post(&sys.reset_target, &json!({ "ResetType": t.as_str() }), &step)
        .await
        .map_err(|e| match e.kind {
            ErrorKind::Http { status: 501, .. } => client.err(ErrorKind::Unsupported(format!(
                "the BMC does not implement ResetType {t} for system {} (HTTP 501)",
                sys.id
            ))),
            _ => e,
        })?;
    task::follow(client, &r, &step, Duration::from_secs(600)).await
}

/// Polls until the power state is `want`, or fails at the deadline naming
/// the last state seen.
pub async fn wait_for(client: &Client, sys: &System, want: &PowerState, wait: Wait) -> Result<()> {
    let deadline = Instant::now() + wait.timeout;
    loop {
        let now = state(client, sys).await?;
        debug!(node = client.node(), state = %now, want = %want, "power state");
        if &now == want {
            return Ok(());
        }
        if Instant::now() + wait.interval > deadline {
            return Err(client.err(ErrorKind::Timeout(format!(
                "system {} is still {now} after {:?}; it should be {want}",
                sys.id, wait.timeout
            ))));
        }
        tokio::time::sleep(wait.interval).await;
    }
}

/// Powers on (On, else ForceOn, else PushPowerButton) and waits for On.
/// Refuses on an identity mismatch, even when nothing would change.
pub async fn power_on(client: &Client, sys: &System, wait: Wait) -> Result<Change> {
    client.check_identity(sys)?;
    let now = state(client, sys).await?;
    if now == PowerState::On {
        return Ok(Change::Unchanged(now));
    }
    let t = pick(
        client,
        sys,
        &[ResetType::On, ResetType::ForceOn, ResetType::PushPowerButton],
        "power on",
    )?;
    reset(client, sys, t).await?;
    wait_for(client, sys, &PowerState::On, wait).await?;
    Ok(Change::Done(t))
}

/// Powers off hard (ForceOff, else GracefulShutdown) and waits for Off.
/// Refuses on an identity mismatch, even when nothing would change.
pub async fn power_off(client: &Client, sys: &System, wait: Wait) -> Result<Change> {
    client.check_identity(sys)?;
    let now = state(client, sys).await?;
    if now == PowerState::Off {
        return Ok(Change::Unchanged(now));
    }
    let t = pick(
        client,
        sys,
        &[ResetType::ForceOff, ResetType::GracefulShutdown],
        "power off",
    )?;
    reset(client, sys, t).await?;
    wait_for(client, sys, &PowerState::Off, wait).await?;
    Ok(Change::Done(t))
}

/// Power-cycles: PowerCycle or ForceRestart when advertised, else ForceOff,
/// wait for Off, then On. A system that is off is just powered on. Ends when
/// the system reads On again.
pub async fn power_cycle(client: &Client, sys: &System, wait: Wait) -> Result<Change> {
    client.check_identity(sys)?;
    let now = state(client, sys).await?;
    if now == PowerState::Off {
        return power_on(client, sys, wait).await;
    }
    let restart = [ResetType::PowerCycle, ResetType::ForceRestart]
        .into_iter()
        .find(|t| !sys.reset_types.is_empty() && advertised(sys, *t));
    match restart {
        Some(t) => {
            reset(client, sys, t).await?;
            wait_for(client, sys, &PowerState::On, wait).await?;
            Ok(Change::Done(t))
        }
        None => {
            power_off(client, sys, wait).await?;
            power_on(client, sys, wait).await
        }
    }
}
