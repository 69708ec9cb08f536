//! Typed Dockerfile problems: what is wrong, on which line, and what to do about it.
//!
//! Each [`ProblemKind`] has its own message ([`std::fmt::Display`]), its own
//! [`ProblemKind::hint`] and its [`ProblemKind::severity`], so callers (`dockerfile`,
//! `validate`, `analyze`) never parse messages back. Values from the file are echoed at
//! most [`ECHO_CHARS`] characters long (then `…`), so a hostile file cannot make a
//! message large.

use std::fmt;

use super::expand::{SubstitutionError, MAX_EXPANDED_BYTES};
use crate::enrollment::Severity;
use crate::reference::ReferenceError;

/// The longest value, in characters, echoed in a message before it is cut with `…`.
pub const ECHO_CHARS: usize = 80;

/// One problem in a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line of the instruction; 0 for a problem of the whole file
    /// ([`ProblemKind::NoFrom`]).
    pub line: usize,
    /// What is wrong.
    pub kind: ProblemKind,
}

/// What is wrong. `instruction` fields hold the instruction as written, shortened
/// (`FROM ${BASE}`, `COPY --from=$T`, `ARG A12`), to name it in the message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemKind {
    /// A `# escape=` directive that is neither `\` nor `` ` `` (BuildKit: "invalid
    /// escape token"); `\` is used.
    InvalidEscapeDirective {
        /// The value given.
        value: String,
    },
    /// A heredoc (`<<EOF`) whose terminator line never comes.
    UnterminatedHeredoc {
        /// The heredoc name (`EOF`).
        name: String,
    },
    /// An instruction the Dockerfile reference does not define (BuildKit rejects the file).
    UnknownInstruction {
        /// The keyword, upper-cased.
        keyword: String,
    },
    /// An instruction other than `ARG` before the first `FROM` (BuildKit: "no build
    /// stage in current context").
    BeforeFirstFrom {
        /// The keyword, upper-cased (`RUN`).
        keyword: String,
    },
    /// `ARG` with nothing after it.
    ArgWithoutName,
    /// An `ARG` name that is not an identifier (`ARG 1X=…`).
    InvalidArgName {
        /// The name as written.
        name: String,
    },
    /// `FROM` with flags only, or nothing.
    FromWithoutImage,
    /// `FROM` with a number of words other than `image` or `image AS name` (BuildKit:
    /// "FROM requires either one or three arguments").
    FromArity {
        /// The words after the flags.
        args: String,
    },
    /// A `FROM` flag other than `--platform` (BuildKit: "unknown flag"); ignored here.
    UnknownFromFlag {
        /// The flag name, without `--`.
        flag: String,
    },
    /// A stage name BuildKit rejects: after lower-casing it must match
    /// `^[a-z][a-z0-9-_.]*$` (`frontend/dockerfile/instructions/parse.go`,
    /// `validStageName`).
    InvalidStageName {
        /// The name as written.
        name: String,
    },
    /// Two stages with the same name (case-insensitively); references go to the first.
    DuplicateStageName {
        /// The second stage's name.
        name: String,
        /// 1-based line of the first stage with that name.
        first_line: usize,
    },
    /// A `${…}` that cannot be evaluated: malformed, or a form this analyzer does not
    /// evaluate ([`SubstitutionError`]; never [`SubstitutionError::TooLarge`], which is
    /// [`ProblemKind::ExpansionTooLarge`]).
    BadSubstitution {
        /// The instruction.
        instruction: String,
        /// Why.
        error: SubstitutionError,
    },
    /// An expansion grew past [`MAX_EXPANDED_BYTES`] (chained ARGs that double); the
    /// value is unknown from here on.
    ExpansionTooLarge {
        /// The instruction (`ARG A14`, `FROM $X`).
        instruction: String,
    },
    /// A variable that no `ARG` declares in scope. In `FROM` only ARGs before the first
    /// `FROM` are in scope, and a build arg sets only a *declared* ARG: BuildKit
    /// substitutes an undeclared one with the empty string (lint `UndefinedArgInFrom`,
    /// "FROM argument '…' is not declared").
    UndeclaredArg {
        /// The instruction.
        instruction: String,
        /// The variable.
        name: String,
        /// A build arg of that name was given (and does not apply).
        build_arg_given: bool,
        /// The use is inside a stage (`COPY --from`, `RUN --mount`), not in a `FROM`.
        in_stage: bool,
    },
    /// An `ARG` declared without a default and given no build arg.
    UnsetArg {
        /// The instruction.
        instruction: String,
        /// The variable.
        name: String,
    },
    /// An `ARG` whose default is built from variables without a value.
    UnknownArg {
        /// The instruction.
        instruction: String,
        /// The variable.
        name: String,
    },
    /// An automatic platform arg (`TARGETARCH`, …), known only at build time.
    PlatformArg {
        /// The instruction.
        instruction: String,
        /// The variable.
        name: String,
    },
    /// A global ARG used inside a stage that did not re-declare it (`ARG NAME`).
    NotRedeclared {
        /// The instruction.
        instruction: String,
        /// The variable.
        name: String,
    },
    /// The (expanded) image is not a valid reference.
    InvalidReference {
        /// The instruction.
        instruction: String,
        /// The expanded text, when it differs from what is written.
        expanded: Option<String>,
        /// Why it is invalid.
        error: ReferenceError,
    },
    /// `--from=<n>` with `n` ≥ the number of stages (BuildKit: "invalid stage index").
    InvalidStageIndex {
        /// The instruction.
        instruction: String,
        /// The index given.
        index: usize,
        /// The number of stages in the file.
        stages: usize,
    },
    /// `--from` naming the stage it is in.
    StageUsesItself {
        /// The instruction.
        instruction: String,
    },
    /// The file has no `FROM` at all.
    NoFrom,
}

impl Problem {
    /// What to do about it; see [`ProblemKind::hint`].
    #[must_use]
    pub fn hint(&self) -> String {
        self.kind.hint()
    }
}

impl ProblemKind {
    /// Whether the problem makes the file unusable ([`Severity::Error`]: BuildKit rejects
    /// it, or its dependencies cannot be known) or is a limit of this analyzer only
    /// ([`Severity::Warning`]: a substitution form it does not evaluate).
    #[must_use]
    pub fn severity(&self) -> Severity {
        match self {
            Self::BadSubstitution {
                error: SubstitutionError::Unsupported { .. },
                ..
            } => Severity::Warning,
            _ => Severity::Error,
        }
    }

    /// What to do about it, in words that fit the `dockerfile` command (`--build-arg`)
    /// and `images.yaml` (`buildArgs`) alike.
    #[must_use]
    pub fn hint(&self) -> String {
        match self {
            Self::InvalidEscapeDirective { .. } => {
                "write `# escape=\\` or `# escape=`` in the leading comment lines".to_owned()
            }
            Self::UnterminatedHeredoc { name } => {
                format!("end the heredoc with a line that is exactly {}", short(name))
            }
            Self::UnknownInstruction { keyword } => format!(
                "{} is not a Dockerfile instruction and BuildKit rejects it; a file that a tool preprocesses must be analyzed after preprocessing",
                short(keyword)
            ),
            Self::BeforeFirstFrom { keyword } => format!(
                "move {} after the first FROM; only ARG, comments and parser directives may come before it",
                short(keyword)
            ),
            Self::ArgWithoutName => "write `ARG NAME` or `ARG NAME=default`".to_owned(),
            Self::InvalidArgName { .. } => {
                "an ARG name starts with a letter or `_` and has only letters, digits and `_`"
                    .to_owned()
            }
            Self::FromWithoutImage | Self::FromArity { .. } => {
                "write `FROM <image>` or `FROM <image> AS <name>`; flags such as `--platform=…` go before the image"
                    .to_owned()
            }
            Self::UnknownFromFlag { flag } => {
                format!("FROM takes only `--platform=…`; remove `--{}`", short(flag))
            }
            Self::InvalidStageName { .. } => {
                "a stage name starts with a letter and has only letters, digits, `-`, `_` and `.` (BuildKit; names are case-insensitive)"
                    .to_owned()
            }
            Self::DuplicateStageName { .. } => "give each stage its own name".to_owned(),
            Self::BadSubstitution { error, .. } => match error {
                SubstitutionError::Unsupported { .. } => {
                    "only `${NAME:-word}`, `${NAME-word}`, `:+`, `+`, `:?` and `?` are evaluated here; write the value without that form if the analysis needs it"
                        .to_owned()
                }
                _ => "write a variable as `$NAME` or `${NAME}`, closing every `${` with `}`"
                    .to_owned(),
            },
            Self::ExpansionTooLarge { .. } => format!(
                "no image reference is longer than {MAX_EXPANDED_BYTES} bytes (its path alone is at most 255 characters); ARG defaults that repeat other ARGs are a mistake"
            ),
            Self::UndeclaredArg {
                name,
                build_arg_given,
                in_stage,
                ..
            } => {
                let name = short(name);
                let mut hint = if *in_stage {
                    format!("{name} is not declared; add `ARG {name}=<value>` in the stage, before this line")
                } else {
                    format!("{name} is not declared; add `ARG {name}=<image>` before the first FROM")
                };
                if *build_arg_given {
                    hint.push_str(&format!(
                        " (the build arg {name} does not apply: a build arg only sets a declared ARG, BuildKit leaves an undeclared one empty)"
                    ));
                }
                hint
            }
            Self::UnsetArg { name, .. } => {
                let name = short(name);
                format!("give ARG {name} a default (`ARG {name}=<value>`) or a value as a build arg (`--build-arg {name}=…`, or buildArgs in images.yaml)")
            }
            Self::UnknownArg { name, .. } => format!(
                "the default of ARG {} uses ARGs that have no value; give those a default or a build arg",
                short(name)
            ),
            Self::PlatformArg { name, .. } => {
                let name = short(name);
                format!("{name} is known only at build time; give it as a build arg (`--build-arg {name}=…`, or buildArgs in images.yaml) to analyze one platform")
            }
            Self::NotRedeclared { name, .. } => format!(
                "add `ARG {}` (without a value) inside the stage, before this line",
                short(name)
            ),
            Self::InvalidReference { .. } => {
                "write a valid image reference: [registry/]repository[:tag][@digest], the repository in lower case"
                    .to_owned()
            }
            Self::InvalidStageIndex { stages, .. } => match stages.checked_sub(1) {
                Some(last) => format!("use a stage index from 0 to {last}, a stage name or an image"),
                None => "use a stage name or an image".to_owned(),
            },
            Self::StageUsesItself { .. } => {
                "copy from an earlier stage or an image, not from the stage being built".to_owned()
            }
            Self::NoFrom => "a Dockerfile starts its first stage with `FROM <image>`".to_owned(),
        }
    }
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidEscapeDirective { value } => write!(
                f,
                "invalid escape directive {:?}: must be \\ or ` (using \\)",
                short(value)
            ),
            Self::UnterminatedHeredoc { name } => {
                let name = short(name);
                write!(f, "unterminated heredoc <<{name}: no line {name:?} follows")
            }
            Self::UnknownInstruction { keyword } => write!(
                f,
                "unknown instruction {:?} ignored (BuildKit would reject the file)",
                short(keyword)
            ),
            Self::BeforeFirstFrom { keyword } => write!(
                f,
                "{} before the first FROM is ignored (only ARG may come first)",
                short(keyword)
            ),
            Self::ArgWithoutName => write!(f, "ARG requires at least one argument"),
            Self::InvalidArgName { name } => {
                write!(f, "ARG has an invalid name {:?}", short(name))
            }
            Self::FromWithoutImage => write!(f, "FROM names no image"),
            Self::FromArity { args } => write!(
                f,
                "FROM requires either one or three arguments (`image` or `image AS name`), got {:?}",
                short(args)
            ),
            Self::UnknownFromFlag { flag } => {
                write!(f, "FROM has unknown flag --{} (ignored)", short(flag))
            }
            Self::InvalidStageName { name } => write!(
                f,
                "invalid stage name {:?}: it must start with a letter and have only letters, digits, '-', '_' and '.'",
                short(name)
            ),
            Self::DuplicateStageName { name, first_line } => write!(
                f,
                "duplicate stage name {:?} (first used on line {first_line})",
                short(name)
            ),
            Self::BadSubstitution { instruction, error } => {
                write!(f, "{}: {error}", short(instruction))
            }
            Self::ExpansionTooLarge { instruction } => write!(
                f,
                "{} expands past {MAX_EXPANDED_BYTES} bytes",
                short(instruction)
            ),
            Self::UndeclaredArg {
                instruction, name, ..
            } => write!(
                f,
                "{}: ARG {} is not declared; unresolved",
                short(instruction),
                short(name)
            ),
            Self::UnsetArg { instruction, name } => write!(
                f,
                "{}: depends on ARG {} with no value (no default and no build arg); unresolved",
                short(instruction),
                short(name)
            ),
            Self::UnknownArg { instruction, name } => write!(
                f,
                "{}: depends on ARG {}, whose default uses ARGs without a value; unresolved",
                short(instruction),
                short(name)
            ),
            Self::PlatformArg { instruction, name } => write!(
                f,
                "{}: depends on the platform arg {} that is only known at build time; unresolved",
                short(instruction),
                short(name)
            ),
            Self::NotRedeclared { instruction, name } => {
                let name = short(name);
                write!(
                    f,
                    "{}: global ARG {name} must be re-declared with `ARG {name}` inside the stage to be visible; unresolved",
                    short(instruction)
                )
            }
            Self::InvalidReference {
                instruction,
                expanded,
                error,
            } => {
                write!(f, "{}", short(instruction))?;
                if let Some(expanded) = expanded {
                    write!(f, " (expanded to {:?})", short(expanded))?;
                }
                // The reference error quotes the whole input (up to MAX_EXPANDED_BYTES).
                write!(f, ": {}", short_middle(&error.to_string()))
            }
            Self::InvalidStageIndex {
                instruction,
                index,
                stages,
            } => write!(
                f,
                "{}: invalid stage index {index} (the file has {stages} stages)",
                short(instruction)
            ),
            Self::StageUsesItself { instruction } => {
                write!(f, "{}: a stage cannot use itself", short(instruction))
            }
            Self::NoFrom => write!(
                f,
                "no FROM instruction; a Dockerfile needs at least one FROM"
            ),
        }
    }
}

/// `text` cut to [`ECHO_CHARS`] characters, with `…` when cut.
pub(crate) fn short(text: &str) -> String {
    match text.char_indices().nth(ECHO_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// `text` with its middle cut when longer than twice [`ECHO_CHARS`], keeping the end
/// (where a reference error says what is wrong).
fn short_middle(text: &str) -> String {
    let count = text.chars().count();
    if count <= 2 * ECHO_CHARS {
        return text.to_owned();
    }
    let head: String = text.chars().take(ECHO_CHARS).collect();
    let tail: String = text.chars().skip(count - ECHO_CHARS).collect();
    format!("{head}…{tail}")
}
