//! Shell-style word processing for Dockerfile arguments: quote removal, the escape
//! character and `$VAR` / `${VAR…}` substitution.
//!
//! Follows BuildKit's `frontend/dockerfile/shell` lexer (the rules of the Dockerfile
//! reference, "Environment replacement"): `$VAR`, `${VAR}`, `${VAR:-word}`,
//! `${VAR-word}`, `${VAR:+word}`, `${VAR+word}`, `${VAR:?word}`, `${VAR?word}`; single
//! quotes are literal, double quotes allow substitution, the escape character makes the
//! next character literal.
//!
//! Unlike BuildKit, a variable whose value is not known never silently becomes the empty
//! string: it is reported in [`Expanded::missing`], so the caller can refuse to guess.
//!
//! Expansion is bounded: a word never grows past [`MAX_EXPANDED_BYTES`], so chained
//! `ARG A2=${A1}${A1}`, `ARG A3=${A2}${A2}`, … cannot double their way to gigabytes.

use std::collections::BTreeMap;

/// The largest expanded word, in bytes (4 KiB).
///
/// Where it comes from: the longest valid image reference is well under 1 KiB
/// (distribution/reference: repository path ≤ 255 characters, tag ≤ 128, a sha512 digest
/// 135, a registry host ≤ 253), so no expansion that ends in a `FROM` or `--from` can
/// need more; 4 KiB leaves room for ARGs that hold other text (package lists) while
/// keeping the memory of an analysis at most this much per declared ARG.
pub const MAX_EXPANDED_BYTES: usize = 4096;

/// Why a word could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubstitutionError {
    /// `${NAME` or `${NAME:-word` without the closing `}`.
    #[error("missing '}}' in variable substitution")]
    Unterminated,
    /// `${}` or `${:-x}`: no variable name after `${`.
    #[error("bad substitution: '${{' must be followed by a variable name")]
    MissingName,
    /// A form BuildKit knows but this analyzer does not evaluate (`${NAME#pattern}`,
    /// `${NAME%pattern}`, `${NAME/a/b}`); `form` is e.g. `${NAME#…}`.
    #[error("unsupported substitution '{form}' (only :- - :+ + :? ? are evaluated)")]
    Unsupported {
        /// The form, with the variable name and operator and `…` for the rest.
        form: String,
    },
    /// The expanded word grew past [`MAX_EXPANDED_BYTES`].
    #[error("expands past {MAX_EXPANDED_BYTES} bytes")]
    TooLarge,
}

/// What is known about one build variable (an `ARG`, a build arg).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Var {
    /// Declared with a value (a default or a build arg); may be empty.
    Value(String),
    /// Not set: declared without default and not given as a build arg, or never declared.
    /// The `${VAR:-word}`-style forms know what to do with it; plain `$VAR` does not.
    Unset,
    /// Has a value, but that value depends on an unset variable, so nothing can be said.
    Unknown,
}

/// Variables in scope, by name.
pub(crate) type Scope = BTreeMap<String, Var>;

/// The result of processing one word.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Expanded {
    /// The word after quote removal and substitution. Meaningless when `missing` is not empty.
    pub(crate) text: String,
    /// Variables whose value was needed but is not known, in order of appearance.
    pub(crate) missing: Vec<String>,
}

impl Expanded {
    /// The expanded text when every variable it needed was known.
    pub(crate) fn resolved(&self) -> Option<&str> {
        self.missing.is_empty().then_some(self.text.as_str())
    }
}

/// Processes `word` against `scope`.
///
/// # Errors
///
/// [`SubstitutionError`] when the word is malformed (`${` without `}`, `${}`), uses a
/// substitution form this analyzer does not evaluate (`${VAR#pattern}` and friends), or
/// expands past [`MAX_EXPANDED_BYTES`].
pub(crate) fn expand_word(
    word: &str,
    escape: char,
    scope: &Scope,
) -> Result<Expanded, SubstitutionError> {
    let mut lexer = Lexer {
        chars: word.chars().collect(),
        pos: 0,
        escape,
        scope,
    };
    let mut out = Expanded::default();
    lexer.process(&mut out, false)?;
    Ok(out)
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    scope: &'a Scope,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next_char(&mut self) -> Option<char> {
        let ch = self.peek();
        if ch.is_some() {
            self.pos += 1;
        }
        ch
    }

    /// Processes until the end of input, or until an unmatched `}` when `in_braces`
    /// (the word part of `${VAR:-word}`), which is consumed.
    fn process(&mut self, out: &mut Expanded, in_braces: bool) -> Result<(), SubstitutionError> {
        while let Some(ch) = self.next_char() {
            match ch {
                '}' if in_braces => return Ok(()),
                '\'' => self.single_quoted(out)?,
                '"' => self.double_quoted(out)?,
                '$' => self.dollar(out)?,
                c if c == self.escape => match self.next_char() {
                    Some(escaped) => push(out, escaped)?,
                    // A trailing escape character stays literal, as in BuildKit.
                    None => push(out, c)?,
                },
                c => push(out, c)?,
            }
        }
        if in_braces {
            return Err(SubstitutionError::Unterminated);
        }
        Ok(())
    }

    fn single_quoted(&mut self, out: &mut Expanded) -> Result<(), SubstitutionError> {
        while let Some(ch) = self.next_char() {
            if ch == '\'' {
                return Ok(());
            }
            push(out, ch)?;
        }
        Ok(())
    }

    fn double_quoted(&mut self, out: &mut Expanded) -> Result<(), SubstitutionError> {
        while let Some(ch) = self.next_char() {
            match ch {
                '"' => return Ok(()),
                '$' => self.dollar(out)?,
                c if c == self.escape => match self.peek() {
                    // Inside double quotes only these are escapable; elsewhere the escape
                    // character is kept (BuildKit processDoubleQuote).
                    Some(next) if next == '"' || next == '$' || next == self.escape => {
                        self.pos += 1;
                        push(out, next)?;
                    }
                    _ => push(out, c)?,
                },
                c => push(out, c)?,
            }
        }
        Ok(())
    }

    fn dollar(&mut self, out: &mut Expanded) -> Result<(), SubstitutionError> {
        match self.peek() {
            Some('{') => {
                self.pos += 1;
                self.braced(out)
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let name = self.name();
                self.substitute_plain(&name, out)
            }
            _ => push(out, '$'),
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                name.push(c);
                self.pos += 1;
            } else {
                break;
            }
        }
        name
    }

    fn substitute_plain(&self, name: &str, out: &mut Expanded) -> Result<(), SubstitutionError> {
        match self.lookup(name) {
            Var::Value(value) => push_str(out, &value)?,
            Var::Unset | Var::Unknown => out.missing.push(name.to_owned()),
        }
        Ok(())
    }

    fn lookup(&self, name: &str) -> Var {
        self.scope.get(name).cloned().unwrap_or(Var::Unset)
    }

    fn braced(&mut self, out: &mut Expanded) -> Result<(), SubstitutionError> {
        let name = self.name();
        if name.is_empty() {
            return Err(SubstitutionError::MissingName);
        }
        let colon = self.peek() == Some(':');
        if colon {
            self.pos += 1;
        }
        let Some(op) = self.next_char() else {
            return Err(SubstitutionError::Unterminated);
        };
        if op == '}' && !colon {
            return self.substitute_plain(&name, out);
        }
        if !matches!(op, '-' | '+' | '?') {
            return Err(SubstitutionError::Unsupported {
                form: format!("${{{name}{}{op}…}}", if colon { ":" } else { "" }),
            });
        }
        let mut word = Expanded::default();
        self.process(&mut word, true)?;
        let var = self.lookup(&name);
        // With ':' an empty value counts as unset (POSIX / BuildKit).
        let is_set = |value: &String| !colon || !value.is_empty();
        match (op, var) {
            (_, Var::Unknown) => out.missing.push(name),
            ('-', Var::Value(value)) if is_set(&value) => push_str(out, &value)?,
            ('-', _) => merge(out, word)?,
            ('+', Var::Value(value)) if is_set(&value) => merge(out, word)?,
            ('+', _) => {}
            (_, Var::Value(value)) if is_set(&value) => push_str(out, &value)?,
            // `${VAR:?message}` on an unset variable fails the build in BuildKit.
            _ => out.missing.push(name),
        }
        Ok(())
    }
}

/// Appends one character, refusing to grow past [`MAX_EXPANDED_BYTES`].
fn push(out: &mut Expanded, ch: char) -> Result<(), SubstitutionError> {
    if out.text.len() + ch.len_utf8() > MAX_EXPANDED_BYTES {
        return Err(SubstitutionError::TooLarge);
    }
    out.text.push(ch);
    Ok(())
}

/// Appends a value, refusing to grow past [`MAX_EXPANDED_BYTES`]; checked before the
/// copy, so a too-large result is never allocated.
fn push_str(out: &mut Expanded, value: &str) -> Result<(), SubstitutionError> {
    if out.text.len() + value.len() > MAX_EXPANDED_BYTES {
        return Err(SubstitutionError::TooLarge);
    }
    out.text.push_str(value);
    Ok(())
}

fn merge(out: &mut Expanded, word: Expanded) -> Result<(), SubstitutionError> {
    push_str(out, &word.text)?;
    out.missing.extend(word.missing);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn scope() -> Scope {
        [
            ("SET", Var::Value("v".to_owned())),
            ("EMPTY", Var::Value(String::new())),
            ("UNSET", Var::Unset),
            ("UNKNOWN", Var::Unknown),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    #[rstest]
    #[case::plain("a$SET-b", "av-b")]
    #[case::braced("${SET}x", "vx")]
    #[case::default_set("${SET:-d}", "v")]
    #[case::default_empty("${EMPTY:-d}", "d")]
    #[case::default_unset("${UNSET:-d}", "d")]
    #[case::dash_empty("${EMPTY-d}", "")]
    #[case::dash_unset("${UNSET-d}", "d")]
    #[case::alt_set("${SET:+x}", "x")]
    #[case::alt_empty("${EMPTY:+x}", "")]
    #[case::alt_unset("busybox${UNSET:+@sha256:abc}", "busybox")]
    #[case::plus_empty("${EMPTY+x}", "x")]
    #[case::plus_unset("${UNSET+x}", "")]
    #[case::nested_default("${UNSET:-${SET}}", "v")]
    #[case::double_quotes("\"$SET\"", "v")]
    #[case::single_quotes("'$SET'", "$SET")]
    #[case::escaped_dollar("\\$SET", "$SET")]
    #[case::lone_dollar("a$", "a$")]
    #[case::dollar_digit("$1x", "$1x")]
    #[case::trailing_escape("a\\", "a\\")]
    fn expands(#[case] word: &str, #[case] want: &str) {
        let got = expand_word(word, '\\', &scope()).unwrap();
        assert_eq!(got.resolved(), Some(want), "{word}");
    }

    #[rstest]
    #[case::plain_unset("$UNSET", &["UNSET"])]
    #[case::braced_unset("x:${UNSET}", &["UNSET"])]
    #[case::unknown_default("${UNKNOWN:-d}", &["UNKNOWN"])]
    #[case::unused_default_word_not_needed("${SET:-$UNSET}", &[])]
    #[case::used_default_word("${UNSET:-$UNKNOWN}", &["UNKNOWN"])]
    #[case::required("${UNSET:?must be set}", &["UNSET"])]
    #[case::undeclared("$NEVER_DECLARED", &["NEVER_DECLARED"])]
    fn reports_missing(#[case] word: &str, #[case] missing: &[&str]) {
        let got = expand_word(word, '\\', &scope()).unwrap();
        assert_eq!(got.missing, missing, "{word}");
    }

    #[rstest]
    #[case::unterminated("${SET")]
    #[case::unterminated_default("${SET:-x")]
    #[case::empty_name("${}")]
    #[case::pattern("${SET#v}")]
    fn rejects(#[case] word: &str) {
        assert!(expand_word(word, '\\', &scope()).is_err(), "{word}");
    }

    #[test]
    fn stops_at_the_size_limit() {
        let half = "x".repeat(MAX_EXPANDED_BYTES / 2);
        let scope: Scope = [("H".to_owned(), Var::Value(half))].into_iter().collect();
        let exact = expand_word("$H$H", '\\', &scope).unwrap();
        assert_eq!(exact.text.len(), MAX_EXPANDED_BYTES);
        for word in ["$H$H$H", "$H${U:-$H$H}", "$H$H!", "'$H'$H$H"] {
            assert_eq!(
                expand_word(word, '\\', &scope),
                Err(SubstitutionError::TooLarge),
                "{word}"
            );
        }
    }

    #[test]
    fn backtick_escape_keeps_backslashes() {
        let got = expand_word(r"C:\dir`$SET", '`', &scope()).unwrap();
        assert_eq!(got.resolved(), Some(r"C:\dir$SET"));
    }
}
