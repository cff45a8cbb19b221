//! `bootstrap`: takes a rack of bare-metal machines described in one TOML
//! inventory to a running, GitOps-managed Kubernetes cluster.
//!
//! Data flows one way: [`inventory`] (parse + validate) → render → plan →
//! execute through transports → state. See `ARCHITECTURE.md`.

pub mod artifacts;
pub mod cli;
pub mod commands;
pub mod day2;
pub mod disks;
pub mod engine;
pub mod fsutil;
pub mod holder;
pub mod inventory;
pub mod k8s;
pub mod logging;
pub mod phases;
pub mod provision;
pub mod redfish;
pub mod render;
pub mod secret;
pub mod serve;
pub mod sops;
pub mod ssh;
pub mod state;
pub mod talos;
pub mod tls;
