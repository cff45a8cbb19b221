//! `bootstrap`: takes a rack of bare-metal machines described in one TOML
//! inventory to a running, GitOps-managed Kubernetes cluster.
//!
//! Data flows one way: [`inventory`] (parse + validate) → render → plan →
//! execute through transports → state. See `ARCHITECTURE.md`.

pub mod cli;
pub mod commands;
pub mod fsutil;
pub mod inventory;
pub mod logging;
pub mod render;
pub mod secret;
pub mod tls;
