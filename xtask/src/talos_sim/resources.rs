//! The COSI resource API of a simulated node (`cosi.resource.State`, served
//! on :50000 beside `machine.MachineService`, in maintenance and configured
//! mode): Get, List and Watch of its SystemInformation, Disks and
//! MachineStatus (its stage: maintenance, running, upgrading, rebooting), plus the
//! ResourceDefinitions and Namespaces `talosctl get` resolves words with.
//! Facts: /work/shared/talos/cosi-api.md (Talos v1.13.9, cosi-project/runtime v1.14.1).

use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use bootstrap::talos::proto::cosi::resource::meta::{PrintColumn, ResourceDefinitionSpec};
use bootstrap::talos::proto::cosi::resource::state_server::State;
use bootstrap::talos::proto::cosi::resource::{
    self as pb, Event, EventType, GetRequest, GetResponse, ListRequest, ListResponse, Metadata, Resource, Spec,
    WatchRequest, WatchResponse,
};
use bootstrap::talos::proto::definitions::block::DiskSpec;
use bootstrap::talos::proto::definitions::enums::RuntimeMachineStage;
use bootstrap::talos::proto::definitions::hardware::SystemInformationSpec;
use bootstrap::talos::proto::definitions::runtime::{MachineStatusSpec, MachineStatusStatus};
use futures::{Stream, StreamExt};
use prost::Message;
use tonic::{Request, Response, Status};
use yaml_serde::{Mapping, Value};

use super::hardware::{SimDisk, SystemInfo};
use super::node::{SimNode, lock};
use super::service::{Need, Service};

/// `SystemInformations.hardware.talos.dev`, one resource `systeminformation` in namespace `hardware`.
pub const SYSTEM_INFORMATION: &str = "SystemInformations.hardware.talos.dev";
/// `Disks.block.talos.dev`, one resource per whole disk in namespace `runtime`.
pub const DISKS: &str = "Disks.block.talos.dev";
/// `MachineStatuses.runtime.talos.dev`, one resource `machine` in namespace `runtime`.
pub const MACHINE_STATUS: &str = "MachineStatuses.runtime.talos.dev";
const RESOURCE_DEFINITIONS: &str = "ResourceDefinitions.meta.cosi.dev";
const NAMESPACES: &str = "Namespaces.meta.cosi.dev";

type ListStream = Pin<Box<dyn Stream<Item = Result<ListResponse, Status>> + Send>>;
type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

/// The State service of one boot of one node.
pub(crate) struct Resources {
    inner: Service,
    node: Arc<SimNode>,
}

impl Resources {
    pub(crate) fn new(node: Arc<SimNode>, generation: u64) -> Self {
        Self {
            inner: Service::new(node.clone(), generation),
            node,
        }
    }

    /// Every resource of `namespace`/`r#type` the node holds, in id order;
    /// the access filter of `internal/app/resources/access.go` first.
    fn resources(&self, namespace: &str, r#type: &str) -> Result<Vec<Resource>, Status> {
        let definitions = definitions();
        // Types are looked up by their lower-case name in the ResourceDefinitions (access.go).
        let Some(def) = definitions
            .iter()
            .find(|d| d.resource_type.eq_ignore_ascii_case(r#type))
        else {
            return Err(Status::permission_denied(format!(
                "resource type {:?} is not supported",
                r#type
            )));
        };
        // The namespace must exist (access.go); Talos fills in no default (cosi-api.md).
        if !NAMESPACE_NAMES.contains(&namespace) {
            return Err(Status::permission_denied(format!(
                "namespace {namespace:?} is not supported"
            )));
        }
        // The store matches the canonical type name case-sensitively and the namespace exactly.
        if def.resource_type != r#type || def.default_namespace != namespace {
            return Ok(Vec::new());
        }
        let hw = self.node.hardware();
        let booted = self.node.booted_at();
        Ok(match r#type {
            SYSTEM_INFORMATION => vec![system_information(&hw.system, booted)],
            DISKS => {
                let mut disks: Vec<&SimDisk> = hw.disks.iter().collect();
                disks.sort_by(|a, b| a.id.cmp(&b.id));
                disks.into_iter().map(|d| disk(d, booted)).collect()
            }
            MACHINE_STATUS => vec![machine_status(&self.node, booted)],
            RESOURCE_DEFINITIONS => definitions.iter().map(|d| definition(d, booted)).collect(),
            NAMESPACES => NAMESPACE_NAMES.iter().map(|n| namespace_resource(n, booted)).collect(),
            _ => Vec::new(),
        })
    }

    /// After `method` was served: the injected certificate swap, if armed for it.
    fn after(&self, method: &'static str) {
        let swap = {
            let mut f = lock(&self.node.faults);
            let armed = f.swap_certificate_after == Some(method);
            if armed {
                f.swap_certificate_after = None;
            }
            armed
        };
        if swap {
            self.node.swap_certificate();
        }
    }
}

fn ts(t: SystemTime) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp::from(t))
}

fn resource(
    namespace: &str,
    r#type: &str,
    id: &str,
    owner: &str,
    at: SystemTime,
    proto: Vec<u8>,
    yaml: Mapping,
) -> Resource {
    Resource {
        metadata: Some(Metadata {
            namespace: namespace.into(),
            r#type: r#type.into(),
            id: id.into(),
            version: "1".into(),
            owner: owner.into(),
            phase: "running".into(),
            created: ts(at),
            updated: ts(at),
            finalizers: Vec::new(),
            labels: Default::default(),
            annotations: Default::default(),
        }),
        spec: Some(Spec {
            proto_spec: proto,
            yaml_spec: yaml_serde::to_string(&Value::Mapping(yaml)).unwrap_or_default(),
        }),
    }
}

/// YAML keys in the spec's field order, omitted when empty (as Talos's `omitempty`).
fn put(m: &mut Mapping, key: &str, v: impl Into<Value>, keep_empty: bool) {
    let v = v.into();
    let empty = match &v {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Sequence(s) => s.is_empty(),
        _ => false,
    };
    if keep_empty || !empty {
        m.insert(key.into(), v);
    }
}

/// The stage as machined sets it (`internal/app/machined/pkg/runtime/v1alpha1`:
/// Maintenance before a config, Upgrading during an upgrade sequence, Rebooting
/// once it reboots, Running otherwise), ready when running.
fn machine_status(node: &SimNode, at: SystemTime) -> Resource {
    let stage = {
        let st = lock(&node.state);
        match (st.config.is_some(), st.upgrading, st.rebooting) {
            (false, _, _) => RuntimeMachineStage::MachineStageMaintenance,
            (true, _, true) => RuntimeMachineStage::MachineStageRebooting,
            (true, true, false) => RuntimeMachineStage::MachineStageUpgrading,
            (true, false, false) => RuntimeMachineStage::MachineStageRunning,
        }
    };
    let ready = stage == RuntimeMachineStage::MachineStageRunning;
    let spec = MachineStatusSpec {
        stage: stage as i32,
        status: Some(MachineStatusStatus {
            ready,
            unmet_conditions: Vec::new(),
        }),
    };
    let mut y = Mapping::new();
    // The YAML spec names the stage in lower case without its prefix (`stage: upgrading`).
    let name = stage
        .as_str_name()
        .trim_start_matches("MACHINE_STAGE_")
        .to_ascii_lowercase();
    put(&mut y, "stage", name, true);
    let mut status = Mapping::new();
    put(&mut status, "ready", ready, true);
    put(&mut y, "status", Value::Mapping(status), true);
    resource(
        "runtime",
        MACHINE_STATUS,
        "machine",
        "runtime.MachineStatusController",
        at,
        spec.encode_to_vec(),
        y,
    )
}

fn system_information(s: &SystemInfo, at: SystemTime) -> Resource {
    let spec = SystemInformationSpec {
        manufacturer: s.manufacturer.clone(),
        product_name: s.product_name.clone(),
        version: s.version.clone(),
        serial_number: s.serial_number.clone(),
        uuid: s.uuid.clone(),
        wake_up_type: s.wake_up_type.clone(),
        sku_number: s.sku_number.clone(),
    };
    let mut y = Mapping::new();
    put(&mut y, "manufacturer", s.manufacturer.clone(), false);
    put(&mut y, "productName", s.product_name.clone(), false);
    put(&mut y, "version", s.version.clone(), false);
    put(&mut y, "serialnumber", s.serial_number.clone(), false);
    put(&mut y, "uuid", s.uuid.clone(), false);
    put(&mut y, "wakeUpType", s.wake_up_type.clone(), false);
    put(&mut y, "skuNumber", s.sku_number.clone(), false);
    resource(
        "hardware",
        SYSTEM_INFORMATION,
        "systeminformation",
        "hardware.SystemInfoController",
        at,
        spec.encode_to_vec(),
        y,
    )
}

fn disk(d: &SimDisk, at: SystemTime) -> Resource {
    let dev_path = format!("/dev/{}", d.id);
    let pretty = bootstrap::disks::pretty_size(d.size);
    let spec = DiskSpec {
        size: d.size,
        io_size: d.io_size,
        sector_size: d.sector_size,
        readonly: d.readonly,
        model: d.model.clone(),
        serial: d.serial.clone(),
        modalias: d.modalias.clone(),
        wwid: d.wwid.clone(),
        bus_path: d.bus_path.clone(),
        sub_system: d.sub_system.clone(),
        transport: d.transport.clone(),
        rotational: d.rotational,
        cdrom: d.cdrom,
        dev_path: dev_path.clone(),
        pretty_size: pretty.clone(),
        secondary_disks: Vec::new(),
        uuid: d.uuid.clone(),
        symlinks: d.symlinks.clone(),
    };
    let mut y = Mapping::new();
    put(&mut y, "dev_path", dev_path, false);
    put(&mut y, "size", d.size, true);
    put(&mut y, "pretty_size", pretty, false);
    put(&mut y, "io_size", d.io_size, true);
    put(&mut y, "sector_size", d.sector_size, true);
    put(&mut y, "readonly", d.readonly, true);
    put(&mut y, "cdrom", d.cdrom, false);
    put(&mut y, "model", d.model.clone(), false);
    put(&mut y, "serial", d.serial.clone(), false);
    put(&mut y, "modalias", d.modalias.clone(), false);
    put(&mut y, "wwid", d.wwid.clone(), false);
    put(&mut y, "uuid", d.uuid.clone(), false);
    put(&mut y, "bus_path", d.bus_path.clone(), false);
    put(&mut y, "sub_system", d.sub_system.clone(), false);
    put(&mut y, "transport", d.transport.clone(), false);
    put(&mut y, "rotational", d.rotational, false);
    let links: Vec<Value> = d.symlinks.iter().map(|s| Value::from(s.as_str())).collect();
    put(&mut y, "symlinks", Value::Sequence(links), false);
    resource(
        "runtime",
        DISKS,
        &d.id,
        "block.DisksController",
        at,
        spec.encode_to_vec(),
        y,
    )
}

const NAMESPACE_NAMES: &[&str] = &["hardware", "meta", "runtime"];

fn definitions() -> Vec<ResourceDefinitionSpec> {
    let def = |t: &str, display: &str, ns: &str, aliases: &[&str], columns: &[(&str, &str)]| {
        let mut all: Vec<String> = aliases.iter().map(|a| a.to_string()).collect();
        all.push(display.to_ascii_lowercase());
        all.push(t.split('.').next().unwrap_or(t).to_ascii_lowercase());
        all.dedup();
        ResourceDefinitionSpec {
            resource_type: t.into(),
            display_type: display.into(),
            default_namespace: ns.into(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            all_aliases: all,
            print_columns: columns
                .iter()
                .map(|(n, p)| PrintColumn {
                    name: n.to_string(),
                    json_path: p.to_string(),
                })
                .collect(),
            sensitivity: 0,
        }
    };
    vec![
        def(
            DISKS,
            "Disk",
            "runtime",
            &["disk"],
            &[
                ("Size", "{.pretty_size}"),
                ("Read Only", "{.readonly}"),
                ("Transport", "{.transport}"),
                ("Rotational", "{.rotational}"),
                ("WWID", "{.wwid}"),
                ("Model", "{.model}"),
                ("Serial", "{.serial}"),
            ],
        ),
        def(NAMESPACES, "Namespace", "meta", &["ns"], &[]),
        def(
            RESOURCE_DEFINITIONS,
            "ResourceDefinition",
            "meta",
            &["api-resources"],
            &[],
        ),
        def(
            MACHINE_STATUS,
            "MachineStatus",
            "runtime",
            &["ms"],
            &[("Stage", "{.stage}"), ("Ready", "{.status.ready}")],
        ),
        def(
            SYSTEM_INFORMATION,
            "SystemInformation",
            "hardware",
            &["systeminformation"],
            &[("Manufacturer", "{.manufacturer}"), ("Product Name", "{.productName}")],
        ),
    ]
}

fn definition(d: &ResourceDefinitionSpec, at: SystemTime) -> Resource {
    let mut y = Mapping::new();
    put(&mut y, "type", d.resource_type.clone(), true);
    put(&mut y, "displayType", d.display_type.clone(), true);
    put(&mut y, "defaultNamespace", d.default_namespace.clone(), true);
    let seq = |v: &[String]| Value::Sequence(v.iter().map(|s| Value::from(s.as_str())).collect());
    put(&mut y, "aliases", seq(&d.aliases), false);
    put(&mut y, "allAliases", seq(&d.all_aliases), false);
    resource(
        "meta",
        RESOURCE_DEFINITIONS,
        &d.resource_type.to_ascii_lowercase(),
        "",
        at,
        d.encode_to_vec(),
        y,
    )
}

fn namespace_resource(name: &str, at: SystemTime) -> Resource {
    let spec = pb::meta::NamespaceSpec {
        description: format!("{name} resources"),
    };
    let mut y = Mapping::new();
    put(&mut y, "description", spec.description.clone(), true);
    resource("meta", NAMESPACES, name, "", at, spec.encode_to_vec(), y)
}

#[tonic::async_trait]
impl State for Resources {
    type ListStream = ListStream;
    type WatchStream = WatchStream;

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        // Get, List and Watch need the reader role (machined.go); maintenance callers have it.
        self.inner
            .enter(&request, "cosi.State/Get", false, Need::Reader)
            .await?;
        let req = request.into_inner();
        let found = self
            .resources(&req.namespace, &req.r#type)?
            .into_iter()
            .find(|r| r.metadata.as_ref().is_some_and(|m| m.id == req.id));
        self.after("cosi.State/Get");
        match found {
            Some(r) => Ok(Response::new(GetResponse { resource: Some(r) })),
            // cosi-project/runtime pkg/state/protobuf/server/server.go: a missing resource is NotFound.
            None => Err(Status::not_found(format!(
                "resource {}({}/{}@undefined) doesn't exist",
                req.r#type, req.namespace, req.id
            ))),
        }
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<Self::ListStream>, Status> {
        self.inner
            .enter(&request, "cosi.State/List", false, Need::Reader)
            .await?;
        let req = request.into_inner();
        let mut items = self.resources(&req.namespace, &req.r#type)?;
        if let Some(q) = req.options.as_ref().and_then(|o| o.id_query.as_ref()) {
            items.retain(|r| id_matches(&q.regexp, r));
        }
        self.after("cosi.State/List");
        let stream = futures::stream::iter(items.into_iter().map(|r| Ok(ListResponse { resource: Some(r) })));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        self.inner
            .enter(&request, "cosi.State/Watch", false, Need::Reader)
            .await?;
        let req = request.into_inner();
        let mut items = self.resources(&req.namespace, &req.r#type)?;
        if let Some(id) = &req.id {
            items.retain(|r| r.metadata.as_ref().is_some_and(|m| &m.id == id));
        }
        let options = req.options.unwrap_or_default();
        let mut events: Vec<Result<WatchResponse, Status>> = Vec::new();
        if options.bootstrap_contents || req.id.is_some() {
            for r in items {
                events.push(Ok(WatchResponse {
                    event: vec![Event {
                        resource: Some(r),
                        event_type: EventType::Created as i32,
                        old: None,
                        error: None,
                        bookmark: None,
                    }],
                }));
            }
            // api_version 1 adds the BOOTSTRAPPED marker after the initial contents (cosi-api.md).
            if req.api_version >= 1 && req.id.is_none() {
                events.push(Ok(WatchResponse {
                    event: vec![Event {
                        resource: None,
                        event_type: EventType::Bootstrapped as i32,
                        old: None,
                        error: None,
                        bookmark: None,
                    }],
                }));
            }
        }
        // The hardware never changes while the node runs: the watch then stays open, silent.
        let stream = futures::stream::iter(events).chain(futures::stream::pending());
        Ok(Response::new(Box::pin(stream)))
    }
}

/// `IDQuery.regexp`: the subset a simulator needs (`^`/`$` anchors, literal text).
fn id_matches(regexp: &str, r: &Resource) -> bool {
    let Some(id) = r.metadata.as_ref().map(|m| m.id.as_str()) else {
        return false;
    };
    let (anchored_start, rest) = match regexp.strip_prefix('^') {
        Some(r) => (true, r),
        None => (false, regexp),
    };
    let (anchored_end, lit) = match rest.strip_suffix('$') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    match (anchored_start, anchored_end) {
        (true, true) => id == lit,
        (true, false) => id.starts_with(lit),
        (false, true) => id.ends_with(lit),
        (false, false) => id.contains(lit),
    }
}
