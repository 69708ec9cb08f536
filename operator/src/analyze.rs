//! `image-factory analyze`: enrollment → sources → Dockerfiles → graph → state files and
//! Kargo Warehouses. Also the shared front half of `validate`, `graph` and `plan`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::dockerfile::{self, Analysis, From};
use crate::enrollment::{self, schema::Position, Diagnostic, Enrollment, EnrollmentError, Source};
use crate::graph::{Graph, NodeKind, Use};
use crate::kargo;
use crate::source::{self, SourceError};
use crate::state::{
    self, BaseState, ImageState, RebuildState, SourceState, StateError, WriteReport,
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
    /// Reading or writing state failed.
    #[error(transparent)]
    State(#[from] StateError),
}

impl AnalyzeError {
    /// Whether the error is the user's input (exit 1) rather than I/O (exit 2).
    pub fn is_finding(&self) -> bool {
        matches!(
            self,
            Self::Enrollment(EnrollmentError::Invalid { .. }) | Self::Cycles { .. }
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
    /// Show a progress bar while fetching sources.
    pub progress: bool,
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
    /// What the write changed.
    pub write: WriteReport,
}

/// Loads the enrollment, reads every managed image's Dockerfile (fetching git sources
/// when `fetch_git`, else skipping them) and builds the graph.
///
/// # Errors
///
/// [`AnalyzeError::Enrollment`] for a bad `images.yaml`, [`AnalyzeError::Source`] when a
/// source cannot be read.
pub fn model(
    path: &Path,
    cache_dir: &Path,
    fetch_git: bool,
    progress: bool,
) -> Result<Model, AnalyzeError> {
    let enrollment = enrollment::load(path)?;
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
    let bar = if progress && git_count > 1 {
        let bar = indicatif::ProgressBar::new(managed.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} sources {pos}/{len} [{bar:30}] {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(bar)
    } else {
        None
    };
    // Images of one git repository share its cache, so each repository is fetched by one
    // task (once per ref); repositories and local sources are read in parallel.
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
                            bar.as_ref(),
                        )
                    })
                    .collect::<Vec<_>>()
                    .into_iter();
            }
            let mut fetched = BTreeMap::new();
            images
                .into_iter()
                .map(|(name, build)| {
                    analyze_image(name, build, base_dir, cache_dir, &mut fetched, bar.as_ref())
                })
                .collect::<Vec<_>>()
                .into_iter()
        })
        .collect();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
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
    if let Some((_, e)) = first_error {
        return Err(e);
    }
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
    let graph = Graph::build(&enrollment, &uses);
    Ok(Model {
        enrollment,
        analyzed,
        graph,
    })
}

/// Reads and analyzes one managed image's Dockerfile; `fetched` caches this task's git
/// fetches by ref, so a repository is fetched once per ref.
fn analyze_image(
    name: &str,
    build: &enrollment::Build,
    base_dir: &Path,
    cache_dir: &Path,
    fetched: &mut BTreeMap<Option<String>, source::Fetched>,
    bar: Option<&indicatif::ProgressBar>,
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
        Source::Git { url, .. } => format!("{url}#{}", build.dockerfile),
    };
    let analysis = dockerfile::analyze(&display, &content, &build.build_args);
    if let Some(bar) = bar {
        bar.set_message(name.to_string());
        bar.inc(1);
    }
    Ok((
        name.to_string(),
        Analyzed {
            analysis,
            commit: source.commit(),
            display,
        },
    ))
}

/// `base_dir/raw/dockerfile` as a short relative path for messages.
fn display_path(base_dir: &Path, raw: &str, dockerfile: &str) -> String {
    let path = base_dir.join(raw).join(dockerfile);
    let text = path.display().to_string();
    text.strip_prefix("./").map(str::to_string).unwrap_or(text)
}

fn via_name(via: dockerfile::Via) -> &'static str {
    match via {
        dockerfile::Via::From => "from",
        dockerfile::Via::Copy => "copy",
        dockerfile::Via::Mount => "mount",
    }
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

/// Runs `analyze`: builds the model, refuses cycles, renders every state file and
/// Warehouse in memory, then writes them (unless `dry_run`).
///
/// # Errors
///
/// Any [`AnalyzeError`]; nothing is written unless everything rendered.
pub fn run(options: &Options) -> Result<Report, AnalyzeError> {
    let model = model(
        &options.enrollment,
        &options.cache_dir,
        true,
        options.progress,
    )?;
    let cycles = model.graph.cycles();
    if !cycles.is_empty() {
        return Err(AnalyzeError::Cycles { cycles });
    }
    let old = state::load_images(&options.state_dir)?;
    let (files, mut report) = render(&model, &old, options.prune)?;
    report.warnings = model.enrollment.warnings.clone();
    report.warnings.extend(model.findings());
    if !options.dry_run {
        report.write = state::write_tree(
            &options.state_dir,
            &files,
            &[state::IMAGES_DIR, state::WAREHOUSES_DIR],
        )?;
    }
    Ok(report)
}

/// Renders every state file and Warehouse (relative path → content) from the model and
/// the previous state, and the report's counts.
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
    let old_by_reference: BTreeMap<&str, &str> = old
        .iter()
        .map(|(name, s)| (s.reference.as_str(), name.as_str()))
        .collect();
    let mut claimed: BTreeSet<String> = BTreeSet::new();
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
            current: state::Observed::default(),
            history: Vec::new(),
            rebuilds: Vec::new(),
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
        } else {
            let config = match image {
                Some(i) => i.warehouse.clone(),
                None => model.enrollment.discovered_warehouse(&node.reference),
            };
            st.warehouse = Some(node.name.clone());
            warehouses.push(kargo::warehouse(
                &node.name,
                &node.reference,
                &config,
                &model.enrollment.project,
            ));
        }
        st.rebuild = Some(RebuildState {
            delay: humantime::format_duration(node.rebuild.delay).to_string(),
            cascade_delay: humantime::format_duration(node.rebuild.cascade_delay).to_string(),
            auto_rebuild: node.rebuild.auto_rebuild,
        });
        // Runtime data follows the image: by name, else by reference (a promotion from
        // discovered base to enrolled image, or a rename).
        let previous = old.get(&node.name).or_else(|| {
            old_by_reference
                .get(st.reference.as_str())
                .filter(|name| graph.node(name).is_none_or(|n| n.name == node.name))
                .and_then(|name| old.get(*name))
        });
        if let Some(previous) = previous {
            st.keep_runtime_of(previous);
            claimed.insert(previous.name.clone());
        }
        let rel = Path::new(state::IMAGES_DIR).join(format!("{}.yaml", node.name));
        files.insert(rel.clone(), state::render(&rel, &st)?);
    }

    for (name, previous) in old {
        if claimed.contains(&previous.name) || graph.node(name).is_some() {
            continue;
        }
        if prune {
            report.pruned.push(name.clone());
            continue;
        }
        let mut kept = previous.clone();
        kept.orphaned = true;
        kept.dependents.clear();
        report.orphans.push(name.clone());
        let rel = Path::new(state::IMAGES_DIR).join(format!("{name}.yaml"));
        files.insert(rel.clone(), state::render(&rel, &kept)?);
    }

    report.warehouses = warehouses.len();
    let mut resources = Vec::new();
    for w in &warehouses {
        let rel = Path::new(state::WAREHOUSES_DIR).join(format!("{}.yaml", w.metadata.name));
        resources.push(format!("{}.yaml", w.metadata.name));
        files.insert(rel.clone(), state::render(&rel, w)?);
    }
    if !resources.is_empty() {
        let rel = Path::new(state::WAREHOUSES_DIR).join("kustomization.yaml");
        let kustomization = Kustomization {
            api_version: "kustomize.config.k8s.io/v1beta1",
            kind: "Kustomization",
            resources,
        };
        files.insert(rel.clone(), state::render(&rel, &kustomization)?);
    }
    Ok((files, report))
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
            git: Some(url.clone()),
            reference: reference.clone(),
            commit,
            dockerfile: dockerfile.to_string(),
            context: context.to_string(),
            ..SourceState::default()
        },
    }
}
