//! The arguments of the instructions that matter for dependencies: `FROM`, `ARG` and the
//! `--flag=value` prefix of `COPY` / `ADD` / `RUN`.
//!
//! `FROM`, `ARG` and `COPY` go through the `dockerfile-parser` crate first; its grammar
//! is narrower than BuildKit's (no `+` in image words, one pair per `ARG`, no valueless
//! flags such as `--link`, no `escape` directive), so when it rejects an instruction
//! the same fields are read by a small scanner that follows BuildKit's
//! `instructions/parse.go`. Both return the *raw* text (quotes kept): expansion happens
//! later with the right scope, and the byte range of each value in the arguments, so a
//! value can be replaced in place (`pin`). A test checks that both readers agree on the
//! corpus, ranges included.

use std::ops::Range;

use dockerfile_parser::{Dockerfile, Instruction as Parsed};

use super::instruction::{split_words, Words};

/// Offset of the arguments in the `KEYWORD args` text given to the crate.
const fn args_at(keyword: &str) -> usize {
    keyword.len() + 1
}
use super::ProblemKind;

/// `FROM [--flag=value…] image [AS name]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FromArgs {
    pub(crate) flags: Vec<Flag>,
    pub(crate) image: String,
    /// Where `image` is in the arguments.
    pub(crate) image_span: Range<usize>,
    pub(crate) alias: Option<String>,
}

/// One `--name=value` (or valueless `--name`) flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Flag {
    pub(crate) name: String,
    pub(crate) value: Option<String>,
    /// Where `value` is in the arguments (empty for a valueless flag).
    pub(crate) span: Range<usize>,
}

/// One `name[=default]` of an `ARG`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ArgPair {
    pub(crate) name: String,
    pub(crate) default: Option<String>,
}

/// Reads the arguments of a `FROM`.
///
/// # Errors
///
/// [`ProblemKind::FromWithoutImage`] or [`ProblemKind::FromArity`] when the arguments
/// are not `image` or `image AS name` after the flags (BuildKit: "FROM requires either
/// one or three arguments").
pub(crate) fn parse_from(args: &str) -> Result<FromArgs, ProblemKind> {
    parse_from_with_crate(args).map_or_else(|| scan_from(args), Ok)
}

/// Reads the pairs of an `ARG`.
///
/// # Errors
///
/// [`ProblemKind::ArgWithoutName`] when the `ARG` names nothing,
/// [`ProblemKind::InvalidArgName`] when a name is not a valid identifier.
pub(crate) fn parse_arg(args: &str) -> Result<Vec<ArgPair>, ProblemKind> {
    parse_arg_with_crate(args).map_or_else(|| scan_arg(args), Ok)
}

/// Reads the leading flags of a `COPY` (through the crate when it can), `ADD` or `RUN`.
///
/// Flags come first (BuildKit reads `--` words until the first other word), so arguments
/// that do not start with `--` have none and are not parsed further: most `RUN`s are long
/// shell scripts, and splitting them into words was most of the analysis' time.
pub(crate) fn parse_flags(keyword: &str, args: &str) -> Vec<Flag> {
    if !args.trim_start().starts_with("--") {
        return Vec::new();
    }
    if keyword == "copy" {
        if let Some(flags) = parse_copy_flags_with_crate(args) {
            return flags;
        }
    }
    // Only the leading flag words, and the word after them, are split.
    let mut words = Vec::new();
    for word in Words::new(args) {
        let flag = word.0.starts_with("--") && word.0 != "--";
        words.push(word);
        if !flag {
            break;
        }
    }
    scan_flags(&words).0
}

fn parse_single(text: &str) -> Option<(Parsed, &str)> {
    let parsed = Dockerfile::parse(text).ok()?;
    let mut instructions = parsed.instructions.into_iter();
    let first = instructions.next()?;
    instructions.next().is_none().then_some((first, text))
}

fn slice(text: &str, span: dockerfile_parser::Span) -> Option<String> {
    text.get(span.start..span.end).map(str::to_owned)
}

/// `span` of the `KEYWORD args` text as a range of `args`.
fn in_args(keyword: &str, span: dockerfile_parser::Span) -> Option<Range<usize>> {
    let at = args_at(keyword);
    Some(span.start.checked_sub(at)?..span.end.checked_sub(at)?)
}

pub(crate) fn parse_from_with_crate(args: &str) -> Option<FromArgs> {
    let text = format!("FROM {args}");
    let (Parsed::From(from), text) = parse_single(&text)? else {
        return None;
    };
    let flags = from
        .flags
        .iter()
        .map(|flag| {
            Some(Flag {
                name: flag.name.content.clone(),
                value: Some(slice(text, flag.value.span)?),
                span: in_args("FROM", flag.value.span)?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(FromArgs {
        flags,
        image: slice(text, from.image.span)?,
        image_span: in_args("FROM", from.image.span)?,
        alias: match from.alias {
            Some(alias) => Some(slice(text, alias.span)?),
            None => None,
        },
    })
}

pub(crate) fn scan_from(args: &str) -> Result<FromArgs, ProblemKind> {
    // BuildKit splits FROM on whitespace without quote handling.
    let words = split_whitespace_spanned(args);
    let (flags, rest) = scan_flags(&words);
    match rest {
        [(image, span)] => Ok(FromArgs {
            flags,
            image: image.clone(),
            image_span: span.clone(),
            alias: None,
        }),
        [(image, span), (as_word, _), (alias, _)] if as_word.eq_ignore_ascii_case("as") => {
            Ok(FromArgs {
                flags,
                image: image.clone(),
                image_span: span.clone(),
                alias: Some(alias.clone()),
            })
        }
        [] => Err(ProblemKind::FromWithoutImage),
        _ => Err(ProblemKind::FromArity {
            args: rest
                .iter()
                .map(|(word, _)| word.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        }),
    }
}

fn parse_arg_with_crate(args: &str) -> Option<Vec<ArgPair>> {
    let text = format!("ARG {args}");
    let (Parsed::Arg(arg), text) = parse_single(&text)? else {
        return None;
    };
    let default = match arg.value {
        Some(value) => Some(slice(text, value.span)?),
        None => None,
    };
    Some(vec![ArgPair {
        name: arg.name.content,
        default,
    }])
}

pub(crate) fn scan_arg(args: &str) -> Result<Vec<ArgPair>, ProblemKind> {
    let words = split_words(args);
    if words.is_empty() {
        return Err(ProblemKind::ArgWithoutName);
    }
    words
        .into_iter()
        .map(|word| {
            let (name, default) = match word.split_once('=') {
                Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
                None => (word, None),
            };
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if valid {
                Ok(ArgPair { name, default })
            } else {
                Err(ProblemKind::InvalidArgName { name })
            }
        })
        .collect()
}

fn parse_copy_flags_with_crate(args: &str) -> Option<Vec<Flag>> {
    let text = format!("COPY {args}");
    let (Parsed::Copy(copy), text) = parse_single(&text)? else {
        return None;
    };
    // The crate's grammar only knows `--name=value` flags: it reads `--link --from=x`
    // as two source paths, so such a result is not trusted.
    if copy.sources.iter().any(|s| s.content.starts_with("--")) {
        return None;
    }
    copy.flags
        .iter()
        .map(|flag| {
            Some(Flag {
                name: flag.name.content.clone(),
                value: Some(slice(text, flag.value.span)?),
                span: in_args("COPY", flag.value.span)?,
            })
        })
        .collect()
}

/// Words split on whitespace (no quote handling), with their byte ranges.
fn split_whitespace_spanned(text: &str) -> Vec<(String, Range<usize>)> {
    let mut words = Vec::new();
    let mut begin: Option<usize> = None;
    for (at, ch) in text.char_indices() {
        if ch.is_whitespace() {
            if let Some(from) = begin.take() {
                words.push((text[from..at].to_owned(), from..at));
            }
        } else {
            begin.get_or_insert(at);
        }
    }
    if let Some(from) = begin {
        words.push((text[from..].to_owned(), from..text.len()));
    }
    words
}

/// Splits leading `--flag[=value]` words from the rest (BuildKit BFlags: flags end at
/// the first word that does not start with `--`, or at a bare `--`).
fn scan_flags(words: &[(String, Range<usize>)]) -> (Vec<Flag>, &[(String, Range<usize>)]) {
    let mut flags = Vec::new();
    for (index, (word, range)) in words.iter().enumerate() {
        let Some(flag) = word.strip_prefix("--") else {
            return (flags, &words[index..]);
        };
        if flag.is_empty() {
            return (flags, &words[index + 1..]);
        }
        let (name, value, span) = match flag.split_once('=') {
            Some((name, value)) => {
                let at = range.start + "--".len() + name.len() + 1;
                (name.to_owned(), Some(value.to_owned()), at..range.end)
            }
            None => (flag.to_owned(), None, range.end..range.end),
        };
        flags.push(Flag { name, value, span });
    }
    (flags, &[])
}

/// The `key=value` options of one `--mount` flag value (CSV, BuildKit runmount.go);
/// keys lower-cased, quotes around values removed, with where each value (inside its
/// quotes) is in `value`.
pub(crate) fn mount_options(value: &str) -> Vec<(String, String, Range<usize>)> {
    let mut options = Vec::new();
    let mut field_at = 0;
    for field in value.split(',') {
        let at = field_at;
        field_at += field.len() + 1;
        let Some((key, raw)) = field.split_once('=') else {
            continue;
        };
        let mut start = at + key.len() + 1;
        let trimmed = raw.trim_start();
        start += raw.len() - trimmed.len();
        let trimmed = trimmed.trim_end();
        let (text, start) = match trimmed.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            Some(inner) => (inner, start + 1),
            None => (trimmed, start),
        };
        options.push((
            key.trim().to_ascii_lowercase(),
            text.to_owned(),
            start..start + text.len(),
        ));
    }
    options
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn flag(name: &str, value: &str) -> (String, Option<String>) {
        (name.to_owned(), Some(value.to_owned()))
    }

    /// Name and value of each flag, each value checked against its span in `args`.
    fn named(args: &str, flags: &[Flag]) -> Vec<(String, Option<String>)> {
        for f in flags {
            let at = &args[f.span.clone()];
            assert_eq!(at, f.value.as_deref().unwrap_or(""), "{args}");
        }
        flags
            .iter()
            .map(|f| (f.name.clone(), f.value.clone()))
            .collect()
    }

    #[rstest]
    #[case::plain("alpine", &[], "alpine", None)]
    #[case::alias("alpine AS build", &[], "alpine", Some("build"))]
    #[case::lower_as_extra_spaces("alpine   as   build", &[], "alpine", Some("build"))]
    #[case::platform("--platform=$BUILDPLATFORM golang:1.22 AS b", &[("platform", "$BUILDPLATFORM")], "golang:1.22", Some("b"))]
    #[case::plus_form_only_in_fallback("busybox${A:+@sha256:00} AS x", &[], "busybox${A:+@sha256:00}", Some("x"))]
    #[case::dotted_alias("build AS platform-arm/v7", &[], "build", Some("platform-arm/v7"))]
    fn reads_from(
        #[case] args: &str,
        #[case] flags: &[(&str, &str)],
        #[case] image: &str,
        #[case] alias: Option<&str>,
    ) {
        let got = parse_from(args).unwrap();
        let flags: Vec<_> = flags.iter().map(|(n, v)| flag(n, v)).collect();
        assert_eq!(named(args, &got.flags), flags);
        assert_eq!(got.image, image);
        assert_eq!(&args[got.image_span], image);
        assert_eq!(got.alias.as_deref(), alias);
    }

    #[rstest]
    #[case::two_words("alpine build")]
    #[case::four_words("alpine AS b c")]
    #[case::empty("")]
    #[case::not_as("alpine TO b")]
    fn rejects_from(#[case] args: &str) {
        assert!(parse_from(args).is_err(), "{args}");
    }

    #[rstest]
    #[case::bare("VERSION", &[("VERSION", None)])]
    #[case::default("V=1.2", &[("V", Some("1.2"))])]
    #[case::quoted("R=\"docker.io\"", &[("R", Some("\"docker.io\""))])]
    #[case::chained("B=$REGISTRY/$OWNER/x", &[("B", Some("$REGISTRY/$OWNER/x"))])]
    #[case::several("A=1 B", &[("A", Some("1")), ("B", None)])]
    #[case::empty_default("E=", &[("E", Some(""))])]
    fn reads_arg(#[case] args: &str, #[case] want: &[(&str, Option<&str>)]) {
        let got = parse_arg(args).unwrap();
        let want: Vec<ArgPair> = want
            .iter()
            .map(|(n, d)| ArgPair {
                name: (*n).to_owned(),
                default: d.map(str::to_owned),
            })
            .collect();
        assert_eq!(got, want);
    }

    #[rstest]
    #[case::copy("copy", "--from=build /a /b", vec![flag("from", "build")])]
    #[case::copy_link("copy", "--link --from=0 /a /b", vec![("link".into(), None), flag("from", "0")])]
    #[case::add("add", "--from=img:1 /a /b", vec![flag("from", "img:1")])]
    #[case::run("run", "--mount=type=bind,from=x,target=/t make", vec![flag("mount", "type=bind,from=x,target=/t")])]
    #[case::stops_at_args("copy", "a --from=x b", vec![])]
    #[case::run_stops_at_the_command("run", "--network=none echo --from=x \"--mount=y\"", vec![flag("network", "none")])]
    #[case::leading_space("run", "  --mount=type=cache,target=/c make", vec![flag("mount", "type=cache,target=/c")])]
    #[case::quoted_value("run", "--mount=\"type=bind,from=x\" make", vec![flag("mount", "\"type=bind,from=x\"")])]
    #[case::double_dash_ends_flags("run", "--network=host -- --from=x", vec![flag("network", "host")])]
    #[case::no_flags("run", "apt-get install -y --no-install-recommends x", vec![])]
    fn reads_flags(
        #[case] keyword: &str,
        #[case] args: &str,
        #[case] want: Vec<(String, Option<String>)>,
    ) {
        assert_eq!(named(args, &parse_flags(keyword, args)), want);
    }

    /// The crate and the fallback scanner must read every FROM / ARG of the corpus the
    /// same way, so which one handled an instruction never changes the answer.
    #[test]
    fn crate_and_scanner_agree_on_the_corpus() {
        let manifest_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let corpus = manifest_dir
            .ancestors()
            .map(|dir| dir.join("shared/corpus/dockerfiles"))
            .find(|dir| dir.join("MANIFEST.tsv").is_file())
            .expect("shared/corpus next to the repository root");
        let manifest = std::fs::read_to_string(corpus.join("MANIFEST.tsv")).unwrap();
        let (mut froms, mut args) = (0, 0);
        for file in manifest
            .lines()
            .skip(1)
            .filter_map(|l| l.split('\t').next())
        {
            let text =
                String::from_utf8_lossy(&std::fs::read(corpus.join(file)).unwrap()).into_owned();
            for instruction in super::super::instruction::scan(&text).instructions {
                match instruction.keyword.as_str() {
                    "from" => {
                        if let Some(parsed) = parse_from_with_crate(&instruction.args) {
                            assert_eq!(
                                Ok(parsed),
                                scan_from(&instruction.args),
                                "{file}:{}",
                                instruction.line
                            );
                            froms += 1;
                        }
                    }
                    "arg" => {
                        if let Some(parsed) = parse_arg_with_crate(&instruction.args) {
                            assert_eq!(
                                Ok(parsed),
                                scan_arg(&instruction.args),
                                "{file}:{}",
                                instruction.line
                            );
                            args += 1;
                        }
                    }
                    _ => {}
                }
            }
        }
        assert!(
            froms > 600 && args > 200,
            "{froms} FROM, {args} ARG compared"
        );
    }

    #[test]
    fn mount_options_are_lowercased_and_unquoted() {
        let value = "type=cache,FROM=\"builder\",target= /t,ro";
        let options = mount_options(value);
        for (_, text, span) in &options {
            assert_eq!(&value[span.clone()], text);
        }
        let options: Vec<(String, String)> = options.into_iter().map(|(k, v, _)| (k, v)).collect();
        assert_eq!(
            options,
            vec![
                ("type".to_owned(), "cache".to_owned()),
                ("from".to_owned(), "builder".to_owned()),
                ("target".to_owned(), "/t".to_owned()),
            ]
        );
    }
}
