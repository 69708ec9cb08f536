//! Dockerfile analysis: the stages of a Dockerfile and every external image it depends on.
//!
//! ```text
//! text → instruction::scan (directives, continuations, heredocs)
//!      → syntax (FROM / ARG / flags, via the dockerfile-parser crate)
//!      → expand (ARG substitution) → Analysis { stages, dependencies, errors }
//! ```
//!
//! The rules are BuildKit's (`moby/buildkit`, `frontend/dockerfile`), as documented in the
//! Dockerfile reference (<https://docs.docker.com/reference/dockerfile/>):
//!
//! - only `ARG`s before the first `FROM` ("global" or meta args) are visible in `FROM`;
//!   build args override their defaults, and a default may use earlier global ARGs;
//! - a `FROM` whose expanded name matches an *earlier* stage name (case-insensitively)
//!   builds on that stage; `scratch` is the empty image;
//! - `COPY --from` / `ADD --from` / `RUN --mount=…,from=` name a stage (by name, any
//!   position, case-insensitively), a stage index (an integer; out of range is an error,
//!   BuildKit "invalid stage index"), or else an image;
//! - the automatic platform args (`TARGETARCH`, `BUILDPLATFORM`, …) are known only at
//!   build time, so they are unset here unless given as build args.
//!
//! - a stage name must match `^[a-z][a-z0-9-_.]*$` once lower-cased, and is stored
//!   lower-cased (`frontend/dockerfile/instructions/parse.go`, `parseBuildStageName`);
//!   unlike BuildKit, and like Buildah, `AS ${NAME}` is expanded with the global ARGs
//!   first and the result is checked.
//!
//! Where BuildKit would substitute an empty string for an unset variable, the analysis
//! refuses to guess: the reference becomes [`From::Unresolved`] and a [`Problem`] says
//! which ARG lacks a value and why. Expansion is bounded by [`MAX_EXPANDED_BYTES`] per
//! word. Analysis is pure and never panics; only [`analyze_file`] reads.

mod expand;
mod instruction;
pub mod pin;
mod problem;
mod syntax;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;

use crate::enrollment::Severity;
use crate::reference::Reference;
use expand::{expand_word, Expanded, Scope, Var};
pub use expand::{SubstitutionError, MAX_EXPANDED_BYTES};
use instruction::{Instruction, Origin};
pub use pin::{parse_pin, pin, PinError, Pinned, Replacement};
pub use problem::{Problem, ProblemKind, ECHO_CHARS};

/// BuildKit's stage-name rule, applied to the lower-cased name
/// (`frontend/dockerfile/instructions/parse.go`: `validStageName`).
static STAGE_NAME: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^[a-z][a-z0-9\-_.]*$").ok());

/// The args BuildKit defines in the global scope for every build
/// (Dockerfile reference, "Automatic platform ARGs in the global scope").
pub const AUTOMATIC_PLATFORM_ARGS: [&str; 8] = [
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
];

/// Instructions of the Dockerfile reference; anything else is reported and ignored.
const KNOWN_INSTRUCTIONS: [&str; 18] = [
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

/// One analyzed Dockerfile.
///
/// Serializes (`serde_json`) to `{"file": str, "stages": [Stage], "dependencies":
/// [Dependency], "errors": [str], "warnings": [str]}`, where `errors` and `warnings` are
/// the [`Analysis::problems`] of each [`Severity`], rendered by [`Analysis::message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    /// The display name given to [`analyze`] (the path for [`analyze_file`]).
    pub file: String,
    /// Every build stage, one per `FROM`, in file order.
    pub stages: Vec<Stage>,
    /// Every use of an external image, in file order: `FROM` images, and
    /// `COPY`/`ADD --from` and `RUN --mount=…,from=` values that name an image rather
    /// than a stage. Stage references never appear here.
    pub dependencies: Vec<Dependency>,
    /// Problems in file order (a whole-file problem last): unresolved references,
    /// invalid references, ignored instructions.
    pub problems: Vec<Problem>,
}

impl Analysis {
    /// `file:line: message` for one problem (`file: message` when it has no line).
    #[must_use]
    pub fn message(&self, problem: &Problem) -> String {
        if problem.line == 0 {
            format!("{}: {}", self.file, problem.kind)
        } else {
            format!("{}:{}: {}", self.file, problem.line, problem.kind)
        }
    }

    /// Every problem rendered by [`Analysis::message`], in order.
    #[must_use]
    pub fn messages(&self) -> Vec<String> {
        self.problems.iter().map(|p| self.message(p)).collect()
    }

    /// The problems of one severity, rendered by [`Analysis::message`].
    #[must_use]
    pub fn messages_of(&self, severity: Severity) -> Vec<String> {
        self.problems
            .iter()
            .filter(|p| p.kind.severity() == severity)
            .map(|p| self.message(p))
            .collect()
    }

    /// Whether any problem is a [`Severity::Error`].
    #[must_use]
    pub fn has_errors(&self) -> bool {
        self.problems
            .iter()
            .any(|p| p.kind.severity() == Severity::Error)
    }
}

impl serde::Serialize for Analysis {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut out = serializer.serialize_struct("Analysis", 5)?;
        out.serialize_field("file", &self.file)?;
        out.serialize_field("stages", &self.stages)?;
        out.serialize_field("dependencies", &self.dependencies)?;
        out.serialize_field("errors", &self.messages_of(Severity::Error))?;
        out.serialize_field("warnings", &self.messages_of(Severity::Warning))?;
        out.end()
    }
}

/// One build stage (one `FROM`).
///
/// Serializes to `{"index": int, "name": str|null, "platform": str|null, "from": From}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stage {
    /// 0-based position among the stages, as used by `COPY --from=<index>`.
    pub index: usize,
    /// The `AS name` alias, lower-cased as BuildKit does (after Buildah-style expansion
    /// of global ARGs in it).
    pub name: Option<String>,
    /// The raw `--platform=` value, unexpanded (`$BUILDPLATFORM` stays as written).
    pub platform: Option<String>,
    /// What the stage starts from.
    pub from: From,
    /// 1-based line of the `FROM`.
    #[serde(skip)]
    pub line: usize,
}

/// What a stage starts from. `raw` is always the image word as written in the `FROM`.
///
/// Serializes with a `kind` tag: `{"kind":"image","raw":str,"reference":str}` (reference
/// normalized), `{"kind":"stage","raw":str,"stage":int}`, `{"kind":"scratch"}`,
/// `{"kind":"unresolved","raw":str}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum From {
    /// An image, after ARG expansion and Docker normalization.
    Image {
        /// The image word as written.
        raw: String,
        /// The expanded, normalized reference.
        reference: Reference,
    },
    /// An earlier stage of the same file.
    Stage {
        /// The image word as written (a stage name, or a variable holding one).
        raw: String,
        /// Index of that stage.
        stage: usize,
    },
    /// `FROM scratch`: no base image.
    Scratch,
    /// The base cannot be determined without guessing: it depends on an ARG with no
    /// value, or it is not a valid reference. [`Analysis::problems`] says why.
    Unresolved {
        /// The text as written.
        raw: String,
    },
}

/// One use of an external image.
///
/// Serializes to `{"reference": str, "via": "from"|"copy"|"mount", "stage": int}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Dependency {
    /// The normalized image reference.
    pub reference: Reference,
    /// Which instruction uses it.
    pub via: Via,
    /// Index of the stage in which the use occurs.
    pub stage: usize,
    /// 1-based line of the instruction.
    #[serde(skip)]
    pub line: usize,
}

/// How an image is used. Serializes as `"from"`, `"copy"` or `"mount"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// The base of a stage (`FROM image`).
    From,
    /// Files copied out of it (`COPY --from=image`, `ADD --from=image`).
    Copy,
    /// Mounted into a `RUN` (`RUN --mount=type=bind,from=image`).
    Mount,
}

/// Why a Dockerfile could not be analyzed at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DockerfileError {
    /// The file could not be read (missing, unreadable, a directory).
    #[error("cannot read Dockerfile {}: {source}", path.display())]
    Read {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Analyzes Dockerfile text. `file` is only the display name recorded in the result.
///
/// `build_args` override global ARG defaults (like `docker build --build-arg`), and set
/// the automatic platform args (`TARGETARCH`, …) when given; a build arg for an ARG the
/// file does not declare has no effect, as in BuildKit. Never panics, on any input, and
/// memory stays linear in the input ([`MAX_EXPANDED_BYTES`] per ARG): problems go into
/// [`Analysis::problems`]; references that cannot be resolved without guessing become
/// [`From::Unresolved`]. A file without `FROM` yields no stages and
/// [`ProblemKind::NoFrom`].
#[must_use]
pub fn analyze(file: &str, content: &str, build_args: &BTreeMap<String, String>) -> Analysis {
    Analyzer::new(file, content, build_args).run().0
}

/// Where the image word of one [`Dependency`] is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Located {
    /// Byte range of the word as written in the file content (quotes and `$VARS`
    /// included); `None` only if the scanner lost track of it, which is a bug.
    pub(crate) span: Option<Range<usize>>,
    /// The instruction, for messages: `FROM`, `COPY --from`, `ADD --from`,
    /// `RUN --mount from`.
    pub(crate) instruction: String,
}

/// [`analyze`], with the [`Located`] of each of [`Analysis::dependencies`] (same order).
pub(crate) fn analyze_located(
    file: &str,
    content: &str,
    build_args: &BTreeMap<String, String>,
) -> (Analysis, Vec<Located>) {
    Analyzer::new(file, content, build_args).run()
}

/// Reads and analyzes a file; see [`analyze`]. Invalid UTF-8 is replaced, not rejected.
///
/// # Errors
///
/// [`DockerfileError::Read`] when the file cannot be read.
pub fn analyze_file(
    path: &Path,
    build_args: &BTreeMap<String, String>,
) -> Result<Analysis, DockerfileError> {
    let bytes = std::fs::read(path).map_err(|source| DockerfileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    // Valid UTF-8 (nearly every file) is taken as it is, without the slower lossy pass.
    let content = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    Ok(analyze(&path.display().to_string(), &content, build_args))
}

/// Human-readable text rendering of several analyses (for
/// `image-factory dockerfile --output text`): per file, its stages, its dependencies and
/// its errors, separated by blank lines.
#[must_use]
pub fn render_text(analyses: &[Analysis]) -> String {
    let mut out = String::new();
    for (position, analysis) in analyses.iter().enumerate() {
        if position > 0 {
            out.push('\n');
        }
        render_one(&mut out, analysis);
    }
    out
}

fn render_one(out: &mut String, analysis: &Analysis) {
    let _ = writeln!(out, "{}", analysis.file);
    for stage in &analysis.stages {
        let name = stage
            .name
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        let from = match &stage.from {
            From::Image { raw, reference } if raw == &reference.to_string() => raw.clone(),
            From::Image { raw, reference } => format!("{raw} → {reference}"),
            From::Stage { raw, stage } => format!("{raw} → stage {stage}"),
            From::Scratch => "scratch".to_owned(),
            From::Unresolved { raw } => format!("{raw} (unresolved)"),
        };
        let platform = stage
            .platform
            .as_deref()
            .map(|p| format!(" [platform {p}]"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  stage {}{name}: FROM {from}{platform}  (line {})",
            stage.index, stage.line
        );
    }
    if !analysis.dependencies.is_empty() {
        let _ = writeln!(out, "  dependencies:");
        for dependency in &analysis.dependencies {
            let via = match dependency.via {
                Via::From => "from",
                Via::Copy => "copy",
                Via::Mount => "mount",
            };
            let _ = writeln!(
                out,
                "    {} via {via} in stage {} (line {})",
                dependency.reference, dependency.stage, dependency.line
            );
        }
    }
    for (severity, title) in [(Severity::Error, "errors"), (Severity::Warning, "warnings")] {
        let messages = analysis.messages_of(severity);
        if !messages.is_empty() {
            let _ = writeln!(out, "  {title}:");
            for message in messages {
                let _ = writeln!(out, "    {message}");
            }
        }
    }
}

/// A `--from` / `from=` value waiting until every stage name is known.
struct FlagUse {
    /// The instruction as written, for messages (`COPY --from=x`).
    what: String,
    raw: String,
    expanded: Result<Expanded, SubstitutionError>,
    /// Why each missing variable of `expanded` has no value, judged with the scope of
    /// the instruction.
    missing: Vec<ProblemKind>,
    via: Via,
    stage: usize,
    line: usize,
    located: Located,
}

/// Uses of other images or stages in file order, resolved at the end.
enum Use {
    From { stage: usize, located: Located },
    Flag(FlagUse),
}

struct Analyzer<'a> {
    file: &'a str,
    content: &'a str,
    build_args: &'a BTreeMap<String, String>,
    escape: char,
    globals: Scope,
    stage_scope: Scope,
    stages: Vec<Stage>,
    uses: Vec<Use>,
    problems: Vec<Problem>,
}

impl<'a> Analyzer<'a> {
    fn new(file: &'a str, content: &'a str, build_args: &'a BTreeMap<String, String>) -> Self {
        let globals = AUTOMATIC_PLATFORM_ARGS
            .iter()
            .map(|name| {
                let var = build_args
                    .get(*name)
                    .map_or(Var::Unset, |value| Var::Value(value.clone()));
                ((*name).to_owned(), var)
            })
            .collect();
        Self {
            file,
            content,
            build_args,
            escape: '\\',
            globals,
            stage_scope: Scope::new(),
            stages: Vec::new(),
            uses: Vec::new(),
            problems: Vec::new(),
        }
    }

    fn run(mut self) -> (Analysis, Vec<Located>) {
        let scanned = instruction::scan(self.content);
        self.escape = scanned.escape;
        self.problems = scanned.problems;
        for instruction in &scanned.instructions {
            self.dispatch(instruction);
        }
        let (dependencies, located) = self.resolve_uses().into_iter().unzip();
        // Flag uses are resolved last; keep the problems in file order.
        self.problems.sort_by_key(|p| p.line);
        if self.stages.is_empty() {
            self.problem(0, ProblemKind::NoFrom);
        }
        let analysis = Analysis {
            file: self.file.to_owned(),
            stages: self.stages,
            dependencies,
            problems: self.problems,
        };
        (analysis, located)
    }

    fn problem(&mut self, line: usize, kind: ProblemKind) {
        self.problems.push(Problem { line, kind });
    }

    /// The problem for a failed expansion in `instruction`.
    fn substitution_problem(&mut self, line: usize, instruction: String, error: SubstitutionError) {
        let kind = match error {
            SubstitutionError::TooLarge => ProblemKind::ExpansionTooLarge { instruction },
            error => ProblemKind::BadSubstitution { instruction, error },
        };
        self.problem(line, kind);
    }

    /// Why each of `missing` has no value, in `instruction` (inside a stage when
    /// `in_stage`, else in a `FROM`, where only global ARGs are in scope). One problem
    /// per variable, in order of first use.
    fn classify_missing(
        &self,
        instruction: &str,
        missing: &[String],
        in_stage: bool,
    ) -> Vec<ProblemKind> {
        let mut seen: Vec<&str> = Vec::new();
        let mut out = Vec::new();
        for name in missing {
            if seen.contains(&name.as_str()) {
                continue;
            }
            seen.push(name);
            let instruction = instruction.to_owned();
            let name = name.clone();
            let automatic = AUTOMATIC_PLATFORM_ARGS.contains(&name.as_str());
            let scope = if in_stage {
                &self.stage_scope
            } else {
                &self.globals
            };
            let kind = match scope.get(&name) {
                Some(Var::Unknown) => ProblemKind::UnknownArg { instruction, name },
                Some(_) if automatic && !self.build_args.contains_key(&name) => {
                    ProblemKind::PlatformArg { instruction, name }
                }
                // `Unset`, or `${NAME:?}` on an empty value.
                Some(_) => ProblemKind::UnsetArg { instruction, name },
                None if in_stage && self.globals.contains_key(&name) => {
                    if automatic && !self.build_args.contains_key(&name) {
                        ProblemKind::PlatformArg { instruction, name }
                    } else {
                        ProblemKind::NotRedeclared { instruction, name }
                    }
                }
                None => ProblemKind::UndeclaredArg {
                    build_arg_given: self.build_args.contains_key(&name),
                    instruction,
                    name,
                    in_stage,
                },
            };
            out.push(kind);
        }
        out
    }

    fn dispatch(&mut self, instruction: &Instruction) {
        let Instruction {
            line,
            keyword,
            args,
            origin,
        } = instruction;
        let in_stage = !self.stages.is_empty();
        match keyword.as_str() {
            "from" => self.enter_stage(*line, args, origin),
            "arg" if in_stage => self.declare_args(*line, args, false),
            "arg" => self.declare_args(*line, args, true),
            "copy" | "add" | "run" if in_stage => {
                self.record_flag_uses(*line, keyword, args, origin);
            }
            other if !KNOWN_INSTRUCTIONS.contains(&other) => {
                let keyword = other.to_ascii_uppercase();
                self.problem(*line, ProblemKind::UnknownInstruction { keyword });
            }
            // ONBUILD triggers run in the builds of child images, not in this one.
            _ if in_stage => {}
            other => {
                let keyword = other.to_ascii_uppercase();
                self.problem(*line, ProblemKind::BeforeFirstFrom { keyword });
            }
        }
    }

    /// Declares the ARGs of one `ARG` instruction, before the first `FROM` (`global`) or
    /// inside a stage. A build arg wins over a default. Without either, a global `ARG
    /// TARGETARCH` re-declares an automatic arg and keeps its value, and a stage ARG takes
    /// the global ARG's value.
    fn declare_args(&mut self, line: usize, args: &str, global: bool) {
        let pairs = match syntax::parse_arg(args) {
            Ok(pairs) => pairs,
            Err(kind) => return self.problem(line, kind),
        };
        for pair in pairs {
            let var = if let Some(value) = self.build_args.get(&pair.name) {
                Var::Value(value.clone())
            } else if let Some(default) = &pair.default {
                self.evaluate_default(line, &pair.name, default, global)
            } else {
                self.globals.get(&pair.name).cloned().unwrap_or(Var::Unset)
            };
            let scope = if global {
                &mut self.globals
            } else {
                &mut self.stage_scope
            };
            scope.insert(pair.name, var);
        }
    }

    fn evaluate_default(&mut self, line: usize, name: &str, default: &str, global: bool) -> Var {
        let scope = if global {
            &self.globals
        } else {
            &self.stage_scope
        };
        match expand_word(default, self.escape, scope) {
            Ok(expanded) => match expanded.resolved() {
                Some(text) => Var::Value(text.to_owned()),
                None => Var::Unknown,
            },
            Err(error) => {
                self.substitution_problem(line, format!("ARG {name}"), error);
                Var::Unknown
            }
        }
    }

    fn enter_stage(&mut self, line: usize, args: &str, origin: &Origin) {
        let index = self.stages.len();
        self.stage_scope = Scope::new();
        let mut span = None;
        let (name, platform, from) = match syntax::parse_from(args) {
            Ok(parsed) => {
                span = origin.file_range(parsed.image_span.clone());
                let mut platform = None;
                for flag in parsed.flags {
                    if flag.name == "platform" {
                        platform = flag.value;
                    } else {
                        let flag = flag.name;
                        self.problem(line, ProblemKind::UnknownFromFlag { flag });
                    }
                }
                let from = self.resolve_base(line, &parsed.image);
                let name = parsed.alias.map(|alias| self.stage_name(line, alias));
                (name, platform, from)
            }
            Err(kind) => {
                self.problem(line, kind);
                let raw = args.to_owned();
                (None, None, From::Unresolved { raw })
            }
        };
        if matches!(from, From::Image { .. }) {
            let located = Located {
                span,
                instruction: "FROM".to_owned(),
            };
            self.uses.push(Use::From {
                stage: index,
                located,
            });
        }
        if let Some(name) = &name {
            if let Some(first) = self.stages.iter().find(|s| names_stage(s, name)) {
                // BuildKit rejects the file; references keep going to the first stage.
                let kind = ProblemKind::DuplicateStageName {
                    name: name.clone(),
                    first_line: first.line,
                };
                self.problem(line, kind);
            }
        }
        self.stages.push(Stage {
            index,
            name,
            platform,
            from,
            line,
        });
    }

    /// The stage name of `AS alias`: lower-cased as BuildKit does, and checked against
    /// BuildKit's rule (a problem if it fails; the stage keeps the name so references
    /// to it still resolve). Buildah expands global ARGs in `AS ${NAME}` (its
    /// `save-stages` fixtures rely on it), so later `FROM ${NAME}` / `COPY --from=` can
    /// find the stage; when expansion cannot resolve the name, the literal text is kept
    /// (and fails the rule).
    fn stage_name(&mut self, line: usize, alias: String) -> String {
        let expanded = if alias.contains('$') {
            match expand_word(&alias, self.escape, &self.globals) {
                Ok(expanded) if expanded.missing.is_empty() && !expanded.text.is_empty() => {
                    expanded.text
                }
                _ => alias.clone(),
            }
        } else {
            alias.clone()
        };
        let name = expanded.to_lowercase();
        let valid = STAGE_NAME.as_ref().is_some_and(|rule| rule.is_match(&name));
        if !valid {
            self.problem(line, ProblemKind::InvalidStageName { name: alias });
        }
        name
    }

    fn resolve_base(&mut self, line: usize, raw: &str) -> From {
        let unresolved = || From::Unresolved {
            raw: raw.to_owned(),
        };
        let instruction = format!("FROM {raw}");
        let expanded = match expand_word(raw, self.escape, &self.globals) {
            Ok(expanded) => expanded,
            Err(error) => {
                self.substitution_problem(line, instruction, error);
                return unresolved();
            }
        };
        if !expanded.missing.is_empty() {
            for kind in self.classify_missing(&instruction, &expanded.missing, false) {
                self.problem(line, kind);
            }
            return unresolved();
        }
        let text = expanded.text;
        if text == "scratch" {
            return From::Scratch;
        }
        if let Some(stage) = self.stages.iter().position(|s| names_stage(s, &text)) {
            return From::Stage {
                raw: raw.to_owned(),
                stage,
            };
        }
        match Reference::parse(&text) {
            Ok(reference) => From::Image {
                raw: raw.to_owned(),
                reference,
            },
            Err(error) => {
                let kind = ProblemKind::InvalidReference {
                    instruction,
                    expanded: (text != raw).then_some(text),
                    error,
                };
                self.problem(line, kind);
                unresolved()
            }
        }
    }

    fn record_flag_uses(&mut self, line: usize, keyword: &str, args: &str, origin: &Origin) {
        let stage = self.stages.len().saturating_sub(1);
        let upper = keyword.to_ascii_uppercase();
        for flag in syntax::parse_flags(keyword, args) {
            let Some(value) = flag.value else { continue };
            if keyword == "run" && flag.name == "mount" {
                for (key, from, at) in syntax::mount_options(&value) {
                    if key == "from" {
                        let what = format!("{upper} --mount=…,from={from}");
                        let span = flag.span.start + at.start..flag.span.start + at.end;
                        let located = Located {
                            span: origin.file_range(span),
                            instruction: format!("{upper} --mount from"),
                        };
                        self.record_flag_use(what, from, Via::Mount, (stage, line), located);
                    }
                }
            } else if keyword != "run" && flag.name == "from" && !value.is_empty() {
                let what = format!("{upper} --from={value}");
                let located = Located {
                    span: origin.file_range(flag.span.clone()),
                    instruction: format!("{upper} --from"),
                };
                self.record_flag_use(what, value, Via::Copy, (stage, line), located);
            }
        }
    }

    fn record_flag_use(
        &mut self,
        what: String,
        raw: String,
        via: Via,
        (stage, line): (usize, usize),
        located: Located,
    ) {
        let expanded = expand_word(&raw, self.escape, &self.stage_scope);
        let missing = match &expanded {
            Ok(expanded) => self.classify_missing(&what, &expanded.missing, true),
            Err(_) => Vec::new(),
        };
        self.uses.push(Use::Flag(FlagUse {
            what,
            raw,
            expanded,
            missing,
            via,
            stage,
            line,
            located,
        }));
    }

    fn resolve_uses(&mut self) -> Vec<(Dependency, Located)> {
        let uses = std::mem::take(&mut self.uses);
        let mut dependencies = Vec::new();
        for used in uses {
            match used {
                Use::From { stage, located } => {
                    if let Some(Stage {
                        from: From::Image { reference, .. },
                        line,
                        ..
                    }) = self.stages.get(stage)
                    {
                        let dependency = Dependency {
                            reference: reference.clone(),
                            via: Via::From,
                            stage,
                            line: *line,
                        };
                        dependencies.push((dependency, located));
                    }
                }
                Use::Flag(flag) => {
                    if let Some(dependency) = self.resolve_flag_use(flag) {
                        dependencies.push(dependency);
                    }
                }
            }
        }
        dependencies
    }

    fn resolve_flag_use(&mut self, flag: FlagUse) -> Option<(Dependency, Located)> {
        let FlagUse {
            what,
            raw,
            expanded,
            missing,
            via,
            stage,
            line,
            located,
        } = flag;
        let expanded = match expanded {
            Ok(expanded) => expanded,
            Err(error) => {
                self.substitution_problem(line, what, error);
                return None;
            }
        };
        if !expanded.missing.is_empty() {
            for kind in missing {
                self.problem(line, kind);
            }
            return None;
        }
        let text = expanded.text;
        if let Ok(index) = text.parse::<usize>() {
            if index >= self.stages.len() {
                let kind = ProblemKind::InvalidStageIndex {
                    instruction: what,
                    index,
                    stages: self.stages.len(),
                };
                self.problem(line, kind);
            } else if index == stage {
                self.problem(line, ProblemKind::StageUsesItself { instruction: what });
            }
            return None;
        }
        if let Some(target) = self.stages.iter().position(|s| names_stage(s, &text)) {
            if target == stage {
                self.problem(line, ProblemKind::StageUsesItself { instruction: what });
            }
            return None;
        }
        if text == "scratch" {
            return None;
        }
        match Reference::parse(&text) {
            Ok(reference) => Some((
                Dependency {
                    reference,
                    via,
                    stage,
                    line,
                },
                located,
            )),
            Err(error) => {
                let kind = ProblemKind::InvalidReference {
                    instruction: what,
                    expanded: (text != raw).then_some(text),
                    error,
                };
                self.problem(line, kind);
                None
            }
        }
    }
}

/// BuildKit compares stage names case-insensitively (`findStateByName` lower-cases).
fn names_stage(stage: &Stage, text: &str) -> bool {
    stage
        .name
        .as_deref()
        .is_some_and(|name| name.eq_ignore_ascii_case(text))
}

#[cfg(test)]
mod tests;
