//! Talos machine API client: one gRPC connection per node, dialled directly.
//!
//! - [`TalosClient::maintenance`] talks to a fresh node in maintenance mode
//!   (TLS without a client certificate; the throwaway server certificate is
//!   accepted and its SPKI SHA-256 fingerprint returned for display).
//! - [`TalosClient::configured`] uses mTLS with the talosconfig credentials,
//!   the server verified against the OS CA.
//!
//! Every call has a deadline, UNAVAILABLE (node rebooting) is retried with
//! backoff, every response message's `metadata.error` is checked, and errors
//! name the node and the RPC ([`TalosError`]).

mod client;
mod credentials;
mod error;
mod etcd;
mod kubeconfig;
mod probe;
mod resources;
mod retry;
mod tls;

pub use client::{CallPolicy, TalosClient};
pub use credentials::TalosCredentials;
pub use error::TalosError;
pub use etcd::{SnapshotInfo, is_member, not_members};
pub use kubeconfig::unpack_kubeconfig;
pub use probe::{Expect, Seen, probe, probe_expecting, probe_keeping};
pub use resources::SystemInformation;
pub use tls::{maintenance_tls_config, mtls_config, spki_sha256};

/// Code generated from `talos/proto/` by `build.rs` (protox + tonic-prost-build):
/// prost messages, the tonic client and (for the xtask simulator) the server.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    /// `google.rpc` (Status).
    pub mod google {
        /// `google.rpc.Status`.
        pub mod rpc {
            include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
        }
    }
    /// Talos `common` package: `Metadata`, `Data`.
    pub mod common {
        include!(concat!(env!("OUT_DIR"), "/common.rs"));
    }
    /// Talos `machine` package: `MachineService` messages, client and server.
    pub mod machine {
        include!(concat!(env!("OUT_DIR"), "/machine.rs"));
    }
    /// COSI (`cosi.resource`): the `State` service (Get, List, Watch) and resources.
    pub mod cosi {
        /// `cosi.resource`: State service, Resource, Metadata, Spec.
        pub mod resource {
            include!(concat!(env!("OUT_DIR"), "/cosi.resource.rs"));
            /// `cosi.resource.meta`: ResourceDefinitionSpec, NamespaceSpec.
            pub mod meta {
                include!(concat!(env!("OUT_DIR"), "/cosi.resource.meta.rs"));
            }
        }
    }
    /// Talos resource spec messages (`talos.resource.definitions.*`).
    pub mod definitions {
        /// `talos.resource.definitions.hardware`: SystemInformationSpec.
        pub mod hardware {
            include!(concat!(env!("OUT_DIR"), "/talos.resource.definitions.hardware.rs"));
        }
        /// `talos.resource.definitions.block`: DiskSpec.
        pub mod block {
            include!(concat!(env!("OUT_DIR"), "/talos.resource.definitions.block.rs"));
        }
        /// `talos.resource.definitions.runtime`: MachineStatusSpec.
        pub mod runtime {
            include!(concat!(env!("OUT_DIR"), "/talos.resource.definitions.runtime.rs"));
        }
        /// `talos.resource.definitions.enums`: RuntimeMachineStage.
        pub mod enums {
            include!(concat!(env!("OUT_DIR"), "/talos.resource.definitions.enums.rs"));
        }
    }
}

/// The Talos API port on every node.
pub const TALOS_API_PORT: u16 = 50000;

/// Maximum gRPC message size Talos uses (32 MiB).
pub const MAX_MESSAGE_SIZE: usize = 32 * 1024 * 1024;
