//! Log set-up: `tracing` to stderr, level from `-v`/`-q` or `RUST_LOG`.

use tracing_subscriber::EnvFilter;

use crate::cli::{Global, Output};

/// stderr, written with the spinners hidden and redrawn below the line.
struct StderrAboveSpinners;

impl std::io::Write for StderrAboveSpinners {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        crate::engine::progress::multi().suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

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
        .with_writer(|| StderrAboveSpinners)
        .with_target(false);
    let _ = match global.output {
        Output::Json => builder.json().try_init(),
        Output::Text => builder.without_time().try_init(),
    };
}
