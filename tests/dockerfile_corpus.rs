//! Dockerfile analysis over the real corpus in `shared/corpus/dockerfiles` (next to the
//! repository root), with the known answers from `shared/corpus/README.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use image_factory::dockerfile::{analyze, analyze_file, Analysis, From, Via};

/// `shared/corpus`, found by walking up from the crate directory.
fn corpus() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .ancestors()
        .map(|dir| dir.join("shared/corpus"))
        .find(|dir| dir.join("dockerfiles/MANIFEST.tsv").is_file())
        .expect("shared/corpus/dockerfiles/MANIFEST.tsv next to the repository root")
}

/// `(file relative to dockerfiles/, notes)` for every manifest row.
fn manifest() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(corpus().join("dockerfiles/MANIFEST.tsv")).unwrap();
    text.lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let columns: Vec<&str> = line.split('\t').collect();
            (
                columns[0].to_owned(),
                columns.get(4).unwrap_or(&"").to_string(),
            )
        })
        .collect()
}

/// The buildah fixtures that are invalid on purpose.
fn deliberately_invalid(file: &str, notes: &str) -> bool {
    let name = file.rsplit("__").next().unwrap_or(file);
    notes.contains("no-from")
        || name.ends_with(".bad")
        || name.ends_with("bad")
        || name == "Dockerfile.invalid_from"
        || file.contains("from-invalid-registry")
}

fn no_args() -> BTreeMap<String, String> {
    BTreeMap::new()
}

fn analyzed(file: &str) -> Analysis {
    analyze_file(&corpus().join("dockerfiles").join(file), &no_args()).unwrap()
}

fn image(analysis: &Analysis, stage: usize) -> String {
    match &analysis.stages[stage].from {
        From::Image { reference, .. } => reference.to_string(),
        other => panic!("{}: stage {stage} is {other:?}", analysis.file),
    }
}

fn stage_named(analysis: &Analysis, name: &str) -> usize {
    analysis
        .stages
        .iter()
        .position(|s| s.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("{}: no stage {name}", analysis.file))
}

#[test]
fn dockerfile_corpus_every_valid_file_yields_stages() {
    let mut counts = (0, 0, 0, 0); // analyzed, with unresolved, with errors, without stages
    let mut failures = Vec::new();
    for (file, notes) in manifest() {
        let analysis = analyzed(&file);
        if analysis.stages.is_empty() {
            counts.3 += 1;
            assert!(
                !analysis.problems.is_empty(),
                "{file}: no stages and no error"
            );
            if !deliberately_invalid(&file, &notes) {
                failures.push(format!("{file}: {:?}", analysis.messages()));
            }
        } else {
            counts.0 += 1;
        }
        if analysis
            .stages
            .iter()
            .any(|s| matches!(s.from, From::Unresolved { .. }))
        {
            counts.1 += 1;
        }
        if !analysis.problems.is_empty() {
            counts.2 += 1;
        }
    }
    println!(
        "dockerfile corpus: {} analyzed, {} with unresolved FROM, {} with errors, {} without stages",
        counts.0, counts.1, counts.2, counts.3
    );
    assert!(failures.is_empty(), "files without stages: {failures:#?}");
    assert!(counts.0 >= 490, "only {} files analyzed", counts.0);
}

#[test]
fn dockerfile_corpus_deliberately_invalid_fixtures_are_reported() {
    for (file, notes) in manifest() {
        if !deliberately_invalid(&file, &notes) {
            continue;
        }
        let analysis = analyzed(&file);
        if notes.contains("no-from") {
            assert!(
                analysis
                    .messages()
                    .iter()
                    .any(|e| e.contains("no FROM instruction")),
                "{file}: {:?}",
                analysis.messages()
            );
        }
        println!(
            "{file}: {} stages, errors {:?}",
            analysis.stages.len(),
            analysis.messages()
        );
    }
    // Most "bad" fixtures fail at build time (checksums, missing files, a registry that
    // does not exist); the ones that are wrong in the Dockerfile itself are reported.
    let copy_self = analyzed("containers__buildah/tests__bud__copy-from__Dockerfile2.bad");
    assert!(
        copy_self
            .messages()
            .iter()
            .any(|e| e.contains("a stage cannot use itself")),
        "{:?}",
        copy_self.messages()
    );
}

#[test]
fn dockerfile_corpus_never_panics_on_truncated_files() {
    for (file, _) in manifest().iter().step_by(7) {
        let text =
            std::fs::read_to_string(corpus().join("dockerfiles").join(file)).unwrap_or_default();
        let cuts: Vec<usize> = (0..text.len())
            .step_by(97)
            .filter(|i| text.is_char_boundary(*i))
            .collect();
        for cut in cuts {
            let _ = analyze(file, &text[..cut], &no_args());
        }
    }
}

#[test]
fn dockerfile_corpus_grafana_go_src_is_a_stage_reference() {
    let analysis = analyzed("grafana__grafana/Dockerfile");
    let go_builder = stage_named(&analysis, "go-builder");
    let go_src = stage_named(&analysis, "go-src");
    assert_eq!(
        analysis.stages[go_src].from,
        From::Stage {
            raw: "${GO_SRC}".to_owned(),
            stage: go_builder
        }
    );
    assert_eq!(
        image(&analysis, go_builder),
        "docker.io/library/golang:1.24.2-alpine"
    );
    assert!(analysis.dependencies.iter().all(|d| d.via == Via::From));
}

#[test]
fn dockerfile_corpus_jupyter_recipes_expand_arg_defaults() {
    let recipes: Vec<String> = manifest()
        .into_iter()
        .map(|(file, _)| file)
        .filter(|file| file.starts_with("jupyter__docker-stacks/docs__using__recipe_code__"))
        .collect();
    assert!(recipes.len() >= 10, "{recipes:?}");
    for file in recipes {
        let analysis = analyzed(&file);
        let base = image(&analysis, 0);
        // One recipe pins an old image that only Docker Hub has.
        assert!(
            base.starts_with("quay.io/jupyter/")
                || base == "docker.io/jupyter/base-notebook:notebook-6.5.4",
            "{file}: {base}"
        );
        assert!(
            analysis.problems.is_empty(),
            "{file}: {:?}",
            analysis.messages()
        );
    }
}

#[test]
fn dockerfile_corpus_mastodon_streaming_base_from_arg_defaults() {
    let analysis = analyzed("mastodon__mastodon/streaming__Dockerfile");
    assert_eq!(image(&analysis, 0), "docker.io/library/node:26-trixie-slim");
    assert_eq!(analysis.stages[0].name.as_deref(), Some("streaming"));
}

#[test]
fn dockerfile_corpus_superset_keeps_buildplatform_raw() {
    let analysis = analyzed("apache__superset/Dockerfile");
    assert_eq!(
        analysis.stages[0].platform.as_deref(),
        Some("${BUILDPLATFORM}")
    );
    assert_eq!(
        image(&analysis, 0),
        "docker.io/library/node:16-bookworm-slim"
    );
    let lean = stage_named(&analysis, "lean");
    assert_eq!(
        image(&analysis, lean),
        "docker.io/library/python:3.9-slim-bookworm"
    );
}

#[test]
fn dockerfile_corpus_kargo_final_stage_needs_targetarch() {
    let analysis = analyzed("akuity__kargo/Dockerfile");
    let last = analysis.stages.last().unwrap();
    assert_eq!(
        last.from,
        From::Unresolved {
            raw: "${BASE_IMAGE}:latest-${TARGETARCH}".to_owned()
        }
    );
    let args = BTreeMap::from([("TARGETARCH".to_owned(), "arm64".to_owned())]);
    let path = corpus().join("dockerfiles/akuity__kargo/Dockerfile");
    let resolved = analyze_file(&path, &args).unwrap();
    assert_eq!(
        image(&resolved, resolved.stages.len() - 1),
        "docker.io/library/kargo-base:latest-arm64"
    );
}

#[test]
fn dockerfile_corpus_buildah_base_with_arg_is_a_stage_once_targetarch_is_known() {
    let file = "containers__buildah/tests__bud__base-with-arg__Containerfile";
    let analysis = analyzed(file);
    let last = analysis.stages.last().unwrap();
    assert_eq!(
        last.from,
        From::Unresolved {
            raw: "platform-${TARGETARCH}".to_owned()
        }
    );
    let args = BTreeMap::from([("TARGETARCH".to_owned(), "arm64".to_owned())]);
    let resolved = analyze_file(&corpus().join("dockerfiles").join(file), &args).unwrap();
    let arm64 = stage_named(&resolved, "platform-arm64");
    assert!(matches!(
        resolved.stages.last().unwrap().from,
        From::Stage { stage, .. } if stage == arm64
    ));
}

#[test]
fn dockerfile_corpus_buildah_stage_names_from_global_args() {
    let analysis = analyzed(
        "containers__buildah/tests__bud__save-stages__Dockerfile.arg-build-stages-and-chained-build-stages",
    );
    assert_eq!(analysis.stages[0].name.as_deref(), Some("first-stage"));
    assert!(matches!(
        analysis.stages[1].from,
        From::Stage { stage: 0, .. }
    ));
    let external: Vec<String> = analysis
        .dependencies
        .iter()
        .map(|d| d.reference.to_string())
        .collect();
    assert_eq!(
        external,
        [
            "docker.io/library/alpine:latest",
            "docker.io/library/alpine:latest"
        ]
    );
}

#[test]
fn dockerfile_corpus_header_builtin_has_no_digest_without_targetarch() {
    let analysis =
        analyzed("containers__buildah/tests__conformance__testdata__header-builtin__Dockerfile");
    for stage in [0, 1] {
        assert_eq!(image(&analysis, stage), "quay.io/libpod/busybox:latest");
    }
    assert!(analysis
        .dependencies
        .iter()
        .all(|d| d.reference.digest().is_none()));
}

#[test]
fn dockerfile_corpus_powershell_nanoserver_backtick_escape() {
    let analysis =
        analyzed("PowerShell__PowerShell-Docker/release__preview__nanoserver__docker__Dockerfile");
    assert_eq!(analysis.stages.len(), 2);
    assert_eq!(analysis.stages[0].name.as_deref(), Some("installer-env"));
    assert_eq!(
        image(&analysis, 0),
        "mcr.microsoft.com/powershell:nanoserver"
    );
    assert_eq!(
        image(&analysis, 1),
        "mcr.microsoft.com/windows/nanoserver:1709"
    );
    assert_eq!(analysis.stages[1].line, 40);
    assert_eq!(
        analysis.dependencies.len(),
        2,
        "{:?}",
        analysis.dependencies
    );
}

#[test]
fn dockerfile_corpus_eliasj42_backslashes_are_not_continuations() {
    let analysis = analyzed("Eliasj42__arc-windows-runner/Dockerfile");
    assert_eq!(
        image(&analysis, 0),
        "mcr.microsoft.com/windows/servercore:ltsc2022"
    );
    for line in [34, 35] {
        let marker = format!("Dockerfile:{line}: unknown instruction");
        assert!(
            analysis.messages().iter().any(|e| e.contains(&marker)),
            "{marker} not in {:?}",
            analysis.messages()
        );
    }
}

#[test]
fn dockerfile_corpus_agnhost_tolerates_cross_build_copy() {
    let analysis = analyzed("kubernetes__kubernetes/test__images__agnhost__Dockerfile");
    assert_eq!(
        analysis.stages[0].from,
        From::Unresolved {
            raw: "$BASEIMAGE".to_owned()
        }
    );
    assert!(analysis
        .messages()
        .iter()
        .any(|e| e.contains("CROSS_BUILD_COPY")));
}

#[test]
fn dockerfile_corpus_adoptium_nanoserver_copies_from_an_external_image() {
    let analysis =
        analyzed("adoptium__containers/11__jre__windows__nanoserver-ltsc2022__Dockerfile");
    let copies: Vec<String> = analysis
        .dependencies
        .iter()
        .filter(|d| d.via == Via::Copy)
        .map(|d| d.reference.to_string())
        .collect();
    assert_eq!(
        copies,
        ["docker.io/library/eclipse-temurin:11.0.32_9-jre-windowsservercore-ltsc2022"]
    );
    assert_eq!(
        image(&analysis, 0),
        "mcr.microsoft.com/windows/nanoserver:ltsc2022"
    );
}

#[test]
fn dockerfile_corpus_jupyter_foundation_chain() {
    let path =
        corpus().join("chains/jupyter-docker-stacks/images/docker-stacks-foundation/Dockerfile");
    let analysis = analyze_file(&path, &no_args()).unwrap();
    assert_eq!(analysis.stages.len(), 3);
    assert_eq!(
        analysis.stages[2].from,
        From::Stage {
            raw: "$ROOT_IMAGE".to_owned(),
            stage: 0
        }
    );
    let deps: Vec<(String, Via, usize)> = analysis
        .dependencies
        .iter()
        .map(|d| (d.reference.to_string(), d.via, d.stage))
        .collect();
    assert_eq!(deps.len(), 2, "{deps:?}");
    assert!(deps[0]
        .0
        .starts_with("docker.io/library/ubuntu:24.04@sha256:5616"));
    assert!(deps[1]
        .0
        .starts_with("docker.io/mambaorg/micromamba:2.8.1@sha256:fb18"));
    assert_eq!((deps[1].1, deps[1].2), (Via::From, 1));
    assert!(analysis.problems.is_empty(), "{:?}", analysis.messages());
}

#[test]
fn dockerfile_corpus_jupyter_chain_children_point_at_their_parent() {
    let images = corpus().join("chains/jupyter-docker-stacks/images");
    let mut checked = 0;
    for entry in std::fs::read_dir(&images).unwrap() {
        let dir = entry.unwrap().path();
        let dockerfile = dir.join("Dockerfile");
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if name == "docker-stacks-foundation" || !dockerfile.is_file() {
            continue;
        }
        let analysis = analyze_file(&dockerfile, &no_args()).unwrap();
        let base = image(&analysis, 0);
        assert!(base.starts_with("quay.io/jupyter/"), "{name}: {base}");
        checked += 1;
    }
    assert!(checked >= 8);
}

#[test]
#[ignore = "prints every error in the corpus, for review"]
fn dockerfile_corpus_dump_errors() {
    for (file, _) in manifest() {
        let analysis = analyzed(&file);
        for error in &analysis.messages() {
            println!("{}", error.replace(&corpus().display().to_string(), ""));
        }
        for stage in &analysis.stages {
            println!(
                "STAGE\t{file}:{}\t{}",
                stage.line,
                serde_json::to_string(&stage.from).unwrap()
            );
        }
        for dep in &analysis.dependencies {
            println!("DEP\t{file}:{}\t{:?}\t{}", dep.line, dep.via, dep.reference);
        }
    }
}
