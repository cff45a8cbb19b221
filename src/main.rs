//! The `bootstrap` binary: parse arguments, dispatch, print the error, exit.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = bootstrap::cli::Cli::parse();
    bootstrap::logging::init(&cli.global);
    bootstrap::tls::install_crypto_provider();
    bootstrap::commands::run(cli)
}
