//! `pin`: one case per shape of base reference, errors, and a property over the corpus.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use rstest::rstest;

use super::*;
use crate::dockerfile::{analyze, From};
use crate::runtime::Digest;

const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

/// `text` with `@D1` / `@D2` spelled out.
fn d(text: &str) -> String {
    text.replace("@D1", &format!("@{D1}"))
        .replace("@D2", &format!("@{D2}"))
}

fn pins(texts: &[&str]) -> Vec<Reference> {
    texts.iter().map(|t| parse_pin(&d(t)).unwrap()).collect()
}

fn no_args() -> BTreeMap<String, String> {
    BTreeMap::new()
}

/// The original text, rebuilt from the output by putting each replaced word back.
fn unpinned(pinned: &Pinned) -> String {
    let mut out = pinned.content.clone();
    // Back to front, so earlier spans keep their offsets in the output.
    let mut shift: isize = 0;
    let mut spans = Vec::new();
    for r in &pinned.replacements {
        let start = r.span.start.checked_add_signed(shift).unwrap();
        spans.push((start..start + r.new.len(), r.old.clone()));
        shift += r.new.len() as isize - r.old.len() as isize;
    }
    for (span, old) in spans.into_iter().rev() {
        out.replace_range(span, &old);
    }
    out
}

#[rstest]
#[case::plain("FROM python:3.12-slim\nRUN x\n", &["docker.io/library/python:3.12-slim@D1"],
    "FROM docker.io/library/python:3.12-slim@D1\nRUN x\n")]
#[case::platform_and_alias("FROM --platform=$BUILDPLATFORM golang:1.23 AS build\n", &["golang:1.23@D1"],
    "FROM --platform=$BUILDPLATFORM docker.io/library/golang:1.23@D1 AS build\n")]
#[case::copy_from("FROM scratch\nCOPY --from=busybox:1.36 /bin/busybox /bin/\n", &["busybox:1.36@D1"],
    "FROM scratch\nCOPY --from=docker.io/library/busybox:1.36@D1 /bin/busybox /bin/\n")]
#[case::copy_link_from("FROM scratch\nCOPY --link --from=busybox:1.36 /a /b\n", &["busybox:1.36@D1"],
    "FROM scratch\nCOPY --link --from=docker.io/library/busybox:1.36@D1 /a /b\n")]
#[case::add_from("FROM scratch\nADD --chown=1:1 --from=busybox:1.36 /a /b\n", &["busybox:1.36@D1"],
    "FROM scratch\nADD --chown=1:1 --from=docker.io/library/busybox:1.36@D1 /a /b\n")]
#[case::run_mount("FROM alpine:3.20\nRUN --mount=type=cache,from=golang:1.23,target=/go make\n", &["golang:1.23@D1"],
    "FROM alpine:3.20\nRUN --mount=type=cache,from=docker.io/library/golang:1.23@D1,target=/go make\n")]
#[case::run_mount_quoted("FROM alpine:3.20\nRUN --mount=type=bind,from=\"golang:1.23\" make\n", &["golang:1.23@D1"],
    "FROM alpine:3.20\nRUN --mount=type=bind,from=\"docker.io/library/golang:1.23@D1\" make\n")]
#[case::stage_references_untouched(
    "FROM python:3.12 AS base\nFROM base\nCOPY --from=base /a /b\nRUN --mount=from=base,target=/t x\nCOPY --from=0 /a /b\n",
    &["python:3.12@D1"],
    "FROM docker.io/library/python:3.12@D1 AS base\nFROM base\nCOPY --from=base /a /b\nRUN --mount=from=base,target=/t x\nCOPY --from=0 /a /b\n")]
#[case::arg_whole("ARG BASE=python:3.12\nFROM ${BASE} AS b\n", &["python:3.12@D1"],
    "ARG BASE=python:3.12\nFROM docker.io/library/python:3.12@D1 AS b\n")]
#[case::arg_tag("ARG PY=3.12\nFROM python:${PY}\n", &["python:3.12@D1"],
    "ARG PY=3.12\nFROM docker.io/library/python:3.12@D1\n")]
#[case::arg_in_copy("FROM scratch\nARG TOOLS=busybox:1.36\nCOPY --from=$TOOLS /a /b\n", &["busybox:1.36@D1"],
    "FROM scratch\nARG TOOLS=busybox:1.36\nCOPY --from=docker.io/library/busybox:1.36@D1 /a /b\n")]
#[case::already_pinned_elsewhere("FROM python:3.12@D2\n", &["python:3.12@D1"],
    "FROM docker.io/library/python:3.12@D1\n")]
#[case::already_pinned_here("FROM python:3.12@D1 AS x\n", &["python:3.12@D1"],
    "FROM python:3.12@D1 AS x\n")]
#[case::crlf_and_continuations(
    "# syntax=docker/dockerfile:1\r\nFROM \\\r\n  --platform=linux/amd64 \\\r\n  # a comment\r\n  python:3.12 \\\r\n  AS b\r\nRUN a \\\r\n  b\r\n",
    &["python:3.12@D1"],
    "# syntax=docker/dockerfile:1\r\nFROM \\\r\n  --platform=linux/amd64 \\\r\n  # a comment\r\n  docker.io/library/python:3.12@D1 \\\r\n  AS b\r\nRUN a \\\r\n  b\r\n")]
#[case::backtick_escape("# escape=`\nFROM `\n  python:3.12\n", &["python:3.12@D1"],
    "# escape=`\nFROM `\n  docker.io/library/python:3.12@D1\n")]
#[case::bom_and_tabs("\u{feff}from\tpython:3.12\tas\tb\n", &["python:3.12@D1"],
    "\u{feff}from\tdocker.io/library/python:3.12@D1\tas\tb\n")]
#[case::hub_short_name("FROM python:3.12\n", &["docker.io/library/python:3.12@D1"],
    "FROM docker.io/library/python:3.12@D1\n")]
#[case::hub_long_name_short_pin("FROM index.docker.io/library/python:3.12\n", &["python:3.12@D1"],
    "FROM docker.io/library/python:3.12@D1\n")]
#[case::no_tag_is_latest("FROM python\n", &["python:latest@D1"],
    "FROM docker.io/library/python:latest@D1\n")]
#[case::registry_with_port("FROM localhost:5000/team/base:1 AS b\n", &["localhost:5000/team/base:1@D1"],
    "FROM localhost:5000/team/base:1@D1 AS b\n")]
#[case::other_tag_untouched("FROM python:3.11\n", &["python:3.12@D1"], "FROM python:3.11\n")]
#[case::other_registry_untouched("FROM ghcr.io/library/python:3.12\n", &["python:3.12@D1"],
    "FROM ghcr.io/library/python:3.12\n")]
#[case::scratch_untouched("FROM scratch\n", &["python:3.12@D1"], "FROM scratch\n")]
#[case::heredoc_body_untouched("FROM alpine:3.20\nRUN <<EOF\nFROM python:3.12\nEOF\n", &["python:3.12@D1"],
    "FROM alpine:3.20\nRUN <<EOF\nFROM python:3.12\nEOF\n")]
#[case::several("FROM python:3.12 AS a\nFROM alpine:3.20\nCOPY --from=a /x /x\nCOPY --from=python:3.12 /y /y\n",
    &["alpine:3.20@D2", "python:3.12@D1"],
    "FROM docker.io/library/python:3.12@D1 AS a\nFROM docker.io/library/alpine:3.20@D2\nCOPY --from=a /x /x\nCOPY --from=docker.io/library/python:3.12@D1 /y /y\n")]
fn pins_only_the_matching_words(#[case] text: &str, #[case] given: &[&str], #[case] want: &str) {
    let owned = d(text);
    let text = owned.as_str();
    let got = pin("Dockerfile", text, &no_args(), &pins(given)).unwrap();
    assert_eq!(got.content, d(want));
    assert_eq!(unpinned(&got), text, "only the replaced spans differ");
    for r in &got.replacements {
        assert_eq!(&text[r.span.clone()], r.old);
    }
    let again = pin("Dockerfile", &got.content, &no_args(), &pins(given)).unwrap();
    assert_eq!(
        again.content, got.content,
        "pinning twice changes nothing more"
    );
    assert!(again.replacements.is_empty(), "{:?}", again.replacements);
}

#[rstest]
#[case::matched("FROM python:3.12\n", &["python:3.12@D1"], &[])]
#[case::already_pinned_counts("FROM python:3.12@D1\n", &["python:3.12@D1"], &[])]
#[case::scratch("FROM scratch\n", &["python:3.12@D1"], &["python:3.12@D1"])]
#[case::stage_named_like_an_image("FROM alpine:3.20 AS python\nFROM python\n", &["python:latest@D1"], &["python:latest@D1"])]
#[case::duplicate_pin_once("FROM alpine:3\n", &["python:3.12@D1", "python:3.12@D1"], &["python:3.12@D1"])]
fn reports_pins_that_matched_nothing(
    #[case] text: &str,
    #[case] given: &[&str],
    #[case] unmatched: &[&str],
) {
    let got = pin("Dockerfile", &d(text), &no_args(), &pins(given)).unwrap();
    assert_eq!(got.unmatched, pins(unmatched));
}

#[test]
fn an_arg_expression_is_replaced_whole_and_reported() {
    let text =
        "ARG REGISTRY=docker.io\nARG PY=3.11\nFROM ${REGISTRY}/library/python:${PY} AS run\n";
    let args = BTreeMap::from([("PY".to_owned(), "3.12".to_owned())]);
    let got = pin("Dockerfile", text, &args, &pins(&["python:3.12@D1"])).unwrap();
    assert_eq!(
        got.content,
        d("ARG REGISTRY=docker.io\nARG PY=3.11\nFROM docker.io/library/python:3.12@D1 AS run\n")
    );
    assert_eq!(got.replacements.len(), 1);
    assert!(got.replacements[0].from_arg);
    assert_eq!(
        got.messages(),
        vec![d("Dockerfile:3: FROM ${REGISTRY}/library/python:${PY} → docker.io/library/python:3.12@D1 (replaces an ARG expression, now docker.io/library/python:3.12)")]
    );
    // Without the build arg the default (3.11) is what the build would use: no match.
    let got = pin("Dockerfile", text, &no_args(), &pins(&["python:3.12@D1"])).unwrap();
    assert!(got.replacements.is_empty());
    assert_eq!(got.unmatched.len(), 1);
}

#[test]
fn replacing_another_digest_is_reported() {
    let got = pin(
        "Dockerfile",
        &d("FROM python:3.12@D2\n"),
        &no_args(),
        &pins(&["python:3.12@D1"]),
    )
    .unwrap();
    assert_eq!(
        got.messages(),
        vec![d(
            "Dockerfile:1: FROM python:3.12@D2 → docker.io/library/python:3.12@D1 (was pinned to sha256:2222222222222222222222222222222222222222222222222222222222222222)"
        )]
    );
}

#[test]
fn messages_name_the_line_of_the_word() {
    let text = "FROM scratch\nCOPY \\\n  --from=busybox:1.36 /a /b\n";
    let got = pin(
        "x/Dockerfile",
        text,
        &no_args(),
        &pins(&["busybox:1.36@D1"]),
    )
    .unwrap();
    assert_eq!(
        got.messages(),
        vec![d(
            "x/Dockerfile:3: COPY --from busybox:1.36 → docker.io/library/busybox:1.36@D1"
        )]
    );
}

#[rstest]
#[case::unset_arg("ARG BASE\nFROM ${BASE}\n", "Dockerfile:2: ")]
#[case::arity("FROM python:3.12 AS a b\n", "Dockerfile:1: ")]
#[case::bad_reference("FROM Python:3.12\n", "Dockerfile:1: ")]
#[case::no_from("# nothing\n", "Dockerfile: ")]
fn a_dockerfile_with_errors_is_not_pinned(#[case] text: &str, #[case] location: &str) {
    let err = pin("Dockerfile", text, &no_args(), &pins(&["python:3.12@D1"])).unwrap_err();
    let PinError::InvalidDockerfile { problems, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(problems[0].starts_with(location), "{problems:?}");
    assert!(err.to_string().contains(location), "{err}");
}

#[rstest]
#[case::no_digest("python:3.12", "a base must be pinned to a digest")]
#[case::no_tag("python@D1", "needs its tag")]
#[case::bad("Python:3@D1", "Python")]
#[case::bad_digest("python:3.12@sha256:abc", "sha256:abc")]
fn parse_pin_rejects_incomplete_pins(#[case] text: &str, #[case] message: &str) {
    let err = parse_pin(&d(text)).unwrap_err();
    assert!(err.to_string().contains(message), "{err}");
}

#[test]
fn two_digests_of_one_image_conflict() {
    let err = pin(
        "Dockerfile",
        "FROM python:3.12\n",
        &no_args(),
        &pins(&["python:3.12@D1", "docker.io/library/python:3.12@D2"]),
    )
    .unwrap_err();
    assert!(matches!(err, PinError::ConflictingPins { .. }), "{err:?}");
}

proptest! {
    /// Never a panic, and never a change outside the replaced spans, on any text made
    /// of Dockerfile-ish pieces.
    #[test]
    fn any_text_pins_without_panicking(
        pieces in proptest::collection::vec(prop_oneof![
            Just("FROM "), Just("python:3.12"), Just(" AS b"), Just("\n"), Just("\r\n"),
            Just("\\\n"), Just("COPY --from="), Just("RUN --mount=from="), Just(",x=y "),
            Just("ARG B=python:3.12\n"), Just("${B}"), Just("# c\n"), Just("<<EOF\n"),
            Just("EOF\n"), Just("\""), Just("`"), Just("# escape=`\n"), Just(" "), Just("b"),
            Just("é"), Just("\u{feff}"), Just("@sha256:"),
        ], 0..30)
    ) {
        let text: String = pieces.concat();
        if let Ok(got) = pin("Dockerfile", &text, &no_args(), &pins(&["python:3.12@D1"])) {
            prop_assert_eq!(unpinned(&got), text);
        }
    }
}

fn corpus() -> Option<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join("shared/corpus/dockerfiles"))
        .find(|dir| dir.join("MANIFEST.tsv").is_file())
}

/// A digest for each `repo:tag`, so a wrong pin shows.
fn fake_digest(reference: &Reference) -> String {
    Digest::sha256_of(reference.without_digest().to_string().as_bytes()).to_string()
}

/// For every corpus Dockerfile without errors: pin each tagged external base to a fake
/// digest; the result has the same stages, every such base now carries its digest, and
/// putting the replaced words back gives the original bytes.
#[test]
fn pinning_the_corpus_keeps_stages_and_changes_only_the_bases() {
    let corpus = corpus().expect("shared/corpus next to the repository root");
    let manifest = std::fs::read_to_string(corpus.join("MANIFEST.tsv")).unwrap();
    let (mut pinned_files, mut replaced, mut from_args) = (0, 0, 0);
    for file in manifest
        .lines()
        .skip(1)
        .filter_map(|l| l.split('\t').next())
        .filter(|f| !f.is_empty())
    {
        let text = String::from_utf8_lossy(&std::fs::read(corpus.join(file)).unwrap()).into_owned();
        let before = analyze(file, &text, &no_args());
        if before.has_errors() {
            continue;
        }
        let mut given: Vec<Reference> = before
            .dependencies
            .iter()
            .filter(|dep| dep.reference.tag().is_some())
            .map(|dep| {
                let r = &dep.reference;
                r.with_digest(fake_digest(r))
            })
            .collect();
        given.sort();
        given.dedup();
        let got = pin(file, &text, &no_args(), &given).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(got.unmatched.is_empty(), "{file}: {:?}", got.unmatched);
        assert_eq!(
            unpinned(&got),
            text,
            "{file}: only the replaced spans differ"
        );
        let after = analyze(file, &got.content, &no_args());
        assert!(!after.has_errors(), "{file}: {:?}", after.messages());
        assert_eq!(after.stages.len(), before.stages.len(), "{file}");
        for (a, b) in after.stages.iter().zip(&before.stages) {
            assert_eq!((&a.name, &a.platform), (&b.name, &b.platform), "{file}");
            match (&a.from, &b.from) {
                (From::Image { reference: ra, .. }, From::Image { reference: rb, .. }) => {
                    assert_eq!(ra.without_digest(), rb.without_digest(), "{file}");
                }
                (From::Stage { stage: sa, .. }, From::Stage { stage: sb, .. }) => {
                    assert_eq!(sa, sb, "{file}");
                }
                (From::Scratch, From::Scratch) => {}
                (a, b) => panic!("{file}: {b:?} became {a:?}"),
            }
        }
        assert_eq!(
            after.dependencies.len(),
            before.dependencies.len(),
            "{file}"
        );
        for (a, b) in after.dependencies.iter().zip(&before.dependencies) {
            assert_eq!((a.via, a.stage), (b.via, b.stage), "{file}");
            if b.reference.tag().is_some() {
                assert_eq!(
                    a.reference,
                    b.reference.with_digest(fake_digest(&b.reference))
                );
            } else {
                assert_eq!(a.reference, b.reference, "{file}: a digest-only base stays");
            }
        }
        pinned_files += 1;
        replaced += got.replacements.len();
        from_args += got.replacements.iter().filter(|r| r.from_arg).count();
    }
    assert!(
        pinned_files > 300 && replaced > 500 && from_args > 20,
        "{pinned_files} files, {replaced} replacements, {from_args} from ARGs"
    );
}
