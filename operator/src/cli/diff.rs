//! `image-factory diff`: the change to `images.yaml` (working tree) against a git ref,
//! as text, JSON or GitHub Actions output (see [`crate::diff`]).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::ValueEnum;

use super::{print, print_diagnostics, Format, Input, EXIT_ERROR, EXIT_FINDINGS, EXIT_OK};
use crate::analyze::{self, AnalyzeError};
use crate::diff::{self, render, tree, Snapshot};
use crate::enrollment::{Diagnostic, EnrollmentError, Severity};
use crate::progress::SourcesBar;

/// `diff`'s arguments.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// images.yaml (as it is in the working tree) and the source cache.
    #[command(flatten)]
    pub input: Input,
    /// The git revision to compare with: `HEAD` (the default: what the uncommitted edit
    /// does), a branch (`main`, `origin/main`), a tag, a commit, or `HEAD^1` (in a pull
    /// request's merge commit, the target branch).
    #[arg(long, value_name = "GIT_REF", default_value = "HEAD")]
    pub base: String,
    /// The state folder: discovered bases keep the names its records give them, on both
    /// sides (so Warehouse names are the ones `analyze` writes).
    #[arg(long, default_value = "state")]
    pub state_dir: PathBuf,
    /// `text` for people, `json` for tools, `github` for a pull request: a Markdown job
    /// summary (appended to `$GITHUB_STEP_SUMMARY` when set, else printed) and
    /// annotations on the changed `images.yaml` lines (printed).
    #[arg(long, value_enum, default_value_t = DiffOutput::Text)]
    pub output: DiffOutput,
}

/// `diff --output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiffOutput {
    /// For people.
    Text,
    /// For tools: one JSON document (its shape is in the README).
    Json,
    /// GitHub Actions: job summary plus workflow-command annotations.
    Github,
}

/// Runs `diff`: analyzes the working tree's `images.yaml` (an invalid one is reported
/// with its locations, exit 1), then the same file at `--base`, and prints what changes.
/// Exit 0 for a valid change (with or without differences), 1 for findings in the
/// working tree, 2 for usage, git or I/O errors (an unknown ref, a source that cannot be
/// fetched, an invalid file at the ref).
pub fn run(args: &DiffArgs) -> u8 {
    let file = args.input.file();
    let head = match analyze::model_named(
        file,
        &args.input.cache_dir,
        &args.state_dir,
        &SourcesBar::default(),
    ) {
        Ok(model) => model,
        Err(AnalyzeError::Enrollment(EnrollmentError::Invalid { diagnostics, .. })) => {
            return invalid(file, &diagnostics, args.output);
        }
        Err(AnalyzeError::Findings { diagnostics }) => {
            return invalid(file, &diagnostics, args.output);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_ERROR;
        }
    };
    let findings = head.findings();
    if findings.iter().any(|d| d.severity == Severity::Error) {
        return invalid(file, &findings, args.output);
    }
    let located = match tree::locate(file) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_ERROR;
        }
    };
    let scratch = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!(
                "error: cannot create a temporary folder for {}: {e}",
                args.base
            );
            return EXIT_ERROR;
        }
    };
    let materialized = match tree::materialize(&located, &args.base, scratch.path()) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_ERROR;
        }
    };
    let base = match &materialized.enrollment {
        None => Snapshot::default(),
        Some(path) => match analyze::model_named(
            path,
            &args.input.cache_dir,
            &args.state_dir,
            &SourcesBar::default(),
        ) {
            Ok(model) => Snapshot::of(&model),
            Err(AnalyzeError::Enrollment(EnrollmentError::Invalid { diagnostics, .. })) => {
                // Its diagnostics name the temporary copy: name the file at the ref.
                eprintln!(
                    "error: {} at {} is not a valid enrollment, so there is nothing to compare with; pass a --base where it is valid",
                    located.file, args.base
                );
                for d in diagnostics.iter().filter(|d| d.severity == Severity::Error) {
                    eprintln!(
                        "  {}:{}:{} ({}): {}",
                        located.file, d.at.line, d.at.column, args.base, d.message
                    );
                }
                return EXIT_ERROR;
            }
            Err(e) => {
                eprintln!("error: {} at {}: {e}", located.file, args.base);
                return EXIT_ERROR;
            }
        },
    };
    let head = Snapshot::of(&head);
    let changes = diff::compare(&base, &head);
    let compared = render::Compared {
        file: located.file.clone(),
        reference: args.base.clone(),
        commit: materialized.commit.clone(),
        found: materialized.enrollment.is_some(),
    };
    match args.output {
        DiffOutput::Text => print(&render::text(&compared, &changes)),
        DiffOutput::Json => match render::json(&compared, &changes) {
            Ok(json) => print(&json),
            Err(e) => {
                eprintln!("error: cannot render the diff as JSON: {e}");
                EXIT_ERROR
            }
        },
        DiffOutput::Github => {
            let code = write_summary(&render::summary(&compared, &changes));
            if code != EXIT_OK {
                return code;
            }
            print(&render::annotations(&compared, &changes, &head.lines()))
        }
    }
}

/// The working tree's `images.yaml` has errors: every finding located (as GitHub
/// annotations in `github` mode, plus a summary saying so), exit 1.
fn invalid(file: &Path, diagnostics: &[Diagnostic], output: DiffOutput) -> u8 {
    let errors = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    match output {
        DiffOutput::Github => {
            print_diagnostics(diagnostics, Format::Github);
            let text = format!(
                "## image-factory diff\n\n`{}` has **{errors} error(s)**: nothing to compare. The annotations mark each one; `image-factory validate {}` lists them.\n",
                file.display(),
                file.display()
            );
            if write_summary(&text) != EXIT_OK {
                return EXIT_ERROR;
            }
        }
        DiffOutput::Text | DiffOutput::Json => {
            print_diagnostics(diagnostics, Format::Text);
            eprintln!(
                "{}: {errors} error(s): fix them, then compare (`image-factory validate {}` lists every finding)",
                file.display(),
                file.display()
            );
        }
    }
    EXIT_FINDINGS
}

/// Appends `text` to the file `$GITHUB_STEP_SUMMARY` names (GitHub docs, "Adding a job
/// summary"), else prints it.
fn write_summary(text: &str) -> u8 {
    let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|p| !p.is_empty()) else {
        return print(text);
    };
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()));
    match written {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!(
                "error: cannot write the job summary to {} ($GITHUB_STEP_SUMMARY): {e}",
                Path::new(&path).display()
            );
            EXIT_ERROR
        }
    }
}
