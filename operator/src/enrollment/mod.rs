//! `images.yaml`: the enrollment of managed and external images.
//!
//! [`load`] reads the file with serde-saphyr (keeping every value's line and column),
//! checks it, and returns a validated [`Enrollment`] — or every finding at once, each
//! located as `images.yaml:LINE:COL` with a fix hint.

mod diagnostic;
mod keys;
pub mod schema;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;

pub use diagnostic::{Diagnostic, Severity};
use schema::{
    EnrollmentFile, ImageSpec, Located, Position, RebuildSpec, TriggerSpec, WarehouseSpec,
};

use crate::reference::Reference;

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

static NAME: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used)] // constant pattern, covered by tests
    Regex::new(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$").expect("valid name regex")
});
static PLATFORM: LazyLock<Regex> = LazyLock::new(|| {
    // Kargo image.json: "platform": {"pattern": "^\\w+/\\w+$"}
    #[allow(clippy::expect_used)]
    Regex::new(r"^\w+/\w+$").expect("valid platform regex")
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
}

impl Default for RebuildPolicy {
    fn default() -> Self {
        Self {
            delay: DEFAULT_DELAY,
            cascade_delay: Duration::ZERO,
            auto_rebuild: true,
            own_delay: false,
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
    /// A local directory (absolute after loading).
    Path {
        /// Absolute directory.
        dir: PathBuf,
        /// As written in `images.yaml`, relative to it.
        raw: String,
    },
    /// A git repository.
    Git {
        /// Clone URL.
        url: String,
        /// Branch, tag or commit; `None` for the remote's default branch.
        reference: Option<String>,
    },
}

/// A validated trigger backend (started in a later phase; parsed and checked now).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Run a program with arguments.
    Command {
        /// Program and arguments.
        args: Vec<String>,
    },
    /// POST to a URL.
    Webhook {
        /// Target URL.
        url: String,
        /// Secret or variable holding the token.
        token_secret: Option<String>,
    },
    /// GitHub `workflow_dispatch`.
    GithubWorkflow {
        /// `owner/repo`.
        repository: String,
        /// Workflow file or ID.
        workflow: String,
        /// Git ref.
        reference: String,
        /// Inputs.
        inputs: BTreeMap<String, String>,
    },
    /// A Kubernetes Job from a ConfigMap template.
    KubernetesJob {
        /// Namespace.
        namespace: String,
        /// ConfigMap with the template.
        template_config_map: String,
    },
    /// A Kargo Promotion.
    KargoPromotion {
        /// Stage.
        stage: String,
        /// Project.
        project: String,
    },
}

/// What a managed image needs to be analyzed and built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    /// Source location.
    pub source: Source,
    /// Dockerfile path relative to the source root.
    pub dockerfile: String,
    /// Build context relative to the source root.
    pub context: String,
    /// Build arguments.
    pub build_args: BTreeMap<String, String>,
    /// Trigger backend, if configured.
    pub trigger: Option<Trigger>,
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
    /// Defaults for images and discovered base images.
    pub defaults_rebuild: RebuildPolicy,
    /// Warehouse defaults; `repo_url` and `constraint` are empty here.
    pub defaults_warehouse: WarehouseConfig,
    /// The images in file order.
    pub images: Vec<Image>,
    /// Warnings found while loading (errors make loading fail).
    pub warnings: Vec<Diagnostic>,
}

impl Enrollment {
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

/// Reads and validates an enrollment file.
///
/// `display` is how the file is named in messages (usually the path the user typed).
///
/// # Errors
///
/// [`EnrollmentError::Read`] when the file cannot be read; [`EnrollmentError::Invalid`]
/// with every finding when it is not a valid enrollment.
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
    parse(&path.display().to_string(), &text, &base_dir)
}

/// Parses and validates enrollment text; relative source paths resolve against `base_dir`.
///
/// # Errors
///
/// [`EnrollmentError::Invalid`] with every finding.
pub fn parse(file: &str, text: &str, base_dir: &Path) -> Result<Enrollment, EnrollmentError> {
    let raw: EnrollmentFile = match serde_saphyr::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            // serde stops at the first unknown key; list them all when that is the problem.
            let unknown = keys::unknown_keys(file, text);
            let diagnostics = if unknown.is_empty() {
                vec![syntax_diagnostic(file, &e)]
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
    };
    let enrollment = checker.check(raw);
    let mut findings = checker.findings;
    findings.sort_by_key(|d| (d.at, d.severity));
    if findings.iter().any(|d| d.severity == Severity::Error) {
        return Err(EnrollmentError::Invalid {
            file: file.to_string(),
            diagnostics: findings,
        });
    }
    Ok(Enrollment {
        warnings: findings,
        ..enrollment
    })
}

/// Turns a serde-saphyr error (unknown key, wrong type, bad YAML) into a located finding.
fn syntax_diagnostic(file: &str, e: &serde_saphyr::Error) -> Diagnostic {
    let at = e
        .location()
        .map(|l| Position {
            line: l.line(),
            column: l.column(),
        })
        .unwrap_or_default();
    let message = e.to_string();
    // serde-saphyr prefixes its own "line N column M" text; keep the message short.
    let message = message.lines().next().unwrap_or_default().to_string();
    let hint = if message.contains("unknown field") {
        "check the spelling against the schema (`image-factory schema`); field names are camelCase"
    } else if message.contains("missing field") {
        "add the required field"
    } else {
        "fix the YAML at this position"
    };
    Diagnostic::error(file, at, message).hint(hint)
}

struct Checker<'a> {
    file: &'a str,
    base_dir: &'a Path,
    findings: Vec<Diagnostic>,
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

        let mut images = Vec::with_capacity(raw.images.len());
        let mut names: HashMap<String, Position> = HashMap::new();
        let mut published: HashMap<(String, String), (String, Position)> = HashMap::new();
        for spec in raw.images {
            let Some(image) = self.image(spec, &project, &defaults_rebuild, &defaults_warehouse)
            else {
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
            defaults_rebuild,
            defaults_warehouse,
            images,
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
            at: spec.name.at,
        })
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
                let dir = self.base_dir.join(&path.value);
                if !dir.is_dir() {
                    self.error(
                        path.at,
                        format!("source path {:?} is not a directory", path.value),
                        format!("paths are relative to the directory of {}", self.file),
                    );
                    return None;
                }
                Source::Path {
                    dir,
                    raw: path.value.clone(),
                }
            }
        };
        let dockerfile = source
            .dockerfile
            .as_ref()
            .map_or_else(|| "Dockerfile".to_string(), |d| d.value.clone());
        if let Source::Path { dir, raw } = &source_kind {
            if !dir.join(&dockerfile).is_file() {
                let at = source.dockerfile.as_ref().map_or_else(
                    || source.path.as_ref().map_or(spec.name.at, |p| p.at),
                    |d| d.at,
                );
                self.error(
                    at,
                    format!(
                        "image {:?}: Dockerfile {raw}/{dockerfile} does not exist",
                        spec.name.value
                    ),
                    "set source.dockerfile to the Dockerfile's path inside the source directory",
                );
                return None;
            }
        }
        let context = source
            .context
            .as_ref()
            .map_or_else(|| ".".to_string(), |c| c.value.clone());
        let build_args = spec
            .build_args
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.value.clone()))
            .collect();
        let trigger = spec
            .trigger
            .as_ref()
            .and_then(|t| self.trigger(t, project, spec.name.at));
        Some(Build {
            source: source_kind,
            dockerfile,
            context,
            build_args,
            trigger,
        })
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
            if c.args.is_empty() || c.args[0].value.trim().is_empty() {
                self.error(
                    at,
                    "trigger.command.args is empty",
                    "name the program to run and its arguments",
                );
                return None;
            }
            return Some(Trigger::Command {
                args: c.args.iter().map(|a| a.value.clone()).collect(),
            });
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
            return Some(Trigger::Webhook {
                url: url.to_string(),
                token_secret: w.token_secret.as_ref().map(|s| s.value.clone()),
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
            if inputs.len() > 25 {
                self.error(
                    g.workflow.at,
                    format!("{} workflow inputs", inputs.len()),
                    "GitHub accepts at most 25 workflow_dispatch inputs",
                );
                return None;
            }
            return Some(Trigger::GithubWorkflow {
                repository: g.repository.value.clone(),
                workflow: g.workflow.value.clone(),
                reference: g
                    .reference
                    .as_ref()
                    .map_or_else(|| "main".to_string(), |r| r.value.clone()),
                inputs,
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
            let ok = self.check_name(&p.stage, "trigger.kargoPromotion.stage");
            return ok.then(|| Trigger::KargoPromotion {
                stage: p.stage.value.clone(),
                project: p
                    .project
                    .as_ref()
                    .map_or_else(|| project.to_string(), |p| p.value.clone()),
            });
        }
        None
    }
}

/// Whether `raw` has a `:tag` after its last `/` (a registry port is not a tag).
fn has_explicit_tag(raw: &str) -> bool {
    raw.rsplit('/')
        .next()
        .is_some_and(|last| last.contains(':'))
}

fn trigger_position(t: &TriggerSpec) -> Option<Position> {
    t.command
        .as_ref()
        .and_then(|c| c.args.first().map(|a| a.at))
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
