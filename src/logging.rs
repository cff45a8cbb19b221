//! Log set-up: `tracing` to stderr, level from `-v`/`-q` or `RUST_LOG`.

use tracing_subscriber::EnvFilter;

use crate::cli::{Global, Output};

/// Installs the global subscriber once; later calls are no-ops.
pub fn init(global: &Global) {
    let default = match (global.quiet, global.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    // kube-client logs every failed connection at ERROR; the waits that expect
    // them (the API coming up) report their own outcome, so keep it quiet
    // unless asked for debug output.
    let default = if global.verbose < 2 {
        format!("{default},kube_client=off")
    } else {
        default.to_owned()
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match global.output {
        Output::Json => builder.json().try_init(),
        Output::Text => builder.without_time().try_init(),
    };
}
