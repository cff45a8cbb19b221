//! Finding the node's ComputerSystem on its BMC: the inventory's `system_id`,
//! the only member of `/redfish/v1/Systems`, or the member whose serial
//! number or NIC MAC matches the inventory when there are several.

use serde::Deserialize;
use serde_json::Value;

use super::{Client, ErrorKind, PowerState, Result};
use crate::inventory::MacAddr;

/// The collection of systems.
pub const SYSTEMS: &str = "/redfish/v1/Systems";

/// What this crate reads of a ComputerSystem.
#[derive(Debug, Clone)]
pub struct System {
    /// Its `@odata.id` (`/redfish/v1/Systems/<id>`).
    pub path: String,
    pub id: String,
    pub name: Option<String>,
    pub uuid: Option<String>,
    pub serial: Option<String>,
    pub power: PowerState,
    /// `ResetType@Redfish.AllowableValues` (empty when not advertised).
    pub reset_types: Vec<String>,
    /// The `ComputerSystem.Reset` action target.
    pub reset_target: String,
    pub boot: BootSettings,
    /// The system's VirtualMedia collection, when it has one.
    pub virtual_media: Option<String>,
    /// Managers (`Links.ManagedBy`), whose VirtualMedia some vendors use.
    pub managers: Vec<String>,
    /// `EthernetInterfaces` collection, when present.
    pub ethernet: Option<String>,
    /// ETag of the resource (for `If-Match` on PATCH).
    pub etag: Option<String>,
}

/// The boot override fields of a system.
#[derive(Debug, Clone, Default)]
pub struct BootSettings {
    pub target: Option<String>,
    pub enabled: Option<String>,
    /// Allowed override targets (empty when not advertised).
    pub allowed_targets: Vec<String>,
    /// Allowed `BootSourceOverrideEnabled` values (empty when not advertised).
    pub allowed_enabled: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawSystem {
    #[serde(rename = "@odata.id")]
    odata_id: Option<String>,
    id: String,
    name: Option<String>,
    #[serde(rename = "UUID")]
    uuid: Option<String>,
    serial_number: Option<String>,
    power_state: Option<String>,
    #[serde(default)]
    boot: Value,
    #[serde(default)]
    actions: Value,
    virtual_media: Option<Link>,
    ethernet_interfaces: Option<Link>,
    #[serde(default)]
    links: Value,
}

#[derive(Deserialize)]
struct Link {
    #[serde(rename = "@odata.id")]
    id: String,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

fn string(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::to_owned)
}

/// Reads one system.
pub async fn get(client: &Client, path: &str) -> Result<System> {
    let r = client.get(path, "reading the system").await?;
    let etag = r.etag();
    let raw: RawSystem = serde_json::from_value(r.body).map_err(|e| {
        client.err(ErrorKind::Protocol(format!(
            "{path} is not a Redfish ComputerSystem: {e}"
        )))
    })?;
    let reset = raw.actions.get("#ComputerSystem.Reset");
    let reset_target =
        string(reset.and_then(|a| a.get("target"))).unwrap_or_else(|| format!("{path}/Actions/ComputerSystem.Reset"));
    let boot = BootSettings {
        target: string(raw.boot.get("BootSourceOverrideTarget")),
        enabled: string(raw.boot.get("BootSourceOverrideEnabled")),
        allowed_targets: strings(raw.boot.get("BootSourceOverrideTarget@Redfish.AllowableValues")),
        allowed_enabled: strings(raw.boot.get("BootSourceOverrideEnabled@Redfish.AllowableValues")),
    };
    let managers = raw
        .links
        .get("ManagedBy")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|m| string(m.get("@odata.id"))).collect())
        .unwrap_or_default();
    Ok(System {
        path: raw.odata_id.unwrap_or_else(|| path.to_owned()),
        id: raw.id,
        name: raw.name,
        uuid: raw.uuid,
        serial: raw.serial_number.filter(|s| !s.trim().is_empty()),
        power: PowerState::parse(raw.power_state.as_deref()),
        reset_types: strings(reset.and_then(|a| a.get("ResetType@Redfish.AllowableValues"))),
        reset_target,
        boot,
        virtual_media: raw.virtual_media.map(|l| l.id),
        managers,
        ethernet: raw.ethernet_interfaces.map(|l| l.id),
        etag,
    })
}

/// The `@odata.id`s of a collection's members.
pub async fn members(client: &Client, path: &str, step: &str) -> Result<Vec<String>> {
    let r = client.get(path, step).await?;
    let members = r.body.get("Members").and_then(Value::as_array).ok_or_else(|| {
        client.err(ErrorKind::Protocol(format!(
            "{path} is not a Redfish collection (no Members)"
        )))
    })?;
    Ok(members.iter().filter_map(|m| string(m.get("@odata.id"))).collect())
}

/// The MAC addresses of a system's NICs.
pub async fn macs(client: &Client, sys: &System) -> Result<Vec<MacAddr>> {
    let Some(coll) = &sys.ethernet else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for nic in members(client, coll, "listing network interfaces").await? {
        let r = client.get(&nic, "reading a network interface").await?;
        for key in ["MACAddress", "PermanentMACAddress"] {
            if let Some(mac) = r.body.get(key).and_then(Value::as_str).and_then(|m| m.parse().ok())
                && !out.contains(&mac)
            {
                out.push(mac);
            }
        }
    }
    Ok(out)
}

/// Finds the node's system: `system_id` from the inventory, else the only
/// system, else the one matching the inventory's serial number or `mac`.
pub async fn discover(client: &Client, mac: Option<MacAddr>) -> Result<System> {
    let bmc = client.bmc();
    if let Some(id) = &bmc.system_id {
        let path = if id.starts_with('/') {
            id.clone()
        } else {
            format!("{SYSTEMS}/{id}")
        };
        return get(client, &path).await;
    }
    let paths = members(client, SYSTEMS, "listing systems").await?;
    match paths.len() {
        0 => Err(client.err(ErrorKind::Protocol("the BMC lists no systems".into()))),
        1 => get(client, &paths[0]).await,
        n => {
            if bmc.serial.is_none() && mac.is_none() {
                return Err(client.err(ErrorKind::Config(format!(
                    "the BMC has {n} systems ({}): set `system_id`, `serial` in [bmc] or the node's `mac` to choose",
                    paths.join(", ")
                ))));
            }
            let mut found = Vec::new();
            for p in &paths {
                let sys = get(client, p).await?;
                let by_serial = bmc
                    .serial
                    .as_ref()
                    .is_some_and(|s| sys.serial.as_deref().is_some_and(|g| g.trim() == s.trim()));
                let by_mac = match mac {
                    Some(m) if !by_serial => macs(client, &sys).await?.contains(&m),
                    _ => false,
                };
                if by_serial || by_mac {
                    found.push(sys);
                }
            }
            let what = match (&bmc.serial, mac) {
                (Some(s), Some(m)) => format!("serial {s} or MAC {m}"),
                (Some(s), None) => format!("serial {s}"),
                (None, Some(m)) => format!("MAC {m}"),
                (None, None) => unreachable!("checked above"),
            };
            match found.len() {
                1 => Ok(found.remove(0)),
                0 => Err(client.err(ErrorKind::Config(format!(
                    "none of the BMC's {n} systems ({}) has {what}",
                    paths.join(", ")
                )))),
                _ => Err(client.err(ErrorKind::Config(format!(
                    "several systems match {what}: {}; set `system_id` in [bmc]",
                    found.iter().map(|s| s.id.as_str()).collect::<Vec<_>>().join(", ")
                )))),
            }
        }
    }
}
