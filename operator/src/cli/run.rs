//! `image-factory run`: the whole factory on one machine (see [`crate::factory`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Input;
use crate::factory::{self, GitMode, Metrics, Options};
use crate::registry::ClientSettings;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

/// Flags of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// images.yaml and the source cache.
    #[command(flatten)]
    pub input: Input,
    /// The state folder.
    #[arg(long, default_value = "state")]
    pub state_dir: PathBuf,
    /// One pass: check every source, decide, start what is due, wait for the builds
    /// (up to --timeout), commit, exit: 0 nothing failed, 1 a build or a source failed.
    #[arg(long)]
    pub once: bool,
    /// Print what would be decided; write, commit and build nothing (one pass).
    #[arg(long)]
    pub dry_run: bool,
    /// With --once: the longest wait for builds in flight (e.g. 30m).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Replay Kargo Freight files (YAML/JSON) from this folder as updates.
    #[arg(long, value_name = "DIR")]
    pub freight_dir: Option<PathBuf>,
    /// Do not watch registries (with --freight-dir: updates come from Freight only).
    #[arg(long)]
    pub no_watch: bool,
    /// Commit state changes to the git repository holding the state folder.
    #[arg(long, conflicts_with = "dry_run")]
    pub commit: bool,
    /// Commit and push the current branch to its remote (rebasing on concurrent pushes).
    #[arg(long, conflicts_with = "dry_run")]
    pub push: bool,
    /// Builds at once, at most.
    #[arg(long, default_value_t = 4)]
    pub max_parallel: usize,
    /// Serve /metrics, /healthz and /readyz here (e.g. 127.0.0.1:9090).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Log format (stderr).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Registry settings file (mirrors, timeouts, budgets), as for `inspect`.
    #[arg(long, value_name = "FILE", env = "IMAGE_FACTORY_REGISTRY_SETTINGS")]
    pub registry_settings: Option<PathBuf>,
    /// How often images.yaml is checked for changes.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, hide = true)]
    pub config_check: Duration,
    /// Wait after a failed build attempt before the next one (doubled each time).
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    pub retry_backoff: Duration,
    /// Shift the factory's clock forward by the duration written in this file (e.g.
    /// `7d 1m`; re-read when it changes): rehearse a hold without waiting it out.
    #[arg(long, value_name = "FILE", hide = true)]
    pub clock_offset_file: Option<PathBuf>,
}

/// Runs the factory until SIGTERM/SIGINT (or one pass with `--once`/`--dry-run`).
pub fn run(args: RunArgs) -> ExitCode {
    let settings = match &args.registry_settings {
        Some(path) => match ClientSettings::from_file(path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(super::EXIT_ERROR);
            }
        },
        None => ClientSettings::default(),
    };
    let mut options = Options::new(args.input.file(), &args.state_dir);
    options.cache_dir = args.input.cache_dir.clone();
    options.watch_registry = !args.no_watch;
    options.freight_dir = args.freight_dir.clone();
    options.registry = settings;
    options.once = args.once || args.dry_run;
    options.dry_run = args.dry_run;
    options.timeout = args.timeout;
    options.git = match (args.commit, args.push) {
        (_, true) => GitMode::Push,
        (true, false) => GitMode::Commit,
        (false, false) => GitMode::Off,
    };
    options.max_parallel = args.max_parallel.max(1);
    options.retry_backoff = args.retry_backoff;
    options.clock_offset_file = args.clock_offset_file.clone();
    // Bars for long first runs, only for a person watching (text logs, a terminal).
    options.progress = args.log_format == LogFormat::Text
        && std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::io::IsTerminal::is_terminal(&std::io::stderr());
    options.config_check = args.config_check.max(Duration::from_millis(100));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(super::EXIT_ERROR);
        }
    };
    let dry_run = options.dry_run;
    let once = options.once;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        spawn_signal_handler(shutdown.clone());
        let metrics = Arc::new(Metrics::new());
        let server = match args.listen {
            Some(addr) => match factory::metrics::serve(addr, metrics.clone(), shutdown.clone()).await {
                Ok((bound, task)) => {
                    tracing::info!(%bound, "serving /metrics, /healthz, /readyz");
                    Some(task)
                }
                Err(e) => {
                    eprintln!("error: cannot listen on {addr}: {e}");
                    return ExitCode::from(super::EXIT_ERROR);
                }
            },
            None => None,
        };
        let result = factory::run(options, shutdown.clone(), metrics).await;
        shutdown.cancel();
        if let Some(task) = server {
            let _ = task.await;
        }
        match result {
            Ok(summary) => {
                if dry_run || once {
                    for line in &summary.decisions {
                        println!("{line}");
                    }
                    for p in &summary.problems {
                        println!("problem: {p}");
                    }
                    println!(
                        "{} decision(s), {} build(s) started, {} succeeded, {} failed attempt(s), {} given up{}",
                        summary.decisions.len(),
                        summary.triggered,
                        summary.succeeded,
                        summary.failed_attempts,
                        summary.failed,
                        if dry_run { " (dry run: nothing written)" } else { "" }
                    );
                    ExitCode::from(if dry_run { 0 } else { summary.exit_code() })
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(super::EXIT_ERROR)
            }
        }
    })
}

/// Cancels `token` on the first SIGTERM or SIGINT; a second one exits at once.
/// The handlers are installed before this returns (a signal during start-up is
/// not lost to the default action); must be called inside the runtime.
fn spawn_signal_handler(token: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "cannot handle SIGTERM/SIGINT: they stop the process at once");
            return;
        }
    };
    tokio::spawn(async move {
        for n in 0..2 {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            if n == 0 {
                tracing::info!("signal received: stopping after the current step");
                token.cancel();
            } else {
                eprintln!("second signal: exiting now");
                std::process::exit(130);
            }
        }
    });
}
