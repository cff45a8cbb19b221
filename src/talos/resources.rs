//! The COSI resource API (`cosi.resource.State`, on the same port as the
//! machine API): the hardware identity and disks a node reports, readable in
//! maintenance mode. Requests carry namespace, canonical type and id, as
//! `talosctl get` sends them after resolving its aliases (facts in
//! /work/shared/talos/cosi-api.md).

use prost::Message;
use tonic::transport::Channel;

use super::MAX_MESSAGE_SIZE;
use super::client::TalosClient;
use super::error::TalosError;
use super::proto::cosi::resource::{GetRequest, ListRequest, Resource, state_client::StateClient};
use super::proto::definitions::block::DiskSpec;
use super::proto::definitions::enums::RuntimeMachineStage;
use super::proto::definitions::hardware::SystemInformationSpec;
use super::proto::definitions::runtime::MachineStatusSpec;
use super::retry::with_retry;
use crate::disks::Disk;

/// `SystemInformations.hardware.talos.dev` (namespace `hardware`, id `systeminformation`).
pub const SYSTEM_INFORMATION: (&str, &str, &str) =
    ("hardware", "SystemInformations.hardware.talos.dev", "systeminformation");
/// `MachineStatuses.runtime.talos.dev` (namespace `runtime`, id `machine`).
pub const MACHINE_STATUS: (&str, &str, &str) = ("runtime", "MachineStatuses.runtime.talos.dev", "machine");
/// `Disks.block.talos.dev` (namespace `runtime`), one resource per whole disk.
pub const DISKS: (&str, &str) = ("runtime", "Disks.block.talos.dev");

/// The machine's SMBIOS identity as the node reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemInformation {
    pub uuid: String,
    pub serial: String,
    pub manufacturer: String,
    pub product: String,
}

impl TalosClient {
    fn state(&self) -> StateClient<Channel> {
        StateClient::new(self.channel())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }

    fn spec<M: Message + Default>(&self, rpc: &'static str, r: &Resource) -> Result<M, TalosError> {
        let bytes = r.spec.as_ref().map(|s| s.proto_spec.as_slice()).unwrap_or_default();
        M::decode(bytes).map_err(|e| TalosError::Protocol {
            node: self.node().to_owned(),
            rpc,
            message: format!("the resource spec is not the expected message: {e}"),
        })
    }

    /// Gets one resource (`namespace`, `type`, `id`) and decodes its spec.
    async fn get_spec<M: Message + Default>(
        &self,
        rpc: &'static str,
        (namespace, r#type, id): (&str, &str, &str),
    ) -> Result<M, TalosError> {
        let request = GetRequest {
            namespace: namespace.into(),
            r#type: r#type.into(),
            id: id.into(),
            options: None,
        };
        let policy = self.policy().clone();
        let resource = with_retry(&policy, self.node(), rpc, policy.deadline, &[], || {
            let mut c = self.state();
            let request = request.clone();
            async move {
                c.get(request)
                    .await
                    .map(|r| r.into_inner().resource)
                    .map_err(|s| self.status(rpc, &s))
            }
        })
        .await?
        .ok_or_else(|| TalosError::Protocol {
            node: self.node().to_owned(),
            rpc,
            message: "the response holds no resource".into(),
        })?;
        self.spec(rpc, &resource)
    }

    /// Reads SystemInformation (UUID, serial, manufacturer, product).
    pub async fn system_information(&self) -> Result<SystemInformation, TalosError> {
        let s: SystemInformationSpec = self.get_spec("Get SystemInformation", SYSTEM_INFORMATION).await?;
        Ok(SystemInformation {
            uuid: s.uuid,
            serial: s.serial_number,
            manufacturer: s.manufacturer,
            product: s.product_name,
        })
    }

    /// The machine's stage (MachineStatus): `Upgrading` from the moment an
    /// upgrade sequence starts until its reboot, `Running` once booted.
    pub async fn machine_stage(&self) -> Result<RuntimeMachineStage, TalosError> {
        let s: MachineStatusSpec = self.get_spec("Get MachineStatus", MACHINE_STATUS).await?;
        Ok(RuntimeMachineStage::try_from(s.stage).unwrap_or(RuntimeMachineStage::MachineStageUnknown))
    }

    /// Lists the node's whole disks. Talos's install-disk rules decide which
    /// may be selected: a transport, not read-only, not a CD-ROM.
    pub async fn disks(&self) -> Result<Vec<Disk>, TalosError> {
        let rpc = "List Disks";
        let (namespace, r#type) = DISKS;
        let request = ListRequest {
            namespace: namespace.into(),
            r#type: r#type.into(),
            options: None,
        };
        let policy = self.policy().clone();
        let resources = with_retry(&policy, self.node(), rpc, policy.deadline, &[], || {
            let mut c = self.state();
            let request = request.clone();
            async move {
                let mut stream = c.list(request).await.map_err(|s| self.status(rpc, &s))?.into_inner();
                let mut out = Vec::new();
                while let Some(m) = stream.message().await.map_err(|s| self.status(rpc, &s))? {
                    out.extend(m.resource);
                }
                Ok(out)
            }
        })
        .await?;
        let mut disks = Vec::new();
        for r in &resources {
            let d: DiskSpec = self.spec(rpc, r)?;
            let id = r.metadata.as_ref().map(|m| m.id.as_str()).unwrap_or_default();
            disks.push(Disk {
                dev_path: if d.dev_path.is_empty() {
                    format!("/dev/{id}")
                } else {
                    d.dev_path
                },
                size: d.size,
                eligible: !d.transport.is_empty() && !d.readonly && !d.cdrom,
                model: d.model,
                serial: d.serial,
                wwid: d.wwid,
                transport: d.transport,
                rotational: d.rotational,
                readonly: d.readonly,
                cdrom: d.cdrom,
            });
        }
        Ok(disks)
    }
}
