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

use std::collections::BTreeMap;

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
/// A message when the word is malformed (`${` without `}`, `${}`), or uses a
/// substitution form this analyzer does not evaluate (`${VAR#pattern}` and friends).
pub(crate) fn expand_word(word: &str, escape: char, scope: &Scope) -> Result<Expanded, String> {
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
    fn process(&mut self, out: &mut Expanded, in_braces: bool) -> Result<(), String> {
        while let Some(ch) = self.next_char() {
            match ch {
                '}' if in_braces => return Ok(()),
                '\'' => self.single_quoted(out),
                '"' => self.double_quoted(out)?,
                '$' => self.dollar(out)?,
                c if c == self.escape => match self.next_char() {
                    Some(escaped) => out.text.push(escaped),
                    // A trailing escape character stays literal, as in BuildKit.
                    None => out.text.push(c),
                },
                c => out.text.push(c),
            }
        }
        if in_braces {
            return Err("missing '}' in variable substitution".to_owned());
        }
        Ok(())
    }

    fn single_quoted(&mut self, out: &mut Expanded) {
        while let Some(ch) = self.next_char() {
            if ch == '\'' {
                return;
            }
            out.text.push(ch);
        }
    }

    fn double_quoted(&mut self, out: &mut Expanded) -> Result<(), String> {
        while let Some(ch) = self.next_char() {
            match ch {
                '"' => return Ok(()),
                '$' => self.dollar(out)?,
                c if c == self.escape => match self.peek() {
                    // Inside double quotes only these are escapable; elsewhere the escape
                    // character is kept (BuildKit processDoubleQuote).
                    Some(next) if next == '"' || next == '$' || next == self.escape => {
                        self.pos += 1;
                        out.text.push(next);
                    }
                    _ => out.text.push(c),
                },
                c => out.text.push(c),
            }
        }
        Ok(())
    }

    fn dollar(&mut self, out: &mut Expanded) -> Result<(), String> {
        match self.peek() {
            Some('{') => {
                self.pos += 1;
                self.braced(out)
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let name = self.name();
                self.substitute_plain(&name, out);
                Ok(())
            }
            _ => {
                out.text.push('$');
                Ok(())
            }
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

    fn substitute_plain(&self, name: &str, out: &mut Expanded) {
        match self.lookup(name) {
            Var::Value(value) => out.text.push_str(&value),
            Var::Unset | Var::Unknown => out.missing.push(name.to_owned()),
        }
    }

    fn lookup(&self, name: &str) -> Var {
        self.scope.get(name).cloned().unwrap_or(Var::Unset)
    }

    fn braced(&mut self, out: &mut Expanded) -> Result<(), String> {
        let name = self.name();
        if name.is_empty() {
            return Err("bad substitution: '${' must be followed by a variable name".to_owned());
        }
        let colon = self.peek() == Some(':');
        if colon {
            self.pos += 1;
        }
        let Some(op) = self.next_char() else {
            return Err(format!("missing '}}' after ${{{name}"));
        };
        if op == '}' && !colon {
            self.substitute_plain(&name, out);
            return Ok(());
        }
        if !matches!(op, '-' | '+' | '?') {
            return Err(format!(
                "unsupported substitution '${{{name}{}{op}…}}' (only :- - :+ + :? ? are evaluated)",
                if colon { ":" } else { "" }
            ));
        }
        let mut word = Expanded::default();
        self.process(&mut word, true)?;
        let var = self.lookup(&name);
        // With ':' an empty value counts as unset (POSIX / BuildKit).
        let is_set = |value: &String| !colon || !value.is_empty();
        match (op, var) {
            (_, Var::Unknown) => out.missing.push(name),
            ('-', Var::Value(value)) if is_set(&value) => out.text.push_str(&value),
            ('-', _) => merge(out, word),
            ('+', Var::Value(value)) if is_set(&value) => merge(out, word),
            ('+', _) => {}
            (_, Var::Value(value)) if is_set(&value) => out.text.push_str(&value),
            // `${VAR:?message}` on an unset variable fails the build in BuildKit.
            _ => out.missing.push(name),
        }
        Ok(())
    }
}

fn merge(out: &mut Expanded, word: Expanded) {
    out.text.push_str(&word.text);
    out.missing.extend(word.missing);
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
    fn backtick_escape_keeps_backslashes() {
        let got = expand_word(r"C:\dir`$SET", '`', &scope()).unwrap();
        assert_eq!(got.resolved(), Some(r"C:\dir$SET"));
    }
}
