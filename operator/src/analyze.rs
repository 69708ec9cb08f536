//! `image-factory analyze`: enrollment → sources → Dockerfiles → graph → state files,
//! Kargo Warehouses and (with `kargo.stages`) Kargo Stages. Also the shared front half
//! of `validate`, `graph` and `plan`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::dockerfile::{self, Analysis, From};
use crate::enrollment::Severity;
use crate::enrollment::{self, schema::Position, Diagnostic, Enrollment, EnrollmentError, Source};
use crate::graph::{Graph, NodeKind, Use};
use crate::kargo;
use crate::reference::Reference;
use crate::source::{self, SourceError};
use crate::state::{
    self, BaseState, Changes, ImageState, PolicyState, SourceState, StateError, WriteReport,
};

/// Analyze errors; each stops the run before anything is written.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    /// `images.yaml` is unreadable or invalid.
    #[error(transparent)]
    Enrollment(#[from] EnrollmentError),
    /// A managed image's source could not be fetched or its Dockerfile read.
    #[error("image {image:?}: {source}")]
    Source {
        /// The image name.
        image: String,
        /// What failed.
        source: SourceError,
    },
    /// The images depend on each other in a circle.
    #[error("{} dependency cycle(s): {}", .cycles.len(), .cycles.iter().map(|c| c.join(" → ")).collect::<Vec<_>>().join("; "))]
    Cycles {
        /// Each cycle as names, first repeated last.
        cycles: Vec<Vec<String>>,
    },
    /// A Dockerfile cannot be used (no `FROM`, a stage built on itself, …); every
    /// finding is listed, as `validate` lists them.
    #[error("{} Dockerfile error(s)", .diagnostics.iter().filter(|d| d.severity == Severity::Error).count())]
    Findings {
        /// Every finding, errors and warnings.
        diagnostics: Vec<Diagnostic>,
    },
    /// Reading or writing state failed.
    #[error(transparent)]
    State(#[from] StateError),
}

impl AnalyzeError {
    /// Whether the error is the user's input (exit 1) rather than I/O (exit 2).
    pub fn is_finding(&self) -> bool {
        matches!(
            self,
            Self::Enrollment(EnrollmentError::Invalid { .. })
                | Self::Cycles { .. }
                | Self::Findings { .. }
        )
    }
}

/// What `analyze` needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// `images.yaml`.
    pub enrollment: PathBuf,
    /// The state folder (`state/`).
    pub state_dir: PathBuf,
    /// Where git sources are cached.
    pub cache_dir: PathBuf,
    /// Remove state of images nobody enrolls or references any more.
    pub prune: bool,
    /// Compute everything but write nothing.
    pub dry_run: bool,
    /// Keep going past a source that cannot be fetched or a Dockerfile without a usable
    /// `FROM`: the image keeps its last analysis from its state record, marked `stale`
    /// ([`Report::stale`]), and everything else is analyzed and written. Without it the
    /// first such image stops the run and nothing is written.
    pub keep_going: bool,
}

/// How an image's analysis was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The Dockerfile was read and parsed by this run.
    Parsed,
    /// The source's fingerprint equals its state record's: the record's analysis was
    /// reused, the Dockerfile neither read (git) nor parsed.
    Reused,
    /// The source failed (`keep_going`): the analysis is the state record's last good
    /// one when `kept`, else empty.
    Stale {
        /// The error, credentials redacted.
        reason: String,
        /// When the source first failed, RFC 3339 UTC.
        since: String,
        /// Whether a previous analysis was kept (false: the image has none).
        kept: bool,
    },
}

/// One image whose source failed under `keep_going`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleImage {
    /// The image name.
    pub image: String,
    /// The error.
    pub reason: String,
    /// Whether its last analysis was kept; false when it had none (its record then
    /// names no base images).
    pub kept: bool,
}

/// The Dockerfile analysis of one managed image.
#[derive(Debug, Clone)]
pub struct Analyzed {
    /// The Dockerfile's analysis.
    pub analysis: Analysis,
    /// The git commit analyzed, for git sources.
    pub commit: Option<String>,
    /// How the Dockerfile is named in messages (`examples/app/Dockerfile`).
    pub display: String,
    /// What the analysis was computed from (see [`state::SourceState::fingerprint`]);
    /// `None` when unknown (a stale image without earlier analysis).
    pub fingerprint: Option<String>,
    /// Parsed now, reused, or kept from state.
    pub origin: Origin,
}

/// The enrollment, every managed image's Dockerfile analysis and the graph.
#[derive(Debug, Clone)]
pub struct Model {
    /// The validated enrollment.
    pub enrollment: Enrollment,
    /// Analyses by image name.
    pub analyzed: BTreeMap<String, Analyzed>,
    /// The dependency graph.
    pub graph: Graph,
}

/// A summary of an analyze run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Managed images.
    pub managed: usize,
    /// External images.
    pub external: usize,
    /// Discovered base images.
    pub bases: usize,
    /// Edges `base → dependent`.
    pub edges: usize,
    /// Longest chain, in levels (0 when there are no edges).
    pub depth: usize,
    /// `(image, raw FROM text)` that could not be resolved.
    pub unresolved: Vec<(String, String)>,
    /// Images marked orphaned (kept; `--prune` removes them).
    pub orphans: Vec<String>,
    /// Images whose state `--prune` removed.
    pub pruned: Vec<String>,
    /// Warnings from the enrollment and the Dockerfiles.
    pub warnings: Vec<Diagnostic>,
    /// Warehouses generated.
    pub warehouses: usize,
    /// Kargo Stages generated (`kargo.stages: true`).
    pub stages: usize,
    /// Runtime records created from version-1 state files.
    pub migrated: usize,
    /// What the write changed.
    pub write: WriteReport,
    /// Dockerfiles read and parsed by this run.
    pub parsed: usize,
    /// Analyses reused from state records because their source did not change.
    pub reused: usize,
    /// Images whose source failed under `keep_going`, in name order.
    pub stale: Vec<StaleImage>,
}

impl Report {
    /// Whether some image's source failed (`keep_going`): the run is partial.
    pub fn is_partial(&self) -> bool {
        !self.stale.is_empty()
    }
}

/// Reports progress of reading sources; injected so the CLI can draw a bar and the
/// long-running modes can log or stay silent.
pub trait Progress: Sync {
    /// Reading starts: `total` managed images, `git` of them from git sources.
    fn start(&self, total: usize, git: usize) {
        let _ = (total, git);
    }
    /// One image's Dockerfile was read and analyzed.
    fn advance(&self, image: &str) {
        let _ = image;
    }
    /// Reading ended (successfully or not).
    fn finish(&self) {}
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// Loads the enrollment, reads every managed image's Dockerfile (fetching git sources
/// when `fetch_git`, else skipping them) and builds the graph: [`enrollment::load`],
/// [`read_sources`] and [`build_graph`] in one call.
///
/// # Errors
///
/// [`AnalyzeError::Enrollment`] for a bad `images.yaml`, [`AnalyzeError::Source`] when a
/// source cannot be read.
pub fn model(
    path: &Path,
    cache_dir: &Path,
    fetch_git: bool,
    progress: &dyn Progress,
) -> Result<Model, AnalyzeError> {
    let enrollment = enrollment::load(path)?;
    let analyzed = read_sources(&enrollment, cache_dir, fetch_git, progress)?;
    let graph = build_graph(&enrollment, &analyzed, &BTreeMap::new());
    Ok(Model {
        enrollment,
        analyzed,
        graph,
    })
}

/// As [`model`], with the names the state files in `state_dir` already give to
/// discovered bases (so the graph's names are the ones `analyze` writes), reusing the
/// analysis of every state record whose source did not change (incremental analysis).
///
/// # Errors
///
/// As [`model`], and [`AnalyzeError::State`] when a state file cannot be read.
pub fn model_named(
    path: &Path,
    cache_dir: &Path,
    state_dir: &Path,
    progress: &dyn Progress,
) -> Result<Model, AnalyzeError> {
    let enrollment = enrollment::load(path)?;
    let old = state::load_images(state_dir)?;
    let analyzed = first_error(
        &enrollment,
        read_sources_reusing(&enrollment, cache_dir, true, &old.images, progress),
    )?;
    let names = known_names(&old);
    let graph = build_graph(&enrollment, &analyzed, &names);
    Ok(Model {
        enrollment,
        analyzed,
        graph,
    })
}

/// Reads and analyzes the Dockerfile of every managed image (git sources only when
/// `fetch_git`), by image name. Images of one git repository share its cache, so each
/// repository is fetched by one task (once per ref); repositories and local sources are
/// read in parallel (rayon).
///
/// # Errors
///
/// [`AnalyzeError::Source`] for the first image, in file order, whose source failed.
pub fn read_sources(
    enrollment: &Enrollment,
    cache_dir: &Path,
    fetch_git: bool,
    progress: &dyn Progress,
) -> Result<BTreeMap<String, Analyzed>, AnalyzeError> {
    first_error(
        enrollment,
        read_sources_reusing(enrollment, cache_dir, fetch_git, &BTreeMap::new(), progress),
    )
}

/// The analyses by name, or the error of the first failed image in file order.
fn first_error(
    enrollment: &Enrollment,
    results: Vec<(String, Result<Analyzed, SourceError>)>,
) -> Result<BTreeMap<String, Analyzed>, AnalyzeError> {
    let mut analyzed = BTreeMap::new();
    let mut failed = BTreeMap::new();
    for (name, result) in results {
        match result {
            Ok(a) => {
                analyzed.insert(name, a);
            }
            Err(e) => {
                failed.insert(name, e);
            }
        }
    }
    // Report the error of the first image in file order, whatever finished first.
    for image in &enrollment.images {
        if let Some(source) = failed.remove(&image.name) {
            return Err(AnalyzeError::Source {
                image: image.name.clone(),
                source,
            });
        }
    }
    Ok(analyzed)
}

/// Reads every managed image's Dockerfile (git sources only when `fetch_git`): one
/// `(image name, result)` per managed image, in no particular order. An image whose
/// source fingerprint equals that of its record in `previous` (analysis records by
/// name, [`state::load_images`]) reuses the record's analysis ([`Origin::Reused`]):
/// incremental analysis. Repositories and local sources are read in parallel (rayon).
pub fn read_sources_reusing(
    enrollment: &Enrollment,
    cache_dir: &Path,
    fetch_git: bool,
    previous: &BTreeMap<String, ImageState>,
    progress: &dyn Progress,
) -> Vec<(String, Result<Analyzed, SourceError>)> {
    let _span = tracing::info_span!("read_sources", images = enrollment.images.len()).entered();
    let managed: Vec<(&str, &enrollment::Build)> = enrollment
        .images
        .iter()
        .filter_map(|i| Some((i.name.as_str(), i.build.as_ref()?)))
        .filter(|(_, b)| fetch_git || matches!(b.source, Source::Path { .. }))
        .collect();
    let git_count = managed
        .iter()
        .filter(|(_, b)| matches!(b.source, Source::Git { .. }))
        .count();
    progress.start(managed.len(), git_count);
    let mut groups: BTreeMap<Option<&str>, Vec<(&str, &enrollment::Build)>> = BTreeMap::new();
    for (name, build) in managed {
        let url = match &build.source {
            Source::Git { url, .. } => Some(url.as_str()),
            Source::Path { .. } => None,
        };
        groups.entry(url).or_default().push((name, build));
    }
    let base_dir = &enrollment.base_dir;
    let stat_cache = crate::statcache::StatCache::load(cache_dir);
    let local_files: std::collections::HashSet<PathBuf> = groups
        .get(&None)
        .into_iter()
        .flatten()
        .filter_map(|(_, build)| local_dockerfile(build))
        .collect();
    let results: Vec<(String, Result<Analyzed, SourceError>)> = groups
        .into_par_iter()
        .flat_map_iter(|(url, images)| {
            let one =
                |(name, build): (&str, &enrollment::Build),
                 fetched: &mut BTreeMap<Option<String>, source::Fetched>| {
                    let result = analyze_image(
                        build,
                        base_dir,
                        cache_dir,
                        fetched,
                        previous.get(name),
                        &stat_cache,
                    );
                    progress.advance(name);
                    (name.to_string(), result)
                };
            if url.is_none() {
                // Local sources: one task per image.
                return images
                    .into_par_iter()
                    .map(|image| one(image, &mut BTreeMap::new()))
                    .collect::<Vec<_>>()
                    .into_iter();
            }
            let mut fetched = BTreeMap::new();
            images
                .into_iter()
                .map(|image| one(image, &mut fetched))
                .collect::<Vec<_>>()
                .into_iter()
        })
        .collect();
    progress.finish();
    stat_cache.save(&local_files);
    results
}

/// The absolute path of a local (path) source's Dockerfile; `None` for a git source or
/// a path that cannot be made absolute.
fn local_dockerfile(build: &enrollment::Build) -> Option<PathBuf> {
    match &build.source {
        Source::Path { dir, .. } => std::path::absolute(dir.join(&build.dockerfile)).ok(),
        Source::Git { .. } => None,
    }
}

/// Builds the dependency graph from the enrollment and the Dockerfile analyses.
/// `names` maps a normalized reference to the name its state file already has, so a
/// discovered base keeps its name once given (see [`Graph::build_named`]).
pub fn build_graph(
    enrollment: &Enrollment,
    analyzed: &BTreeMap<String, Analyzed>,
    names: &BTreeMap<String, String>,
) -> Graph {
    let uses: BTreeMap<String, Vec<Use>> = analyzed
        .iter()
        .map(|(name, a)| {
            let list = a
                .analysis
                .dependencies
                .iter()
                .map(|d| Use {
                    reference: d.reference.clone(),
                    via: via_name(d.via).to_string(),
                })
                .collect();
            (name.clone(), list)
        })
        .collect();
    Graph::build_named(enrollment, &uses, names)
}

/// The analyzer's identity in fingerprints: a new release may analyze differently.
const ANALYZER: &str = concat!("image-factory ", env!("CARGO_PKG_VERSION"));

/// The fingerprint of one image's analysis inputs (see
/// [`state::SourceState::fingerprint`]): `sha256:<64 hex>` of the analyzer, the
/// Dockerfile path, the number of build args, each build arg's key and value, and `parts`
/// (the Dockerfile's bytes, or a git URL and commit), each ended by a NUL.
fn fingerprint(build: &enrollment::Build, parts: &[&[u8]]) -> String {
    let mut bytes = Vec::with_capacity(256 + parts.iter().map(|p| p.len()).sum::<usize>());
    let mut push = |part: &[u8]| {
        bytes.extend_from_slice(part);
        bytes.push(0);
    };
    push(ANALYZER.as_bytes());
    push(build.dockerfile.as_bytes());
    // The count keeps a build arg from reading as a part (and back).
    push(build.build_args.len().to_string().as_bytes());
    for (key, value) in &build.build_args {
        push(key.as_bytes());
        push(value.as_bytes());
    }
    for part in parts {
        push(part);
    }
    crate::runtime::Digest::sha256_of(&bytes).to_string()
}

/// Reads and analyzes one managed image's Dockerfile; `fetched` caches this task's git
/// fetches by ref, so a repository is fetched once per ref. When `previous` (the
/// image's state record) has the same fingerprint, its analysis is reused: a git
/// Dockerfile is then not read, a local one read (to hash it) but not parsed — or not
/// even read when `stat_cache` knows its fingerprint for its unchanged `stat`.
fn analyze_image(
    build: &enrollment::Build,
    base_dir: &Path,
    cache_dir: &Path,
    fetched: &mut BTreeMap<Option<String>, source::Fetched>,
    previous: Option<&ImageState>,
    stat_cache: &crate::statcache::StatCache,
) -> Result<Analyzed, SourceError> {
    let key = match &build.source {
        Source::Git { reference, .. } => reference.clone(),
        Source::Path { .. } => None,
    };
    let source = match fetched.entry(key) {
        std::collections::btree_map::Entry::Occupied(cached) => cached.into_mut(),
        std::collections::btree_map::Entry::Vacant(slot) => {
            slot.insert(source::fetch(&build.source, cache_dir)?)
        }
    };
    let display = display_of(build, base_dir);
    let (fingerprint, content) = match (&*source, &build.source) {
        (source::Fetched::Git { commit, .. }, Source::Git { url, .. }) => {
            let commit = commit.to_string();
            let url = source::redact_url(url);
            let print = fingerprint(build, &[url.as_bytes(), commit.as_bytes()]);
            (print, None)
        }
        _ => {
            let file = local_dockerfile(build);
            let key = fingerprint(build, &[]);
            match file.as_deref().and_then(|f| stat_cache.lookup(f, &key)) {
                Some(print) => (print, None),
                None => {
                    let content = source.read(&build.dockerfile)?;
                    let print = fingerprint(build, &[content.as_bytes()]);
                    if let Some(f) = &file {
                        stat_cache.record(f, &key, &print);
                    }
                    (print, Some(content))
                }
            }
        }
    };
    let reused = previous
        .filter(|r| r.source.as_ref().and_then(|s| s.fingerprint.as_ref()) == Some(&fingerprint))
        .and_then(|r| from_record(r, &display));
    if let Some(analysis) = reused {
        return Ok(Analyzed {
            analysis,
            commit: source.commit(),
            display,
            fingerprint: Some(fingerprint),
            origin: Origin::Reused,
        });
    }
    let content = match content {
        Some(content) => content,
        None => source.read(&build.dockerfile)?,
    };
    let analysis = dockerfile::analyze(&display, &content, &build.build_args);
    Ok(Analyzed {
        analysis,
        commit: source.commit(),
        display,
        fingerprint: Some(fingerprint),
        origin: Origin::Parsed,
    })
}

/// The analysis a state record holds, rebuilt for the graph: one dependency per base
/// reference (as [`BaseState::written`], else `reference`, pinned to each of `pinned`)
/// and use, one unresolved stage per `unresolved` entry; `None` when the record is not
/// a managed image's. Problems (warnings) are not recorded, so none are rebuilt.
pub fn from_record(record: &ImageState, display: &str) -> Option<Analysis> {
    if record.kind != NodeKind::Managed || record.source.is_none() {
        return None;
    }
    let mut dependencies = Vec::new();
    for base in &record.base_images {
        let written: Vec<Reference> = if base.written.is_empty() {
            let reference = Reference::parse(&base.reference).ok()?;
            if base.pinned.is_empty() {
                vec![reference]
            } else {
                base.pinned
                    .iter()
                    .map(|d| reference.with_digest(d.clone()))
                    .collect()
            }
        } else {
            base.written
                .iter()
                .map(|r| Reference::parse(r).ok())
                .collect::<Option<_>>()?
        };
        for reference in written {
            for via in &base.via {
                let via = match via.as_str() {
                    "copy" => dockerfile::Via::Copy,
                    "mount" => dockerfile::Via::Mount,
                    _ => dockerfile::Via::From,
                };
                dependencies.push(dockerfile::Dependency {
                    reference: reference.clone(),
                    via,
                    stage: 0,
                    line: 0,
                });
            }
        }
    }
    let stages = record
        .unresolved
        .iter()
        .enumerate()
        .map(|(index, raw)| dockerfile::Stage {
            index,
            name: None,
            platform: None,
            from: From::Unresolved { raw: raw.clone() },
            line: 0,
        })
        .collect();
    Some(Analysis {
        file: display.to_string(),
        stages,
        dependencies,
        problems: Vec::new(),
    })
}

/// How an image's Dockerfile is named in messages.
fn display_of(build: &enrollment::Build, base_dir: &Path) -> String {
    match &build.source {
        Source::Path { raw, .. } => display_path(base_dir, raw, &build.dockerfile),
        Source::Git { url, .. } => format!("{}#{}", source::redact_url(url), build.dockerfile),
    }
}

/// The analysis of an image whose source failed (`keep_going`): its record's last good
/// analysis, commit and fingerprint when it has one, else an empty analysis, marked
/// stale since the record's `staleSince` (when it was stale already) or `now`.
fn stale_analysis(
    build: &enrollment::Build,
    base_dir: &Path,
    reason: String,
    record: Option<&ImageState>,
    now: &str,
) -> Analyzed {
    let display = display_of(build, base_dir);
    // A record that is stale without a fingerprint never had an analysis to keep.
    let good =
        record.filter(|r| !(r.stale && r.source.as_ref().is_none_or(|s| s.fingerprint.is_none())));
    let kept = good.and_then(|r| from_record(r, &display));
    let since = record
        .filter(|r| r.stale)
        .and_then(|r| r.stale_since.clone())
        .unwrap_or_else(|| now.to_string());
    let source = good.and_then(|r| r.source.as_ref());
    Analyzed {
        origin: Origin::Stale {
            reason,
            since,
            kept: kept.is_some(),
        },
        analysis: kept.unwrap_or_else(|| Analysis {
            file: display.clone(),
            stages: Vec::new(),
            dependencies: Vec::new(),
            problems: Vec::new(),
        }),
        commit: source.and_then(|s| s.commit.clone()),
        fingerprint: source.and_then(|s| s.fingerprint.clone()),
        display,
    }
}

fn via_name(via: dockerfile::Via) -> &'static str {
    match via {
        dockerfile::Via::From => "from",
        dockerfile::Via::Copy => "copy",
        dockerfile::Via::Mount => "mount",
    }
}

/// `base_dir/raw/dockerfile` as a short relative path for messages.
fn display_path(base_dir: &Path, raw: &str, dockerfile: &str) -> String {
    let path = base_dir.join(raw).join(dockerfile);
    let text = path.display().to_string();
    text.strip_prefix("./").map(str::to_string).unwrap_or(text)
}

impl Model {
    /// Findings about the Dockerfiles and the graph: unusable Dockerfiles and cycles are
    /// errors; unresolved references and Dockerfile problems are warnings. Cycles are
    /// reported at each member's `images.yaml` entry.
    pub fn findings(&self) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        for (name, a) in &self.analyzed {
            // Reused and kept analyses hold only what the graph needs (no stages).
            if a.origin == Origin::Parsed && a.analysis.stages.is_empty() {
                out.push(
                    Diagnostic::error(
                        &a.display,
                        Position::default(),
                        format!("image {name:?}: the Dockerfile has no usable FROM"),
                    )
                    .hint("a Dockerfile starts its first stage with FROM <image>"),
                );
            }
            for problem in &a.analysis.problems {
                // The missing FROM is the error above.
                if problem.kind == dockerfile::ProblemKind::NoFrom {
                    continue;
                }
                let at = Position {
                    line: u64::try_from(problem.line).unwrap_or(u64::MAX),
                    column: u64::from(problem.line > 0),
                };
                let message = format!("image {name:?}: {}", problem.kind);
                out.push(Diagnostic::warning(&a.display, at, message).hint(problem.hint()));
            }
        }
        for (image, _) in self.generated_stages() {
            // Only images whose Dockerfile was read (validate skips git sources).
            if self.analyzed.contains_key(&image.name)
                && self.stage_warehouses(&image.name).is_empty()
            {
                out.push(
                    Diagnostic::error(
                        &self.enrollment.file,
                        image.at,
                        format!("image {:?}: a Kargo Stage needs Freight, but the image is built only on managed images (which have no Warehouse)", image.name),
                    )
                    .hint("use another trigger for this image, or set kargo.stages: false and write a Stage that requests Freight yourself"),
                );
            }
        }
        for cycle in self.graph.cycles() {
            let text = cycle.join(" → ");
            let members: BTreeSet<&String> = cycle.iter().collect();
            for image in &self.enrollment.images {
                if members.contains(&image.name) {
                    out.push(
                        Diagnostic::error(&self.enrollment.file, image.at, format!("dependency cycle: {text}"))
                            .hint("an image cannot be built on itself, directly or through others; change one FROM in the cycle"),
                    );
                }
            }
        }
        out
    }
}

impl Model {
    /// With `kargo.stages: true`, each managed image whose trigger is `kargoPromotion`,
    /// with that trigger's stage, project and task; empty otherwise.
    pub fn generated_stages(
        &self,
    ) -> Vec<(
        &enrollment::Image,
        (&str, &str, &kargo::PromotionTaskReference),
    )> {
        if !self.enrollment.stages {
            return Vec::new();
        }
        self.enrollment
            .images
            .iter()
            .filter_map(|image| match image.build.as_ref()?.trigger.as_ref()? {
                enrollment::Trigger::KargoPromotion {
                    stage,
                    project,
                    task: Some(task),
                } => Some((image, (stage.as_str(), project.as_str(), task))),
                _ => None,
            })
            .collect()
    }

    /// The generated Warehouses a Stage for managed image `name` requests Freight from:
    /// those of its base and external images (managed parents have none), sorted.
    pub fn stage_warehouses(&self, name: &str) -> Vec<String> {
        self.graph
            .bases(name)
            .into_iter()
            .filter(|b| {
                self.graph
                    .node(b)
                    .is_some_and(|n| n.kind != NodeKind::Managed)
            })
            .collect()
    }
}

/// Runs `analyze`: loads the enrollment, reads the sources (reusing the analysis of
/// every state record whose source fingerprint did not change), builds the graph
/// (keeping the names state files already have), refuses cycles and Dockerfile errors,
/// renders every analysis record and Warehouse in memory, then commits them in one
/// journaled write (unless `dry_run`). Runtime records are never touched, except once
/// to move the runtime sections of version-1 state files into them. With `keep_going`, a
/// failed source or a Dockerfile without a usable `FROM` makes its image stale
/// ([`Origin::Stale`]) instead of stopping the run.
///
/// # Errors
///
/// Any [`AnalyzeError`]; nothing is written unless everything rendered, and a failure
/// while writing is reported by [`StateError`] with exactly what was written.
pub fn run(options: &Options, progress: &dyn Progress) -> Result<Report, AnalyzeError> {
    run_with_model(options, progress).map(|(report, _)| report)
}

/// As [`run`], also returning the model it wrote (the graph with the state's names).
///
/// # Errors
///
/// As [`run`].
pub fn run_with_model(
    options: &Options,
    progress: &dyn Progress,
) -> Result<(Report, Model), AnalyzeError> {
    let _span = tracing::info_span!("analyze", file = %options.enrollment.display()).entered();
    let text = std::fs::read(&options.enrollment).map_err(|source| EnrollmentError::Read {
        path: options.enrollment.clone(),
        source,
    })?;
    let enrollment = enrollment::load(&options.enrollment)?;
    if !options.dry_run {
        // Complete (or roll back) what an interrupted write left before reading state.
        state::journal::recover(&options.state_dir)?;
    }
    let old = state::load_images(&options.state_dir)?;
    let results =
        read_sources_reusing(&enrollment, &options.cache_dir, true, &old.images, progress);
    let analyzed = if options.keep_going {
        keep_going(&enrollment, results, &old.images)
    } else {
        first_error(&enrollment, results)?
    };
    let names = known_names(&old);
    let graph = build_graph(&enrollment, &analyzed, &names);
    let model = Model {
        enrollment,
        analyzed,
        graph,
    };
    let cycles = model.graph.cycles();
    if !cycles.is_empty() {
        return Err(AnalyzeError::Cycles { cycles });
    }
    let findings = model.findings();
    if findings.iter().any(|d| d.severity == Severity::Error) {
        return Err(AnalyzeError::Findings {
            diagnostics: findings,
        });
    }
    let (files, mut report) = render(&model, &old.images, options.prune)?;
    report.warnings = model.enrollment.warnings.clone();
    report.warnings.extend(findings);
    for (name, a) in &model.analyzed {
        match &a.origin {
            Origin::Parsed => report.parsed += 1,
            Origin::Reused => report.reused += 1,
            Origin::Stale { reason, kept, .. } => report.stale.push(StaleImage {
                image: name.clone(),
                reason: reason.clone(),
                kept: *kept,
            }),
        }
    }
    let mut changes = Changes::default();
    for folder in [state::IMAGES_DIR, state::WAREHOUSES_DIR, state::STAGES_DIR] {
        for rel in owned_files(&options.state_dir, folder)? {
            if !files.contains_key(&rel) {
                changes.remove(rel);
            }
        }
    }
    for (rel, content) in files {
        changes.write(rel, content);
    }
    let migrated = migrate_runtime(&options.state_dir, &old)?;
    report.migrated = migrated.files.len();
    changes.extend(migrated);
    if !options.dry_run {
        report.write = state::journal::commit(&options.state_dir, &changes)?;
        // After the records: a crash in between leaves the old hash, which only makes
        // `graph` and `plan` analyze again.
        record_enrollment(&options.state_dir, &text, &report)?;
    }
    Ok((report, model))
}

/// Under `keep_going`: every failed image, and every freshly parsed Dockerfile without a
/// usable `FROM`, becomes stale with its record's last analysis ([`stale_analysis`]).
fn keep_going(
    enrollment: &Enrollment,
    results: Vec<(String, Result<Analyzed, SourceError>)>,
    old: &BTreeMap<String, ImageState>,
) -> BTreeMap<String, Analyzed> {
    let builds: BTreeMap<&str, &enrollment::Build> = enrollment
        .images
        .iter()
        .filter_map(|i| Some((i.name.as_str(), i.build.as_ref()?)))
        .collect();
    let now = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string();
    let mut analyzed = BTreeMap::new();
    for (name, result) in results {
        let reason = match result {
            Ok(a) if a.origin == Origin::Parsed && a.analysis.stages.is_empty() => {
                format!("{}: the Dockerfile has no usable FROM", a.display)
            }
            Ok(a) => {
                analyzed.insert(name, a);
                continue;
            }
            Err(e) => e.to_string(),
        };
        let Some(build) = builds.get(name.as_str()) else {
            continue;
        };
        tracing::warn!(image = %name, %reason, "source failed; keeping its last analysis");
        let stale = stale_analysis(build, &enrollment.base_dir, reason, old.get(&name), &now);
        analyzed.insert(name, stale);
    }
    analyzed
}

/// The model `state/` holds for the enrollment at `path`, without fetching any git
/// source: `Some` when `state/analysis.yaml` records the hash of exactly these
/// `images.yaml` bytes, every managed image has an analysis record, and every local
/// (path) source's Dockerfile still has its record's fingerprint (read and hashed, not
/// parsed); `None` when state is missing or not current (then the caller analyzes).
/// Stale records are used as they are (their last good analysis) and come back as
/// [`Origin::Stale`]; the others as [`Origin::Reused`]. A git source that moved since
/// `analyze` last ran is not seen.
///
/// # Errors
///
/// [`AnalyzeError::Enrollment`] for a bad `images.yaml` (that state is current for),
/// [`AnalyzeError::State`] when a state file cannot be read.
pub fn model_from_state(
    path: &Path,
    state_dir: &Path,
) -> Result<Option<(Model, state::AnalysisRecord)>, AnalyzeError> {
    let Ok(text) = std::fs::read(path) else {
        return Ok(None);
    };
    let Some(record) = state::read_analysis(state_dir)? else {
        return Ok(None);
    };
    if record.enrollment != crate::runtime::Digest::sha256_of(&text).to_string() {
        return Ok(None);
    }
    let enrollment = enrollment::load(path)?;
    let old = state::load_images(state_dir)?;
    let mut analyzed = BTreeMap::new();
    for image in &enrollment.images {
        let Some(build) = &image.build else {
            continue;
        };
        let Some(previous) = old.images.get(&image.name) else {
            return Ok(None);
        };
        let display = display_of(build, &enrollment.base_dir);
        let Some(analysis) = from_record(previous, &display) else {
            return Ok(None);
        };
        let source = previous.source.as_ref();
        if let Source::Path { dir, .. } = &build.source {
            let Ok(content) = source::Fetched::Dir(dir.clone()).read(&build.dockerfile) else {
                return Ok(None);
            };
            let current = fingerprint(build, &[content.as_bytes()]);
            if source.and_then(|s| s.fingerprint.as_ref()) != Some(&current) {
                return Ok(None);
            }
        }
        let origin = if previous.stale {
            Origin::Stale {
                reason: previous.stale_reason.clone().unwrap_or_default(),
                since: previous.stale_since.clone().unwrap_or_default(),
                kept: source.is_some_and(|s| s.fingerprint.is_some()),
            }
        } else {
            Origin::Reused
        };
        analyzed.insert(
            image.name.clone(),
            Analyzed {
                analysis,
                commit: source.and_then(|s| s.commit.clone()),
                display,
                fingerprint: source.and_then(|s| s.fingerprint.clone()),
                origin,
            },
        );
    }
    let names = known_names(&old);
    let graph = build_graph(&enrollment, &analyzed, &names);
    Ok(Some((
        Model {
            enrollment,
            analyzed,
            graph,
        },
        record,
    )))
}

/// Reference → name of every existing analysis record, so names stay once given.
pub fn known_names(old: &state::Loaded) -> BTreeMap<String, String> {
    old.images
        .iter()
        .map(|(name, s)| (s.reference.clone(), name.clone()))
        .collect()
}

/// The `*.yaml` files directly in `state_dir/folder` (analysis owns these folders).
fn owned_files(state_dir: &Path, folder: &str) -> Result<Vec<PathBuf>, StateError> {
    let dir = state_dir.join(folder);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(StateError::Read { path: dir, source }),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let rel = Path::new(folder).join(entry.file_name());
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if !hidden
            && rel.extension().and_then(|e| e.to_str()) == Some("yaml")
            && entry.path().is_file()
        {
            out.push(rel);
        }
    }
    out.sort();
    Ok(out)
}

/// Runtime records for the runtime sections of version-1 files, for references that
/// have none yet.
fn migrate_runtime(state_dir: &Path, old: &state::Loaded) -> Result<Changes, StateError> {
    let mut changes = Changes::default();
    for (reference, legacy) in &old.legacy {
        let Ok(parsed) = Reference::parse(reference) else {
            continue;
        };
        let rel = state::runtime_path(&parsed);
        if state_dir.join(&rel).exists() {
            continue;
        }
        state::stage_runtime(&mut changes, &state::legacy::migrate(&parsed, legacy))?;
    }
    Ok(changes)
}

/// Renders every analysis record, Warehouse and (with `kargo.stages`) Stage (relative
/// path → content) from the model and the previous analysis records, and the report's
/// counts.
///
/// # Errors
///
/// [`StateError::Render`] when a value cannot be serialized.
pub fn render(
    model: &Model,
    old: &BTreeMap<String, ImageState>,
    prune: bool,
) -> Result<(BTreeMap<PathBuf, String>, Report), StateError> {
    let graph = &model.graph;
    let levels = graph.levels().unwrap_or_default();
    let mut report = Report {
        depth: levels.values().copied().max().unwrap_or(0),
        edges: graph.edges().len(),
        ..Report::default()
    };
    let mut files = BTreeMap::new();
    let mut warehouses = Vec::new();
    let images: BTreeMap<&str, &enrollment::Image> = model
        .enrollment
        .images
        .iter()
        .map(|i| (i.name.as_str(), i))
        .collect();

    for node in graph.nodes() {
        match node.kind {
            NodeKind::Managed => report.managed += 1,
            NodeKind::External => report.external += 1,
            NodeKind::Base => report.bases += 1,
        }
        let mut st = ImageState {
            version: state::IMAGES_VERSION,
            name: node.name.clone(),
            kind: node.kind,
            reference: node.reference.to_string(),
            orphaned: false,
            stale: false,
            stale_reason: None,
            stale_since: None,
            tags: Vec::new(),
            source: None,
            build_args: BTreeMap::new(),
            base_images: Vec::new(),
            unresolved: Vec::new(),
            dependents: graph.dependents(&node.name),
            rebuild: None,
            warehouse: None,
        };
        let image = images.get(node.name.as_str());
        if let Some(build) = image.and_then(|i| i.build.as_ref()) {
            let analyzed = model.analyzed.get(&node.name);
            st.tags = image
                .map(|i| i.tags.iter().cloned().collect())
                .unwrap_or_default();
            let mut source = source_state(
                &build.source,
                &build.dockerfile,
                &build.context,
                analyzed.and_then(|a| a.commit.clone()),
            );
            source.fingerprint = analyzed.and_then(|a| a.fingerprint.clone());
            st.source = Some(source);
            if let Some(Origin::Stale { reason, since, .. }) = analyzed.map(|a| &a.origin) {
                st.stale = true;
                st.stale_reason = Some(reason.clone());
                st.stale_since = Some(since.clone());
            }
            st.build_args = build.build_args.clone();
            st.base_images = graph
                .bases(&node.name)
                .into_iter()
                .filter_map(|base| {
                    let edge = graph.edge(&base, &node.name)?;
                    let reference = graph.node(&base)?.reference.to_string();
                    let written = analyzed
                        .map(|a| written_as(graph, a, &base, &reference, &edge.pinned))
                        .unwrap_or_default();
                    Some(BaseState {
                        name: base,
                        reference,
                        via: edge.via.iter().cloned().collect(),
                        pinned: edge.pinned.iter().cloned().collect(),
                        written,
                    })
                })
                .collect();
            if let Some(a) = analyzed {
                for stage in &a.analysis.stages {
                    if let From::Unresolved { raw } = &stage.from {
                        st.unresolved.push(raw.clone());
                        report.unresolved.push((node.name.clone(), raw.clone()));
                    }
                }
            }
        } else if let Some(warehouse) = generated_warehouse(&model.enrollment, node, image.copied())
        {
            st.warehouse = Some(node.name.clone());
            warehouses.push(warehouse);
        }
        st.rebuild = Some(PolicyState {
            delay: humantime::format_duration(node.rebuild.delay).to_string(),
            cascade_delay: humantime::format_duration(node.rebuild.cascade_delay).to_string(),
            auto_rebuild: node.rebuild.auto_rebuild,
        });
        let rel = state::image_path(&node.name);
        files.insert(rel.clone(), state::render(&rel, &st)?);
    }

    for (name, previous) in old {
        if graph.node(name).is_some() {
            continue;
        }
        // Its reference lives on under another name (a discovered base enrolled under a
        // name of the team's choosing, or a rename): the record moves, nothing orphans.
        let moved = Reference::parse(&previous.reference)
            .ok()
            .and_then(|r| graph.find(&r))
            .is_some();
        if moved {
            continue;
        }
        if prune {
            report.pruned.push(name.clone());
            continue;
        }
        let mut kept = previous.clone();
        kept.version = state::IMAGES_VERSION;
        kept.orphaned = true;
        kept.dependents.clear();
        // Its Warehouse is removed with it (orphans are not watched).
        kept.warehouse = None;
        report.orphans.push(name.clone());
        let rel = state::image_path(name);
        files.insert(rel.clone(), state::render(&rel, &kept)?);
    }

    report.warehouses = warehouses.len();
    render_folder(
        &mut files,
        state::WAREHOUSES_DIR,
        warehouses.iter().map(|w| (w.metadata.name.as_str(), w)),
    )?;

    let mut stages = Vec::new();
    for (image, (stage, project, task)) in model.generated_stages() {
        let warehouses = model.stage_warehouses(&image.name);
        // Refused by `findings` (a Stage must request Freight); never written empty.
        if warehouses.is_empty() {
            continue;
        }
        stages.push(kargo::stage(
            stage,
            project,
            &image.name,
            &image.reference,
            &warehouses,
            task,
        ));
    }
    stages.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    report.stages = stages.len();
    render_folder(
        &mut files,
        state::STAGES_DIR,
        stages
            .iter()
            .map(|s| (s.metadata.name.as_deref().unwrap_or_default(), s)),
    )?;
    Ok((files, report))
}

/// The Kargo Warehouse `analyze` generates for `node` (named like it, in the
/// enrollment's Project): an external image's with its enrolled `warehouse` settings, a
/// discovered base's following the tag of its `FROM` by digest with the file's
/// defaults; `None` for a managed image (its updates come from its own rebuilds).
/// `image` is the node's enrollment entry, if it has one.
pub fn generated_warehouse(
    enrollment: &Enrollment,
    node: &crate::graph::Node,
    image: Option<&enrollment::Image>,
) -> Option<kargo::Warehouse> {
    if node.kind == NodeKind::Managed {
        return None;
    }
    let config = match image {
        Some(i) => i.warehouse.clone(),
        None => enrollment.discovered_warehouse(&node.reference),
    };
    Some(kargo::warehouse(
        &node.name,
        &node.reference,
        &config,
        &enrollment.project,
    ))
}

impl Model {
    /// Every Warehouse `analyze` generates, by name: [`generated_warehouse`] of each
    /// node of the graph.
    pub fn warehouses(&self) -> BTreeMap<String, kargo::Warehouse> {
        let images: BTreeMap<&str, &enrollment::Image> = self
            .enrollment
            .images
            .iter()
            .map(|i| (i.name.as_str(), i))
            .collect();
        self.graph
            .nodes()
            .into_iter()
            .filter_map(|node| {
                let image = images.get(node.name.as_str()).copied();
                generated_warehouse(&self.enrollment, node, image).map(|w| (node.name.clone(), w))
            })
            .collect()
    }
}

/// The references `a`'s Dockerfile names base `base` by, when [`from_record`] could not
/// rebuild them from `reference` and `pinned` alone (another tag of an enrolled image, a
/// digest-only reference, pinned and unpinned uses together); empty otherwise.
fn written_as(
    graph: &Graph,
    a: &Analyzed,
    base: &str,
    reference: &str,
    pinned: &BTreeSet<String>,
) -> Vec<String> {
    let written: BTreeSet<String> = a
        .analysis
        .dependencies
        .iter()
        .filter(|d| graph.find(&d.reference).is_some_and(|n| n.name == base))
        .map(|d| d.reference.to_string())
        .collect();
    let rebuilt: BTreeSet<String> = if pinned.is_empty() {
        BTreeSet::from([reference.to_string()])
    } else {
        pinned.iter().map(|d| format!("{reference}@{d}")).collect()
    };
    if written.is_subset(&rebuilt) {
        Vec::new()
    } else {
        written.into_iter().collect()
    }
}

/// Records the hash of `images.yaml` (`text`) in `state/analysis.yaml`, with the time
/// when this analysis changed state; left as it is when neither the hash nor any state
/// file changed (so an unchanged rerun writes nothing).
fn record_enrollment(state_dir: &Path, text: &[u8], report: &Report) -> Result<(), StateError> {
    let hash = crate::runtime::Digest::sha256_of(text).to_string();
    let old = state::read_analysis(state_dir)?;
    let unchanged = report.write.written.is_empty() && report.write.removed.is_empty();
    if unchanged && old.as_ref().is_some_and(|o| o.enrollment == hash) {
        return Ok(());
    }
    let record = state::AnalysisRecord {
        version: state::ANALYSIS_VERSION,
        enrollment: hash,
        analyzed_at: jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            .to_string(),
    };
    let rel = PathBuf::from(state::ANALYSIS_FILE);
    let mut changes = Changes::default();
    changes.write(rel.clone(), state::render(&rel, &record)?);
    state::journal::commit(state_dir, &changes)?;
    Ok(())
}

/// Renders each `(name, object)` to `dir/NAME.yaml` in `files`, plus a
/// `dir/kustomization.yaml` listing them in the given order (none when there is nothing
/// to list): the shape of the generated Warehouses and Stages.
fn render_folder<'a, T: serde::Serialize + 'a>(
    files: &mut BTreeMap<PathBuf, String>,
    dir: &str,
    objects: impl Iterator<Item = (&'a str, &'a T)>,
) -> Result<(), StateError> {
    let mut resources = Vec::new();
    for (name, object) in objects {
        let rel = Path::new(dir).join(format!("{name}.yaml"));
        resources.push(format!("{name}.yaml"));
        files.insert(rel.clone(), state::render(&rel, object)?);
    }
    if !resources.is_empty() {
        let rel = Path::new(dir).join("kustomization.yaml");
        let kustomization = Kustomization {
            api_version: "kustomize.config.k8s.io/v1beta1",
            kind: "Kustomization",
            resources,
        };
        files.insert(rel.clone(), state::render(&rel, &kustomization)?);
    }
    Ok(())
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Kustomization {
    api_version: &'static str,
    kind: &'static str,
    resources: Vec<String>,
}

fn source_state(
    source: &Source,
    dockerfile: &str,
    context: &str,
    commit: Option<String>,
) -> SourceState {
    match source {
        Source::Path { raw, .. } => SourceState {
            path: Some(raw.clone()),
            dockerfile: dockerfile.to_string(),
            context: context.to_string(),
            ..SourceState::default()
        },
        Source::Git { url, reference } => SourceState {
            // State is committed to git: never the URL's credentials.
            git: Some(source::redact_url(url)),
            reference: reference.clone(),
            commit,
            dockerfile: dockerfile.to_string(),
            context: context.to_string(),
            ..SourceState::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(dockerfile: &str, args: &[(&str, &str)]) -> enrollment::Build {
        enrollment::Build {
            source: Source::Path {
                raw: "app".into(),
                dir: PathBuf::from("app"),
                at: Position::default(),
            },
            dockerfile: dockerfile.into(),
            dockerfile_at: Position::default(),
            context: ".".into(),
            build_args: args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            trigger: None,
            test: None,
        }
    }

    #[test]
    fn a_fingerprint_changes_with_every_input_and_only_then() {
        let plain = fingerprint(&build("Dockerfile", &[]), &[b"FROM a\n"]);
        assert!(plain.starts_with("sha256:") && plain.len() == 71, "{plain}");
        assert_eq!(
            plain,
            fingerprint(&build("Dockerfile", &[]), &[b"FROM a\n"])
        );
        let others = [
            fingerprint(&build("Dockerfile", &[]), &[b"FROM b\n"]),
            fingerprint(&build("other/Dockerfile", &[]), &[b"FROM a\n"]),
            fingerprint(&build("Dockerfile", &[("V", "1")]), &[b"FROM a\n"]),
            fingerprint(&build("Dockerfile", &[("V", "2")]), &[b"FROM a\n"]),
            // A build arg never reads as Dockerfile bytes.
            fingerprint(&build("Dockerfile", &[("FROM a\n", "")]), &[]),
        ];
        let all: BTreeSet<&String> = others.iter().chain([&plain]).collect();
        assert_eq!(all.len(), others.len() + 1, "{all:?}");
    }

    #[test]
    fn a_record_gives_back_the_dependencies_it_was_rendered_from() {
        let record = ImageState {
            version: state::IMAGES_VERSION,
            name: "app".into(),
            kind: NodeKind::Managed,
            reference: "registry.example.com/app:1".into(),
            orphaned: false,
            stale: false,
            stale_reason: None,
            stale_since: None,
            tags: Vec::new(),
            source: Some(SourceState::default()),
            build_args: BTreeMap::new(),
            base_images: vec![
                BaseState {
                    name: "python".into(),
                    reference: "docker.io/library/python:3.12".into(),
                    via: vec!["copy".into(), "from".into()],
                    pinned: vec![format!("sha256:{}", "a".repeat(64))],
                    written: Vec::new(),
                },
                BaseState {
                    name: "base".into(),
                    reference: "registry.example.com/base:1".into(),
                    via: vec!["from".into()],
                    pinned: Vec::new(),
                    written: vec!["registry.example.com/base:latest".into()],
                },
            ],
            unresolved: vec!["${NOPE}".into()],
            dependents: Vec::new(),
            rebuild: None,
            warehouse: None,
        };
        let analysis = from_record(&record, "app/Dockerfile").unwrap();
        let deps: Vec<(String, dockerfile::Via)> = analysis
            .dependencies
            .iter()
            .map(|d| (d.reference.to_string(), d.via))
            .collect();
        let pinned = format!("docker.io/library/python:3.12@sha256:{}", "a".repeat(64));
        assert_eq!(
            deps,
            [
                (pinned.clone(), dockerfile::Via::Copy),
                (pinned, dockerfile::Via::From),
                (
                    "registry.example.com/base:latest".to_string(),
                    dockerfile::Via::From
                ),
            ]
        );
        assert_eq!(
            analysis.stages[0].from,
            From::Unresolved {
                raw: "${NOPE}".into()
            }
        );
        let mut external = record.clone();
        external.kind = NodeKind::External;
        assert!(from_record(&external, "x").is_none());
    }
}
