//! Located findings about user input, printed for people or as GitHub annotations.

use std::fmt;

use super::schema::Position;

/// How serious a finding is. Errors fail `validate` (exit 1); warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The input cannot be used as it is.
    Error,
    /// The input works but probably not as meant.
    Warning,
}

/// One finding: where (`file:line:col`), what, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, as the user named it (`images.yaml`, `examples/app/Dockerfile`).
    pub file: String,
    /// Position in the file; `0:0` when unknown (then only the file is printed).
    pub at: Position,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong, naming the offending value.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// An error at `at` in `file`.
    pub fn error(file: &str, at: Position, message: impl Into<String>) -> Self {
        Self {
            file: file.to_string(),
            at,
            severity: Severity::Error,
            message: message.into(),
            hint: None,
        }
    }

    /// A warning at `at` in `file`.
    pub fn warning(file: &str, at: Position, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(file, at, message)
        }
    }

    /// The same finding with a fix hint.
    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// `file:line:col`, or `file` alone when the position is unknown.
    pub fn location(&self) -> String {
        if self.at.line == 0 {
            self.file.clone()
        } else {
            format!("{}:{}:{}", self.file, self.at.line, self.at.column)
        }
    }

    /// The finding as a GitHub Actions workflow command, so a PR check marks the line
    /// (GitHub docs, "Workflow commands for GitHub Actions": `::error file=…,line=…,col=…::msg`).
    pub fn github_annotation(&self) -> String {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut message = self.message.clone();
        if let Some(hint) = &self.hint {
            message.push_str(" — ");
            message.push_str(hint);
        }
        let mut props = format!("file={}", escape_property(&self.file));
        if self.at.line > 0 {
            props.push_str(&format!(",line={},col={}", self.at.line, self.at.column));
        }
        format!("::{level} {props}::{}", escape_data(&message))
    }
}

/// Escapes a workflow-command message (`%`, CR, LF), as `@actions/core` does.
pub(crate) fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a workflow-command property value (also `:` and `,`).
pub(crate) fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}: {level}: {}", self.location(), self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_file_line_col_and_hint() {
        let d = Diagnostic::error(
            "images.yaml",
            Position {
                line: 14,
                column: 7,
            },
            "bad delay \"7x\"",
        )
        .hint("use a duration such as 7d or 36h");
        assert_eq!(
            d.to_string(),
            "images.yaml:14:7: error: bad delay \"7x\"\n  hint: use a duration such as 7d or 36h"
        );
    }

    #[test]
    fn github_annotation_escapes_newlines_and_marks_the_line() {
        let d = Diagnostic::warning(
            "a,b.yaml",
            Position { line: 3, column: 1 },
            "two\nlines 100%",
        );
        assert_eq!(
            d.github_annotation(),
            "::warning file=a%2Cb.yaml,line=3,col=1::two%0Alines 100%25"
        );
    }
}
