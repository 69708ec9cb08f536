//! The `image-factory` binary: parses the command line, sets up logs, and hands it to the library.

use std::process::ExitCode;

use clap::Parser as _;
use image_factory::cli::{run::LogFormat, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli.default_log_level()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format() {
        LogFormat::Json => builder.json().init(),
        // Colour codes only for a person at a terminal, never into CI logs or files.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    image_factory::cli::run(cli)
}
