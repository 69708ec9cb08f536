use std::collections::BTreeMap;

use std::fmt::Write as _;

use rstest::rstest;

use super::*;

fn run(content: &str) -> Analysis {
    analyze("Dockerfile", content, &BTreeMap::new())
}

fn run_with(content: &str, args: &[(&str, &str)]) -> Analysis {
    let args = args
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    analyze("Dockerfile", content, &args)
}

/// The stages' bases in a compact form: `image:<normalized>`, `stage:<n>`, `scratch`,
/// `unresolved:<raw>`.
fn bases(analysis: &Analysis) -> Vec<String> {
    analysis
        .stages
        .iter()
        .map(|stage| match &stage.from {
            From::Image { reference, .. } => format!("image:{reference}"),
            From::Stage { stage, .. } => format!("stage:{stage}"),
            From::Scratch => "scratch".to_owned(),
            From::Unresolved { raw } => format!("unresolved:{raw}"),
        })
        .collect()
}

fn deps(analysis: &Analysis) -> Vec<String> {
    analysis
        .dependencies
        .iter()
        .map(|d| format!("{:?}:{}:{}", d.via, d.stage, d.reference).to_lowercase())
        .collect()
}

#[rstest]
#[case::official("FROM python", &["image:docker.io/library/python:latest"])]
#[case::tag_and_alias("FROM python:3.12-slim AS build", &["image:docker.io/library/python:3.12-slim"])]
#[case::lowercase_as_extra_spaces("from golang:1.22   as    Build\nFROM build", &["image:docker.io/library/golang:1.22", "stage:0"])]
#[case::stage_ref_case_insensitive("FROM alpine AS Base\nFROM BASE", &["image:docker.io/library/alpine:latest", "stage:0"])]
#[case::later_stage_name_is_an_image("FROM later\nFROM alpine AS later", &["image:docker.io/library/later:latest", "image:docker.io/library/alpine:latest"])]
#[case::scratch("FROM scratch\nADD rootfs.tar /", &["scratch"])]
#[case::digest("FROM ubuntu:24.04@sha256:561618e2c15bf2397621dd04f96926663a3b5616c189cf7e38db7e82f5c538ea", &["image:docker.io/library/ubuntu:24.04@sha256:561618e2c15bf2397621dd04f96926663a3b5616c189cf7e38db7e82f5c538ea"])]
#[case::registry_port("FROM localhost:5000/team/app:1", &["image:localhost:5000/team/app:1"])]
#[case::tab_after_from("FROM\talpine:3.20", &["image:docker.io/library/alpine:3.20"])]
#[case::global_arg("ARG V=3.20\nFROM alpine:$V", &["image:docker.io/library/alpine:3.20"])]
#[case::braced_arg("ARG V=3.20\nFROM alpine:${V}", &["image:docker.io/library/alpine:3.20"])]
#[case::quoted_default("ARG R=\"docker.io\"\nFROM ${R}/node:22", &["image:docker.io/library/node:22"])]
#[case::chained_args("ARG REGISTRY=quay.io\nARG OWNER=jupyter\nARG BASE_IMAGE=$REGISTRY/$OWNER/base-notebook\nFROM $BASE_IMAGE", &["image:quay.io/jupyter/base-notebook:latest"])]
#[case::default_form("ARG V\nFROM alpine:${V:-3.19}", &["image:docker.io/library/alpine:3.19"])]
#[case::dash_form("ARG V=\nFROM alpine${V-:3.18}", &["image:docker.io/library/alpine:latest"])]
#[case::plus_form_unset("FROM quay.io/libpod/busybox${TARGETARCH:+@sha256:32968e717e29f79e5b889721908b3be6d1573992e1f3ba4c9a41718e2728458c}", &["image:quay.io/libpod/busybox:latest"])]
#[case::arg_without_default("ARG BASEIMAGE\nFROM $BASEIMAGE", &["unresolved:$BASEIMAGE"])]
#[case::platform_arg("ARG BASE_IMAGE=kargo-base\nFROM ${BASE_IMAGE}:latest-${TARGETARCH}", &["unresolved:${BASE_IMAGE}:latest-${TARGETARCH}"])]
#[case::undeclared_var("FROM $NOPE", &["unresolved:$NOPE"])]
#[case::arg_after_from_not_global("FROM alpine\nARG V=1\nFROM busybox:$V", &["image:docker.io/library/alpine:latest", "unresolved:busybox:$V"])]
#[case::arg_holding_stage_name("ARG SRC=builder\nFROM golang AS builder\nFROM ${SRC} AS src", &["image:docker.io/library/golang:latest", "stage:0"])]
#[case::alias_with_global_arg("ARG A=first\nFROM alpine AS ${A}\nFROM first", &["image:docker.io/library/alpine:latest", "stage:0"])]
#[case::default_from_unset_is_unknown("ARG P=${TARGETPLATFORM}\nFROM alpine:$P", &["unresolved:alpine:$P"])]
#[case::default_using_default_form("ARG BUILDPLATFORM=${BUILDPLATFORM:-amd64}\nFROM --platform=${BUILDPLATFORM} node:16 AS n", &["image:docker.io/library/node:16"])]
#[case::invalid_reference("FROM Alpine:3", &["unresolved:Alpine:3"])]
#[case::invalid_digest("FROM alpine@sha256:abc", &["unresolved:alpine@sha256:abc"])]
#[case::onbuild_ignored("FROM alpine\nONBUILD COPY --from=other:1 / /", &["image:docker.io/library/alpine:latest"])]
fn resolves_bases(#[case] content: &str, #[case] want: &[&str]) {
    assert_eq!(bases(&run(content)), want, "{content}");
}

#[rstest]
#[case::override_default("ARG V=3.20\nFROM alpine:$V", &[("V", "3.21")], "image:docker.io/library/alpine:3.21")]
#[case::fills_missing("ARG BASEIMAGE\nFROM $BASEIMAGE", &[("BASEIMAGE", "registry.k8s.io/base:1")], "image:registry.k8s.io/base:1")]
#[case::feeds_chain("ARG OWNER=jupyter\nARG B=quay.io/$OWNER/x\nFROM $B", &[("OWNER", "me")], "image:quay.io/me/x:latest")]
#[case::platform_arg_given("FROM busybox${TARGETARCH:+:glibc}", &[("TARGETARCH", "amd64")], "image:docker.io/library/busybox:glibc")]
#[case::undeclared_is_ignored("FROM alpine:${V:-1}", &[("V", "2")], "image:docker.io/library/alpine:1")]
fn build_args_override(#[case] content: &str, #[case] args: &[(&str, &str)], #[case] want: &str) {
    assert_eq!(bases(&run_with(content, args)), [want]);
}

#[rstest]
#[case::copy_from_image("FROM alpine\nCOPY --from=busybox:1.36 /bin/busybox /", &["from:0:docker.io/library/alpine:latest", "copy:0:docker.io/library/busybox:1.36"])]
#[case::add_from_image("FROM alpine\nADD --from=busybox /x /", &["from:0:docker.io/library/alpine:latest", "copy:0:docker.io/library/busybox:latest"])]
#[case::copy_from_stage_name("FROM golang AS build\nFROM scratch\nCOPY --from=BUILD /app /", &["from:0:docker.io/library/golang:latest"])]
#[case::copy_from_later_stage_name("FROM alpine\nCOPY --from=tools /x /\nFROM busybox AS tools", &["from:0:docker.io/library/alpine:latest", "from:1:docker.io/library/busybox:latest"])]
#[case::copy_from_index("FROM golang\nFROM scratch\nCOPY --from=0 /app /", &["from:0:docker.io/library/golang:latest"])]
#[case::copy_from_later_index("FROM alpine\nCOPY --from=1 /x /\nFROM busybox", &["from:0:docker.io/library/alpine:latest", "from:1:docker.io/library/busybox:latest"])]
#[case::copy_from_bad_index("FROM scratch\nCOPY --link --from=7 /app /", &[])]
#[case::mount_from_image("FROM alpine\nRUN --mount=type=bind,from=ghcr.io/o/tools:1,target=/t true", &["from:0:docker.io/library/alpine:latest", "mount:0:ghcr.io/o/tools:1"])]
#[case::mount_from_stage("FROM alpine AS m\nFROM debian\nRUN --mount=type=cache,target=/c --mount=type=bind,from=m,source=/bin/x,target=/x true", &["from:0:docker.io/library/alpine:latest", "from:1:docker.io/library/debian:latest"])]
#[case::copy_from_stage_arg("FROM alpine\nARG T=busybox:1\nCOPY --from=$T /x /", &["from:0:docker.io/library/alpine:latest", "copy:0:docker.io/library/busybox:1"])]
#[case::copy_from_global_redeclared("ARG T=busybox:2\nFROM alpine\nARG T\nCOPY --from=${T} /x /", &["from:0:docker.io/library/alpine:latest", "copy:0:docker.io/library/busybox:2"])]
#[case::copy_from_global_not_redeclared("ARG T=busybox:2\nFROM alpine\nCOPY --from=${T} /x /", &["from:0:docker.io/library/alpine:latest"])]
#[case::heredoc_copy("FROM alpine\nCOPY <<EOF /etc/x\nFROM evil\nEOF\nCOPY --from=busybox /a /", &["from:0:docker.io/library/alpine:latest", "copy:0:docker.io/library/busybox:latest"])]
fn lists_dependencies(#[case] content: &str, #[case] want: &[&str]) {
    assert_eq!(deps(&run(content)), want, "{content}");
}

#[rstest]
#[case::no_from("RUN true\n", "Dockerfile: no FROM instruction")]
#[case::empty("", "Dockerfile: no FROM instruction")]
#[case::invalid_reference("FROM alpine\nFROM Bad/Name", "Dockerfile:2: FROM Bad/Name")]
#[case::unset_arg("ARG B\nFROM $B", "Dockerfile:2: FROM $B: depends on ARG B")]
#[case::platform_arg("FROM x-${TARGETARCH}", "depends on the platform arg TARGETARCH")]
#[case::wrong_arity(
    "FROM a b",
    "Dockerfile:1: FROM requires either one or three arguments"
)]
#[case::unknown_instruction(
    "FROM a\nCROSS_BUILD_COPY qemu /usr/bin/",
    "Dockerfile:2: unknown instruction \"CROSS_BUILD_COPY\""
)]
#[case::bad_index(
    "FROM a\nCOPY --from=3 / /",
    "Dockerfile:2: COPY --from=3: invalid stage index 3"
)]
#[case::unterminated_heredoc("FROM a\nRUN <<EOF\ntrue", "Dockerfile:2: unterminated heredoc <<EOF")]
#[case::bad_substitution("FROM alpine:${V", "Dockerfile:1: FROM alpine:${V: missing '}'")]
#[case::self_index(
    "FROM a\nCOPY --from=0 / /",
    "Dockerfile:2: COPY --from=0: a stage cannot use itself"
)]
#[case::duplicate_stage(
    "FROM a AS x\nFROM b AS X",
    "Dockerfile:2: duplicate stage name \"x\" (first used on line 1)"
)]
#[case::global_not_redeclared(
    "ARG T=busybox\nFROM a\nCOPY --from=$T / /",
    "Dockerfile:3: COPY --from=$T: global ARG T must be re-declared with `ARG T` inside the stage"
)]
#[case::instruction_before_from("LABEL a=b\nFROM a", "Dockerfile:1: LABEL before the first FROM")]
fn reports_errors_with_location(#[case] content: &str, #[case] want: &str) {
    let analysis = run(content);
    assert!(
        analysis.messages().iter().any(|e| e.contains(want)),
        "{want:?} not in {:?}",
        analysis.messages()
    );
}

/// `ARG A1=x`, then `ARG An=${An-1}${An-1}` for n in 2..=lines: An is 2^(n-1) bytes.
fn arg_bomb(lines: usize) -> String {
    let mut text = "ARG A1=x\n".to_owned();
    for n in 2..=lines {
        let _ = writeln!(text, "ARG A{n}=${{A{p}}}${{A{p}}}", p = n - 1);
    }
    let _ = writeln!(text, "FROM alpine:${{A{lines}}}");
    text
}

#[test]
fn arg_expansion_bomb_stops_at_the_limit_with_a_located_error() {
    let started = std::time::Instant::now();
    let analysis = run(&arg_bomb(40));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // A13 is exactly 4096 bytes; A14 would be 8192.
    let too_large: Vec<String> = analysis
        .problems
        .iter()
        .filter(|p| matches!(p.kind, ProblemKind::ExpansionTooLarge { .. }))
        .map(|p| analysis.message(p))
        .collect();
    assert_eq!(
        too_large,
        ["Dockerfile:14: ARG A14 expands past 4096 bytes"]
    );
    assert_eq!(bases(&analysis), ["unresolved:alpine:${A40}"]);
    // Everything after A14 is unknown, not re-expanded: one more problem, on the FROM.
    assert_eq!(analysis.problems.len(), 2, "{:?}", analysis.messages());
    assert!(matches!(
        &analysis.problems[1],
        Problem { line: 41, kind: ProblemKind::UnknownArg { name, .. } } if name == "A40"
    ));
    let rendered = serde_json::to_string(&analysis).unwrap() + &render_text(&[analysis]);
    assert!(rendered.len() < 2_000, "{} bytes", rendered.len());
}

#[test]
fn a_value_at_the_limit_still_resolves() {
    let analysis = run(&arg_bomb(13).replace("FROM alpine:${A13}", "FROM alpine${A13:+:1}"));
    assert_eq!(bases(&analysis), ["image:docker.io/library/alpine:1"]);
    assert_eq!(analysis.problems, Vec::new());
}

#[test]
fn long_values_are_cut_in_messages() {
    let long = "A".repeat(3_000);
    let analysis = run(&format!(
        "ARG V={long}\nFROM $V\nFROM alpine AS 1{long}\nFROM {long} x\n"
    ));
    let messages = analysis.messages();
    assert_eq!(messages.len(), 3, "{messages:?}");
    for message in &messages {
        assert!(message.len() < 500, "{} bytes: {message}", message.len());
        assert!(message.contains('…'), "{message}");
    }
}

fn kinds(analysis: &Analysis) -> Vec<(usize, ProblemKind)> {
    analysis
        .problems
        .iter()
        .map(|p| (p.line, p.kind.clone()))
        .collect()
}

#[test]
fn undeclared_arg_in_from_says_to_declare_it() {
    let analysis = run("FROM ${BASE}\n");
    let kind = ProblemKind::UndeclaredArg {
        instruction: "FROM ${BASE}".to_owned(),
        name: "BASE".to_owned(),
        build_arg_given: false,
        in_stage: false,
    };
    assert_eq!(kinds(&analysis), [(1, kind)]);
    let hint = analysis.problems[0].hint();
    assert!(
        hint.starts_with("BASE is not declared; add `ARG BASE=<image>` before the first FROM"),
        "{hint}"
    );
    assert!(!hint.contains("--build-arg"), "{hint}");
}

#[test]
fn build_arg_for_an_undeclared_arg_does_not_apply() {
    // BuildKit substitutes only declared ARGs in FROM (lint UndefinedArgInFrom).
    let analysis = run_with("FROM ${BASE}\n", &[("BASE", "alpine:3")]);
    assert_eq!(bases(&analysis), ["unresolved:${BASE}"]);
    assert!(matches!(
        &analysis.problems[0].kind,
        ProblemKind::UndeclaredArg {
            build_arg_given: true,
            ..
        }
    ));
    let hint = analysis.problems[0].hint();
    assert!(hint.contains("add `ARG BASE=<image>`"), "{hint}");
    assert!(
        hint.contains("a build arg only sets a declared ARG"),
        "{hint}"
    );
}

#[rstest]
#[case::unset(
    "ARG B\nFROM $B",
    2,
    "give ARG B a default (`ARG B=<value>`) or a value as a build arg (`--build-arg B=…`"
)]
#[case::platform("FROM x-${TARGETARCH}", 1, "TARGETARCH is known only at build time")]
#[case::not_redeclared(
    "ARG T=busybox\nFROM a\nCOPY --from=$T / /",
    3,
    "add `ARG T` (without a value) inside the stage"
)]
#[case::undeclared_in_stage(
    "FROM a\nCOPY --from=$T / /",
    2,
    "T is not declared; add `ARG T=<value>` in the stage"
)]
#[case::run_before_from("RUN make\nFROM a", 1, "move RUN after the first FROM")]
#[case::from_arity("FROM a b", 1, "write `FROM <image>` or `FROM <image> AS <name>`")]
#[case::self_use(
    "FROM a\nCOPY --from=0 / /",
    2,
    "copy from an earlier stage or an image"
)]
#[case::bad_stage_name("FROM a AS 1bad", 1, "a stage name starts with a letter")]
fn each_kind_has_its_own_hint(#[case] content: &str, #[case] line: usize, #[case] want: &str) {
    let analysis = run(content);
    let problem = &analysis.problems[0];
    assert_eq!(problem.line, line, "{:?}", analysis.messages());
    assert!(
        problem.hint().contains(want),
        "{want:?} not in {:?}",
        problem.hint()
    );
    if !matches!(
        problem.kind,
        ProblemKind::UnsetArg { .. } | ProblemKind::PlatformArg { .. }
    ) {
        assert!(!problem.hint().contains("build arg"), "{}", problem.hint());
    }
}

#[rstest]
#[case::digit_first("1bad")]
#[case::slash("platform-arm/v7")]
#[case::dash_first("-x")]
#[case::unexpanded("${NOPE}")]
fn rejects_stage_names_buildkit_rejects(#[case] name: &str) {
    let analysis = run(&format!("FROM alpine AS {name}\n"));
    assert_eq!(
        kinds(&analysis),
        [(
            1,
            ProblemKind::InvalidStageName {
                name: name.to_owned()
            }
        )]
    );
    assert!(analysis.has_errors());
}

#[rstest]
#[case::plain("build", "build")]
#[case::mixed_case("BuildA", "builda")]
#[case::symbols("a.b_c-1", "a.b_c-1")]
#[case::expanded_global("${S}", "first-stage")]
fn accepts_and_lowercases_stage_names(#[case] name: &str, #[case] want: &str) {
    let analysis = run(&format!(
        "ARG S=first-stage\nFROM alpine AS {name}\nFROM {want}\n"
    ));
    assert_eq!(analysis.problems, Vec::new());
    assert_eq!(analysis.stages[0].name.as_deref(), Some(want));
    assert_eq!(bases(&analysis)[1], "stage:0");
}

/// Dockerfile frontend 1.7's prefix and suffix removal in `FROM` and `--from`: the
/// version split of the release notes' example, resolved to real references.
#[test]
fn pattern_removal_resolves_from_and_copy_from() {
    let analysis = run(
        "ARG PYTHON=3.12.4\nARG IMAGE=docker.io/library/golang:1.23\nFROM python:${PYTHON%.*}-slim AS app\nARG IMAGE\nCOPY --from=${IMAGE%%:*}:${IMAGE##*:}-alpine /go /go\n",
    );
    assert!(!analysis.has_errors(), "{:?}", analysis.messages());
    assert_eq!(
        analysis.messages_of(Severity::Warning),
        Vec::<String>::new()
    );
    let json = serde_json::to_value(&analysis).unwrap();
    let deps: Vec<&str> = json["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["reference"].as_str().unwrap())
        .collect();
    assert_eq!(
        deps,
        [
            "docker.io/library/python:3.12-slim",
            "docker.io/library/golang:1.23-alpine"
        ]
    );
}

#[test]
fn unsupported_substitution_is_only_a_warning() {
    let analysis = run("ARG V=1.2.3\nARG M=${V/./-}\nFROM alpine\n");
    assert!(!analysis.has_errors(), "{:?}", analysis.messages());
    assert_eq!(
        analysis.messages_of(Severity::Warning),
        ["Dockerfile:2: ARG M: unsupported substitution '${V/…}' (:- - :+ + :? ? # ## % %% are evaluated)"]
    );
    let json = serde_json::to_value(&analysis).unwrap();
    assert_eq!(json["errors"], serde_json::json!([]));
    assert_eq!(json["warnings"].as_array().map(Vec::len), Some(1));
}

#[test]
fn stage_using_itself_is_an_error() {
    let analysis = run("FROM alpine AS a\nCOPY --from=a / /\n");
    assert!(analysis.has_errors());
}

#[test]
fn valid_file_has_no_errors() {
    let analysis = run(
        "# syntax=docker/dockerfile:1\nARG V=1\nFROM alpine:$V AS a\nFROM a\nCOPY --from=A / /\n",
    );
    assert_eq!(analysis.problems, Vec::new());
}

#[test]
fn stage_fields_keep_name_platform_and_line() {
    let analysis =
        run("\n# c\nFROM --platform=$BUILDPLATFORM golang:1.22 AS Build\nRUN x\nFROM scratch\n");
    let first = &analysis.stages[0];
    // BuildKit lower-cases stage names.
    assert_eq!(first.name.as_deref(), Some("build"));
    assert_eq!(first.platform.as_deref(), Some("$BUILDPLATFORM"));
    assert_eq!(first.line, 3);
    assert_eq!(analysis.stages[1].line, 5);
    assert_eq!(analysis.stages[1].index, 1);
}

#[test]
fn windows_escape_file() {
    let content = "# escape=`\n\nARG Repo=mcr.microsoft.com/powershell\nFROM ${Repo}:lts-nanoserver-1809  AS installer-env\nENV A=1 `\n    # comment inside\n    B=2\nRUN Write-Host C:\\temp\\ && \\\n    tar -xf x\nFROM mcr.microsoft.com/windows/nanoserver:1809\nCOPY --from=installer-env [\"C:\\\\x\", \"C:\\\\y\"]\n";
    let analysis = run(content);
    assert_eq!(
        bases(&analysis),
        [
            "image:mcr.microsoft.com/powershell:lts-nanoserver-1809",
            "image:mcr.microsoft.com/windows/nanoserver:1809"
        ]
    );
    assert_eq!(analysis.stages[1].line, 10);
    // The blank line after the directive ends the directive block but `escape` is set.
    assert!(
        analysis
            .messages()
            .iter()
            .any(|e| e.contains(":9: unknown instruction \"TAR\"")),
        "{:?}",
        analysis.messages()
    );
}

#[test]
fn json_shape_of_a_multi_stage_file() {
    let content = "\
ARG GO=1.22
FROM --platform=$BUILDPLATFORM golang:${GO} AS build
RUN --mount=type=cache,target=/root/.cache --mount=type=bind,from=ghcr.io/acme/tools:1,target=/t go build
FROM build AS test
FROM scratch
COPY --from=build /app /app
COPY --from=gcr.io/distroless/static@sha256:0000000000000000000000000000000000000000000000000000000000000000 /etc/passwd /etc/passwd
FROM ${MISSING}
";
    let analysis = analyze("app/Dockerfile", content, &BTreeMap::new());
    let json = serde_json::to_string(&vec![analysis]).unwrap();
    let want = concat!(
        r#"[{"file":"app/Dockerfile","stages":["#,
        r#"{"index":0,"name":"build","platform":"$BUILDPLATFORM","from":{"kind":"image","raw":"golang:${GO}","reference":"docker.io/library/golang:1.22"}},"#,
        r#"{"index":1,"name":"test","platform":null,"from":{"kind":"stage","raw":"build","stage":0}},"#,
        r#"{"index":2,"name":null,"platform":null,"from":{"kind":"scratch"}},"#,
        r#"{"index":3,"name":null,"platform":null,"from":{"kind":"unresolved","raw":"${MISSING}"}}],"#,
        r#""dependencies":["#,
        r#"{"reference":"docker.io/library/golang:1.22","via":"from","stage":0},"#,
        r#"{"reference":"ghcr.io/acme/tools:1","via":"mount","stage":0},"#,
        r#"{"reference":"gcr.io/distroless/static@sha256:0000000000000000000000000000000000000000000000000000000000000000","via":"copy","stage":2}],"#,
        r#""errors":["app/Dockerfile:8: FROM ${MISSING}: ARG MISSING is not declared; unresolved"],"#,
        r#""warnings":[]}]"#,
    );
    assert_eq!(json, want);
}

#[test]
fn render_text_lists_stages_dependencies_and_errors() {
    let a = analyze(
        "a/Dockerfile",
        "FROM golang AS b\nFROM b\nCOPY --from=busybox / /\n",
        &BTreeMap::new(),
    );
    let b = analyze("b/Dockerfile", "RUN x\n", &BTreeMap::new());
    let text = render_text(&[a, b]);
    assert!(text.contains("a/Dockerfile\n  stage 0 (b): FROM golang → docker.io/library/golang:latest  (line 1)\n"), "{text}");
    assert!(
        text.contains("  stage 1: FROM b → stage 0  (line 2)\n"),
        "{text}"
    );
    assert!(
        text.contains("    docker.io/library/busybox:latest via copy in stage 1 (line 3)\n"),
        "{text}"
    );
    assert!(text.contains("\nb/Dockerfile\n  errors:\n"), "{text}");
    assert!(
        text.contains("    b/Dockerfile: no FROM instruction"),
        "{text}"
    );
}

#[test]
fn analyze_file_reports_unreadable_path() {
    let error = analyze_file(Path::new("/nonexistent/Dockerfile"), &BTreeMap::new()).unwrap_err();
    assert!(matches!(error, DockerfileError::Read { .. }));
    assert!(error.to_string().contains("/nonexistent/Dockerfile"));
}

#[test]
fn never_panics_on_prefixes_of_tricky_input() {
    let content = "# escape=`\nARG A=${B:-x}\nFROM --platform=$P ${A}:1 as a\nRUN <<-EOF\n\tx\n\tEOF\nCOPY --from=a <<robots.txt /\nrobots.txt\nRUN --mount=from=\"q\",x \\\n  y\nFROM ${\nfrom é${A:+";
    for end in (0..=content.len()).filter(|i| content.is_char_boundary(*i)) {
        let _ = run(&content[..end]);
    }
}

/// A tiny deterministic generator (an LCG), so the fuzz-ish test needs no extra crate.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        usize::try_from(self.0 >> 33).unwrap()
    }
}

#[test]
fn never_panics_on_random_dockerfile_shaped_input() {
    const PIECES: [&str; 34] = [
        "FROM ",
        "from ",
        "ARG ",
        "COPY ",
        "ADD ",
        "RUN ",
        "ONBUILD ",
        " AS ",
        " as ",
        "--from=",
        "--platform=",
        "--mount=type=bind,from=",
        "$",
        "${",
        "}",
        ":-",
        ":+",
        "-",
        "+",
        "?",
        "\\\n",
        "`\n",
        "\n",
        "\r\n",
        "<<EOF",
        "<<-EOF\n",
        "EOF\n",
        "#",
        "# escape=`\n",
        "\"",
        "'",
        "=",
        "alpine:3@sha256:",
        "é",
    ];
    let mut rng = Lcg(42);
    for _ in 0..5_000 {
        let length = rng.next() % 40;
        let text: String = (0..length)
            .map(|_| PIECES[rng.next() % PIECES.len()])
            .collect();
        let analysis = run(&text);
        let _ = render_text(&[analysis]);
    }
}
