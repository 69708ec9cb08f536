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
/// discovered bases (so the graph's names are the ones `analyze` writes).
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
    let analyzed = read_sources(&enrollment, cache_dir, true, progress)?;
    let names = known_names(&state::load_images(state_dir)?);
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
    let results: Vec<Result<(String, Analyzed), AnalyzeError>> = groups
        .into_par_iter()
        .flat_map_iter(|(url, images)| {
            if url.is_none() {
                // Local sources: one task per image.
                return images
                    .into_par_iter()
                    .map(|(name, build)| {
                        analyze_image(
                            name,
                            build,
                            base_dir,
                            cache_dir,
                            &mut BTreeMap::new(),
                            progress,
                        )
                    })
                    .collect::<Vec<_>>()
                    .into_iter();
            }
            let mut fetched = BTreeMap::new();
            images
                .into_iter()
                .map(|(name, build)| {
                    analyze_image(name, build, base_dir, cache_dir, &mut fetched, progress)
                })
                .collect::<Vec<_>>()
                .into_iter()
        })
        .collect();
    progress.finish();
    let mut analyzed = BTreeMap::new();
    let mut first_error: Option<(usize, AnalyzeError)> = None;
    let order: BTreeMap<&str, usize> = enrollment
        .images
        .iter()
        .enumerate()
        .map(|(i, image)| (image.name.as_str(), i))
        .collect();
    for result in results {
        match result {
            Ok((name, a)) => {
                analyzed.insert(name, a);
            }
            Err(e) => {
                // Report the error of the first image in file order, whatever finished first.
                let position = match &e {
                    AnalyzeError::Source { image, .. } => {
                        order.get(image.as_str()).copied().unwrap_or(usize::MAX)
                    }
                    _ => usize::MAX,
                };
                if first_error.as_ref().is_none_or(|(p, _)| position < *p) {
                    first_error = Some((position, e));
                }
            }
        }
    }
    match first_error {
        Some((_, e)) => Err(e),
        None => Ok(analyzed),
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

/// Reads and analyzes one managed image's Dockerfile; `fetched` caches this task's git
/// fetches by ref, so a repository is fetched once per ref.
fn analyze_image(
    name: &str,
    build: &enrollment::Build,
    base_dir: &Path,
    cache_dir: &Path,
    fetched: &mut BTreeMap<Option<String>, source::Fetched>,
    progress: &dyn Progress,
) -> Result<(String, Analyzed), AnalyzeError> {
    let source_err = |source| AnalyzeError::Source {
        image: name.to_string(),
        source,
    };
    let key = match &build.source {
        Source::Git { reference, .. } => reference.clone(),
        Source::Path { .. } => None,
    };
    let source = match fetched.entry(key) {
        std::collections::btree_map::Entry::Occupied(cached) => cached.into_mut(),
        std::collections::btree_map::Entry::Vacant(slot) => {
            slot.insert(source::fetch(&build.source, cache_dir).map_err(source_err)?)
        }
    };
    let content = source.read(&build.dockerfile).map_err(source_err)?;
    let display = match &build.source {
        Source::Path { raw, .. } => display_path(base_dir, raw, &build.dockerfile),
        Source::Git { url, .. } => format!("{}#{}", source::redact_url(url), build.dockerfile),
    };
    let analysis = dockerfile::analyze(&display, &content, &build.build_args);
    progress.advance(name);
    Ok((
        name.to_string(),
        Analyzed {
            analysis,
            commit: source.commit(),
            display,
        },
    ))
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
            if a.analysis.stages.is_empty() {
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

/// Runs `analyze`: loads the enrollment, reads the sources, builds the graph (keeping
/// the names state files already have), refuses cycles and Dockerfile errors, renders
/// every analysis record and Warehouse in memory, then commits them in one journaled
/// write (unless `dry_run`). Runtime records are never touched, except once to move the
/// runtime sections of version-1 state files into them.
///
/// # Errors
///
/// Any [`AnalyzeError`]; nothing is written unless everything rendered, and a failure
/// while writing is reported by [`StateError`] with exactly what was written.
pub fn run(options: &Options, progress: &dyn Progress) -> Result<Report, AnalyzeError> {
    let _span = tracing::info_span!("analyze", file = %options.enrollment.display()).entered();
    let enrollment = enrollment::load(&options.enrollment)?;
    let analyzed = read_sources(&enrollment, &options.cache_dir, true, progress)?;
    if !options.dry_run {
        // Complete (or roll back) what an interrupted write left before reading state.
        state::journal::recover(&options.state_dir)?;
    }
    let old = state::load_images(&options.state_dir)?;
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
    }
    Ok(report)
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
            st.source = Some(source_state(
                &build.source,
                &build.dockerfile,
                &build.context,
                analyzed.and_then(|a| a.commit.clone()),
            ));
            st.build_args = build.build_args.clone();
            st.base_images = graph
                .bases(&node.name)
                .into_iter()
                .filter_map(|base| {
                    let edge = graph.edge(&base, &node.name)?;
                    let reference = graph.node(&base)?.reference.to_string();
                    Some(BaseState {
                        name: base,
                        reference,
                        via: edge.via.iter().cloned().collect(),
                        pinned: edge.pinned.iter().cloned().collect(),
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
