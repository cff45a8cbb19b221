//! Command-line surface: argument types only. `main.rs` parses these and hands
//! them to [`crate::commands`]; nothing here does I/O.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `bootstrap`: from one TOML inventory to a running, GitOps-managed cluster.
#[derive(Debug, Parser)]
#[command(name = "bootstrap", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts.
#[derive(Debug, Args, Clone)]
pub struct Global {
    /// The inventory file (TOML).
    #[arg(short, long, global = true, env = "BOOTSTRAP_INVENTORY", value_name = "PATH")]
    pub inventory: Option<PathBuf>,
    /// Work on one cluster of a multi-cluster inventory (all when omitted).
    #[arg(long, global = true, value_name = "NAME")]
    pub cluster: Option<String>,
    /// Where state, secrets and artifacts live (default: `.bootstrap/` beside the inventory).
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less output: errors only.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Answer yes to confirmations of destructive steps.
    #[arg(long, global = true)]
    pub yes: bool,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bring every node and phase of the cluster(s) to the desired state.
    Up(UpArgs),
    /// Add nodes from the inventory to a running cluster.
    AddNode(AddNodeArgs),
    /// Disaster-recovery drill: snapshot, wipe, rebuild and restore.
    Reset(ResetArgs),
    /// Upgrade Talos OS, then Kubernetes, node by node: control planes one at a time, workers in batches.
    Upgrade(UpgradeArgs),
    /// Drain, take out of etcd, wipe and delete nodes of a running cluster.
    RemoveNode(RemoveNodeArgs),
    /// Take an etcd snapshot now, into the state dir (or --out), recorded with its sha256.
    Snapshot(SnapshotArgs),
    /// Render machine configs, k3s configs and install scripts into a directory.
    Render(RenderArgs),
    /// Print the actions `up` would take, phase by phase.
    Plan(UpArgs),
    /// Show observed state of nodes and phases.
    Status,
    /// Write the cluster's kubeconfig (from the state dir) to stdout or a file.
    Kubeconfig(KubeconfigArgs),
    /// Run a command on inventory nodes over SSH, concurrently.
    Exec(ExecArgs),
    /// Validate the inventory and print a one-line summary per cluster.
    Check,
    /// Read or switch nodes' power through their BMCs (Redfish): one line per node.
    Power(PowerArgs),
    /// Boot nodes into their installer through their BMCs and wait until they answer.
    Provision(ProvisionArgs),
    /// Answer network boots (proxyDHCP, TFTP, HTTP) of the inventory's Talos nodes until Ctrl-C.
    Serve(ServeArgs),
    /// Print shell completions.
    Completions {
        /// The shell to generate completions for.
        shell: clap_complete::Shell,
    },
}

/// Options of `up` and `plan`.
#[derive(Debug, Args, Clone)]
pub struct UpArgs {
    /// How many nodes are worked on at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Restrict the run to these nodes (comma-separated names).
    #[arg(long, value_delimiter = ',', value_name = "NODES")]
    pub limit: Vec<String>,
    /// Directory of pre-fetched artifacts (CRDs, charts, binaries) for air-gapped use.
    #[arg(long, value_name = "DIR")]
    pub artifacts: Option<PathBuf>,
    /// Merge the fetched kubeconfig into ~/.kube/config.
    #[arg(long)]
    pub merge_kubeconfig: bool,
    /// Accept and record SSH host keys of hosts never seen before.
    #[arg(long)]
    pub accept_new: bool,
    /// Boot nodes that have a BMC through it (Redfish) before phase -1.
    #[arg(long)]
    pub provision: bool,
    /// Refuse a Talos node in maintenance mode when neither the inventory
    /// (`uuid`, `serial`) nor its BMC says which machine it must be.
    #[arg(long)]
    pub require_identity: bool,
    /// Seconds to wait for each node, the API and workloads (default: 600-900 by step).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Take over the cluster-side lock (Lease kube-system/bootstrap) another
    /// run holds; asks for the cluster name, typed, first.
    #[arg(long)]
    pub force_unlock: bool,
}

/// Options of `add-node`.
#[derive(Debug, Args, Clone)]
pub struct AddNodeArgs {
    /// Names of inventory nodes to add.
    #[arg(required = true)]
    pub nodes: Vec<String>,
    #[command(flatten)]
    pub up: UpArgs,
}

/// Options of `reset`.
#[derive(Debug, Args, Clone)]
pub struct ResetArgs {
    /// Only these nodes (default: the whole cluster).
    #[arg(long, value_delimiter = ',', value_name = "NODES")]
    pub nodes: Vec<String>,
    /// Restore from this etcd snapshot instead of taking a fresh one.
    #[arg(long, value_name = "FILE")]
    pub snapshot: Option<PathBuf>,
    /// Options of the rebuild (`up`) that follows the wipe.
    #[command(flatten)]
    pub up: UpArgs,
}

/// Options of `upgrade`.
#[derive(Debug, Args, Clone)]
pub struct UpgradeArgs {
    /// Target Talos version (default: the inventory's `versions.talos`).
    #[arg(long, value_name = "VERSION")]
    pub talos: Option<String>,
    /// Target Kubernetes version: must be the inventory's `versions.kubernetes`
    /// (machine configs are rendered from it; the default).
    #[arg(long, value_name = "VERSION")]
    pub kubernetes: Option<String>,
    /// Target k3s version: must be the inventory's `versions.k3s` (its
    /// installs and the pinned binary are rendered from it; the default).
    #[arg(long, value_name = "VERSION")]
    pub k3s: Option<String>,
    /// Workers upgraded together: a count or a share of the workers (`10%`).
    #[arg(long, default_value = "1", value_name = "N|N%")]
    pub batch: String,
    #[command(flatten)]
    pub day2: Day2Args,
}

/// Options of `remove-node`.
#[derive(Debug, Args, Clone)]
pub struct RemoveNodeArgs {
    /// Names of the inventory nodes to remove.
    #[arg(required = true)]
    pub nodes: Vec<String>,
    #[command(flatten)]
    pub day2: Day2Args,
}

/// What `upgrade` and `remove-node` share.
#[derive(Debug, Args, Clone)]
pub struct Day2Args {
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds a drain may wait on PodDisruptionBudgets before the run stops, naming the node.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub drain_timeout: u64,
    /// Seconds one node may take to come back from its reboot.
    #[arg(long, default_value_t = 900, value_name = "SECS")]
    pub timeout: u64,
    /// How many nodes are worked on at once (within a batch).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Take over the cluster-side lock another run holds (asks for the cluster name).
    #[arg(long)]
    pub force_unlock: bool,
}

/// Options of `snapshot`.
#[derive(Debug, Args, Clone)]
pub struct SnapshotArgs {
    /// Write the snapshot here (0600) instead of the state dir's `snapshots/`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Keep only the newest N snapshots in the state dir (older ones deleted).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: Option<u32>,
}

/// Options of `render`.
#[derive(Debug, Args, Clone)]
pub struct RenderArgs {
    /// Output directory (one sub-directory per cluster).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Do not write: exit 1 with a diff when DIR differs from what would be rendered.
    #[arg(long)]
    pub check: bool,
    /// Import an existing Talos secrets bundle (`talosctl gen secrets` layout).
    #[arg(long, value_name = "FILE")]
    pub secrets: Option<PathBuf>,
}

/// Options of `kubeconfig`.
#[derive(Debug, Args, Clone)]
pub struct KubeconfigArgs {
    /// Write to this file (0600) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Options of `exec`.
#[derive(Debug, Args, Clone)]
pub struct ExecArgs {
    /// Only nodes of this role.
    #[arg(long, value_name = "ROLE")]
    pub role: Option<String>,
    /// Only these nodes (comma-separated names).
    #[arg(long, value_delimiter = ',', value_name = "NODES")]
    pub nodes: Vec<String>,
    /// How many hosts are worked on at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Seconds before the command is abandoned on a host.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Accept and record SSH host keys of hosts never seen before.
    #[arg(long)]
    pub accept_new: bool,
    /// The command to run (after `--`).
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Options of `power`.
#[derive(Debug, Args, Clone)]
pub struct PowerArgs {
    /// status, on, off (needs --yes) or cycle (needs --yes).
    #[arg(value_enum)]
    pub action: PowerAction,
    /// Only these nodes (comma-separated names; default: every node with a [bmc]).
    #[arg(long, value_delimiter = ',', value_name = "NODES")]
    pub nodes: Vec<String>,
    /// How many BMCs are worked on at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Seconds to wait for a power change to land (BMCs apply them asynchronously).
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

/// What `power` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PowerAction {
    /// Print each node's power state.
    Status,
    /// Power on and wait until the BMC reports On.
    On,
    /// Hard power off and wait until the BMC reports Off.
    Off,
    /// Power-cycle (or power on when off) and wait until the BMC reports On.
    Cycle,
}

/// Options of `provision`.
#[derive(Debug, Args, Clone)]
pub struct ProvisionArgs {
    /// Only these nodes (comma-separated names; default: every node with a [bmc]).
    #[arg(long, value_delimiter = ',', value_name = "NODES")]
    pub nodes: Vec<String>,
    /// How many BMCs are worked on at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Seconds to wait for a power change to land.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Seconds a powered node may take to answer on its provisioning endpoint.
    #[arg(long, default_value_t = 1800)]
    pub ready_timeout: u64,
}

/// Options of `serve`.
#[derive(Debug, Args, Clone, Default)]
pub struct ServeArgs {
    /// Also lease addresses, FIRST-LAST, inside the inventory's `dhcp_range` (no site DHCP server).
    #[arg(long, value_name = "RANGE")]
    pub dhcp: Option<String>,
    /// Directory of pre-fetched boot files (Talos kernel and initramfs) for air-gapped use.
    #[arg(long, value_name = "DIR")]
    pub artifacts: Option<PathBuf>,
    /// Serve these nodes' machine configs again (their one-shot URL was used).
    #[arg(long, value_delimiter = ',', value_name = "NODES")]
    pub reprovision: Vec<String>,
    /// Only HTTP (the virtual-media ISO, scripts, configs): no DHCP or TFTP,
    /// so no iPXE binaries and no privileged ports.
    #[arg(long)]
    pub http_only: bool,
}
