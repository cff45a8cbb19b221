//! Before a Talos node in maintenance mode gets its machine config (on a
//! control plane it holds the cluster's CA keys): read what the machine
//! reports over the resource API (SystemInformation: UUID, serial; its
//! Disks), compare the identity with what the inventory and the node's BMC
//! say, and resolve the install and data disk selectors against the disks the
//! node reported. Any doubt refuses the node; nothing is sent to it.

use crate::disks::{self, Disk};
use crate::inventory::Node;
use crate::redfish::{self, ClientOptions};
use crate::talos::{SystemInformation, TalosClient};

/// One expected identity value and who expects it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// `UUID` or `serial number`.
    pub field: &'static str,
    pub value: String,
    /// `the inventory`, `its BMC`.
    pub source: String,
}

/// What the machine is expected to report: the inventory's `uuid`/`serial`
/// (node or `[bmc]`), and what its BMC reports over Redfish when `bmc` is given.
pub fn expected(node: &Node, bmc: Option<&redfish::System>) -> Vec<Expected> {
    let mut out = Vec::new();
    let mut push = |field: &'static str, value: Option<&String>, source: &str| {
        if let Some(v) = value.map(|v| v.trim()).filter(|v| !v.is_empty())
            && !out
                .iter()
                .any(|e: &Expected| e.field == field && same(field, &e.value, v))
        {
            out.push(Expected {
                field,
                value: v.to_owned(),
                source: source.to_owned(),
            });
        }
    };
    push("UUID", node.uuid.as_ref(), "the inventory");
    push("serial number", node.serial.as_ref(), "the inventory");
    if let Some(b) = &node.bmc {
        push("UUID", b.uuid.as_ref(), "the inventory ([bmc])");
        push("serial number", b.serial.as_ref(), "the inventory ([bmc])");
    }
    if let Some(sys) = bmc {
        push("UUID", sys.uuid.as_ref(), "its BMC");
        push("serial number", sys.serial.as_ref(), "its BMC");
    }
    out
}

/// UUIDs compare case-insensitively, serial numbers exactly (both trimmed).
fn same(field: &str, a: &str, b: &str) -> bool {
    if field == "UUID" {
        a.trim().eq_ignore_ascii_case(b.trim())
    } else {
        a.trim() == b.trim()
    }
}

/// Every expected value the node does not report identically, both values printed.
pub fn compare(reported: &SystemInformation, expected: &[Expected]) -> Result<(), String> {
    let problems: Vec<String> = expected
        .iter()
        .filter_map(|e| {
            let got = match e.field {
                "UUID" => reported.uuid.trim(),
                _ => reported.serial.trim(),
            };
            if got.is_empty() {
                Some(format!(
                    "the node reports no {}, {} expects {}",
                    e.field, e.source, e.value
                ))
            } else if !same(e.field, got, &e.value) {
                Some(format!(
                    "the node reports {} {got}, {} expects {}",
                    e.field, e.source, e.value
                ))
            } else {
                None
            }
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "refusing: this is not the machine the inventory describes ({}); nothing was sent to it",
            problems.join("; ")
        ))
    }
}

/// The disks the machine was checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedDisks {
    /// Device path of the one disk the install selector selects.
    pub install: String,
}

/// Resolves the install disk and every data disk to exactly one reported disk
/// each, all different.
pub fn resolve_disks(node: &Node, reported: &[Disk]) -> Result<ResolvedDisks, String> {
    let refuse = |e: String| format!("refusing: {e}; nothing was sent to it");
    let sel = node
        .install_disk
        .as_ref()
        .ok_or_else(|| refuse("the inventory gives no install disk".into()))?;
    let install = disks::select_or_explain("install disk", sel, reported).map_err(refuse)?;
    let mut taken = vec![install.dev_path.clone()];
    for d in &node.data_disks {
        let what = format!("data disk `{}`", d.name);
        let found = disks::select_or_explain(&what, &d.selector, reported).map_err(refuse)?;
        if taken.contains(&found.dev_path) {
            return Err(refuse(format!(
                "the {what} selector ({}) selects {}, which another selector of the node already selects",
                disks::describe(&d.selector),
                found.dev_path
            )));
        }
        taken.push(found.dev_path.clone());
    }
    Ok(ResolvedDisks {
        install: install.dev_path.clone(),
    })
}

/// Reads the node's BMC's view of the machine (Redfish ComputerSystem), with
/// the BMC's own identity check against the inventory's `[bmc]` values.
async fn bmc_system(node: &Node) -> Result<Option<redfish::System>, CheckError> {
    if node.bmc.is_none() {
        return Ok(None);
    }
    let read = |e: redfish::Error| CheckError::Read(e.to_string());
    let client = redfish::Client::for_node(node, ClientOptions::default()).map_err(read)?;
    client.login().await.map_err(read)?;
    let result = async {
        let sys = redfish::system::discover(&client, node.mac).await?;
        client.check_identity(&sys)?;
        Ok::<_, redfish::Error>(sys)
    }
    .await;
    client.logout().await;
    result
        .map(Some)
        .map_err(|e| CheckError::Refused(format!("refusing: its BMC cannot vouch for it: {e}")))
}

/// Why a node was not cleared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// The node is not the machine, or its disks do not fit: refused.
    Refused(String),
    /// Reading the node or its BMC failed (unreachable, rebooting...).
    Read(String),
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(m) | Self::Read(m) => f.write_str(m),
        }
    }
}

/// A machine that passed [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub disks: ResolvedDisks,
    /// Without any expected identity the network was trusted: what to warn
    /// about when its config is sent.
    pub trusted: Option<String>,
}

/// Reads identity and disks through `client` (a maintenance-mode connection)
/// and checks them. Without any expected identity the network is trusted
/// (noted in [`Checked::trusted`]), or refused with `require_identity`.
pub async fn check(node: &Node, client: &TalosClient, require_identity: bool) -> Result<Checked, CheckError> {
    let bmc = bmc_system(node).await?;
    let expected = expected(node, bmc.as_ref());
    let info = client
        .system_information()
        .await
        .map_err(|e| CheckError::Read(e.to_string()))?;
    let mut trusted = None;
    if expected.is_empty() {
        let reported = format!("UUID {:?}, serial {:?}", info.uuid, info.serial);
        if require_identity {
            return Err(CheckError::Refused(format!(
                "refusing (--require-identity): the inventory gives no uuid or serial for it and it has no [bmc]; the machine at {} reports {reported}",
                client.addr().ip()
            )));
        }
        trusted = Some(format!(
            "no uuid, serial or [bmc] in the inventory: trusting the network that the machine at {} (reporting {reported}) is this node",
            client.addr().ip()
        ));
    } else {
        compare(&info, &expected).map_err(CheckError::Refused)?;
    }
    let reported = client.disks().await.map_err(|e| CheckError::Read(e.to_string()))?;
    let disks = resolve_disks(node, &reported).map_err(CheckError::Refused)?;
    Ok(Checked { disks, trusted })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(uuid: &str, serial: &str) -> SystemInformation {
        SystemInformation {
            uuid: uuid.into(),
            serial: serial.into(),
            ..SystemInformation::default()
        }
    }

    fn exp(field: &'static str, value: &str) -> Expected {
        Expected {
            field,
            value: value.into(),
            source: "the inventory".into(),
        }
    }

    #[test]
    fn a_mismatch_or_a_missing_value_prints_both_sides() {
        let want = [
            exp("UUID", "4c4c4544-0042-3510-8053-b4c04f4e3732"),
            exp("serial number", "CZ1234"),
        ];
        compare(&info("4C4C4544-0042-3510-8053-B4C04F4E3732", "CZ1234"), &want).unwrap();
        let e = compare(&info("11111111-0042-3510-8053-b4c04f4e3732", ""), &want).unwrap_err();
        assert!(
            e.contains("reports UUID 11111111-0042-3510-8053-b4c04f4e3732, the inventory expects 4c4c4544"),
            "{e}"
        );
        assert!(
            e.contains("reports no serial number, the inventory expects CZ1234"),
            "{e}"
        );
    }
}
