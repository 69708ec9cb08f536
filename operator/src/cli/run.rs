//! `image-factory run`: the whole factory on one machine (see [`crate::factory`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Input;
use crate::factory::{self, GitMode, Metrics, Options};
use crate::git::{self, Identity, SecretSource};
use crate::registry::ClientSettings;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

/// Flags `run` and `controller` share.
#[derive(Debug, clap::Args)]
pub struct FactoryArgs {
    /// images.yaml and the source cache.
    #[command(flatten)]
    pub input: Input,
    /// The state folder.
    #[arg(long, default_value = "state")]
    pub state_dir: PathBuf,
    /// Commit state changes to the git repository holding the state folder.
    #[arg(long)]
    pub commit: bool,
    /// Commit and push the current branch to its remote (rebasing on concurrent pushes).
    #[arg(long)]
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
    /// The configuration repository itself.
    #[command(flatten)]
    pub repository: RepositoryArgs,
}

/// Where the configuration repository comes from when the factory clones it itself
/// (`--repo`), instead of running in a checkout someone made.
#[derive(Debug, clap::Args)]
pub struct RepositoryArgs {
    /// Clone the configuration repository from this URL (`https://`, `ssh://`,
    /// `git://`, `file://` or a path) and work in that checkout: images.yaml (`-f`) and
    /// `--state-dir` are read there, state changes are committed and pushed to it
    /// (`--push` is implied; `--commit` alone commits without pushing), and the
    /// remote's new commits are taken in every `--git-sync`.
    #[arg(long, value_name = "URL", env = "IMAGE_FACTORY_REPO")]
    pub repo: Option<String>,
    /// The branch of `--repo` to work on.
    #[arg(long, default_value = "main", env = "IMAGE_FACTORY_BRANCH")]
    pub branch: String,
    /// Where the checkout of `--repo` lives (default: the cache folder's `config/`).
    #[arg(long, value_name = "DIR", env = "IMAGE_FACTORY_CHECKOUT")]
    pub checkout: Option<PathBuf>,
    /// How often the remote's new commits are taken in when there is nothing to push
    /// (with `--repo`, or `--push`).
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    pub git_sync: Duration,
    /// HTTPS token (or password) for `--repo`: `env:NAME` or `file:PATH` (a mounted
    /// Kubernetes Secret, re-read at each connection), never the token itself.
    #[arg(long, value_name = "REF", env = "IMAGE_FACTORY_GIT_TOKEN")]
    pub git_token: Option<SecretSource>,
    /// HTTPS user name sent with `--git-token`.
    #[arg(long, default_value = "x-access-token")]
    pub git_username: String,
    /// SSH private key file for an `ssh://` or `user@host:path` `--repo`.
    #[arg(long, value_name = "FILE", env = "IMAGE_FACTORY_GIT_SSH_KEY")]
    pub git_ssh_key: Option<PathBuf>,
    /// `known_hosts` file the SSH host key is checked against (default
    /// `~/.ssh/known_hosts`).
    #[arg(long, value_name = "FILE")]
    pub git_known_hosts: Option<PathBuf>,
    /// Commit author and committer, `Name <email>` (default `Image Factory
    /// <image-factory@localhost>`).
    #[arg(long, value_name = "IDENTITY", value_parser = parse_identity)]
    pub git_author: Option<Identity>,
}

/// `Name <email>` as git writes an identity.
fn parse_identity(s: &str) -> Result<Identity, String> {
    let bad = || format!("{s:?} is not `Name <email>`");
    let (name, rest) = s.split_once('<').ok_or_else(bad)?;
    let email = rest.strip_suffix('>').ok_or_else(bad)?.trim();
    let name = name.trim();
    if name.is_empty() || email.is_empty() {
        return Err(bad());
    }
    Ok(Identity {
        name: name.to_string(),
        email: email.to_string(),
    })
}

impl RepositoryArgs {
    /// The writer configuration for `--repo`, or `None` without it. `state_dir` must
    /// be relative (it is inside the checkout).
    fn config(&self, cache_dir: &Path, state_dir: &Path) -> Result<Option<git::Config>, String> {
        let Some(url) = &self.repo else {
            return Ok(None);
        };
        if state_dir.is_absolute() {
            return Err(format!(
                "--state-dir {} is absolute; with --repo it is a folder inside the checkout",
                state_dir.display()
            ));
        }
        let workdir = self
            .checkout
            .clone()
            .unwrap_or_else(|| cache_dir.join("config"));
        let workdir = std::path::absolute(&workdir)
            .map_err(|e| format!("--checkout {}: {e}", workdir.display()))?;
        let mut remote = git::Remote::new(url.clone());
        remote.branch = self.branch.clone();
        remote.credentials = git::Credentials {
            ssh_key: self.git_ssh_key.as_ref().map(|key| git::SshKey {
                user: None,
                private_key: key.clone(),
                public_key: None,
                passphrase: None,
                known_hosts: self.git_known_hosts.clone(),
                host_key_checking: git::HostKeyChecking::Yes,
            }),
            https: self.git_token.as_ref().map(|token| git::HttpsCredentials {
                username: self.git_username.clone(),
                password: token.clone(),
            }),
            credential_helper: true,
        };
        let mut config = git::Config::new(workdir).with_remote(remote);
        config.state_dir = state_dir.to_path_buf();
        config.sync_interval = Some(self.git_sync.max(Duration::from_secs(1)));
        if let Some(author) = &self.git_author {
            config.author = author.clone();
        }
        Ok(Some(config))
    }
}

/// Flags of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// What `run` shares with `controller`.
    #[command(flatten)]
    pub factory: FactoryArgs,
    /// One pass: check every source, decide, start what is due, wait for the builds
    /// (up to --timeout), commit, exit: 0 nothing failed, 1 a build or a source failed.
    #[arg(long)]
    pub once: bool,
    /// Print what would be decided; write, commit and build nothing (one pass).
    #[arg(long, conflicts_with_all = ["commit", "push"])]
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
}

/// Flags of `controller`.
#[derive(Debug, clap::Args)]
pub struct ControllerArgs {
    /// What `controller` shares with `run`.
    #[command(flatten)]
    pub factory: FactoryArgs,
    /// Namespace of the ImageFactoryRebuild objects (default: the pod's namespace, or
    /// the kubeconfig context's).
    #[arg(long, env = "IMAGE_FACTORY_NAMESPACE")]
    pub namespace: Option<String>,
    /// Namespace of the Kargo Freight, the Kargo Project (default: --namespace; `*`:
    /// every namespace).
    #[arg(long, env = "IMAGE_FACTORY_FREIGHT_NAMESPACE")]
    pub freight_namespace: Option<String>,
    /// The Lease of the leader election (in --namespace): of the replicas sharing it,
    /// only the holder acts.
    #[arg(long, default_value = "image-factory")]
    pub lease: String,
    /// Also watch registries (Kargo's Warehouses normally do; then the first source to
    /// see a digest records it).
    #[arg(long)]
    pub watch_registry: bool,
    /// Track running workloads (Pods and their controllers, list + watch): gauges of
    /// stale workloads per image, and `status.staleWorkloads` on each image's latest
    /// succeeded rebuild object. Needs `deploy/components/workloads`' RBAC.
    #[arg(long, env = "IMAGE_FACTORY_WORKLOADS")]
    pub workloads: bool,
    /// With `--workloads`: namespaces to watch (repeatable or comma-separated; default:
    /// every namespace).
    #[arg(
        long = "workload-namespace",
        value_name = "NAMESPACE",
        value_delimiter = ',',
        requires = "workloads",
        env = "IMAGE_FACTORY_WORKLOAD_NAMESPACES"
    )]
    pub workload_namespaces: Vec<String>,
    /// With `--workloads`: time between evaluations of the workloads against the state
    /// (humantime: `30s`, `2m`).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s", requires = "workloads")]
    pub workload_interval: Duration,
}

impl FactoryArgs {
    /// The factory options these flags ask for.
    fn options(&self) -> Result<Options, String> {
        let settings = match &self.registry_settings {
            Some(path) => ClientSettings::from_file(path).map_err(|e| e.to_string())?,
            None => ClientSettings::default(),
        };
        let mut options = Options::new(self.input.file(), &self.state_dir);
        options.cache_dir = self.input.cache_dir.clone();
        options.registry = settings;
        options.git = match (self.commit, self.push) {
            (_, true) => GitMode::Push,
            (true, false) => GitMode::Commit,
            (false, false) => GitMode::Off,
        };
        options.git_sync = Some(self.repository.git_sync.max(Duration::from_secs(1)));
        if let Some(config) = self
            .repository
            .config(&self.input.cache_dir, &self.state_dir)?
        {
            // Everything the factory reads and writes is inside the checkout.
            options.enrollment = config.workdir.join(self.input.file());
            options.state_dir = config.workdir.join(&self.state_dir);
            if options.git == GitMode::Off {
                options.git = GitMode::Push;
            }
            options.repository = Some(config);
        }
        options.max_parallel = self.max_parallel.max(1);
        options.retry_backoff = self.retry_backoff;
        options.clock_offset_file = self.clock_offset_file.clone();
        // Bars for long first runs, only for a person watching (text logs, a terminal).
        options.progress = self.log_format == LogFormat::Text
            && std::io::IsTerminal::is_terminal(&std::io::stdout())
            && std::io::IsTerminal::is_terminal(&std::io::stderr());
        options.config_check = self.config_check.max(Duration::from_millis(100));
        Ok(options)
    }
}

/// Runs the factory until SIGTERM/SIGINT (or one pass with `--once`/`--dry-run`).
pub fn run(args: RunArgs) -> ExitCode {
    let mut options = match args.factory.options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(super::EXIT_ERROR);
        }
    };
    options.watch_registry = !args.no_watch;
    options.freight_dir = args.freight_dir.clone();
    options.once = args.once || args.dry_run;
    options.dry_run = args.dry_run;
    options.timeout = args.timeout;
    let dry_run = options.dry_run;
    let once = options.once;
    serve(args.factory.listen, move |shutdown, metrics| async move {
        match factory::run(options, shutdown, metrics).await {
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

/// Runs the controller until SIGTERM/SIGINT (see [`crate::controller`]).
pub fn controller(args: ControllerArgs) -> ExitCode {
    let mut options = match args.factory.options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(super::EXIT_ERROR);
        }
    };
    options.watch_registry = args.watch_registry;
    let cluster = crate::controller::ClusterOptions {
        namespace: args.namespace.clone(),
        freight_namespace: args.freight_namespace.clone(),
        instance: std::env::var("POD_NAME").ok().filter(|n| !n.is_empty()),
        lease: args.lease.clone(),
        workloads: args
            .workloads
            .then(|| crate::controller::workloads::WorkloadOptions {
                namespaces: args.workload_namespaces.clone(),
                interval: args.workload_interval.max(Duration::from_millis(100)),
            }),
    };
    serve(args.factory.listen, move |shutdown, metrics| async move {
        match crate::controller::run(options, cluster, shutdown, metrics).await {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(super::EXIT_ERROR)
            }
        }
    })
}

/// Starts the runtime, the signal handler and (with `listen`) the metrics server, then
/// runs `main` to its exit code.
fn serve<F, Fut>(listen: Option<SocketAddr>, main: F) -> ExitCode
where
    F: FnOnce(CancellationToken, Arc<Metrics>) -> Fut,
    Fut: std::future::Future<Output = ExitCode>,
{
    let Some(runtime) = super::async_runtime() else {
        return ExitCode::from(super::EXIT_ERROR);
    };
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        spawn_signal_handler(shutdown.clone());
        let metrics = Arc::new(Metrics::new());
        let server = match listen {
            Some(addr) => {
                match factory::metrics::serve(addr, metrics.clone(), shutdown.clone()).await {
                    Ok((bound, task)) => {
                        tracing::info!(%bound, "serving /metrics, /healthz, /readyz");
                        Some(task)
                    }
                    Err(e) => {
                        eprintln!("error: cannot listen on {addr}: {e}");
                        return ExitCode::from(super::EXIT_ERROR);
                    }
                }
            }
            None => None,
        };
        let code = main(shutdown.clone(), metrics).await;
        shutdown.cancel();
        if let Some(task) = server {
            let _ = task.await;
        }
        code
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
