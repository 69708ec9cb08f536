//! Splitting Dockerfile text into logical instructions, the way BuildKit's parser
//! (`frontend/dockerfile/parser/parser.go`) does before any instruction is interpreted:
//!
//! - parser directives (`# syntax=`, `# escape=`) only in the leading comment block;
//! - `escape` (`\` or `` ` ``) at the end of a line continues the instruction, comment
//!   lines and empty lines inside a continuation are dropped;
//! - `RUN`, `COPY` and `ADD` may carry heredocs (`<<EOF`, `<<-EOF`, `<<"EOF"`,
//!   `5<<FILE`); their bodies are skipped up to the terminator line.
//!
//! The scanner never fails: anything odd becomes a [`Problem`] and scanning goes on.

use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;

use super::{Problem, ProblemKind};

static DIRECTIVE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    // BuildKit: `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`
    Regex::new(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$").ok()
});

static HEREDOC: LazyLock<Option<Regex>> = LazyLock::new(|| {
    // BuildKit ParseHeredoc: `^(\d*)<<(-?)([^<]*)$`, the name then unquoted.
    Regex::new(r"^(\d*)<<(-?)([^<]*)$").ok()
});

/// One logical instruction: continuation lines joined, comments inside it removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Instruction {
    /// 1-based line where the instruction starts.
    pub(crate) line: usize,
    /// The instruction keyword, lower-cased (`from`, `copy`, `cross_build_copy`).
    pub(crate) keyword: String,
    /// Everything after the keyword, leading whitespace removed.
    pub(crate) args: String,
    /// Where the bytes of `args` are in the file, so a word found in `args` can be
    /// replaced in the file without touching anything around it.
    pub(crate) origin: Origin,
}

/// A run of `len` bytes at `at` in [`Instruction::args`] that is, unchanged, at byte
/// `file` of the file (one per physical line of a continued instruction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    at: usize,
    file: usize,
    len: usize,
}

/// The [`Segment`]s of one instruction's `args`, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Origin {
    segments: Vec<Segment>,
}

impl Origin {
    /// The file byte range of `args[range]`. A range that spans a line continuation
    /// covers the continuation too (the escape, the newline, dropped comment lines).
    /// `None` for an empty range or one outside `args`.
    pub(crate) fn file_range(&self, range: Range<usize>) -> Option<Range<usize>> {
        if range.is_empty() {
            return None;
        }
        let locate = |offset: usize| {
            self.segments
                .iter()
                .find(|s| s.at <= offset && offset < s.at + s.len)
                .map(|s| s.file + (offset - s.at))
        };
        let start = locate(range.start)?;
        let last = locate(range.end - 1)?;
        Some(start..last + 1)
    }

    /// The segments from offset `skip` of the joined text on, renumbered from 0.
    fn after(&self, skip: usize) -> Self {
        let segments = self
            .segments
            .iter()
            .filter(|s| s.at + s.len > skip)
            .map(|s| {
                let cut = skip.saturating_sub(s.at);
                Segment {
                    at: (s.at + cut) - skip,
                    file: s.file + cut,
                    len: s.len - cut,
                }
            })
            .collect();
        Self { segments }
    }
}

/// The scanned file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scanned {
    /// The escape character from the `escape` directive, `\` by default.
    pub(crate) escape: char,
    pub(crate) instructions: Vec<Instruction>,
    pub(crate) problems: Vec<Problem>,
}

/// Splits `content` into logical instructions.
pub(crate) fn scan(content: &str) -> Scanned {
    let bom = if content.starts_with('\u{feff}') {
        '\u{feff}'.len_utf8()
    } else {
        0
    };
    // Each line without its `\n` and `\r`, with the file offset where it starts.
    let mut lines: Vec<&str> = Vec::new();
    let mut starts: Vec<usize> = Vec::new();
    let mut offset = bom;
    for raw in content[bom..].split('\n') {
        lines.push(raw.strip_suffix('\r').unwrap_or(raw));
        starts.push(offset);
        offset += raw.len() + 1;
    }
    let mut problems = Vec::new();
    let escape = read_escape_directive(&lines, &mut problems);
    let mut instructions = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        let start = index;
        let first = lines[index];
        index += 1;
        if is_comment(first) || first.trim().is_empty() {
            continue;
        }
        let trimmed = first.trim_start();
        let (mut text, mut ended) = trim_continuation(trimmed, escape);
        let mut text_owned = text.to_owned();
        let mut origin = Origin::default();
        origin.segments.push(Segment {
            at: 0,
            file: starts[start] + (first.len() - trimmed.len()),
            len: text.len(),
        });
        while !ended && index < lines.len() {
            let next = lines[index];
            let next_start = starts[index];
            index += 1;
            if is_comment(next) || next.trim().is_empty() {
                continue;
            }
            (text, ended) = trim_continuation(next, escape);
            origin.segments.push(Segment {
                at: text_owned.len(),
                file: next_start,
                len: text.len(),
            });
            text_owned.push_str(text);
        }
        let Some(instruction) = split_keyword(&text_owned, start + 1, &origin) else {
            continue;
        };
        if matches!(instruction.keyword.as_str(), "run" | "copy" | "add") {
            index = skip_heredocs(&instruction, &lines, index, &mut problems);
        }
        instructions.push(instruction);
    }
    Scanned {
        escape,
        instructions,
        problems,
    }
}

fn read_escape_directive(lines: &[&str], problems: &mut Vec<Problem>) -> char {
    let Some(directive) = DIRECTIVE.as_ref() else {
        return '\\';
    };
    let mut escape = '\\';
    for (number, line) in lines.iter().enumerate() {
        let Some(captures) = directive.captures(line) else {
            break;
        };
        let key = captures.get(1).map_or("", |m| m.as_str());
        let value = captures.get(2).map_or("", |m| m.as_str());
        if key.eq_ignore_ascii_case("escape") {
            match value {
                "\\" => escape = '\\',
                "`" => escape = '`',
                other => problems.push(Problem {
                    line: number + 1,
                    kind: ProblemKind::InvalidEscapeDirective {
                        value: other.to_owned(),
                    },
                }),
            }
        }
    }
    escape
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// Removes a trailing escape character (optionally followed by blanks) and says whether
/// the instruction ends on this line.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let trimmed = line.trim_end_matches([' ', '\t']);
    match trimmed.strip_suffix(escape) {
        Some(rest) => (rest, false),
        None => (line, true),
    }
}

fn split_keyword(text: &str, line: usize, origin: &Origin) -> Option<Instruction> {
    let lead = text.len() - text.trim_start().len();
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let (keyword, args, args_at) = match text.find(char::is_whitespace) {
        Some(at) => {
            let rest = &text[at..];
            let args = rest.trim_start();
            (&text[..at], args, lead + at + (rest.len() - args.len()))
        }
        None => (text, "", lead + text.len()),
    };
    Some(Instruction {
        line,
        keyword: keyword.to_ascii_lowercase(),
        args: args.to_owned(),
        origin: origin.after(args_at),
    })
}

/// Skips the bodies of the heredocs that `instruction` opens; returns the index of the
/// first line after them.
fn skip_heredocs(
    instruction: &Instruction,
    lines: &[&str],
    mut index: usize,
    problems: &mut Vec<Problem>,
) -> usize {
    for (name, chomp) in heredoc_names(&instruction.args) {
        let mut terminated = false;
        while index < lines.len() {
            let line = lines[index];
            index += 1;
            let candidate = if chomp {
                line.trim_start_matches('\t')
            } else {
                line
            };
            if candidate == name {
                terminated = true;
                break;
            }
        }
        if !terminated {
            problems.push(Problem {
                line: instruction.line,
                kind: ProblemKind::UnterminatedHeredoc { name },
            });
            return index;
        }
    }
    index
}

/// The heredoc names opened by an instruction's arguments, with their `<<-` flag.
pub(crate) fn heredoc_names(args: &str) -> Vec<(String, bool)> {
    let Some(heredoc) = HEREDOC.as_ref() else {
        return Vec::new();
    };
    if !args.contains("<<") {
        return Vec::new();
    }
    split_words(args)
        .iter()
        .filter_map(|word| {
            let captures = heredoc.captures(word)?;
            let chomp = captures.get(2).is_some_and(|m| !m.as_str().is_empty());
            let name: String = captures
                .get(3)?
                .as_str()
                .chars()
                .filter(|c| *c != '"' && *c != '\'')
                .collect();
            (!name.is_empty() && !name.contains(char::is_whitespace)).then_some((name, chomp))
        })
        .collect()
}

/// Splits on unquoted whitespace, keeping quotes in the words (they are removed later,
/// when a word is expanded).
pub(crate) fn split_words(text: &str) -> Vec<String> {
    split_words_spanned(text)
        .into_iter()
        .map(|(word, _)| word)
        .collect()
}

/// [`split_words`], with the byte range of each word in `text`.
pub(crate) fn split_words_spanned(text: &str) -> Vec<(String, Range<usize>)> {
    Words::new(text).collect()
}

/// The words of [`split_words_spanned`], one at a time: a caller that needs only the
/// first few (the leading `--flags` of a long `RUN`) stops without splitting the rest.
pub(crate) struct Words<'a> {
    text: &'a str,
    /// Byte offset in `text` where the next word is searched from.
    at: usize,
}

impl<'a> Words<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Self { text, at: 0 }
    }
}

impl Iterator for Words<'_> {
    type Item = (String, Range<usize>);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.text.get(self.at..)?;
        let skipped = rest.len() - rest.trim_start().len();
        let begin = self.at + skipped;
        let mut current = String::new();
        let mut quote: Option<char> = None;
        for (offset, ch) in self.text.get(begin..)?.char_indices() {
            let at = begin + offset;
            match quote {
                Some(q) => {
                    current.push(ch);
                    if ch == q {
                        quote = None;
                    }
                }
                None if ch.is_whitespace() => {
                    self.at = at;
                    return Some((current, begin..at));
                }
                None => {
                    if ch == '"' || ch == '\'' {
                        quote = Some(ch);
                    }
                    current.push(ch);
                }
            }
        }
        self.at = self.text.len();
        (!current.is_empty()).then_some((current, begin..self.text.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn keywords(content: &str) -> Vec<(usize, String, String)> {
        scan(content)
            .instructions
            .into_iter()
            .map(|i| (i.line, i.keyword, i.args))
            .collect()
    }

    #[rstest]
    #[case::plain("a b", &[("a", 0..1), ("b", 2..3)])]
    #[case::runs_of_space("  a \t b  ", &[("a", 2..3), ("b", 6..7)])]
    #[case::quoted_space("x=\"a b\" 'c d' e", &[("x=\"a b\"", 0..7), ("'c d'", 8..13), ("e", 14..15)])]
    #[case::unterminated_quote("a \"b c", &[("a", 0..1), ("\"b c", 2..6)])]
    #[case::unicode_space("a\u{3000}é b", &[("a", 0..1), ("é", 4..6), ("b", 7..8)])]
    #[case::empty("   ", &[])]
    fn splits_words_with_their_spans(#[case] text: &str, #[case] want: &[(&str, Range<usize>)]) {
        let got = split_words_spanned(text);
        let want: Vec<(String, Range<usize>)> = want
            .iter()
            .map(|(w, r)| ((*w).to_owned(), r.clone()))
            .collect();
        assert_eq!(got, want);
        for (word, span) in &got {
            assert_eq!(&text[span.clone()], word);
        }
        // Taking words one at a time gives the same first words.
        assert_eq!(
            Words::new(text).take(1).collect::<Vec<_>>(),
            want.into_iter().take(1).collect::<Vec<_>>()
        );
    }

    fn kw(line: usize, keyword: &str, args: &str) -> (usize, String, String) {
        (line, keyword.to_owned(), args.to_owned())
    }

    #[test]
    fn joins_continuations_and_drops_comments_inside_them() {
        let got = keywords("FROM a\nRUN one \\\n# comment\n\n  two\nCMD x\n");
        assert_eq!(
            got,
            vec![
                kw(1, "from", "a"),
                kw(2, "run", "one   two"),
                kw(6, "cmd", "x")
            ]
        );
    }

    #[test]
    fn backtick_escape_makes_backslash_literal() {
        let text = "# escape=`\nFROM a\nRUN x && \\\n    tar y\nRUN one `\n  two\n";
        let scanned = scan(text);
        assert_eq!(scanned.escape, '`');
        let got = keywords(text);
        assert_eq!(
            got,
            vec![
                kw(2, "from", "a"),
                kw(3, "run", "x && \\"),
                kw(4, "tar", "y"),
                kw(5, "run", "one   two"),
            ]
        );
    }

    #[rstest]
    #[case::after_blank_line("\n# escape=`\nFROM a\n", '\\')]
    #[case::after_instruction("FROM a\n# escape=`\n", '\\')]
    #[case::after_syntax("# syntax=docker/dockerfile:1\n# escape=`\nFROM a\n", '`')]
    #[case::spaces("#  ESCAPE = `\nFROM a\n", '`')]
    fn escape_directive_only_in_the_leading_block(#[case] text: &str, #[case] want: char) {
        assert_eq!(scan(text).escape, want);
    }

    #[rstest]
    #[case::plain("RUN <<EOF\nFROM x\nEOF\nFROM b\n", 4)]
    #[case::chomp("RUN <<-EOF\nFROM x\n\t\tEOF\nFROM b\n", 4)]
    #[case::quoted("RUN <<'EOF' bash\nFROM x\nEOF\nFROM b\n", 4)]
    #[case::two_files(
        "COPY <<robots.txt <<humans.txt /d/\nFROM x\nrobots.txt\nFROM y\nhumans.txt\nFROM b\n",
        6
    )]
    #[case::fd_prefix("RUN 5<<FILE1 cat /proc/self/fd/5\nFROM x\nFILE1\nFROM b\n", 4)]
    fn skips_heredoc_bodies(#[case] text: &str, #[case] from_line: usize) {
        let froms: Vec<usize> = scan(text)
            .instructions
            .iter()
            .filter(|i| i.keyword == "from")
            .map(|i| i.line)
            .collect();
        assert_eq!(froms, vec![from_line]);
    }

    #[test]
    fn unterminated_heredoc_is_a_problem() {
        let scanned = scan("FROM a\nRUN <<EOF\necho\n");
        assert_eq!(scanned.problems.len(), 1);
        assert_eq!(scanned.problems[0].line, 2);
    }

    #[test]
    fn quoted_heredoc_marker_is_not_a_heredoc() {
        let got = keywords("RUN echo '<<EOF'\nFROM b\n");
        assert_eq!(got[1], kw(2, "from", "b"));
    }

    /// Every word of the joined args maps back to the same bytes of the file.
    #[rstest]
    #[case::plain("FROM python:3.12 AS b\n", "python:3.12")]
    #[case::crlf_continued(
        "# c\r\nFROM \\\r\n  --platform=x \\\r\n# gone\r\n  python:3.12\r\n",
        "python:3.12"
    )]
    #[case::bom_tabs("\u{feff}from\t\talpine:3\n", "alpine:3")]
    #[case::indented("  COPY --from=busybox:1 /a /b\n", "--from=busybox:1")]
    fn origin_maps_args_to_the_file(#[case] text: &str, #[case] word: &str) {
        let instruction = &scan(text).instructions[0];
        let at = instruction.args.find(word).unwrap();
        let range = instruction.origin.file_range(at..at + word.len()).unwrap();
        assert_eq!(&text[range], word);
    }

    #[test]
    fn a_word_split_by_a_continuation_covers_it() {
        let text = "FROM pyt\\\nhon:3\n";
        let instruction = &scan(text).instructions[0];
        assert_eq!(instruction.args, "python:3");
        let range = instruction.origin.file_range(0..8).unwrap();
        assert_eq!(&text[range], "pyt\\\nhon:3");
    }

    #[test]
    fn crlf_bom_tabs_and_lowercase() {
        let got = keywords("\u{feff}from\talpine\r\nrun \\\r\n  true\r\n");
        assert_eq!(got, vec![kw(1, "from", "alpine"), kw(2, "run", "true")]);
    }
}
