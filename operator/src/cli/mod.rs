//! The command line: one binary, one subcommand per mode (DESIGN.md "Modes").
//!
//! Exit codes: 0 ok, 1 findings (validation errors, cycles, unresolved references in
//! `dockerfile`, a `dockerfile --pin --base` that matched nothing), 2 usage or I/O
//! errors, 3 partial (`analyze --keep-going`: some sources failed, their images kept
//! their last analysis, everything else was written).
//!
//! Paths follow one rule, as Docker Compose's do: a path on the command line (the
//! enrollment file, `--state-dir`, `--cache-dir`) is relative to the working directory;
//! a path inside `images.yaml` (`source.path`) is relative to the directory of
//! `images.yaml`. The enrollment file is `-f FILE` or a positional `FILE` in every
//! subcommand that reads it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

pub mod decide;
pub mod diff;
pub mod inspect;
pub mod rollback;
pub mod run;
pub mod status;

use crate::analyze::{self, AnalyzeError};
use crate::dockerfile;
use crate::enrollment::{self, Diagnostic, EnrollmentError, Severity};
use crate::graph;
use crate::progress::SourcesBar;
use crate::reference::Reference;

/// Everything went as asked.
pub const EXIT_OK: u8 = 0;
/// The input has findings: validation errors, cycles, unresolved references.
pub const EXIT_FINDINGS: u8 = 1;
/// Usage or I/O error.
pub const EXIT_ERROR: u8 = 2;
/// Partial: `analyze --keep-going` wrote everything but the images whose source failed
/// (marked `stale: true` in their records).
pub const EXIT_PARTIAL: u8 = 3;

/// Image Factory rebuilds your container images when their base images change — after a
/// soak period, in dependency order — and records everything in git.
///
/// Start with `image-factory validate` on your images.yaml, then `image-factory analyze`
/// to write state/ and the Kargo Warehouses, and
/// `image-factory plan --update python:3.12-slim` to see what a base update would rebuild.
#[derive(Debug, Parser)]
#[command(
    name = "image-factory",
    version,
    propagate_version = true,
    max_term_width = 100,
    after_help = PATHS_HELP
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The log format asked for (`run --log-format`); text for every other command.
    pub fn log_format(&self) -> run::LogFormat {
        match &self.command {
            Command::Run(args) => args.factory.log_format,
            Command::Controller(args) => args.factory.log_format,
            _ => run::LogFormat::Text,
        }
    }

    /// The default log level: `info` for `run` (a service says what it does), `warn`
    /// for the one-shot commands. `RUST_LOG` overrides both.
    pub fn default_log_level(&self) -> &'static str {
        match &self.command {
            Command::Run(_) | Command::Controller(_) => "info",
            _ => "warn",
        }
    }
}

/// The path rule, printed under every `--help`.
const PATHS_HELP: &str = "Paths: FILE, --state-dir and --cache-dir are relative to the working directory; \
source paths inside images.yaml are relative to the directory of images.yaml (as in Docker Compose).";

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check images.yaml: schema, references, durations, regexes, sources, cycles.
    ///
    /// Prints every finding as FILE:LINE:COL with a hint; exit 1 when there are errors.
    /// Reads local (path) sources' Dockerfiles to find cycles; git sources are checked
    /// by `analyze`.
    ///
    /// Example: `image-factory validate images.yaml` (or `image-factory validate -f images.yaml`)
    #[command(after_help = PATHS_HELP)]
    Validate {
        /// The enrollment file.
        #[command(flatten)]
        file: EnrollmentFileArg,
        /// `text` for people, `github` for GitHub Actions annotations on the PR.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Print the JSON Schema of images.yaml (for editors: yaml-language-server).
    Schema,
    /// Write the CustomResourceDefinitions of our resources (`ImageFactoryRebuild`) into a
    /// folder, one YAML file each, for `kubectl apply -f crds/` or `deploy/`.
    ///
    /// With `--check`, write nothing and exit 1 when the folder's files differ from what
    /// this binary generates (for CI: the committed `crds/` must not drift).
    ///
    /// Example: `image-factory crds` (writes `crds/`), `image-factory crds --check`
    Crds {
        /// The folder, relative to the working directory.
        #[arg(long, default_value = "crds")]
        dir: PathBuf,
        /// Compare instead of writing; exit 1 on any difference.
        #[arg(long)]
        check: bool,
    },
    /// Read images.yaml, fetch sources, parse Dockerfiles, build the graph, and write
    /// state/, the Kargo Warehouses (state/warehouses/) and, with `kargo.stages: true`,
    /// the Kargo Stages (state/stages/).
    #[command(after_help = PATHS_HELP)]
    Analyze {
        /// images.yaml and the source cache.
        #[command(flatten)]
        input: Input,
        /// The state folder, relative to the working directory (not to images.yaml).
        #[arg(long, default_value = "state")]
        state_dir: PathBuf,
        /// Remove the state of images nobody enrolls or references any more (otherwise
        /// they are kept and marked `orphaned: true`).
        #[arg(long)]
        prune: bool,
        /// Compute and report, but write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Keep going past a source that cannot be fetched or a Dockerfile without a
        /// usable FROM: that image keeps its last analysis, marked `stale: true` with the
        /// error and time in its state record; everything else is written; exit 3.
        #[arg(long)]
        keep_going: bool,
        /// Commit what changed under the state folder to the git repository holding it
        /// (found by walking up from it; identity from git's user.name/user.email).
        #[arg(long, conflicts_with = "dry_run")]
        commit: bool,
        /// Commit, then push the current branch to its remote (default `origin`), rebasing
        /// on a concurrent push of other state files.
        #[arg(long, conflicts_with = "dry_run")]
        push: bool,
    },
    /// Print the dependency graph.
    ///
    /// Answers from state/ when it is current for images.yaml (the hash `analyze`
    /// recorded) and its local Dockerfiles, without fetching a git source; otherwise, or
    /// with `--refresh`, analyzes (reusing unchanged sources). Says which on stderr.
    #[command(after_help = PATHS_HELP)]
    Graph {
        /// images.yaml and the source cache.
        #[command(flatten)]
        input: Input,
        /// The state folder answered from.
        #[arg(long, default_value = "state")]
        state_dir: PathBuf,
        /// Analyze the sources even when state/ is current.
        #[arg(long)]
        refresh: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
        format: GraphFormat,
        /// Add the workloads running each image (Mermaid and DOT), read from
        /// `--manifests` or the cluster.
        #[arg(long)]
        workloads: bool,
        /// Where workloads are read from.
        #[command(flatten)]
        source: status::WorkloadSourceArgs,
    },
    /// Show what an update of a base image would rebuild, in which waves, and when.
    ///
    /// The graph comes from state/ when it is current for images.yaml and its local
    /// Dockerfiles, else (or with `--refresh`) from analyzing the sources; stderr says
    /// which.
    ///
    /// Example: `image-factory plan --update python:3.12-slim --discovered-at 2026-11-22T10:00:00Z`
    #[command(after_help = PATHS_HELP)]
    Plan {
        /// images.yaml and the source cache.
        #[command(flatten)]
        input: Input,
        /// The state folder: the plan starts from its runtime records (blocks, open
        /// rebuilds).
        #[arg(long, default_value = "state")]
        state_dir: PathBuf,
        /// The updated image: REF or REF@DIGEST, e.g. python:3.12-slim@sha256:…
        #[arg(long, value_name = "REF[@DIGEST]")]
        update: String,
        /// When the update was discovered (RFC 3339); default now.
        #[arg(long, value_name = "TIME")]
        discovered_at: Option<String>,
        /// Analyze the sources even when state/ is current.
        #[arg(long)]
        refresh: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// List the workloads each wave touches (the blast radius), read from
        /// `--manifests` or the cluster; wave 0 runs the updated image itself.
        #[arg(long)]
        workloads: bool,
        /// Where workloads are read from.
        #[command(flatten)]
        source: status::WorkloadSourceArgs,
    },
    /// Skip the remaining hold of an update (a critical CVE): IMAGE (its newest update,
    /// or, for a managed image, the updates its waiting rebuild is held for) or
    /// REF@DIGEST. Recorded in the runtime record with who and why.
    ///
    /// Example: `image-factory expedite python:3.12-slim@sha256:… --reason CVE-2026-1234`
    Expedite {
        /// Image name, or REF[@DIGEST].
        target: String,
        /// Why (a CVE id, an incident).
        #[arg(long)]
        reason: String,
        /// Who decides, and where it is recorded.
        #[command(flatten)]
        decider: Decider,
    },
    /// Mark a base release as bad: REF@DIGEST is never used; the newest matured
    /// unblocked update is used instead, and rebuilds waiting on it are re-planned.
    Block {
        /// REF@DIGEST.
        target: String,
        /// Why (what broke).
        #[arg(long)]
        reason: String,
        /// Who decides, and where it is recorded.
        #[command(flatten)]
        decider: Decider,
    },
    /// Lift a block of REF@DIGEST.
    Unblock {
        /// REF@DIGEST.
        target: String,
        /// Who decides, and where it is recorded.
        #[command(flatten)]
        decider: Decider,
    },
    /// Try a Failed rebuild again, with a fresh attempt budget.
    Retry {
        /// The rebuild id (`image-factory status` lists them).
        id: String,
        /// Why.
        #[arg(long, default_value = "retry requested")]
        reason: String,
        /// Who decides, and where it is recorded.
        #[command(flatten)]
        decider: Decider,
    },
    /// Let a held rebuild of an `autoRebuild: false` image start.
    Approve {
        /// The rebuild id.
        id: String,
        /// Who decides, and where it is recorded.
        #[command(flatten)]
        decider: Decider,
    },
    /// Point a managed image's tag back at an earlier good digest (no rebuild): the
    /// previous digest a Succeeded rebuild produced, or `--to`. Recorded in its runtime
    /// record with who and why.
    ///
    /// Example: `image-factory rollback app --reason "500s after the 3.12.8 rebuild"`
    Rollback {
        /// Graph name of the managed image.
        image: String,
        /// The digest to return to (`sha256:…`); default the previous good one.
        #[arg(long)]
        to: Option<String>,
        /// Why.
        #[arg(long)]
        reason: String,
        /// Registry settings file (mirrors, timeouts, retries), as for `inspect`.
        #[arg(long, value_name = "FILE", env = "IMAGE_FACTORY_REGISTRY_SETTINGS")]
        registry_settings: Option<PathBuf>,
        /// Who decides, and where it is recorded.
        #[command(flatten)]
        decider: Decider,
    },
    /// Run the factory: watch registries (and/or replay Kargo Freight), hold updates,
    /// start rebuilds when due, verify them in the registry, record everything in the
    /// state folder (and git with --commit/--push). Stops on SIGTERM/SIGINT; builds in
    /// flight resume on the next start.
    ///
    /// Example: `image-factory run --commit` (or `image-factory run --once` in CI)
    #[command(after_help = PATHS_HELP)]
    Run(run::RunArgs),
    /// The in-cluster operator: Kargo Freight of the generated Warehouses → holds →
    /// triggers → cascade → git, every rebuild an ImageFactoryRebuild object with Events
    /// (`kubectl get ifr`); `kubectl annotate ifr NAME imagefactory.dev/expedite=REASON`
    /// skips a hold. Needs the CRDs (`kubectl apply -f crds/`) and Kargo's.
    ///
    /// Example: `image-factory controller --push --namespace images`
    #[command(after_help = PATHS_HELP)]
    Controller(run::ControllerArgs),
    /// Print what the state folder says now: holds (image, bases, due in), rebuilds by
    /// phase, builds in flight, failures with reasons, blocked digests, and stale images
    /// (built on a base digest that is no longer the base's current one). Reads only
    /// state/runtime/, never a registry.
    ///
    /// Example: `image-factory status` (or `image-factory status --output json`)
    Status(status::StatusArgs),
    /// Read images from their registries: digests (index and per platform), config,
    /// labels, base annotations, layers, and whether each is built on the current digest
    /// of `--base`.
    Inspect(inspect::InspectArgs),
    /// What a change to images.yaml (and the Dockerfiles it points at) does, compared
    /// with the same file at a git ref: images added, removed or moved between managed
    /// and external, new discovered bases, dependency edges, the generated Kargo
    /// Warehouses, rebuild policies, unresolved FROM references.
    ///
    /// The working tree's images.yaml is analyzed as `analyze` does (git sources are
    /// fetched); the file at `--base` and the Dockerfiles of its local sources are read
    /// from the repository. Exit 0 for a valid change (with or without differences), 1
    /// when the working tree's images.yaml has errors (each located; annotations with
    /// `--output github`), 2 for an unknown ref, an invalid file at the ref, or I/O.
    ///
    /// Example: `image-factory diff` (uncommitted edits), `image-factory diff --base origin/main --output github`
    #[command(after_help = PATHS_HELP)]
    Diff(diff::DiffArgs),
    /// Print the stages and base images of Dockerfiles, or write a pinned copy of one.
    ///
    /// With `--pin FILE --base REF@DIGEST…`, writes FILE with every `FROM`, `COPY/ADD
    /// --from=` and `RUN --mount=…,from=` image whose registry, repository and tag (after
    /// ARG expansion; a digest already there is ignored) match a `--base` replaced by
    /// that base, normalized (`docker.io/library/python:3.12-slim@sha256:…`); an image
    /// built from ARGs is replaced by the literal. Nothing else changes. Each replacement
    /// is listed on stderr. Exit 0 when every `--base` was used, 1 when one matched
    /// nothing (the copy is still written) or the Dockerfile has errors, 2 for a
    /// `--base` without digest or an unreadable file.
    ///
    /// Example: `image-factory dockerfile --pin Dockerfile --base python:3.12-slim@sha256:… -o Dockerfile.pinned`
    Dockerfile {
        /// Dockerfiles to analyze.
        #[arg(required_unless_present = "pin", conflicts_with = "pin")]
        files: Vec<PathBuf>,
        /// Build argument K=V (repeatable), as with `docker build --build-arg`.
        #[arg(long = "build-arg", value_name = "K=V", value_parser = parse_build_arg)]
        build_args: Vec<(String, String)>,
        /// Output format of the analysis.
        #[arg(long, value_enum, default_value_t = Output::Text, conflicts_with = "pin")]
        output: Output,
        /// Write a copy of this Dockerfile with its bases pinned (needs `--base`).
        #[arg(long, value_name = "FILE", requires = "bases")]
        pin: Option<PathBuf>,
        /// A pinned base, REPO:TAG@sha256:DIGEST (repeatable), as a rebuild names it.
        #[arg(long = "base", value_name = "REF@DIGEST", requires = "pin", value_parser = parse_base)]
        bases: Vec<Reference>,
        /// Where to write the pinned copy (default stdout).
        #[arg(
            short = 'o',
            long = "output-file",
            value_name = "PATH",
            requires = "pin"
        )]
        output_file: Option<PathBuf>,
    },
}

/// The enrollment file, given as `-f FILE` or as a positional `FILE` (not both).
#[derive(Debug, Clone, clap::Args)]
pub struct EnrollmentFileArg {
    /// The enrollment file, relative to the working directory.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        default_value = "images.yaml"
    )]
    pub flag: PathBuf,
    /// The enrollment file, as `-f FILE` (default images.yaml).
    #[arg(value_name = "FILE", id = "file_positional", conflicts_with = "flag")]
    pub positional: Option<PathBuf>,
}

impl EnrollmentFileArg {
    /// The file named: the positional `FILE`, else `-f FILE`, else `images.yaml`.
    pub fn path(&self) -> &Path {
        self.positional.as_deref().unwrap_or(&self.flag)
    }
}

/// Where the enrollment and the git cache are.
#[derive(Debug, clap::Args)]
pub struct Input {
    #[command(flatten)]
    /// The enrollment file.
    pub enrollment: EnrollmentFileArg,
    /// Where git sources are cached, relative to the working directory.
    #[arg(
        long,
        env = "IMAGE_FACTORY_CACHE",
        default_value = ".cache/image-factory"
    )]
    pub cache_dir: PathBuf,
}

impl Input {
    /// The enrollment file named on the command line.
    pub fn file(&self) -> &Path {
        self.enrollment.path()
    }
}

/// Who records a decision, and where.
#[derive(Debug, Clone, clap::Args)]
pub struct Decider {
    /// The enrollment file, relative to the working directory (only `-f`: the
    /// positional argument is the decision's target).
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        default_value = "images.yaml"
    )]
    pub file: PathBuf,
    /// Where git sources are cached, relative to the working directory.
    #[arg(
        long,
        env = "IMAGE_FACTORY_CACHE",
        default_value = ".cache/image-factory"
    )]
    pub cache_dir: PathBuf,
    /// The state folder whose runtime records are changed.
    #[arg(long, default_value = "state")]
    pub state_dir: PathBuf,
    /// Who decides; default git's `user.name <user.email>`, else `$USER`.
    #[arg(long)]
    pub by: Option<String>,
}

impl Decider {
    fn decide(self, action: decide::Action) -> u8 {
        let place = decide::Place {
            file: self.file,
            cache_dir: self.cache_dir,
            state_dir: self.state_dir,
        };
        decide::run(&place, action, decide::who(self.by), jiff::Timestamp::now())
    }
}

/// Finding output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// `file:line:col: error: message` and a hint.
    Text,
    /// GitHub Actions workflow commands (`::error file=…,line=…::…`).
    Github,
}

/// Text or JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people.
    Text,
    /// For tools.
    Json,
}

/// Graph output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// Mermaid flowchart (renders in GitHub Markdown).
    Mermaid,
    /// Graphviz DOT.
    Dot,
    /// JSON nodes, edges and cycles.
    Json,
}

fn parse_base(s: &str) -> Result<Reference, String> {
    dockerfile::pin::parse_pin(s).map_err(|e| e.to_string())
}

fn parse_build_arg(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected K=V, got {s:?}")),
    }
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let code = match cli.command {
        Command::Validate { file, format } => validate(file.path(), format),
        Command::Schema => print(&schema_json()),
        Command::Crds { dir, check } => crds(&dir, check),
        Command::Analyze {
            input,
            state_dir,
            prune,
            dry_run,
            keep_going,
            commit,
            push,
        } => {
            let git = match (commit, push) {
                (_, true) => GitMode::Push,
                (true, false) => GitMode::Commit,
                (false, false) => GitMode::None,
            };
            run_analyze(&input, state_dir, prune, dry_run, keep_going, git)
        }
        Command::Graph {
            input,
            state_dir,
            refresh,
            format,
            workloads,
            source,
        } => run_graph(
            &input,
            &state_dir,
            refresh,
            format,
            workloads.then_some(&source),
        ),
        Command::Plan {
            input,
            state_dir,
            update,
            discovered_at,
            refresh,
            output,
            workloads,
            source,
        } => run_plan(
            &input,
            &state_dir,
            &update,
            discovered_at.as_deref(),
            refresh,
            output,
            workloads.then_some(&source),
        ),
        Command::Dockerfile {
            pin: Some(file),
            build_args,
            bases,
            output_file,
            ..
        } => run_pin(&file, build_args, &bases, output_file.as_deref()),
        Command::Dockerfile {
            files,
            build_args,
            output,
            ..
        } => run_dockerfile(&files, build_args, output),
        Command::Diff(args) => diff::run(&args),
        Command::Inspect(args) => return run_inspect(args),
        Command::Run(args) => return run::run(args),
        Command::Controller(args) => return run::controller(args),
        Command::Status(args) => return status::run(&args),
        Command::Expedite {
            target,
            reason,
            decider,
        } => decider.decide(decide::Action::Expedite { target, reason }),
        Command::Block {
            target,
            reason,
            decider,
        } => decider.decide(decide::Action::Block { target, reason }),
        Command::Unblock { target, decider } => decider.decide(decide::Action::Unblock { target }),
        Command::Retry {
            id,
            reason,
            decider,
        } => decider.decide(decide::Action::Retry { id, reason }),
        Command::Approve { id, decider } => decider.decide(decide::Action::Approve { id }),
        Command::Rollback {
            image,
            to,
            reason,
            registry_settings,
            decider,
        } => {
            let settings = match registry_settings
                .as_deref()
                .map(crate::registry::ClientSettings::from_file)
            {
                None => crate::registry::ClientSettings::default(),
                Some(Ok(s)) => s,
                Some(Err(e)) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EXIT_ERROR);
                }
            };
            let place = decide::Place {
                file: decider.file,
                cache_dir: decider.cache_dir,
                state_dir: decider.state_dir,
            };
            let request = rollback::Request {
                image,
                to,
                by: decide::who(decider.by),
                reason,
            };
            rollback::run(&place, request, settings)
        }
    };
    ExitCode::from(code)
}

/// The JSON Schema of `images.yaml`, pretty-printed with a trailing newline.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(enrollment::schema::EnrollmentFile);
    serde_json::to_string_pretty(&schema).unwrap_or_default() + "\n"
}

/// `image-factory crds`: write the CRDs, or with `check` compare them with `dir`.
fn crds(dir: &Path, check: bool) -> u8 {
    if !check {
        return match crate::crd::write_crds(dir) {
            Ok(paths) => {
                for path in paths {
                    println!("wrote {}", path.display());
                }
                EXIT_OK
            }
            Err(e) => {
                eprintln!("error: cannot write the CRDs into {}: {e}", dir.display());
                EXIT_ERROR
            }
        };
    }
    let files = match crate::crd::crd_files() {
        Ok(files) => files,
        Err(e) => {
            eprintln!("error: cannot generate the CRDs: {e}");
            return EXIT_ERROR;
        }
    };
    let mut stale = 0;
    for (name, content) in files {
        let path = dir.join(&name);
        match std::fs::read_to_string(&path) {
            Ok(committed) if committed == content => {}
            Ok(_) => {
                stale += 1;
                eprintln!(
                    "{}: differs from the generated CRD; run `image-factory crds --dir {}`",
                    path.display(),
                    dir.display()
                );
            }
            Err(e) => {
                stale += 1;
                eprintln!(
                    "{}: {e}; run `image-factory crds --dir {}`",
                    path.display(),
                    dir.display()
                );
            }
        }
    }
    if stale == 0 {
        EXIT_OK
    } else {
        EXIT_FINDINGS
    }
}

fn print(text: &str) -> u8 {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()) {
        Ok(()) => EXIT_OK,
        Err(_) => EXIT_ERROR,
    }
}

fn print_diagnostics(diagnostics: &[Diagnostic], format: Format) {
    for d in diagnostics {
        match format {
            Format::Text => eprintln!("{d}"),
            // Workflow commands are read from stdout.
            Format::Github => println!("{}", d.github_annotation()),
        }
    }
}

fn validate(file: &Path, format: Format) -> u8 {
    let cache = std::env::temp_dir();
    let model = match analyze::model(file, &cache, false, &analyze::NoProgress) {
        Ok(model) => model,
        Err(AnalyzeError::Enrollment(EnrollmentError::Invalid { diagnostics, .. })) => {
            print_diagnostics(&diagnostics, format);
            summarize(file, &diagnostics, format);
            return EXIT_FINDINGS;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_ERROR;
        }
    };
    let mut findings = model.enrollment.warnings.clone();
    findings.extend(model.findings());
    print_diagnostics(&findings, format);
    summarize(file, &findings, format);
    if findings.iter().any(|d| d.severity == Severity::Error) {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    }
}

fn summarize(file: &Path, findings: &[Diagnostic], format: Format) {
    let errors = findings
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let warnings = findings.len() - errors;
    if format == Format::Text {
        if errors == 0 {
            eprintln!("{}: ok ({warnings} warning(s))", file.display());
        } else {
            eprintln!(
                "{}: {errors} error(s), {warnings} warning(s)",
                file.display()
            );
        }
    }
}

/// What a command that failed before its output did: `analyze` writes state, so it
/// says that it wrote nothing; `graph` and `plan` never write, so they do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writes {
    State,
    Nothing,
}

fn report_analyze_error(e: &AnalyzeError, writes: Writes) -> u8 {
    let outcome = match writes {
        Writes::State => "nothing written: ",
        Writes::Nothing => "",
    };
    match e {
        AnalyzeError::Enrollment(EnrollmentError::Invalid { file, diagnostics }) => {
            print_diagnostics(diagnostics, Format::Text);
            eprintln!("{outcome}fix {file} (`image-factory validate {file}` lists every finding)");
        }
        AnalyzeError::Findings { diagnostics } => {
            print_diagnostics(diagnostics, Format::Text);
            eprintln!("{outcome}fix the Dockerfile error(s) above");
        }
        // The message says exactly which files were written; the next run completes it.
        AnalyzeError::State(crate::state::StateError::Interrupted { .. }) => {
            eprintln!("error: {e}");
        }
        other => {
            eprintln!("error: {other}");
            if writes == Writes::State {
                eprintln!("nothing written");
            }
        }
    }
    if e.is_finding() {
        EXIT_FINDINGS
    } else {
        EXIT_ERROR
    }
}

/// What `analyze` does with git after writing state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GitMode {
    None,
    Commit,
    Push,
}

/// Commits (and pushes) the state folder after `analyze`; returns the lines to print.
fn commit_analysis(
    state_dir: &std::path::Path,
    report: &analyze::Report,
    mode: GitMode,
) -> Result<Vec<String>, crate::git::GitError> {
    let found = crate::git::discover(state_dir)?;
    let mut images: Vec<String> = report
        .write
        .written
        .iter()
        .chain(&report.write.removed)
        .filter_map(|p| {
            let p = p.to_string_lossy();
            let name = p.strip_prefix("images/")?.strip_suffix(".yaml")?;
            Some(name.to_string())
        })
        .collect();
    images.sort();
    images.dedup();
    let reason = crate::git::Reason {
        summary: format!(
            "analyze: {} file(s) written, {} removed",
            report.write.written.len(),
            report.write.removed.len()
        ),
        images,
        source: Some(crate::git::ChangeSource::Analyze),
        ..crate::git::Reason::default()
    };
    let mut lines = Vec::new();
    match crate::git::commit_paths(
        &found.root,
        std::slice::from_ref(&found.state_dir),
        &reason,
        &found.config,
    )? {
        Some(oid) => lines.push(format!(
            "committed {} ({})",
            &oid.to_string()[..12],
            reason.summary
        )),
        None => lines.push("git: nothing to commit".to_string()),
    }
    if mode == GitMode::Push {
        let sync = crate::git::push(&found.root, &found.config)?;
        let remote = found
            .config
            .remote
            .as_ref()
            .map(|r| format!("{} {}", crate::git::display_url(&r.url), r.branch))
            .unwrap_or_default();
        lines.push(format!(
            "pushed {} commit(s) to {remote}{}",
            sync.pushed,
            if sync.rebased > 0 {
                format!(" (rebased {} on newer remote commits)", sync.rebased)
            } else {
                String::new()
            }
        ));
        if !sync.upstream_changed.is_empty() {
            lines.push(format!(
                "changed upstream: {}",
                sync.upstream_changed
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(lines)
}

fn run_analyze(
    input: &Input,
    state_dir: PathBuf,
    prune: bool,
    dry_run: bool,
    keep_going: bool,
    git: GitMode,
) -> u8 {
    let options = analyze::Options {
        enrollment: input.file().to_path_buf(),
        state_dir: state_dir.clone(),
        cache_dir: input.cache_dir.clone(),
        prune,
        dry_run,
        keep_going,
    };
    let report = match analyze::run(&options, &SourcesBar::default()) {
        Ok(r) => r,
        Err(e) => return report_analyze_error(&e, Writes::State),
    };
    for w in &report.warnings {
        eprintln!("{w}");
    }
    for s in &report.stale {
        if s.kept {
            eprintln!(
                "error: image {:?}: {}; kept its last analysis (marked stale)",
                s.image, s.reason
            );
        } else {
            eprintln!(
                "error: image {:?}: {}; it has no earlier analysis to keep: its record names no base images (marked stale)",
                s.image, s.reason
            );
        }
    }
    let mut out = String::new();
    out.push_str(&format!(
        "images: {} managed, {} external, {} discovered base(s); {} edge(s), depth {}\n",
        report.managed, report.external, report.bases, report.edges, report.depth
    ));
    out.push_str(&format!(
        "dockerfiles: {} parsed, {} unchanged (analysis reused)\n",
        report.parsed, report.reused
    ));
    out.push_str(&format!("warehouses: {}\n", report.warehouses));
    if report.stages > 0 {
        out.push_str(&format!("stages: {}\n", report.stages));
    }
    out.push_str("cycles: 0\n");
    out.push_str(&format!(
        "unresolved references: {}\n",
        report.unresolved.len()
    ));
    for (image, raw) in &report.unresolved {
        out.push_str(&format!("  {image}: {raw}\n"));
    }
    out.push_str(&format!("orphaned: {}", report.orphans.len()));
    if !report.orphans.is_empty() {
        out.push_str(&format!(
            " ({}; remove with --prune)",
            report.orphans.join(", ")
        ));
    }
    out.push('\n');
    if !report.pruned.is_empty() {
        out.push_str(&format!("pruned: {}\n", report.pruned.join(", ")));
    }
    if dry_run {
        out.push_str("dry run: nothing written\n");
    } else {
        out.push_str(&format!(
            "{}: {} written, {} unchanged, {} removed\n",
            state_dir.display(),
            report.write.written.len(),
            report.write.unchanged,
            report.write.removed.len()
        ));
        if !report.write.recovered.is_empty() {
            out.push_str(&format!(
                "recovered: {} file(s) of an interrupted earlier write\n",
                report.write.recovered.len()
            ));
        }
    }
    if report.migrated > 0 {
        out.push_str(&format!(
            "migrated: {} runtime record(s) from version-1 state files into {}/\n",
            report.migrated,
            state_dir.join(crate::state::RUNTIME_DIR).display()
        ));
    }
    if git != GitMode::None {
        match commit_analysis(&state_dir, &report, git) {
            Ok(lines) => {
                for line in lines {
                    out.push_str(&line);
                    out.push('\n');
                }
            }
            Err(e) => {
                print(&out);
                eprintln!("error: {e}");
                return EXIT_ERROR;
            }
        }
    }
    if report.is_partial() {
        out.push_str(&format!(
            "partial: {} image(s) stale ({}): their source failed\n",
            report.stale.len(),
            report
                .stale
                .iter()
                .map(|s| s.image.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let code = print(&out);
        return if code == EXIT_OK { EXIT_PARTIAL } else { code };
    }
    print(&out)
}

/// The model for `graph` and `plan`: from `state_dir` when it is current for the
/// enrollment (and not `refresh`), else analyzed (reusing unchanged sources, names as
/// state gives them). Says which on stderr.
fn load_model(input: &Input, state_dir: &Path, refresh: bool) -> Result<analyze::Model, u8> {
    if !refresh {
        match analyze::model_from_state(input.file(), state_dir) {
            Ok(Some((model, record))) => {
                let stale: Vec<&str> = model
                    .analyzed
                    .iter()
                    .filter(|(_, a)| matches!(a.origin, analyze::Origin::Stale { .. }))
                    .map(|(name, _)| name.as_str())
                    .collect();
                let stale = if stale.is_empty() {
                    String::new()
                } else {
                    format!("; stale: {}", stale.join(", "))
                };
                eprintln!(
                    "from {}/ (analyzed at {}{stale}; --refresh to re-analyze the sources)",
                    state_dir.display(),
                    record.analyzed_at
                );
                return Ok(model);
            }
            Ok(None) => {}
            Err(e) => return Err(report_analyze_error(&e, Writes::Nothing)),
        }
    }
    let model = analyze::model_named(
        input.file(),
        &input.cache_dir,
        state_dir,
        &SourcesBar::default(),
    )
    .map_err(|e| report_analyze_error(&e, Writes::Nothing))?;
    let why = if refresh {
        "--refresh".to_string()
    } else {
        format!(
            "{}/ is not current for {} and its local Dockerfiles",
            state_dir.display(),
            input.file().display()
        )
    };
    eprintln!("re-analyzed ({why})");
    Ok(model)
}

fn run_graph(
    input: &Input,
    state_dir: &Path,
    refresh: bool,
    format: GraphFormat,
    source: Option<&status::WorkloadSourceArgs>,
) -> u8 {
    let model = match load_model(input, state_dir, refresh) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let uses = match source.map(|s| s.workloads()).transpose() {
        Ok(workloads) => workload_uses(
            &model.graph,
            &model.enrollment,
            &workloads.unwrap_or_default(),
        ),
        Err(e) => {
            eprintln!("error: --workloads: {e}");
            return EXIT_ERROR;
        }
    };
    let text = match format {
        GraphFormat::Mermaid => graph::render_mermaid_with(&model.graph, &uses),
        GraphFormat::Dot => graph::render_dot_with(&model.graph, &uses),
        GraphFormat::Json => graph::render_json(&model.graph),
    };
    let code = print(&text);
    let cycles = model.graph.cycles();
    for c in &cycles {
        eprintln!("dependency cycle: {}", c.join(" → "));
    }
    if cycles.is_empty() {
        code
    } else {
        EXIT_FINDINGS
    }
}

/// Which workloads run which image of `graph`, deduplicated and sorted.
fn workload_uses(
    graph: &graph::Graph,
    enrollment: &crate::enrollment::Enrollment,
    workloads: &[crate::workload::Workload],
) -> Vec<graph::WorkloadUse> {
    let catalog = crate::workload::Catalog::from_graph(graph, enrollment);
    let mut uses = std::collections::BTreeSet::new();
    for w in workloads {
        for c in &w.containers {
            if let Some(image) = catalog.image_of(&c.image) {
                uses.insert(graph::WorkloadUse {
                    image: image.to_string(),
                    workload: format!("{}/{}/{}", w.namespace, w.kind, w.name),
                });
            }
        }
    }
    uses.into_iter().collect()
}

/// `plan --output json` with `--workloads`: the plan's fields plus `workloads`.
#[derive(serde::Serialize)]
struct PlanWithWorkloads<'a> {
    #[serde(flatten)]
    plan: &'a crate::engine::Plan,
    workloads: &'a [crate::workload::Touched],
}

/// The blast radius as a table: WAVE IMAGE NAMESPACE WORKLOAD CONTAINERS.
pub fn render_blast_radius(touched: &[crate::workload::Touched]) -> String {
    let mut out = format!("WORKLOADS ({})\n", touched.len());
    let rows: Vec<[String; 5]> = touched
        .iter()
        .map(|t| {
            [
                t.wave.to_string(),
                t.image.clone(),
                t.namespace.clone(),
                t.workload.clone(),
                t.containers.join(","),
            ]
        })
        .collect();
    if rows.is_empty() {
        return out;
    }
    push_aligned(
        &mut out,
        ["WAVE", "IMAGE", "NAMESPACE", "WORKLOAD", "CONTAINERS"],
        &rows,
    );
    out
}

/// Appends `header` and `rows` to `out` as a table: each column padded to its widest
/// cell (in chars), columns two spaces apart, trailing spaces trimmed, one line each.
pub(crate) fn push_aligned<const N: usize>(
    out: &mut String,
    header: [&str; N],
    rows: &[[String; N]],
) {
    let header = header.map(str::to_string);
    let mut widths = header.clone().map(|h| h.len());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
}

fn run_plan(
    input: &Input,
    state_dir: &std::path::Path,
    update: &str,
    discovered_at: Option<&str>,
    refresh: bool,
    output: Output,
    source: Option<&status::WorkloadSourceArgs>,
) -> u8 {
    let reference = match Reference::parse(update) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: --update: {e}");
            return EXIT_ERROR;
        }
    };
    let at = match discovered_at {
        None => jiff::Timestamp::now(),
        Some(t) => match t.parse::<jiff::Timestamp>() {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: --discovered-at {t:?}: {e} (write e.g. 2026-11-22T10:00:00Z)");
                return EXIT_ERROR;
            }
        },
    };
    let digest = match reference
        .digest()
        .map(crate::runtime::Digest::parse)
        .transpose()
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: --update: {e}");
            return EXIT_ERROR;
        }
    };
    let model = match load_model(input, state_dir, refresh) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let Some(node) = model.graph.find(&reference) else {
        eprintln!(
            "error: {}",
            graph::GraphError::UnknownImage {
                reference: reference.to_string()
            }
        );
        return EXIT_ERROR;
    };
    let store = crate::state::FileStore::read_only(state_dir);
    let runtime = match crate::state::load_runtime(&store, &model.graph) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_ERROR;
        }
    };
    let tag = reference
        .tag()
        .or(node.reference.tag())
        .unwrap_or(crate::reference::DEFAULT_TAG)
        .to_string();
    let given = digest.is_some();
    let update = crate::engine::PlanUpdate {
        image: node.name.clone(),
        tag,
        // A stand-in digest when none was given: what is rebuilt does not depend on it.
        digest: digest.unwrap_or_else(|| {
            crate::runtime::Digest::sha256_of(format!("plan {reference}").as_bytes())
        }),
        discovered_at: at,
    };
    let config = decide::engine_config(&model.enrollment);
    // The plan is made as of the discovery: due times are discovery + holds.
    let plan = match crate::engine::plan(&model.graph, &runtime, &config, &update, at) {
        Ok(p) => p,
        Err(e @ crate::engine::EngineError::Graph(_)) => {
            eprintln!("error: {e}");
            return EXIT_FINDINGS;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_ERROR;
        }
    };
    let touched = match source.map(|s| s.workloads()).transpose() {
        Ok(None) => None,
        Ok(Some(workloads)) => Some(crate::workload::blast_radius(
            &plan,
            &update.image,
            &workloads,
            &crate::workload::Catalog::from_graph(&model.graph, &model.enrollment),
        )),
        Err(e) => {
            eprintln!("error: --workloads: {e}");
            return EXIT_ERROR;
        }
    };
    let json = match &touched {
        Some(workloads) => serde_json::to_string_pretty(&PlanWithWorkloads {
            plan: &plan,
            workloads,
        }),
        None => serde_json::to_string_pretty(&plan),
    };
    match output {
        Output::Json => match json {
            Ok(json) => print(&(json + "\n")),
            Err(e) => {
                eprintln!("error: cannot render the plan as JSON: {e}");
                EXIT_ERROR
            }
        },
        Output::Text => {
            let mut text = render_plan(&plan, given);
            if let Some(touched) = &touched {
                text.push_str(&render_blast_radius(touched));
            }
            print(&text)
        }
    }
}

/// The plan as an aligned table: WAVE IMAGE HOLD DUE AFTER, then the dependents that
/// pin the base by digest (they are not rebuilt). `digest_given`: whether to show the
/// update's digest (a plan without one uses a stand-in).
pub fn render_plan(plan: &crate::engine::Plan, digest_given: bool) -> String {
    let mut out = format!(
        "update {}{} discovered {}\n",
        plan.update,
        if digest_given {
            format!(" → {}", plan.digest)
        } else {
            String::new()
        },
        plan.discovered_at
    );
    if plan.rebuilds.is_empty() {
        out.push_str("no managed image is built on it: nothing to rebuild\n");
    } else {
        let rows: Vec<[String; 5]> = plan
            .rebuilds
            .iter()
            .map(|r| {
                [
                    r.wave.to_string(),
                    r.image.clone(),
                    humantime::format_duration(r.hold).to_string(),
                    format!("{}{}", r.due, if r.auto_rebuild { "" } else { " (manual)" }),
                    r.after.join(", "),
                ]
            })
            .collect();
        push_aligned(&mut out, ["WAVE", "IMAGE", "HOLD", "DUE", "AFTER"], &rows);
        out.push_str(&format!(
            "{} rebuild(s) in {} wave(s)\n",
            plan.rebuilds.len(),
            plan.rebuilds.iter().map(|r| r.wave).max().unwrap_or(0)
        ));
    }
    for p in &plan.pinned {
        out.push_str(&format!(
            "not rebuilt: {} pins the base to {}; its rebuild would not pick the update up (unpin the FROM, or build with `image-factory dockerfile --pin`)\n",
            p.image,
            p.pins.join(", ")
        ));
    }
    out
}

/// A multi-threaded tokio runtime for a command; `None` (said on stderr) when the
/// process cannot start one.
pub(crate) fn async_runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            None
        }
    }
}

fn run_inspect(args: inspect::InspectArgs) -> ExitCode {
    let Some(runtime) = async_runtime() else {
        return ExitCode::from(EXIT_ERROR);
    };
    match runtime.block_on(inspect::run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// `dockerfile --pin`: the pinned copy to `output` (stdout when `None`), replacements
/// and unused `--base`s on stderr.
fn run_pin(
    file: &Path,
    build_args: Vec<(String, String)>,
    bases: &[Reference],
    output: Option<&Path>,
) -> u8 {
    let args: BTreeMap<String, String> = build_args.into_iter().collect();
    let content = match std::fs::read(file).map(String::from_utf8) {
        Ok(Ok(text)) => text,
        Ok(Err(_)) => {
            eprintln!(
                "error: {} is not UTF-8 text; pinning would change its bytes",
                file.display()
            );
            return EXIT_ERROR;
        }
        Err(e) => {
            eprintln!("error: cannot read Dockerfile {}: {e}", file.display());
            return EXIT_ERROR;
        }
    };
    let name = file.display().to_string();
    let pinned = match dockerfile::pin(&name, &content, &args, bases) {
        Ok(pinned) => pinned,
        Err(e @ dockerfile::PinError::InvalidDockerfile { .. }) => {
            eprintln!("error: {e}");
            return EXIT_FINDINGS;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_ERROR;
        }
    };
    for message in pinned.messages() {
        eprintln!("{message}");
    }
    for base in &pinned.unmatched {
        eprintln!(
            "warning: --base {base} matched no FROM, COPY --from or RUN --mount from= of {name}"
        );
    }
    let code = match output {
        Some(path) => match std::fs::write(path, &pinned.content) {
            Ok(()) => EXIT_OK,
            Err(e) => {
                eprintln!("error: cannot write {}: {e}", path.display());
                EXIT_ERROR
            }
        },
        None => print(&pinned.content),
    };
    if code == EXIT_OK && !pinned.unmatched.is_empty() {
        EXIT_FINDINGS
    } else {
        code
    }
}

fn run_dockerfile(files: &[PathBuf], build_args: Vec<(String, String)>, output: Output) -> u8 {
    use rayon::prelude::*;
    let args: BTreeMap<String, String> = build_args.into_iter().collect();
    // Files are independent: read and analyzed on all cores, reported in the given order
    // (the first unreadable file in that order is the error).
    let results: Vec<_> = files
        .par_iter()
        .map(|file| dockerfile::analyze_file(file, &args))
        .collect();
    let analyses = match results.into_iter().collect::<Result<Vec<_>, _>>() {
        Ok(analyses) => analyses,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_ERROR;
        }
    };
    let text = match output {
        Output::Json => match serde_json::to_string_pretty(&analyses) {
            Ok(json) => json + "\n",
            Err(e) => {
                eprintln!("error: cannot render the analysis as JSON: {e}");
                return EXIT_ERROR;
            }
        },
        Output::Text => dockerfile::render_text(&analyses),
    };
    let code = print(&text);
    // Warnings (a substitution this analyzer does not evaluate) do not fail the command.
    let findings = analyses.iter().any(|a| {
        a.stages.is_empty()
            || a.has_errors()
            || a.stages
                .iter()
                .any(|s| matches!(s.from, dockerfile::From::Unresolved { .. }))
    });
    if code == EXIT_OK && findings {
        EXIT_FINDINGS
    } else {
        code
    }
}
