//! Shell-style word processing for Dockerfile arguments: quote removal, the escape
//! character and `$VAR` / `${VAR…}` substitution.
//!
//! Follows BuildKit's `frontend/dockerfile/shell` lexer (the rules of the Dockerfile
//! reference, "Environment replacement"): `$VAR`, `${VAR}`, `${VAR:-word}`,
//! `${VAR-word}`, `${VAR:+word}`, `${VAR+word}`, `${VAR:?word}`, `${VAR?word}`, and the
//! pattern removals of Dockerfile frontend 1.7 (`docker/dockerfile:1.7.0` release notes,
//! "Variable expansion"): `${VAR#pattern}` / `${VAR##pattern}` remove the shortest /
//! longest prefix matching `pattern`, `${VAR%pattern}` / `${VAR%%pattern}` the shortest /
//! longest suffix, where `pattern` is a shell glob (`*`, `?`, `[…]`, `[!…]`) that may
//! itself hold variables. Single quotes are literal, double quotes allow substitution,
//! the escape character makes the next character literal. Replacement
//! (`${VAR/pattern/word}`, labs only) is reported as unsupported.
//!
//! One simplification: inside a pattern, a quoted or escaped `*`, `?` or `[` still acts
//! as a wildcard (BuildKit matches it literally); such patterns do not occur in the
//! corpus of real Dockerfiles these rules are checked against.
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
    /// A form this analyzer does not evaluate (`${NAME/a/b}`, `${NAME:1:2}`); `form` is
    /// e.g. `${NAME/…}`.
    #[error("unsupported substitution '{form}' (:- - :+ + :? ? # ## % %% are evaluated)")]
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
        if !colon && matches!(op, '#' | '%') {
            return self.remove_pattern(name, op, out);
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

impl Lexer<'_> {
    /// `${NAME#pattern}`, `${NAME##pattern}`, `${NAME%pattern}`, `${NAME%%pattern}`, the
    /// first `#`/`%` already read as `op`.
    fn remove_pattern(
        &mut self,
        name: String,
        op: char,
        out: &mut Expanded,
    ) -> Result<(), SubstitutionError> {
        let longest = self.peek() == Some(op);
        if longest {
            self.pos += 1;
        }
        let mut pattern = Expanded::default();
        self.process(&mut pattern, true)?;
        let value = match self.lookup(&name) {
            Var::Value(value) => value,
            // An unset variable would be removed from silently (BuildKit: empty).
            Var::Unset | Var::Unknown => {
                out.missing.push(name);
                return Ok(());
            }
        };
        if !pattern.missing.is_empty() {
            out.missing.extend(pattern.missing);
            return Ok(());
        }
        let kept = remove_matching(&value, &pattern.text, op == '#', longest);
        push_str(out, kept)
    }
}

/// `value` without its shortest (or `longest`) prefix (`from_start`) or suffix that
/// matches the shell glob `pattern`; `value` itself when none does.
fn remove_matching<'v>(value: &'v str, pattern: &str, from_start: bool, longest: bool) -> &'v str {
    let Ok(glob) = regex::Regex::new(&format!("^(?s:{})$", glob_to_regex(pattern))) else {
        return value;
    };
    // Cut points on character boundaries, in the order the form wants them tried.
    let mut cuts: Vec<usize> = value
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(value.len()))
        .collect();
    // Prefix: shortest first = cut ascending; suffix: shortest first = cut descending.
    if from_start == longest {
        cuts.reverse();
    }
    for cut in cuts {
        let (part, rest) = if from_start {
            (&value[..cut], &value[cut..])
        } else {
            (&value[cut..], &value[..cut])
        };
        if glob.is_match(part) {
            return rest;
        }
    }
    value
}

/// The regular expression of a shell glob: `*` any run, `?` any one character,
/// `[…]` / `[!…]` / `[^…]` a class; everything else literal. An unclosed `[` is literal.
fn glob_to_regex(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            '[' => {
                if let Some(class) = glob_class(&chars[i..]) {
                    out.push_str(&class.0);
                    i += class.1;
                    continue;
                }
                out.push_str(r"\[");
            }
            c => out.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
        }
        i += 1;
    }
    out
}

/// A glob bracket class at the start of `chars` as a regex class, and how many
/// characters it took; `None` when it is not closed.
fn glob_class(chars: &[char]) -> Option<(String, usize)> {
    let mut i = 1;
    let mut out = String::from("[");
    if matches!(chars.get(i), Some('!' | '^')) {
        out.push('^');
        i += 1;
    }
    let first = i;
    while let Some(&c) = chars.get(i) {
        // A `]` first in the class is a member, as in POSIX.
        if c == ']' && i > first {
            out.push(']');
            return Some((out, i + 1));
        }
        match c {
            '\\' | '[' | ']' | '^' | '&' | '~' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
        i += 1;
    }
    None
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
    #[case::replacement("${SET/v/w}")]
    #[case::unterminated_pattern("${SET#v")]
    fn rejects(#[case] word: &str) {
        assert!(expand_word(word, '\\', &scope()).is_err(), "{word}");
    }

    /// The Dockerfile frontend 1.7 examples (`docker/dockerfile:1.7.0` release notes)
    /// and the POSIX shortest/longest rules.
    #[rstest]
    #[case::prefix_doc("${STRING#http://}", "example.com/x.tar.gz", "https://x")]
    #[case::shortest_prefix("${PATHS#*/}", "b/c", "")]
    #[case::longest_prefix("${PATHS##*/}", "c", "")]
    #[case::shortest_suffix("${FILE%.*}", "x.tar", "")]
    #[case::longest_suffix("${FILE%%.*}", "x", "")]
    #[case::suffix_doc("${VERSION%.*}", "3.12", "")]
    #[case::major("${VERSION%%.*}", "3", "")]
    #[case::no_match("${VERSION#x}", "3.12.4", "")]
    #[case::question("${VERSION#?.}", "12.4", "")]
    #[case::class("${VERSION#[0-9]}", ".12.4", "")]
    #[case::negated_class("${FILE%[!a]}", "x.tar.g", "")]
    #[case::negated_class_no_match("${FILE%[!z]}", "x.tar.gz", "")]
    #[case::pattern_from_variable("${VERSION%$DOT*}", "3.12", "")]
    #[case::whole("${VERSION##*}", "", "")]
    #[case::in_reference("python:${VERSION%.*}-slim", "python:3.12-slim", "")]
    #[case::unicode("${UNI%é}", "caf", "")]
    fn removes_patterns(#[case] word: &str, #[case] want: &str, #[case] _note: &str) {
        let mut scope = scope();
        for (k, v) in [
            ("STRING", "http://example.com/x.tar.gz"),
            ("PATHS", "a/b/c"),
            ("FILE", "x.tar.gz"),
            ("VERSION", "3.12.4"),
            ("DOT", "."),
            ("UNI", "café"),
        ] {
            scope.insert(k.to_owned(), Var::Value(v.to_owned()));
        }
        let got = expand_word(word, '\\', &scope).unwrap();
        assert_eq!(got.resolved(), Some(want), "{word}");
    }

    #[rstest]
    #[case::unset_variable("${UNSET#x}", &["UNSET"])]
    #[case::unknown_pattern("${SET%$UNKNOWN}", &["UNKNOWN"])]
    fn pattern_removal_needs_known_values(#[case] word: &str, #[case] missing: &[&str]) {
        let got = expand_word(word, '\\', &scope()).unwrap();
        assert_eq!(got.missing, missing, "{word}");
    }

    #[test]
    fn a_long_value_and_pattern_stay_fast() {
        let long = "a".repeat(MAX_EXPANDED_BYTES);
        let scope: Scope = [("L".to_owned(), Var::Value(long.clone()))]
            .into_iter()
            .collect();
        let started = std::time::Instant::now();
        let got = expand_word("${L%%*b*}", '\\', &scope).unwrap();
        assert_eq!(got.resolved(), Some(long.as_str()));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
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
