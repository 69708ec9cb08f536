//! `images.yaml`: the enrollment of managed and external images.
//!
//! [`load`] reads the file with serde-saphyr (keeping every value's line and column),
//! checks it, and returns a validated [`Enrollment`] — or every finding at once, each
//! located as `images.yaml:LINE:COL` with a fix hint.
//!
//! Two passes, so the first can run anywhere: [`parse`] is pure (text in, enrollment or
//! findings out; it never touches the disk), and [`check_sources`] is the explicit pass
//! that looks at the disk — whether each local source directory and its Dockerfile exist.
//! [`load`] runs both and reports their findings together.
//!
//! Paths: a local `source.path` is relative to the directory of `images.yaml` (as
//! Docker Compose resolves a service's `build.context`); `source.dockerfile` and
//! `source.context` are relative to the source root and may not leave it.
//!
//! Size: the file may hold up to [`MAX_YAML_NODES`] YAML values (every key, scalar,
//! list and mapping counts one) — room for 100,000 fully configured images; a larger or
//! deeper file is refused with a located error before it can exhaust memory.

mod diagnostic;
mod keys;
pub mod schema;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;

pub(crate) use diagnostic::{escape_data, escape_property};
pub use diagnostic::{Diagnostic, Severity};
use schema::{
    CosignSpec, EnrollmentFile, ImageSpec, Located, Position, ProgramSpec, RebuildSpec,
    TriggerSpec, VerifySpec, WarehouseSpec,
};

use crate::reference::Reference;
use crate::verify::{KeySource, Keyless, Requirement, VerifyMode, VerifyPolicy};

/// Default hold before dependents rebuild after a base update: 7 days.
pub const DEFAULT_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default Kargo Project (namespace) for generated Warehouses.
pub const DEFAULT_PROJECT: &str = "image-factory";
/// Default Warehouse polling interval: 5 minutes.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);
/// Platform written into every Warehouse unless configured: Kargo's own default is the
/// controller's platform, which silently changes with where Kargo runs.
pub const DEFAULT_PLATFORM: &str = "linux/amd64";
/// Kargo's default `discoveryLimit` (defined once, with its source, in `registry::select`).
pub use crate::registry::select::KARGO_DEFAULT_DISCOVERY_LIMIT as DEFAULT_DISCOVERY_LIMIT;
/// Largest `discoveryLimit` Kargo accepts (defined once in `registry::select`).
pub use crate::registry::select::KARGO_MAX_DISCOVERY_LIMIT as MAX_DISCOVERY_LIMIT;
/// Default `rebuild.maxAttempts`: how many times one rebuild is started before it is
/// given up (the first start included).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Largest `rebuild.maxAttempts` accepted; more retries of a failing build only hide it.
pub const MAX_MAX_ATTEMPTS: u32 = 20;
/// Most YAML values (keys, scalars, list and mapping starts) an enrollment file may hold.
///
/// A fully configured managed image (git source, tags, build arguments, a trigger with
/// inputs, a rebuild policy) is about 40 values, so 10,000,000 leaves room for 100,000
/// such images more than twice over, while a runaway file is stopped before it takes the
/// memory of a CI runner. serde-saphyr's own default (250,000) is hit by ~50,000 images.
pub const MAX_YAML_NODES: usize = 10_000_000;
/// Most parser events (values plus their ends) an enrollment file may produce.
pub const MAX_YAML_EVENTS: usize = 2 * MAX_YAML_NODES;
/// Most bytes of scalar text an enrollment file may hold: 256 MiB.
pub const MAX_YAML_SCALAR_BYTES: usize = 256 * 1024 * 1024;
/// Deepest nesting of lists and mappings accepted; an enrollment needs 6.
pub const MAX_YAML_DEPTH: usize = 64;

static NAME: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used)] // constant pattern, covered by tests
    Regex::new(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$").expect("valid name regex")
});
static PLATFORM: LazyLock<Regex> = LazyLock::new(|| {
    // Kargo image.json: "platform": {"pattern": "^\\w+/\\w+$"}
    #[allow(clippy::expect_used)]
    Regex::new(r"^\w+/\w+$").expect("valid platform regex")
});
/// A Kubernetes object name (DNS subdomain), as Kargo's CRDs require of a task name.
static TASK_NAME: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used)]
    Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
        .expect("valid task name regex")
});
static GITHUB_REPOSITORY: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used)]
    Regex::new(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$").expect("valid repository regex")
});

/// Why an enrollment could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum EnrollmentError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read but has errors; all of them are listed.
    #[error("{} has {} error(s)", .file, .diagnostics.iter().filter(|d| d.severity == Severity::Error).count())]
    Invalid {
        /// The file as the user named it.
        file: String,
        /// Every finding, errors and warnings, in file order.
        diagnostics: Vec<Diagnostic>,
    },
}

/// Kargo's image selection strategies, shared with the registry client's tag selection.
pub use crate::registry::SelectionStrategy;

/// How an image is rebuilt after a base update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildPolicy {
    /// Hold after a base update is discovered.
    pub delay: Duration,
    /// Extra hold for a cascade from a rebuilt managed parent.
    pub cascade_delay: Duration,
    /// Whether eligible rebuilds start on their own.
    pub auto_rebuild: bool,
    /// True when the image sets `delay` itself (not through `defaults`). The hold of a
    /// base update is the updated image's `delay`, unless the dependent sets its own,
    /// which then wins (a team may ask for a longer or shorter soak than the base's).
    pub own_delay: bool,
    /// How many times one rebuild is started before it is given up, the first start
    /// included: 1–[`MAX_MAX_ATTEMPTS`], default [`DEFAULT_MAX_ATTEMPTS`]
    /// (`rebuild.maxAttempts`).
    pub max_attempts: u32,
}

impl Default for RebuildPolicy {
    fn default() -> Self {
        Self {
            delay: DEFAULT_DELAY,
            cascade_delay: Duration::ZERO,
            auto_rebuild: true,
            own_delay: false,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }
}

impl RebuildPolicy {
    /// How long an update of a base with policy `base` is held before this image
    /// rebuilds: this image's own `delay` when it sets one, else the base's.
    pub fn hold_for(&self, base: &RebuildPolicy) -> Duration {
        if self.own_delay {
            self.delay
        } else {
            base.delay
        }
    }
}

/// Validated Kargo image-subscription settings (Kargo's field names in the Warehouse).
/// `kargo::ImageSubscription::from` and `TagSelection::from` turn it into the Warehouse
/// subscription and the selection our watcher applies (one conversion each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarehouseConfig {
    /// Repository watched, without tag (`docker.io/library/python`).
    pub repo_url: String,
    /// Selection strategy.
    pub image_selection_strategy: SelectionStrategy,
    /// Strategy-specific constraint; for `Digest`, the tag followed.
    pub constraint: Option<String>,
    /// Allowed tag patterns (RE2-compatible regular expressions).
    pub allow_tags_regexes: Vec<String>,
    /// Ignored tag patterns.
    pub ignore_tags_regexes: Vec<String>,
    /// `os/arch` (default `linux/amd64`).
    pub platform: Option<String>,
    /// Most revisions discovered per check (1–100).
    pub discovery_limit: u32,
    /// `SemVer` only: require major.minor.patch; `None` leaves it out of the Warehouse
    /// and Kargo's default (`true`) applies.
    pub strict_semvers: Option<bool>,
    /// Polling interval.
    pub interval: Duration,
}

/// Where a managed image's source lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A local directory.
    Path {
        /// The directory: `raw` joined to the directory of `images.yaml`.
        dir: PathBuf,
        /// As written in `images.yaml`, relative to it.
        raw: String,
        /// Where `source.path` is written in `images.yaml`.
        at: Position,
    },
    /// A git repository.
    Git {
        /// Clone URL.
        url: String,
        /// Branch, tag or commit; `None` for the remote's default branch.
        reference: Option<String>,
    },
}

/// A program the factory runs (a `command` trigger, a `test`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// Executed directly: program, then arguments.
    Args(Vec<String>),
    /// Run as `/bin/sh -c LINE`.
    Shell(String),
}

/// A program with its time limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// What to run.
    pub program: Program,
    /// Longest run before the child is killed and the run counts as failed.
    pub timeout: Duration,
}

/// Where a secret is read from when it is needed (never when `images.yaml` is loaded,
/// and never stored or logged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// An environment variable of the factory's process (`env:NAME`, or a bare `NAME`).
    Env(String),
    /// A file, whole, without one trailing newline (`file:PATH`; a relative path is
    /// resolved against the directory of `images.yaml`).
    File(PathBuf),
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Env(name) => write!(f, "env:{name}"),
            Self::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

/// How the `githubWorkflow` trigger authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GithubAuth {
    /// A personal access or fine-grained token (`Authorization: Bearer`).
    Token(SecretRef),
    /// A GitHub App installation: a JWT signed with the App's key is exchanged for an
    /// installation token (valid one hour, refreshed before it expires).
    App {
        /// The App's ID (the JWT's `iss`).
        app_id: u64,
        /// The installation whose token is requested.
        installation_id: u64,
        /// The App's PEM private key (RS256).
        private_key: SecretRef,
    },
}

/// A validated trigger backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Run a local program; see [`Command`].
    Command(Command),
    /// POST a signed JSON payload to a URL.
    Webhook {
        /// Target URL (`https://`, or `http://` to loopback).
        url: String,
        /// Bearer token, if any.
        token_secret: Option<SecretRef>,
        /// HMAC-SHA256 key for `X-Image-Factory-Signature`, if any.
        signing_secret: Option<SecretRef>,
        /// Longest wait for the build to finish.
        timeout: Duration,
    },
    /// GitHub `workflow_dispatch`.
    GithubWorkflow {
        /// `owner/repo`.
        repository: String,
        /// Workflow file name or numeric ID.
        workflow: String,
        /// Git ref the workflow runs on.
        reference: String,
        /// Inputs from `images.yaml` (the factory adds `rebuild_id` and `bases`).
        inputs: BTreeMap<String, String>,
        /// Credentials.
        auth: GithubAuth,
        /// REST API root without a trailing `/` (`https://api.github.com`).
        api_url: String,
        /// Longest wait for the run to finish.
        timeout: Duration,
    },
    /// A Kubernetes Job from a ConfigMap template.
    KubernetesJob {
        /// Namespace.
        namespace: String,
        /// ConfigMap with the template.
        template_config_map: String,
    },
    /// A Kargo Promotion into a Stage (see `trigger::kargo`).
    KargoPromotion {
        /// The Stage promoted into (a DNS label).
        stage: String,
        /// The Kargo Project (namespace) of the Stage, its Freight and the Promotion.
        project: String,
        /// The (Cluster)PromotionTask a generated Stage promotes with
        /// (`kargo.stages: true`); `None` when the Stage is written by hand.
        task: Option<crate::kargo::PromotionTaskReference>,
    },
}

/// What a managed image needs to be analyzed and built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    /// Source location.
    pub source: Source,
    /// Dockerfile path relative to the source root; never leaves it.
    pub dockerfile: String,
    /// Where the Dockerfile is named in `images.yaml`: `source.dockerfile`, or
    /// `source.path` (else the image's name) when the default `Dockerfile` is used.
    pub dockerfile_at: Position,
    /// Build context relative to the source root; never leaves it.
    pub context: String,
    /// Build arguments.
    pub build_args: BTreeMap<String, String>,
    /// Trigger backend, if configured.
    pub trigger: Option<Trigger>,
    /// Check run against each new digest after its completion is verified.
    pub test: Option<Command>,
}

/// One validated enrollment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Unique DNS-label name.
    pub name: String,
    /// Normalized reference (`registry/repository:tag`).
    pub reference: Reference,
    /// Every tag the image is published under: its own tag plus `tags`.
    pub tags: BTreeSet<String>,
    /// `Some` for a managed image, `None` for an external one.
    pub build: Option<Build>,
    /// Rebuild policy (defaults applied).
    pub rebuild: RebuildPolicy,
    /// Warehouse settings (defaults applied); used for external images.
    pub warehouse: WarehouseConfig,
    /// Signature policy of this image's updates (`verify:`, defaults applied).
    pub verify: Option<VerifyPolicy>,
    /// Where the entry starts in `images.yaml`.
    pub at: Position,
}

impl Image {
    /// Whether the image is built by us (has a source).
    pub fn is_managed(&self) -> bool {
        self.build.is_some()
    }
}

/// A validated `images.yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    /// The file as the user named it.
    pub file: String,
    /// Directory that relative paths are resolved against.
    pub base_dir: PathBuf,
    /// Kargo Project for Warehouses.
    pub project: String,
    /// Whether `analyze` generates a Kargo Stage for each image whose trigger is
    /// `kargoPromotion` (`kargo.stages`, default `false`).
    pub stages: bool,
    /// Defaults for images and discovered base images.
    pub defaults_rebuild: RebuildPolicy,
    /// Warehouse defaults; `repo_url` and `constraint` are empty here.
    pub defaults_warehouse: WarehouseConfig,
    /// `defaults.verify`: the signature policy of discovered base images and of images
    /// without their own.
    pub defaults_verify: Option<VerifyPolicy>,
    /// The images in file order.
    pub images: Vec<Image>,
    /// The files `verify:` policies read when a digest is verified (`keyFile`,
    /// `keyless.trustedRoot`), each where it is written; [`check_sources`] looks at them.
    pub verify_files: Vec<VerifyFile>,
    /// Warnings found while loading (errors make loading fail).
    pub warnings: Vec<Diagnostic>,
}

/// A file a `verify:` policy names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyFile {
    /// What the file holds.
    pub kind: VerifyFileKind,
    /// The path as written.
    pub raw: String,
    /// The path joined to the directory of `images.yaml`.
    pub path: PathBuf,
    /// Where it is written.
    pub at: Position,
}

/// What a [`VerifyFile`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyFileKind {
    /// `cosign.keyFile`: a PEM public key.
    KeyFile,
    /// `cosign.keyless.trustedRoot`: a Sigstore `trusted_root.json`.
    TrustedRoot,
}

impl Enrollment {
    /// The signature policy of the updates of graph image `name`: the enrolled image's
    /// (defaults applied), else `defaults.verify` (a discovered base image).
    pub fn verify_policy(&self, name: &str) -> Option<&VerifyPolicy> {
        match self.images.iter().find(|i| i.name == name) {
            Some(image) => image.verify.as_ref(),
            None => self.defaults_verify.as_ref(),
        }
    }

    /// The warehouse settings a discovered (not enrolled) base image gets: follow the
    /// tag named in the `FROM` line by digest, with the file's warehouse defaults.
    pub fn discovered_warehouse(&self, reference: &Reference) -> WarehouseConfig {
        WarehouseConfig {
            repo_url: reference.repo_url(),
            image_selection_strategy: SelectionStrategy::Digest,
            constraint: reference.tag().map(str::to_string),
            ..self.defaults_warehouse.clone()
        }
    }
}

/// Reads and validates an enrollment file: [`parse`], then [`check_sources`].
///
/// The file is named in messages as `path` is written; relative source paths resolve
/// against the directory of `path` (itself relative to the working directory).
///
/// # Errors
///
/// [`EnrollmentError::Read`] when the file cannot be read; [`EnrollmentError::Invalid`]
/// with every finding of both passes when it is not a valid enrollment.
pub fn load(path: &Path) -> Result<Enrollment, EnrollmentError> {
    let text = std::fs::read_to_string(path).map_err(|source| EnrollmentError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base_dir = if base_dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base_dir
    };
    let file = path.display().to_string();
    let (enrollment, mut findings) = check_text(&file, &text, &base_dir)?;
    findings.extend(check_sources(&enrollment));
    finish(enrollment, findings)
}

/// Parses and validates enrollment text without touching the disk; relative source
/// paths are joined to `base_dir` but not looked at ([`check_sources`] does that).
///
/// # Errors
///
/// [`EnrollmentError::Invalid`] with every finding.
pub fn parse(file: &str, text: &str, base_dir: &Path) -> Result<Enrollment, EnrollmentError> {
    let (enrollment, findings) = check_text(file, text, base_dir)?;
    finish(enrollment, findings)
}

/// The disk checks of an enrollment: every local source is a directory and holds its
/// Dockerfile; every `keyFile` is a usable PEM public key and every
/// `keyless.trustedRoot` a Sigstore trusted root. Git sources are checked when
/// `analyze` fetches them.
///
/// Returns the findings (errors), located at `source.path`, `source.dockerfile`,
/// `keyFile` or `trustedRoot`; empty when everything is in place.
pub fn check_sources(enrollment: &Enrollment) -> Vec<Diagnostic> {
    let file = enrollment.file.as_str();
    let mut findings: Vec<Diagnostic> = enrollment
        .verify_files
        .iter()
        .filter_map(|f| check_verify_file(file, f))
        .collect();
    for image in &enrollment.images {
        let Some(build) = &image.build else { continue };
        let Source::Path { dir, raw, at } = &build.source else {
            continue;
        };
        if !dir.is_dir() {
            findings.push(
                Diagnostic::error(file, *at, format!("source path {raw:?} is not a directory"))
                    .hint(format!("paths are relative to the directory of {file}")),
            );
        } else if !dir.join(&build.dockerfile).is_file() {
            findings.push(
                Diagnostic::error(
                    file,
                    build.dockerfile_at,
                    format!(
                        "image {:?}: Dockerfile {raw}/{} does not exist",
                        image.name, build.dockerfile
                    ),
                )
                .hint("set source.dockerfile to the Dockerfile's path inside the source directory"),
            );
        }
    }
    findings
}

/// The finding about one `verify:` file, if it is missing or unusable.
fn check_verify_file(file: &str, f: &VerifyFile) -> Option<Diagnostic> {
    let (field, what) = match f.kind {
        VerifyFileKind::KeyFile => ("cosign.keyFile", "a PEM public key (cosign.pub)"),
        VerifyFileKind::TrustedRoot => (
            "keyless.trustedRoot",
            "a Sigstore trusted_root.json (e.g. from `cosign trusted-root create`, or the TUF repository's trusted_root.json)",
        ),
    };
    let problem = match std::fs::read(&f.path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            format!("{field} {:?} does not exist", f.raw)
        }
        Err(e) => format!("{field} {:?} cannot be read: {e}", f.raw),
        Ok(bytes) => {
            let usable = match f.kind {
                VerifyFileKind::KeyFile => {
                    crate::verify::check_public_key(&String::from_utf8_lossy(&bytes))
                }
                VerifyFileKind::TrustedRoot => {
                    crate::verify::TrustedRoot::from_json(&bytes).map(|_| ())
                }
            };
            match usable {
                Ok(()) => return None,
                Err(e) => format!("{field} {:?} is not usable: {e}", f.raw),
            }
        }
    };
    Some(
        Diagnostic::error(file, f.at, problem)
            .hint(format!("name {what}, relative to the directory of {file}")),
    )
}

/// The enrollment checked so far and every finding, or the syntax error that stopped
/// reading it.
fn check_text(
    file: &str,
    text: &str,
    base_dir: &Path,
) -> Result<(Enrollment, Vec<Diagnostic>), EnrollmentError> {
    let raw: EnrollmentFile = match serde_saphyr::from_str_with_options(text, yaml_options()) {
        Ok(raw) => raw,
        Err(e) => {
            // serde stops at the first unknown key; list them all when that is the problem.
            let unknown = keys::unknown_keys(file, text);
            let diagnostics = if unknown.is_empty() {
                vec![syntax_diagnostic(file, text, &e)]
            } else {
                unknown
            };
            return Err(EnrollmentError::Invalid {
                file: file.to_string(),
                diagnostics,
            });
        }
    };
    let mut checker = Checker {
        file,
        base_dir,
        findings: Vec::new(),
        verify_files: Vec::new(),
        stages: false,
        stage_names: HashMap::new(),
    };
    let enrollment = checker.check(raw);
    Ok((enrollment, checker.findings))
}

/// The enrollment with its warnings, or every finding when one is an error.
fn finish(
    enrollment: Enrollment,
    mut findings: Vec<Diagnostic>,
) -> Result<Enrollment, EnrollmentError> {
    findings.sort_by_key(|d| (d.at, d.severity));
    if findings.iter().any(|d| d.severity == Severity::Error) {
        return Err(EnrollmentError::Invalid {
            file: enrollment.file,
            diagnostics: findings,
        });
    }
    Ok(Enrollment {
        warnings: findings,
        ..enrollment
    })
}

/// serde-saphyr's options for enrollment files: its defaults, with the size limits
/// raised to [`MAX_YAML_NODES`] and friends (see the module docs).
pub(crate) fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_nodes: MAX_YAML_NODES,
            max_events: MAX_YAML_EVENTS,
            max_total_scalar_bytes: MAX_YAML_SCALAR_BYTES,
            max_depth: MAX_YAML_DEPTH,
        },
    }
}

/// Turns a serde-saphyr error (unknown key, wrong type, bad YAML, too large) into a
/// located finding in plain words: the library's own texts name Rust types and its API
/// ("use Option<String>", "set DuplicateKeyPolicy in Options"), which mean nothing to
/// someone editing `images.yaml`.
///
/// `text` is the file's text, to quote the offending value where the library does not.
fn syntax_diagnostic(file: &str, text: &str, e: &serde_saphyr::Error) -> Diagnostic {
    let at = e
        .location()
        .map(|l| Position {
            line: l.line(),
            column: l.column(),
        })
        .unwrap_or_default();
    let (mut message, hint) = plain_yaml_error(innermost(e));
    if matches!(
        innermost(e),
        serde_saphyr::Error::InvalidScalar { .. } | serde_saphyr::Error::Unexpected { .. }
    ) {
        if let Some(found) = scalar_at(text, at) {
            message.push_str(&format!(", found {found}"));
        }
    }
    Diagnostic::error(file, at, message).hint(hint)
}

/// What is written at `at`: a quoted plain scalar (up to a flow delimiter or comment),
/// `a list` or `a mapping`; `None` when nothing useful can be quoted.
fn scalar_at(text: &str, at: Position) -> Option<String> {
    let line = text
        .lines()
        .nth(usize::try_from(at.line).ok()?.checked_sub(1)?)?;
    let column = usize::try_from(at.column).ok()?.checked_sub(1)?;
    let rest: String = line.chars().skip(column).collect();
    let rest = rest.trim_start();
    if rest.starts_with('[') {
        return Some("a list".to_string());
    }
    if rest.starts_with('{') {
        return Some("a mapping".to_string());
    }
    let value = rest
        .split([',', '}', ']', '#'])
        .next()
        .unwrap_or_default()
        .trim();
    (!value.is_empty() && !value.ends_with(':'))
        .then(|| format!("{:?}", value.chars().take(80).collect::<String>()))
}

/// The error under serde-saphyr's snippet and alias wrappers.
fn innermost(e: &serde_saphyr::Error) -> &serde_saphyr::Error {
    match e.without_snippet() {
        serde_saphyr::Error::AliasError { error, .. } => innermost(error),
        other => other,
    }
}

/// What went wrong and what to do, for one serde-saphyr error.
fn plain_yaml_error(e: &serde_saphyr::Error) -> (String, String) {
    use serde_saphyr::budget::BudgetBreach;
    use serde_saphyr::Error as E;
    use serde_saphyr::MessageFormatter as _;
    let fix_yaml =
        "fix the YAML syntax here (indentation, a missing ':' or an unclosed quote or bracket)"
            .to_string();
    match e {
        E::SerdeUnknownField {
            field, expected, ..
        } => (
            format!("unknown key {field:?}"),
            format!("known keys here: {}", expected.join(", ")),
        ),
        E::SerdeMissingField { field, .. } => (
            format!("missing required key {field:?}"),
            format!("add `{field}:` to this entry"),
        ),
        E::SerdeInvalidType {
            unexpected,
            expected,
            ..
        }
        | E::SerdeInvalidValue {
            unexpected,
            expected,
            ..
        } => (
            format!(
                "expected {}, found {}",
                plain_expected(expected),
                plain_found(unexpected)
            ),
            "write a value of the expected kind; quote text that looks like a number or true/false"
                .to_string(),
        ),
        E::SerdeUnknownVariant {
            variant, expected, ..
        } => (
            format!("unknown value {variant:?}"),
            format!("use one of: {}", expected.join(", ")),
        ),
        E::NullIntoString { .. } | E::InvalidCharNull { .. } => (
            "a value is missing here".to_string(),
            "write a value after the ':', or remove the key".to_string(),
        ),
        E::DuplicateMappingKey { key, .. } => (
            match key {
                Some(k) => format!("key {k:?} is written twice in the same mapping"),
                None => "a key is written twice in the same mapping".to_string(),
            },
            "keep one of them".to_string(),
        ),
        E::Budget { breach, .. } => {
            let limit = match breach {
                BudgetBreach::Nodes { .. } => {
                    format!("more than {MAX_YAML_NODES} YAML values")
                }
                BudgetBreach::Events { .. } => {
                    format!("more than {MAX_YAML_EVENTS} YAML events")
                }
                BudgetBreach::ScalarBytes { .. } => {
                    format!("more than {} MiB of text", MAX_YAML_SCALAR_BYTES >> 20)
                }
                BudgetBreach::Depth { .. } => {
                    format!("nesting deeper than {MAX_YAML_DEPTH} levels")
                }
                _ => "too many aliases, anchors, documents or comments".to_string(),
            };
            (
                format!("the file is too large to read: {limit}"),
                format!("an enrollment holds at most {MAX_YAML_NODES} YAML values (about 100,000 fully configured images); split it or remove what is repeated"),
            )
        }
        E::AliasReplayLimitExceeded { .. }
        | E::AliasExpansionLimitExceeded { .. }
        | E::AliasReplayStackDepthExceeded { .. }
        | E::AliasReplayCounterOverflow { .. } => (
            "YAML aliases (*name) here expand to too much data".to_string(),
            "write the values out instead of nesting aliases".to_string(),
        ),
        E::UnknownAnchor { .. } => (
            "alias (*name) of an anchor (&name) that is not defined above".to_string(),
            "define the anchor before its first use, or write the value out".to_string(),
        ),
        E::Eof { .. } => (
            "the file ends in the middle of a value".to_string(),
            "close the open quote, bracket or brace, or finish the entry".to_string(),
        ),
        E::MultipleDocuments { .. } => (
            "the file holds more than one YAML document (a second `---`)".to_string(),
            "keep one document per enrollment file".to_string(),
        ),
        E::InvalidUtf8Input => (
            "the file is not UTF-8 text".to_string(),
            "save it as UTF-8".to_string(),
        ),
        E::IndentationError { .. } | E::FoldedBlockScalarMustIndentContent { .. } => {
            ("wrong indentation".to_string(), fix_yaml)
        }
        E::InvalidScalar { ty, .. } => (
            format!("expected {}", plain_expected(ty)),
            "write a value of the expected kind; quote text that looks like a number or true/false"
                .to_string(),
        ),
        E::Unexpected { expected, .. } => (
            format!("expected {}", plain_expected(expected)),
            "write a value of the expected kind here".to_string(),
        ),
        other => {
            let text = serde_saphyr::UserMessageFormatter.format_message(other);
            (clean_library_text(&text), fix_yaml)
        }
    }
}

/// serde's description of a wanted type, in the words of a YAML file.
fn plain_expected(expected: &str) -> String {
    let e = expected.trim();
    if e.starts_with("struct ") || e.contains("map") {
        "a mapping (key: value lines)".to_string()
    } else if e.contains("sequence") || e.starts_with("a Vec") || e == "seq" {
        "a list".to_string()
    } else if matches!(e, "u8" | "u16" | "u32" | "u64" | "usize") || e.contains("unsigned") {
        "a whole number of 0 or more".to_string()
    } else if matches!(e, "i8" | "i16" | "i32" | "i64" | "isize") || e.contains("integer") {
        "a whole number".to_string()
    } else if e.contains("bool") {
        "true or false".to_string()
    } else if e.contains("string") || e == "char" {
        "text".to_string()
    } else {
        e.to_string()
    }
}

/// serde's description of a found value, without Rust type names.
fn plain_found(unexpected: &str) -> String {
    let u = unexpected.trim();
    if u == "map" || u.starts_with("map") {
        "a mapping".to_string()
    } else if u.starts_with("sequence") {
        "a list".to_string()
    } else if u == "unit" || u.contains("null") {
        "nothing".to_string()
    } else {
        u.replace('`', "")
    }
}

/// A library message without its own `error:` prefix, location suffix or line breaks.
fn clean_library_text(text: &str) -> String {
    static LOCATION: LazyLock<Regex> = LazyLock::new(|| {
        #[allow(clippy::expect_used)] // constant pattern, covered by tests
        Regex::new(r"(?i)\s*(,\s*)?(at\s+)?line\s+\d+,?\s+column\s+\d+:?\s*")
            .expect("valid location regex")
    });
    let first = text.lines().next().unwrap_or_default();
    let without = LOCATION.replace_all(first, " ");
    let trimmed = without
        .trim()
        .trim_start_matches("error:")
        .trim()
        .trim_end_matches(':')
        .trim();
    if trimmed.is_empty() {
        "invalid YAML".to_string()
    } else {
        trimmed.to_string()
    }
}

struct Checker<'a> {
    file: &'a str,
    base_dir: &'a Path,
    findings: Vec<Diagnostic>,
    /// `keyFile`s and `trustedRoot`s, for [`check_sources`].
    verify_files: Vec<VerifyFile>,
    /// `kargo.stages`.
    stages: bool,
    /// With `kargo.stages`: each generated Stage's name → its project and where it is
    /// named first.
    stage_names: HashMap<String, (String, Position)>,
}

impl Checker<'_> {
    fn error(&mut self, at: Position, message: impl Into<String>, hint: impl Into<String>) {
        self.findings
            .push(Diagnostic::error(self.file, at, message).hint(hint));
    }

    fn warning(&mut self, at: Position, message: impl Into<String>, hint: impl Into<String>) {
        self.findings
            .push(Diagnostic::warning(self.file, at, message).hint(hint));
    }

    fn check(&mut self, raw: EnrollmentFile) -> Enrollment {
        if raw.version.value != schema::SCHEMA_VERSION {
            self.error(
                raw.version.at,
                format!("unsupported version {}", raw.version.value),
                format!(
                    "this image-factory reads version {}",
                    schema::SCHEMA_VERSION
                ),
            );
        }
        self.stages = raw
            .kargo
            .as_ref()
            .and_then(|k| k.stages.as_ref())
            .is_some_and(|s| s.value);
        let project = raw
            .kargo
            .and_then(|k| k.project)
            .map(|p| {
                self.check_name(&p, "kargo.project");
                p.value
            })
            .unwrap_or_else(|| DEFAULT_PROJECT.to_string());
        let defaults = raw.defaults.unwrap_or_default();
        let mut defaults_rebuild =
            self.rebuild_policy(defaults.rebuild.as_ref(), RebuildPolicy::default());
        defaults_rebuild.own_delay = false;
        let base_warehouse = WarehouseConfig {
            repo_url: String::new(),
            image_selection_strategy: SelectionStrategy::Digest,
            constraint: None,
            allow_tags_regexes: Vec::new(),
            ignore_tags_regexes: Vec::new(),
            platform: Some(DEFAULT_PLATFORM.to_string()),
            discovery_limit: DEFAULT_DISCOVERY_LIMIT,
            strict_semvers: None,
            interval: DEFAULT_INTERVAL,
        };
        let defaults_warehouse = match &defaults.warehouse {
            Some(w) => {
                if let Some(r) = &w.repo_url {
                    self.error(
                        r.at,
                        "repoURL cannot be a default",
                        "set repoURL on the image it belongs to",
                    );
                }
                if let Some(c) = &w.constraint {
                    self.error(
                        c.at,
                        "constraint cannot be a default",
                        "set constraint on the image it belongs to",
                    );
                }
                self.warehouse(Some(w), base_warehouse, None)
            }
            None => base_warehouse,
        };

        let defaults_verify = defaults
            .verify
            .as_ref()
            .and_then(|v| self.verify_policy(v, None, Position::default()));
        let mut images = Vec::with_capacity(raw.images.len());
        let mut names: HashMap<String, Position> = HashMap::new();
        let mut published: HashMap<(String, String), (String, Position)> = HashMap::new();
        for spec in raw.images {
            let Some(image) = self.image(
                spec,
                &project,
                &defaults_rebuild,
                &defaults_warehouse,
                defaults_verify.as_ref(),
            ) else {
                continue;
            };
            if let Some(first) = names.get(&image.name) {
                let msg = format!("duplicate name {:?}", image.name);
                let hint = format!(
                    "it is already used at {}:{}:{}; names must be unique",
                    self.file, first.line, first.column
                );
                self.error(image.at, msg, hint);
            } else {
                names.insert(image.name.clone(), image.at);
            }
            for tag in &image.tags {
                let key = (image.reference.repo_url(), tag.clone());
                if let Some((other, first)) = published.get(&key) {
                    let msg = format!("duplicate image reference {}:{}", key.0, tag);
                    let hint = format!(
                        "image {other:?} at {}:{}:{} already enrolls it; enroll each image once",
                        self.file, first.line, first.column
                    );
                    self.error(image.at, msg, hint);
                } else {
                    published.insert(key, (image.name.clone(), image.at));
                }
            }
            images.push(image);
        }
        Enrollment {
            file: self.file.to_string(),
            base_dir: self.base_dir.to_path_buf(),
            project,
            stages: self.stages,
            defaults_rebuild,
            defaults_warehouse,
            defaults_verify,
            images,
            verify_files: std::mem::take(&mut self.verify_files),
            warnings: Vec::new(),
        }
    }

    fn check_name(&mut self, name: &Located<String>, what: &str) -> bool {
        if NAME.is_match(&name.value) {
            return true;
        }
        self.error(
            name.at,
            format!("invalid {what} {:?}", name.value),
            "use lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters",
        );
        false
    }

    fn image(
        &mut self,
        spec: ImageSpec,
        project: &str,
        defaults_rebuild: &RebuildPolicy,
        defaults_warehouse: &WarehouseConfig,
        defaults_verify: Option<&VerifyPolicy>,
    ) -> Option<Image> {
        let name_ok = self.check_name(&spec.name, "name");
        let reference = match Reference::parse(&spec.image.value) {
            Ok(r) => Some(r),
            Err(e) => {
                self.error(spec.image.at, e.to_string(), "write registry/repository[:tag], e.g. ghcr.io/acme/app:1.2 or python:3.12-slim");
                None
            }
        };
        if let Some(r) = &reference {
            if r.digest().is_some() {
                self.error(
                    spec.image.at,
                    format!("image {:?} pins a digest", spec.image.value),
                    "enroll the tag to follow (the digest changes with every update); drop @sha256:…",
                );
            }
        }
        let mut tags = BTreeSet::new();
        if let Some(tag) = reference.as_ref().and_then(Reference::tag) {
            tags.insert(tag.to_string());
        }
        for tag in spec.tags.iter().flatten() {
            match reference.as_ref().map(|r| Reference::parse(&format!("{}:{}", r.repo_url(), tag.value))) {
                Some(Ok(_)) if !tags.insert(tag.value.clone()) => {
                    self.warning(tag.at, format!("tag {:?} listed twice", tag.value), "remove the repeated tag");
                }
                Some(Ok(_)) | None => {}
                Some(Err(_)) => self.error(
                    tag.at,
                    format!("invalid tag {:?}", tag.value),
                    "a tag is up to 128 characters of letters, digits, '_', '.' and '-', not starting with '.' or '-'",
                ),
            }
        }
        let rebuild = self.rebuild_policy(spec.rebuild.as_ref(), *defaults_rebuild);
        let build = match &spec.source {
            Some(source) => self.build(&spec, source, project),
            None => {
                if let Some(tags) = &spec.tags {
                    if let Some(first) = tags.first() {
                        self.error(first.at, "tags only apply to managed images", "an external image is followed through its warehouse settings; remove tags or add a source");
                    }
                }
                if let Some(args) = &spec.build_args {
                    if let Some(first) = args.values().next() {
                        self.error(
                            first.at,
                            "buildArgs only apply to managed images",
                            "add a source, or remove buildArgs",
                        );
                    }
                }
                if let Some(trigger) = &spec.trigger {
                    let at = trigger_position(trigger).unwrap_or(spec.name.at);
                    self.error(
                        at,
                        "trigger only applies to managed images",
                        "add a source, or remove trigger",
                    );
                }
                if let Some(test) = &spec.test {
                    let at = program_position(test).unwrap_or(spec.name.at);
                    self.error(
                        at,
                        "test only applies to managed images",
                        "add a source, or remove test",
                    );
                }
                None
            }
        };
        if spec.source.is_some() {
            if let Some(w) = &spec.warehouse {
                let at = warehouse_position(w).unwrap_or(spec.name.at);
                self.error(
                    at,
                    "warehouse only applies to external images",
                    "a managed image is followed through its own rebuilds; remove warehouse (or remove source to make it external)",
                );
            }
        }
        let inherited = match &reference {
            Some(r) => WarehouseConfig {
                repo_url: r.repo_url(),
                constraint: r.tag().map(str::to_string),
                ..defaults_warehouse.clone()
            },
            None => defaults_warehouse.clone(),
        };
        let warehouse = self.warehouse(spec.warehouse.as_ref(), inherited, reference.as_ref());
        let verify = match &spec.verify {
            Some(v) => self.verify_policy(v, defaults_verify, spec.name.at),
            None => defaults_verify.cloned(),
        };
        let build_ok = spec.source.is_none() || build.is_some();
        let reference = reference?;
        if !name_ok || !build_ok {
            return None;
        }
        Some(Image {
            name: spec.name.value,
            reference,
            tags,
            build,
            rebuild,
            warehouse,
            verify,
            at: spec.name.at,
        })
    }

    /// A `verify:` block: its `mode` (default the inherited one, else `enforce`) and
    /// exactly one cosign requirement (its own, else the inherited one). `at` locates
    /// errors about the block as a whole (the image's name).
    fn verify_policy(
        &mut self,
        spec: &VerifySpec,
        inherited: Option<&VerifyPolicy>,
        at: Position,
    ) -> Option<VerifyPolicy> {
        let mode = match &spec.mode {
            Some(m) => match m.value.as_str() {
                "enforce" => VerifyMode::Enforce,
                "warn" => VerifyMode::Warn,
                other => {
                    self.error(
                        m.at,
                        format!("invalid verify.mode {other:?}"),
                        "write enforce (skip updates that are not signed as required) or warn (use them, record and log the verdict)",
                    );
                    return None;
                }
            },
            None => inherited.map_or(VerifyMode::Enforce, |p| p.mode),
        };
        let requirement = match &spec.cosign {
            Some(cosign) => self.cosign_requirement(cosign, at)?,
            None => match inherited {
                Some(p) => p.requirement.clone(),
                None => {
                    let at = spec.mode.as_ref().map_or(at, |m| m.at);
                    self.error(
                        at,
                        "verify needs cosign",
                        "add cosign: {key: ...}, {keyFile: ...}, {secret: ...} or {keyless: ...} here or in defaults.verify",
                    );
                    return None;
                }
            },
        };
        Some(VerifyPolicy { requirement, mode })
    }

    fn cosign_requirement(&mut self, spec: &CosignSpec, at: Position) -> Option<Requirement> {
        let mut given: Vec<(&str, Position)> = Vec::new();
        if let Some(k) = &spec.key {
            given.push(("key", k.at));
        }
        if let Some(k) = &spec.key_file {
            given.push(("keyFile", k.at));
        }
        if let Some(k) = &spec.secret {
            given.push(("secret", k.name.at));
        }
        if let Some(k) = &spec.keyless {
            given.push(("keyless", k.identity.at));
        }
        match given.as_slice() {
            [] => {
                self.error(
                    at,
                    "cosign needs a key",
                    "set one of key (PEM), keyFile (a path next to images.yaml), secret {name, key} or keyless {identity, issuer}",
                );
                return None;
            }
            [_] => {}
            [_, (second, second_at), ..] => {
                let names: Vec<&str> = given.iter().map(|(n, _)| *n).collect();
                self.error(
                    *second_at,
                    format!("cosign sets both {} and {second}", names[0]),
                    "set exactly one of key, keyFile, secret or keyless",
                );
                return None;
            }
        }
        if let Some(k) = &spec.key {
            if let Err(e) = crate::verify::check_public_key(&k.value) {
                self.error(
                    k.at,
                    format!("cosign.key is not a usable public key: {e}"),
                    "paste the PEM of cosign.pub (-----BEGIN PUBLIC KEY----- ...), e.g. as a YAML block scalar `key: |`",
                );
                return None;
            }
            return Some(Requirement::Key(KeySource::Pem(k.value.clone())));
        }
        if let Some(k) = &spec.key_file {
            if k.value.trim().is_empty() {
                self.error(
                    k.at,
                    "cosign.keyFile is empty",
                    "name a PEM file, relative to the directory of images.yaml",
                );
                return None;
            }
            let path = self.base_dir.join(&k.value);
            self.verify_files.push(VerifyFile {
                kind: VerifyFileKind::KeyFile,
                raw: k.value.clone(),
                path: path.clone(),
                at: k.at,
            });
            return Some(Requirement::Key(KeySource::File(path)));
        }
        if let Some(k) = &spec.secret {
            let mut ok = true;
            if let Some(ns) = &k.namespace {
                ok &= self.check_name(ns, "cosign.secret.namespace");
            }
            if !TASK_NAME.is_match(&k.name.value) {
                self.error(
                    k.name.at,
                    format!("invalid Secret name {:?}", k.name.value),
                    "a Secret name is lower-case letters, digits, '-' and '.'",
                );
                ok = false;
            }
            if k.key.value.is_empty()
                || !k
                    .key
                    .value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
            {
                self.error(
                    k.key.at,
                    format!("invalid Secret key {:?}", k.key.value),
                    "a Secret data key is letters, digits, '-', '_' and '.'",
                );
                ok = false;
            }
            return ok.then(|| {
                Requirement::Key(KeySource::Secret {
                    namespace: k.namespace.as_ref().map(|n| n.value.clone()),
                    name: k.name.value.clone(),
                    key: k.key.value.clone(),
                })
            });
        }
        let k = spec.keyless.as_ref()?;
        let mut ok = true;
        for (field, value) in [("identity", &k.identity), ("issuer", &k.issuer)] {
            if let Err(e) = Regex::new(&value.value) {
                self.error(value.at, format!("invalid keyless.{field} regular expression: {e}"), "write a regular expression (Rust regex syntax), e.g. ^https://github.com/acme/.+$");
                ok = false;
            }
        }
        let trusted_root = match &k.trusted_root {
            Some(t) if t.value.trim().is_empty() => {
                self.error(
                    t.at,
                    "keyless.trustedRoot is empty",
                    "name a Sigstore trusted_root.json relative to the directory of images.yaml, or leave trustedRoot out for the embedded public-good root",
                );
                ok = false;
                None
            }
            Some(t) => {
                let path = self.base_dir.join(&t.value);
                self.verify_files.push(VerifyFile {
                    kind: VerifyFileKind::TrustedRoot,
                    raw: t.value.clone(),
                    path: path.clone(),
                    at: t.at,
                });
                Some(path)
            }
            None => None,
        };
        if !ok {
            return None;
        }
        Some(Requirement::Keyless(Keyless {
            identity: k.identity.value.clone(),
            issuer: k.issuer.value.clone(),
            rekor: k.rekor.as_ref().is_none_or(|r| r.value),
            trusted_root,
        }))
    }

    fn duration(&mut self, value: &Located<String>, field: &str) -> Option<Duration> {
        match humantime::parse_duration(value.value.trim()) {
            Ok(d) => Some(d),
            Err(_) if value.value.trim() == "0" => Some(Duration::ZERO),
            Err(e) => {
                self.error(
                    value.at,
                    format!("invalid {field} {:?}: {e}", value.value),
                    "write a duration such as 7d, 36h, 90m or 0s",
                );
                None
            }
        }
    }

    fn rebuild_policy(
        &mut self,
        spec: Option<&RebuildSpec>,
        inherited: RebuildPolicy,
    ) -> RebuildPolicy {
        let Some(spec) = spec else { return inherited };
        let mut policy = inherited;
        if let Some(d) = &spec.delay {
            policy.delay = self.duration(d, "delay").unwrap_or(policy.delay);
            policy.own_delay = true;
        }
        if let Some(d) = &spec.cascade_delay {
            policy.cascade_delay = self
                .duration(d, "cascadeDelay")
                .unwrap_or(policy.cascade_delay);
        }
        if let Some(a) = &spec.auto_rebuild {
            policy.auto_rebuild = a.value;
        }
        if let Some(m) = &spec.max_attempts {
            if (1..=MAX_MAX_ATTEMPTS).contains(&m.value) {
                policy.max_attempts = m.value;
            } else {
                self.error(
                    m.at,
                    format!("maxAttempts {} out of range", m.value),
                    format!(
                        "write 1 to {MAX_MAX_ATTEMPTS} (the first start counts as one attempt)"
                    ),
                );
            }
        }
        policy
    }

    fn warehouse(
        &mut self,
        spec: Option<&WarehouseSpec>,
        inherited: WarehouseConfig,
        reference: Option<&Reference>,
    ) -> WarehouseConfig {
        let Some(spec) = spec else { return inherited };
        let mut config = inherited;
        if let Some(r) = &spec.repo_url {
            match Reference::parse(&r.value) {
                Ok(parsed) if parsed.digest().is_none() && !has_explicit_tag(&r.value) => {
                    config.repo_url = parsed.repo_url();
                }
                Ok(_) => self.error(
                    r.at,
                    format!("repoURL {:?} names a tag or digest", r.value),
                    "Kargo's repoURL is the repository only; put the tag in constraint",
                ),
                Err(e) => self.error(
                    r.at,
                    format!("invalid repoURL: {e}"),
                    "write registry/repository, e.g. docker.io/library/python",
                ),
            }
        }
        if let Some(s) = &spec.image_selection_strategy {
            match SelectionStrategy::parse(&s.value) {
                Some(strategy) => {
                    config.image_selection_strategy = strategy;
                    if strategy != SelectionStrategy::Digest && spec.constraint.is_none() {
                        // The image's own tag is a Digest-strategy constraint, not a range.
                        config.constraint = None;
                    }
                }
                None => self.error(
                    s.at,
                    format!("unknown imageSelectionStrategy {:?}", s.value),
                    "use one of Digest, SemVer, Lexical, NewestBuild (Kargo's names, case-sensitive)",
                ),
            }
        }
        if let Some(c) = &spec.constraint {
            self.constraint(c, config.image_selection_strategy, reference);
            config.constraint = Some(c.value.clone());
        }
        if let Some(list) = &spec.allow_tags_regexes {
            config.allow_tags_regexes = self.regexes(list, "allowTagsRegexes");
        }
        if let Some(list) = &spec.ignore_tags_regexes {
            config.ignore_tags_regexes = self.regexes(list, "ignoreTagsRegexes");
        }
        if let Some(p) = &spec.platform {
            if PLATFORM.is_match(&p.value) {
                config.platform = Some(p.value.clone());
            } else {
                self.error(
                    p.at,
                    format!("invalid platform {:?}", p.value),
                    "Kargo accepts os/arch only, e.g. linux/amd64 or linux/arm64 (no variant)",
                );
            }
        }
        if let Some(l) = &spec.discovery_limit {
            if (1..=MAX_DISCOVERY_LIMIT).contains(&l.value) {
                config.discovery_limit = l.value;
            } else {
                self.error(
                    l.at,
                    format!("discoveryLimit {} out of range", l.value),
                    "Kargo accepts 1 to 100",
                );
            }
        }
        if let Some(s) = &spec.strict_semvers {
            if config.image_selection_strategy != SelectionStrategy::SemVer {
                self.warning(
                    s.at,
                    "strictSemvers has no effect",
                    "it is only used with imageSelectionStrategy: SemVer",
                );
            }
            config.strict_semvers = Some(s.value);
        }
        if let Some(i) = &spec.interval {
            if let Some(d) = self.duration(i, "interval") {
                if d < Duration::from_secs(60) {
                    self.warning(
                        i.at,
                        format!("interval {:?} polls more than once a minute", i.value),
                        "registries throttle frequent polling; 5m is the usual choice",
                    );
                }
                config.interval = d;
            }
        }
        config
    }

    fn constraint(
        &mut self,
        c: &Located<String>,
        strategy: SelectionStrategy,
        reference: Option<&Reference>,
    ) {
        match strategy {
            SelectionStrategy::Digest => {
                if Reference::parse(&format!("x:{}", c.value)).is_err() || c.value.contains([':', '@', '/']) {
                    self.error(c.at, format!("invalid constraint {:?} for Digest", c.value), "for the Digest strategy the constraint is the tag to follow, e.g. 3.12-slim");
                } else if let Some(tag) = reference.and_then(Reference::tag) {
                    if tag != c.value {
                        self.warning(
                            c.at,
                            format!("constraint {:?} differs from the image's tag {tag:?}", c.value),
                            "the Warehouse follows the constraint; make them the same or drop constraint",
                        );
                    }
                }
            }
            SelectionStrategy::SemVer => {
                if let Err(e) = crate::registry::check_semver_constraint(&c.value) {
                    let reason = match e {
                        crate::registry::SelectionError::InvalidConstraint { reason, .. } => reason,
                        other => other.to_string(),
                    };
                    self.error(c.at, format!("invalid SemVer constraint {:?}: {reason}", c.value), "write a range such as ^1.26.0, ~3.12, >=1.2 <2.0 or 1.x");
                }
            }
            SelectionStrategy::Lexical | SelectionStrategy::NewestBuild => self.warning(
                c.at,
                "constraint is ignored by this imageSelectionStrategy",
                "Kargo uses constraint only with Digest and SemVer; narrow tags with allowTagsRegexes instead",
            ),
        }
    }

    fn regexes(&mut self, list: &[Located<String>], field: &str) -> Vec<String> {
        let mut out = Vec::with_capacity(list.len());
        for r in list {
            match Regex::new(&r.value) {
                Ok(_) => out.push(r.value.clone()),
                Err(e) => {
                    let detail = e.to_string();
                    let last = detail.lines().last().unwrap_or_default().trim().to_string();
                    self.error(
                        r.at,
                        format!(
                            "invalid regular expression in {field} {:?}: {last}",
                            r.value
                        ),
                        "use RE2 syntax (Go and Kargo's dialect); escape literal dots as \\.",
                    );
                }
            }
        }
        out
    }

    fn build(
        &mut self,
        spec: &ImageSpec,
        source: &schema::SourceSpec,
        project: &str,
    ) -> Option<Build> {
        let source_kind = match (&source.git, &source.path) {
            (Some(_), Some(p)) => {
                self.error(
                    p.at,
                    "source has both git and path",
                    "use git for a repository or path for a local directory, not both",
                );
                return None;
            }
            (None, None) => {
                self.error(
                    spec.name.at,
                    format!("image {:?}: source needs git or path", spec.name.value),
                    "add source.path (relative to images.yaml) or source.git.url",
                );
                return None;
            }
            (Some(git), None) => {
                if git.url.value.trim().is_empty() {
                    self.error(
                        git.url.at,
                        "empty git url",
                        "set source.git.url to a clone URL",
                    );
                    return None;
                }
                Source::Git {
                    url: git.url.value.clone(),
                    reference: git.reference.as_ref().map(|r| r.value.clone()),
                }
            }
            (None, Some(path)) => {
                if path.value.trim().is_empty() {
                    self.error(
                        path.at,
                        "empty source path",
                        format!(
                            "name the source directory, relative to the directory of {}",
                            self.file
                        ),
                    );
                    return None;
                }
                Source::Path {
                    dir: self.base_dir.join(&path.value),
                    raw: path.value.clone(),
                    at: path.at,
                }
            }
        };
        let dockerfile = source
            .dockerfile
            .as_ref()
            .map_or_else(|| "Dockerfile".to_string(), |d| d.value.clone());
        let dockerfile_at = source.dockerfile.as_ref().map_or_else(
            || source.path.as_ref().map_or(spec.name.at, |p| p.at),
            |d| d.at,
        );
        let context = source
            .context
            .as_ref()
            .map_or_else(|| ".".to_string(), |c| c.value.clone());
        let inside = source
            .dockerfile
            .iter()
            .map(|d| (d, "dockerfile"))
            .chain(source.context.iter().map(|c| (c, "context")))
            .fold(true, |ok, (value, field)| {
                self.check_inside_source(value, field) && ok
            });
        if !inside {
            return None;
        }
        let build_args = spec
            .build_args
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.value.clone()))
            .collect();
        let trigger = match &spec.trigger {
            Some(t) => self.trigger(t, project, spec.name.at),
            None => {
                self.warning(
                    spec.name.at,
                    format!(
                        "image {:?} has no trigger: rebuilds are recorded but never started",
                        spec.name.value
                    ),
                    "add a trigger (command, webhook, githubWorkflow, kubernetesJob or kargoPromotion) so the factory can start the build",
                );
                None
            }
        };
        let test = match &spec.test {
            Some(t) => Some(self.command(t, "test", TEST_TIMEOUT, spec.name.at)?),
            None => None,
        };
        Some(Build {
            source: source_kind,
            dockerfile,
            dockerfile_at,
            context,
            build_args,
            trigger,
            test,
        })
    }

    /// Whether `value` (a `source.dockerfile` or `source.context`) is a relative path
    /// that stays inside the source root; an error at `value` otherwise. Checked on the
    /// text alone (`a/../b` is fine, `../b` and `/b` are not), as BuildKit refuses a
    /// Dockerfile or context outside the build's source.
    fn check_inside_source(&mut self, value: &Located<String>, field: &str) -> bool {
        let path = value.value.as_str();
        if path.trim().is_empty() {
            let hint = if field == "context" {
                "write . for the source root, or a directory inside it"
            } else {
                "name the Dockerfile's path inside the source, e.g. Dockerfile or docker/app.Dockerfile"
            };
            self.error(value.at, format!("empty source.{field}"), hint);
            return false;
        }
        if Path::new(path).is_absolute() || path.starts_with('/') || path.starts_with('\\') {
            self.error(
                value.at,
                format!("source.{field} {path:?} is an absolute path"),
                "write it relative to the source root (the repository or source.path)",
            );
            return false;
        }
        let mut depth: usize = 0;
        for part in path.split(['/', '\\']) {
            match part {
                "" | "." => {}
                ".." if depth == 0 => {
                    self.error(
                        value.at,
                        format!("source.{field} {path:?} leaves the source"),
                        "it is relative to the source root (the repository or source.path) and must stay inside it; move source.path up instead",
                    );
                    return false;
                }
                ".." => depth -= 1,
                _ => depth += 1,
            }
        }
        true
    }

    fn trigger(&mut self, t: &TriggerSpec, project: &str, at: Position) -> Option<Trigger> {
        let set = [
            t.command.is_some(),
            t.webhook.is_some(),
            t.github_workflow.is_some(),
            t.kubernetes_job.is_some(),
            t.kargo_promotion.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if set != 1 {
            let at = trigger_position(t).unwrap_or(at);
            self.error(
                at,
                format!("trigger sets {set} backends"),
                "set exactly one of command, webhook, githubWorkflow, kubernetesJob, kargoPromotion",
            );
            return None;
        }
        if let Some(c) = &t.command {
            return self
                .command(c, "trigger.command", TRIGGER_TIMEOUT, at)
                .map(Trigger::Command);
        }
        if let Some(w) = &t.webhook {
            let url = w.url.value.as_str();
            let loopback = ["http://127.", "http://localhost", "http://[::1]"]
                .iter()
                .any(|p| url.starts_with(p));
            if !(url.starts_with("https://") || loopback) {
                self.error(
                    w.url.at,
                    format!("webhook url {url:?} is not https"),
                    "use an https:// URL (plain http is allowed only to loopback)",
                );
                return None;
            }
            let token_secret = w.token_secret.as_ref().map(|s| self.secret(s));
            let signing_secret = w.signing_secret.as_ref().map(|s| self.secret(s));
            let timeout = self.timeout(
                w.timeout.as_ref(),
                "trigger.webhook.timeout",
                TRIGGER_TIMEOUT,
            )?;
            return Some(Trigger::Webhook {
                url: url.to_string(),
                token_secret: token_secret.flatten_all()?,
                signing_secret: signing_secret.flatten_all()?,
                timeout,
            });
        }
        if let Some(g) = &t.github_workflow {
            if !GITHUB_REPOSITORY.is_match(&g.repository.value) {
                self.error(
                    g.repository.at,
                    format!("invalid repository {:?}", g.repository.value),
                    "write owner/repo, e.g. acme/platform-images",
                );
                return None;
            }
            let inputs: BTreeMap<String, String> = g
                .inputs
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.value.clone()))
                .collect();
            if !self.check_workflow(&g.workflow) {
                return None;
            }
            if let Some(r) = &g.reference {
                if r.value.trim().is_empty() {
                    self.error(
                        r.at,
                        "empty trigger.githubWorkflow.ref",
                        "name the branch or tag to run the workflow on, or remove ref (default main)",
                    );
                    return None;
                }
            }
            if let Some(k) = inputs
                .keys()
                .find(|k| RESERVED_INPUTS.contains(&k.as_str()))
            {
                self.error(
                    g.workflow.at,
                    format!("workflow input {k:?} is set by the factory"),
                    "rename the input: the factory passes rebuild_id and bases itself",
                );
                return None;
            }
            if inputs.len() + RESERVED_INPUTS.len() > 25 {
                self.error(
                    g.workflow.at,
                    format!(
                        "{} workflow inputs (+{} the factory adds)",
                        inputs.len(),
                        RESERVED_INPUTS.len()
                    ),
                    "GitHub accepts at most 25 workflow_dispatch inputs",
                );
                return None;
            }
            let auth = match (&g.app, &g.token_secret) {
                (Some(_), Some(token)) => {
                    self.error(
                        token.at,
                        "trigger.githubWorkflow sets both tokenSecret and app",
                        "authenticate either with a token or as a GitHub App, not both",
                    );
                    return None;
                }
                (Some(app), None) => GithubAuth::App {
                    app_id: app.app_id.value,
                    installation_id: app.installation_id.value,
                    private_key: self.secret(&app.private_key_secret)?,
                },
                (None, Some(token)) => GithubAuth::Token(self.secret(token)?),
                (None, None) => GithubAuth::Token(SecretRef::Env("GITHUB_TOKEN".into())),
            };
            let api_url = match &g.api_url {
                None => "https://api.github.com".to_string(),
                Some(u)
                    if u.value.starts_with("https://")
                        || ["http://127.", "http://localhost", "http://[::1]"]
                            .iter()
                            .any(|p| u.value.starts_with(p)) =>
                {
                    u.value.trim_end_matches('/').to_string()
                }
                Some(u) => {
                    self.error(
                        u.at,
                        format!("apiUrl {:?} is not https", u.value),
                        "use https://api.github.com or https://HOST/api/v3 (plain http only to loopback)",
                    );
                    return None;
                }
            };
            let timeout = self.timeout(
                g.timeout.as_ref(),
                "trigger.githubWorkflow.timeout",
                GITHUB_TIMEOUT,
            )?;
            return Some(Trigger::GithubWorkflow {
                repository: g.repository.value.clone(),
                workflow: g.workflow.value.clone(),
                reference: g
                    .reference
                    .as_ref()
                    .map_or_else(|| "main".to_string(), |r| r.value.clone()),
                inputs,
                auth,
                api_url,
                timeout,
            });
        }
        if let Some(j) = &t.kubernetes_job {
            let ok = self.check_name(&j.namespace, "trigger.kubernetesJob.namespace")
                & self.check_name(
                    &j.template_config_map,
                    "trigger.kubernetesJob.templateConfigMap",
                );
            return ok.then(|| Trigger::KubernetesJob {
                namespace: j.namespace.value.clone(),
                template_config_map: j.template_config_map.value.clone(),
            });
        }
        if let Some(p) = &t.kargo_promotion {
            return self.kargo_promotion(p, project);
        }
        None
    }

    /// A validated `trigger.kargoPromotion`. With `kargo.stages`, the Stage is generated:
    /// it needs a `task` (Kargo cannot promote without steps) and a name no other image
    /// uses (one file and one object per Stage).
    fn kargo_promotion(
        &mut self,
        p: &schema::KargoPromotionTriggerSpec,
        project: &str,
    ) -> Option<Trigger> {
        let mut ok = self.check_name(&p.stage, "trigger.kargoPromotion.stage");
        if let Some(project) = &p.project {
            ok &= self.check_name(project, "trigger.kargoPromotion.project");
        }
        let kind = match &p.task_kind {
            None => crate::kargo::TaskKind::default(),
            Some(k) => match crate::kargo::TaskKind::parse(&k.value) {
                Some(kind) => kind,
                None => {
                    self.error(
                        k.at,
                        format!("unknown trigger.kargoPromotion.taskKind {:?}", k.value),
                        "use PromotionTask or ClusterPromotionTask (Kargo's names, case-sensitive)",
                    );
                    return None;
                }
            },
        };
        if let (Some(k), None) = (&p.task_kind, &p.task) {
            self.error(
                k.at,
                "trigger.kargoPromotion.taskKind without task",
                "name the task in trigger.kargoPromotion.task, or remove taskKind",
            );
            return None;
        }
        let task = match &p.task {
            Some(t) if !TASK_NAME.is_match(&t.value) || t.value.len() > 253 => {
                self.error(
                    t.at,
                    format!("invalid trigger.kargoPromotion.task {:?}", t.value),
                    "name a PromotionTask: lower-case letters, digits, '-' and '.', at most 253 characters",
                );
                return None;
            }
            Some(t) => {
                if !self.stages {
                    self.warning(
                        t.at,
                        "trigger.kargoPromotion.task is used only for generated Stages",
                        "set kargo.stages: true to generate the Stage, or remove task (your Stage's promotionTemplate decides the steps)",
                    );
                }
                Some(crate::kargo::PromotionTaskReference {
                    kind,
                    name: t.value.clone(),
                })
            }
            None => None,
        };
        let project = p
            .project
            .as_ref()
            .map_or_else(|| project.to_string(), |p| p.value.clone());
        if self.stages && ok {
            if task.is_none() {
                self.error(
                    p.stage.at,
                    format!(
                        "kargo.stages is on but the kargoPromotion into stage {:?} names no task",
                        p.stage.value
                    ),
                    "set trigger.kargoPromotion.task to the PromotionTask that builds the image: Kargo cannot promote into a Stage with no steps",
                );
                ok = false;
            }
            match self.stage_names.get(&p.stage.value) {
                Some((first_project, first)) => {
                    let message = if *first_project == project {
                        format!(
                            "stage {:?} in project {project:?} is already promoted into by another image",
                            p.stage.value
                        )
                    } else {
                        format!(
                            "stage name {:?} is already generated for project {first_project:?}",
                            p.stage.value
                        )
                    };
                    let hint = format!(
                        "it is named at {}:{}:{}; with kargo.stages each image needs its own Stage (written to state/stages/{}.yaml)",
                        self.file, first.line, first.column, p.stage.value
                    );
                    self.error(p.stage.at, message, hint);
                    ok = false;
                }
                None => {
                    self.stage_names
                        .insert(p.stage.value.clone(), (project.clone(), p.stage.at));
                }
            }
        }
        ok.then(|| Trigger::KargoPromotion {
            stage: p.stage.value.clone(),
            project,
            task,
        })
    }
}

fn program_position(p: &ProgramSpec) -> Option<Position> {
    p.args
        .as_ref()
        .and_then(|a| a.first().map(|a| a.at))
        .or_else(|| p.shell.as_ref().map(|s| s.at))
        .or_else(|| p.timeout.as_ref().map(|t| t.at))
}

impl Checker<'_> {
    /// A validated [`Command`] from `args` or `shell` (exactly one) and `timeout`.
    fn command(
        &mut self,
        p: &ProgramSpec,
        field: &str,
        default_timeout: Duration,
        at: Position,
    ) -> Option<Command> {
        let at = program_position(p).unwrap_or(at);
        let program = match (&p.args, &p.shell) {
            (Some(args), None) => {
                if args.is_empty() || args[0].value.trim().is_empty() {
                    self.error(
                        at,
                        format!("{field}.args is empty"),
                        "name the program to run and its arguments",
                    );
                    return None;
                }
                Program::Args(args.iter().map(|a| a.value.clone()).collect())
            }
            (None, Some(line)) if !line.value.trim().is_empty() => {
                Program::Shell(line.value.clone())
            }
            (None, Some(line)) => {
                self.error(
                    line.at,
                    format!("{field}.shell is empty"),
                    "write the command line to run",
                );
                return None;
            }
            (Some(_), Some(line)) => {
                self.error(
                    line.at,
                    format!("{field} sets both args and shell"),
                    "use args (run directly) or shell (run by /bin/sh -c), not both",
                );
                return None;
            }
            (None, None) => {
                self.error(
                    at,
                    format!("{field} has neither args nor shell"),
                    "set args: [program, arg…] or shell: \"command line\"",
                );
                return None;
            }
        };
        let timeout = self.timeout(
            p.timeout.as_ref(),
            &format!("{field}.timeout"),
            default_timeout,
        )?;
        Some(Command { program, timeout })
    }

    /// A positive duration, or `default` when absent.
    fn timeout(
        &mut self,
        value: Option<&Located<String>>,
        field: &str,
        default: Duration,
    ) -> Option<Duration> {
        let Some(value) = value else {
            return Some(default);
        };
        let d = self.duration(value, field)?;
        if d.is_zero() {
            self.error(
                value.at,
                format!("{field} is zero"),
                "give the run time to finish, e.g. 30m or 2h",
            );
            return None;
        }
        Some(d)
    }

    /// A [`SecretRef`] from `env:NAME`, `file:PATH` or a bare variable name.
    fn secret(&mut self, value: &Located<String>) -> Option<SecretRef> {
        let v = value.value.trim();
        if let Some(path) = v.strip_prefix("file:") {
            if !path.is_empty() {
                return Some(SecretRef::File(self.base_dir.join(path)));
            }
        } else {
            let name = v.strip_prefix("env:").unwrap_or(v);
            if !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return Some(SecretRef::Env(name.to_string()));
            }
        }
        self.error(
            value.at,
            format!("invalid secret reference {:?}", value.value),
            "write env:NAME (an environment variable), file:PATH, or a bare variable name; never the secret itself",
        );
        None
    }

    /// Whether `workflow` names a workflow as GitHub's `workflow_dispatch` API takes it
    /// (`POST /repos/{owner}/{repo}/actions/workflows/{workflow_id}/dispatches`): a numeric
    /// ID, or the file name of a workflow in `.github/workflows` (`.yml` or `.yaml`).
    fn check_workflow(&mut self, workflow: &Located<String>) -> bool {
        let w = workflow.value.trim();
        let problem = if w.is_empty() {
            Some("empty trigger.githubWorkflow.workflow".to_string())
        } else if w.contains('/') {
            Some(format!("workflow {w:?} is a path"))
        } else if !(w.bytes().all(|b| b.is_ascii_digit())
            || w.ends_with(".yml")
            || w.ends_with(".yaml"))
        {
            Some(format!(
                "workflow {w:?} is neither a .yml/.yaml file name nor a numeric ID"
            ))
        } else {
            None
        };
        let Some(message) = problem else { return true };
        self.error(
            workflow.at,
            message,
            "name the workflow file in .github/workflows (e.g. build-image.yml) or its numeric ID",
        );
        false
    }
}

/// Whether `raw` has a `:tag` after its last `/` (a registry port is not a tag).
fn has_explicit_tag(raw: &str) -> bool {
    raw.rsplit('/')
        .next()
        .is_some_and(|last| last.contains(':'))
}

/// Default `timeout` of a `command` or `webhook` trigger.
const TRIGGER_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default `timeout` of a `githubWorkflow` trigger (queueing included).
const GITHUB_TIMEOUT: Duration = Duration::from_secs(2 * 3600);
/// Default `timeout` of a `test`.
const TEST_TIMEOUT: Duration = Duration::from_secs(600);
/// `workflow_dispatch` inputs the factory sets on every run.
pub const RESERVED_INPUTS: [&str; 2] = ["rebuild_id", "bases"];

/// `Option<Option<T>>` from a present-but-invalid field: `None` stops, `Some(None)` is
/// an absent field.
trait FlattenAll<T> {
    fn flatten_all(self) -> Option<Option<T>>;
}

impl<T> FlattenAll<T> for Option<Option<T>> {
    fn flatten_all(self) -> Option<Option<T>> {
        match self {
            None => Some(None),
            Some(None) => None,
            Some(Some(v)) => Some(Some(v)),
        }
    }
}

fn trigger_position(t: &TriggerSpec) -> Option<Position> {
    t.command
        .as_ref()
        .and_then(program_position)
        .or_else(|| t.webhook.as_ref().map(|w| w.url.at))
        .or_else(|| t.github_workflow.as_ref().map(|g| g.repository.at))
        .or_else(|| t.kubernetes_job.as_ref().map(|j| j.namespace.at))
        .or_else(|| t.kargo_promotion.as_ref().map(|p| p.stage.at))
}

fn warehouse_position(w: &WarehouseSpec) -> Option<Position> {
    [
        w.repo_url.as_ref().map(|v| v.at),
        w.image_selection_strategy.as_ref().map(|v| v.at),
        w.constraint.as_ref().map(|v| v.at),
        w.platform.as_ref().map(|v| v.at),
        w.interval.as_ref().map(|v| v.at),
        w.discovery_limit.as_ref().map(|v| v.at),
    ]
    .into_iter()
    .flatten()
    .min()
}

#[cfg(test)]
mod tests;
