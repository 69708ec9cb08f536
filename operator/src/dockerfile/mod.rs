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
//! Where BuildKit would substitute an empty string for an unset variable, the analysis
//! refuses to guess: the reference becomes [`From::Unresolved`] and an error says which
//! build arg to pass. Analysis is pure and never panics; only [`analyze_file`] reads.

mod expand;
mod instruction;
mod syntax;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::reference::Reference;
use expand::{expand_word, Expanded, Scope, Var};
use instruction::Instruction;

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
/// Serializes (`serde_json`) to
/// `{"file": str, "stages": [Stage], "dependencies": [Dependency], "errors": [str]}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Analysis {
    /// The display name given to [`analyze`] (the path for [`analyze_file`]).
    pub file: String,
    /// Every build stage, one per `FROM`, in file order.
    pub stages: Vec<Stage>,
    /// Every use of an external image, in file order: `FROM` images, and
    /// `COPY`/`ADD --from` and `RUN --mount=…,from=` values that name an image rather
    /// than a stage. Stage references never appear here.
    pub dependencies: Vec<Dependency>,
    /// Problems, each `file:line: message` (`file: message` when no line applies).
    /// Includes unresolved references, invalid references and ignored instructions.
    pub errors: Vec<String>,
}

/// One build stage (one `FROM`).
///
/// Serializes to `{"index": int, "name": str|null, "platform": str|null, "from": From}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stage {
    /// 0-based position among the stages, as used by `COPY --from=<index>`.
    pub index: usize,
    /// The `AS name` alias, as written.
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
    /// value, or it is not a valid reference. [`Analysis::errors`] says why.
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
/// the automatic platform args (`TARGETARCH`, …) when given. Never panics, on any input:
/// problems go into [`Analysis::errors`] as `file:line: message`; references that cannot
/// be resolved without guessing become [`From::Unresolved`]. A file without `FROM`
/// yields no stages and the error "no FROM instruction".
#[must_use]
pub fn analyze(file: &str, content: &str, build_args: &BTreeMap<String, String>) -> Analysis {
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
    let content = String::from_utf8_lossy(&bytes);
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
    if !analysis.errors.is_empty() {
        let _ = writeln!(out, "  errors:");
        for error in &analysis.errors {
            let _ = writeln!(out, "    {error}");
        }
    }
}

/// A `--from` / `from=` value waiting until every stage name is known.
struct FlagUse {
    /// The instruction as written, for messages (`COPY --from=x`).
    what: String,
    raw: String,
    expanded: Result<Expanded, String>,
    via: Via,
    stage: usize,
    line: usize,
}

/// Uses of other images or stages in file order, resolved at the end.
enum Use {
    From { stage: usize },
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
    errors: Vec<String>,
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
            errors: Vec::new(),
        }
    }

    fn run(mut self) -> Analysis {
        let scanned = instruction::scan(self.content);
        self.escape = scanned.escape;
        for problem in &scanned.problems {
            self.error(problem.line, &problem.message);
        }
        for instruction in &scanned.instructions {
            self.dispatch(instruction);
        }
        if self.stages.is_empty() {
            self.errors.push(format!(
                "{}: no FROM instruction; a Dockerfile needs at least one FROM",
                self.file
            ));
        }
        let dependencies = self.resolve_uses();
        Analysis {
            file: self.file.to_owned(),
            stages: self.stages,
            dependencies,
            errors: self.errors,
        }
    }

    fn error(&mut self, line: usize, message: &str) {
        self.errors.push(format!("{}:{line}: {message}", self.file));
    }

    fn dispatch(&mut self, instruction: &Instruction) {
        let Instruction {
            line,
            keyword,
            args,
        } = instruction;
        let in_stage = !self.stages.is_empty();
        match keyword.as_str() {
            "from" => self.enter_stage(*line, args),
            "arg" if in_stage => self.declare_args(*line, args, false),
            "arg" => self.declare_args(*line, args, true),
            "copy" | "add" | "run" if in_stage => self.record_flag_uses(*line, keyword, args),
            other if !KNOWN_INSTRUCTIONS.contains(&other) => {
                let message = format!(
                    "unknown instruction {:?} ignored (BuildKit would reject the file)",
                    other.to_ascii_uppercase()
                );
                self.error(*line, &message);
            }
            // ONBUILD triggers run in the builds of child images, not in this one.
            _ if in_stage => {}
            other => {
                let message = format!(
                    "{} before the first FROM is ignored (only ARG may come first)",
                    other.to_ascii_uppercase()
                );
                self.error(*line, &message);
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
            Err(message) => return self.error(line, &message),
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
            Err(message) => {
                self.error(line, &format!("ARG {name}={default}: {message}"));
                Var::Unknown
            }
        }
    }

    fn enter_stage(&mut self, line: usize, args: &str) {
        let index = self.stages.len();
        self.stage_scope = Scope::new();
        let (name, platform, from) = match syntax::parse_from(args) {
            Ok(parsed) => {
                let mut platform = None;
                for flag in parsed.flags {
                    if flag.name == "platform" {
                        platform = flag.value;
                    } else {
                        let message = format!("FROM has unknown flag --{} (ignored)", flag.name);
                        self.error(line, &message);
                    }
                }
                let from = self.resolve_base(line, &parsed.image);
                let name = parsed.alias.map(|alias| self.expand_alias(alias));
                (name, platform, from)
            }
            Err(message) => {
                self.error(line, &message);
                let raw = args.to_owned();
                (None, None, From::Unresolved { raw })
            }
        };
        if matches!(from, From::Image { .. }) {
            self.uses.push(Use::From { stage: index });
        }
        if let Some(name) = &name {
            if let Some(first) = self.stages.iter().find(|s| names_stage(s, name)) {
                // BuildKit rejects the file; references keep going to the first stage.
                let message = format!(
                    "duplicate stage name {name:?} (first used on line {})",
                    first.line
                );
                self.error(line, &message);
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

    /// Buildah expands global ARGs in `AS ${NAME}` (its `save-stages` fixtures rely on
    /// it), so later `FROM ${NAME}` / `COPY --from=` can find the stage; when expansion
    /// cannot resolve the name, the literal text is kept.
    fn expand_alias(&self, alias: String) -> String {
        if !alias.contains('$') {
            return alias;
        }
        match expand_word(&alias, self.escape, &self.globals) {
            Ok(expanded) if expanded.missing.is_empty() && !expanded.text.is_empty() => {
                expanded.text
            }
            _ => alias,
        }
    }

    fn resolve_base(&mut self, line: usize, raw: &str) -> From {
        let unresolved = || From::Unresolved {
            raw: raw.to_owned(),
        };
        let expanded = match expand_word(raw, self.escape, &self.globals) {
            Ok(expanded) => expanded,
            Err(message) => {
                self.error(line, &format!("FROM {raw}: {message}"));
                return unresolved();
            }
        };
        if !expanded.missing.is_empty() {
            let message = format!("FROM {raw}: {}", missing_message(&expanded.missing));
            self.error(line, &message);
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
                let shown = if text == raw {
                    format!("FROM {raw}")
                } else {
                    format!("FROM {raw} (expanded to {text:?})")
                };
                self.error(line, &format!("{shown}: {error}"));
                unresolved()
            }
        }
    }

    fn record_flag_uses(&mut self, line: usize, keyword: &str, args: &str) {
        let stage = self.stages.len().saturating_sub(1);
        let upper = keyword.to_ascii_uppercase();
        for flag in syntax::parse_flags(keyword, args) {
            let Some(value) = flag.value else { continue };
            if keyword == "run" && flag.name == "mount" {
                for (key, from) in syntax::mount_options(&value) {
                    if key == "from" {
                        let what = format!("{upper} --mount=…,from={from}");
                        self.record_flag_use(what, from, Via::Mount, stage, line);
                    }
                }
            } else if keyword != "run" && flag.name == "from" && !value.is_empty() {
                let what = format!("{upper} --from={value}");
                self.record_flag_use(what, value, Via::Copy, stage, line);
            }
        }
    }

    fn record_flag_use(&mut self, what: String, raw: String, via: Via, stage: usize, line: usize) {
        let expanded = expand_word(&raw, self.escape, &self.stage_scope);
        let what = match &expanded {
            Ok(expanded) => self.with_redeclare_hint(what, &expanded.missing),
            Err(_) => what,
        };
        self.uses.push(Use::Flag(FlagUse {
            what,
            raw,
            expanded,
            via,
            stage,
            line,
        }));
    }

    /// A global ARG is visible inside a stage only once the stage re-declares it
    /// (`ARG NAME` without default); say so when that is why a value is missing.
    fn with_redeclare_hint(&self, what: String, missing: &[String]) -> String {
        let undeclared: Vec<&str> = missing
            .iter()
            .filter(|name| {
                !self.stage_scope.contains_key(*name)
                    && matches!(self.globals.get(*name), Some(Var::Value(_)))
            })
            .map(String::as_str)
            .collect();
        if undeclared.is_empty() {
            return what;
        }
        format!(
            "{what} (global ARG {} must be re-declared with `ARG {}` inside the stage to be visible)",
            undeclared.join(", "),
            undeclared.join(" ")
        )
    }

    fn resolve_uses(&mut self) -> Vec<Dependency> {
        let uses = std::mem::take(&mut self.uses);
        let mut dependencies = Vec::new();
        for used in uses {
            match used {
                Use::From { stage } => {
                    if let Some(Stage {
                        from: From::Image { reference, .. },
                        line,
                        ..
                    }) = self.stages.get(stage)
                    {
                        dependencies.push(Dependency {
                            reference: reference.clone(),
                            via: Via::From,
                            stage,
                            line: *line,
                        });
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

    fn resolve_flag_use(&mut self, flag: FlagUse) -> Option<Dependency> {
        let FlagUse {
            what,
            raw,
            expanded,
            via,
            stage,
            line,
        } = flag;
        let expanded = match expanded {
            Ok(expanded) => expanded,
            Err(message) => {
                self.error(line, &format!("{what}: {message}"));
                return None;
            }
        };
        if !expanded.missing.is_empty() {
            let message = format!("{what}: {}", missing_message(&expanded.missing));
            self.error(line, &message);
            return None;
        }
        let text = expanded.text;
        if let Ok(index) = text.parse::<usize>() {
            if index >= self.stages.len() {
                let message = format!(
                    "{what}: invalid stage index {index} (the file has {} stages)",
                    self.stages.len()
                );
                self.error(line, &message);
            } else if index == stage {
                self.error(line, &format!("{what}: a stage cannot use itself"));
            }
            return None;
        }
        if let Some(target) = self.stages.iter().position(|s| names_stage(s, &text)) {
            if target == stage {
                self.error(line, &format!("{what}: a stage cannot use itself"));
            }
            return None;
        }
        if text == "scratch" {
            return None;
        }
        match Reference::parse(&text) {
            Ok(reference) => Some(Dependency {
                reference,
                via,
                stage,
                line,
            }),
            Err(error) => {
                let shown = if text == raw {
                    what
                } else {
                    format!("{what} (expanded to {text:?})")
                };
                self.error(line, &format!("{shown}: {error}"));
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

fn missing_message(missing: &[String]) -> String {
    let mut names: Vec<&str> = missing.iter().map(String::as_str).collect();
    names.dedup();
    let automatic: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| AUTOMATIC_PLATFORM_ARGS.contains(n))
        .collect();
    let hint = names
        .iter()
        .map(|n| format!("--build-arg {n}=…"))
        .collect::<Vec<_>>()
        .join(" ");
    if automatic.len() == names.len() {
        format!(
            "depends on the platform arg {} that is only known at build time; unresolved (pass {hint} to resolve)",
            names.join(", ")
        )
    } else {
        format!(
            "depends on ARG {} with no value (no default, or a default built from unset args); unresolved (pass {hint} to resolve)",
            names.join(", ")
        )
    }
}

#[cfg(test)]
mod tests;
