//! Generated Warehouses against Kargo's own definitions: the Warehouse CRD on a real API
//! server (server-side dry-run), and Kargo's image-subscription JSON Schema (the CRD leaves
//! `spec.subscriptions` opaque since Kargo 1.9; Kargo's webhook checks `image.json`).

use image_factory::enrollment::{self, WarehouseConfig};
use image_factory::kargo;
use image_factory::reference::Reference;
use image_factory::registry::{Platform, SelectionStrategy, TagSelection};

use crate::support::k8s::{apply_crd, kubectl};
use crate::support::{repo_root, shared_dir};

fn warehouse_files() -> Vec<std::path::PathBuf> {
    let dir = repo_root().join("state/warehouses");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != "kustomization.yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "the example generates Warehouses");
    files
}

#[test]
fn subscriptions_satisfy_kargos_image_schema() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(shared_dir().join("kargo/schemas/image.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for file in warehouse_files() {
        let w: serde_json::Value =
            serde_saphyr::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let image = &w["spec"]["subscriptions"][0]["image"];
        let errors: Vec<String> = validator
            .iter_errors(image)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", file.display());
        assert!(image.get("allowTags").is_none() && image.get("ignoreTags").is_none());
    }
    // The schema really rejects what Kargo ≥ 1.11 rejects, so the check above can fail.
    let retired = serde_json::json!({"repoURL": "docker.io/library/python", "allowTags": "^3"});
    assert!(!validator.is_valid(&retired));
}

#[test]
fn the_api_server_accepts_the_generated_warehouses() {
    apply_crd(
        &shared_dir().join("kargo/crds/kargo.akuity.io_warehouses.yaml"),
        "warehouses.kargo.akuity.io",
    );
    let _ = kubectl(&["create", "namespace", "image-factory"]);
    // deploy/ is what Argo CD syncs; it includes state/warehouses/ (its other objects
    // are checked in tests/deploy.rs).
    let out = std::process::Command::new("kubectl")
        .args([
            "kustomize",
            &repo_root().join("deploy").display().to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8(out.stdout).unwrap();
    let warehouses: Vec<&str> = rendered
        .split("\n---\n")
        .filter(|doc| doc.contains("kind: Warehouse\n"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("warehouses.yaml");
    std::fs::write(&file, warehouses.join("\n---\n")).unwrap();
    let (ok, out) = kubectl(&[
        "apply",
        "--dry-run=server",
        "-f",
        &file.display().to_string(),
    ]);
    assert!(ok, "{out}");
    assert_eq!(
        out.matches("created (server dry run)").count(),
        warehouse_files().len(),
        "{out}"
    );
    // A Warehouse the CRD rejects fails here too, so the check above can fail.
    let bad = tempfile::tempdir().unwrap();
    std::fs::write(
        bad.path().join("w.yaml"),
        "apiVersion: kargo.akuity.io/v1alpha1\nkind: Warehouse\nmetadata: {name: bad, namespace: image-factory}\nspec: {interval: 5 minutes, subscriptions: []}\n",
    )
    .unwrap();
    let (ok, out) = kubectl(&[
        "apply",
        "--dry-run=server",
        "-f",
        &bad.path().join("w.yaml").display().to_string(),
    ]);
    assert!(!ok, "{out}");
}

/// What a subscription makes its watcher select, in one form both readers reduce to:
/// Kargo's defaults filled in, and settings the strategy ignores left out (Kargo reads
/// `constraint` only for `Digest` and `SemVer`, `strictSemvers` only for `SemVer`).
#[derive(Debug, PartialEq, Eq)]
struct Applied {
    repo_url: String,
    strategy: String,
    constraint: Option<String>,
    strict_semvers: Option<bool>,
    allow_tags_regexes: Vec<String>,
    ignore_tags_regexes: Vec<String>,
    platform: Option<String>,
    discovery_limit: u64,
}

/// How Kargo reads a written subscription: omitted fields take the `default` of
/// Kargo's own `image.json`, not our constants, so a drift in ours fails here.
fn kargo_reads(image: &serde_json::Value, schema: &serde_json::Value) -> Applied {
    let field = |name: &str| {
        image
            .get(name)
            .or_else(|| schema["properties"][name].get("default"))
            .cloned()
    };
    let strings = |name: &str| -> Vec<String> {
        field(name)
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default()
    };
    let strategy = field("imageSelectionStrategy")
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    let uses_constraint = strategy == "Digest" || strategy == "SemVer";
    Applied {
        repo_url: image["repoURL"].as_str().unwrap().to_owned(),
        constraint: field("constraint")
            .filter(|_| uses_constraint)
            .map(|c| c.as_str().unwrap().to_owned()),
        strict_semvers: field("strictSemvers")
            .filter(|_| strategy == "SemVer")
            .map(|s| s.as_bool().unwrap()),
        allow_tags_regexes: strings("allowTagsRegexes"),
        ignore_tags_regexes: strings("ignoreTagsRegexes"),
        // Kargo normalizes platforms like containerd does; so does our watcher.
        platform: field("platform")
            .map(|p| Platform::parse(p.as_str().unwrap()).unwrap().to_string()),
        discovery_limit: field("discoveryLimit").unwrap().as_u64().unwrap(),
        strategy,
    }
}

/// What our watcher applies for an enrollment's settings: the compiled selection the
/// registry client runs, read back through its accessors.
fn watcher_applies(config: &WarehouseConfig) -> Applied {
    let selection = TagSelection::from(config).compile().unwrap();
    let strategy = selection.strategy();
    Applied {
        repo_url: config.repo_url.clone(),
        strategy: serde_json::to_value(strategy)
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned(),
        constraint: match strategy {
            SelectionStrategy::Digest => selection.digest_tag(),
            SelectionStrategy::SemVer => selection.semver_constraint(),
            SelectionStrategy::Lexical | SelectionStrategy::NewestBuild => None,
        }
        .map(str::to_owned),
        strict_semvers: (strategy == SelectionStrategy::SemVer).then(|| selection.strict_semvers()),
        allow_tags_regexes: selection
            .allow_patterns()
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ignore_tags_regexes: selection
            .ignore_patterns()
            .iter()
            .map(|s| s.to_string())
            .collect(),
        platform: selection.platform().map(Platform::to_string),
        discovery_limit: selection.limit() as u64,
    }
}

fn image_schema() -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(shared_dir().join("kargo/schemas/image.json")).unwrap(),
    )
    .unwrap()
}

/// The subscription of a Warehouse as written to disk (YAML, as `analyze` writes it).
fn written_subscription(w: &kargo::Warehouse) -> serde_json::Value {
    let yaml = serde_saphyr::to_string(w).unwrap();
    let back: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
    back["spec"]["subscriptions"][0]["image"].clone()
}

#[test]
fn committed_warehouses_and_the_watcher_apply_the_same_subscription() {
    let schema = image_schema();
    let enrollment = enrollment::load(&repo_root().join("images.yaml")).unwrap();
    let files = warehouse_files();
    for file in &files {
        let w: serde_json::Value =
            serde_saphyr::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let name = w["metadata"]["name"].as_str().unwrap();
        let config = match enrollment.images.iter().find(|i| i.name == name) {
            Some(image) => image.warehouse.clone(),
            None => {
                let reference = w["metadata"]["annotations"]["imagefactory.dev/reference"]
                    .as_str()
                    .unwrap();
                enrollment.discovered_warehouse(&Reference::parse(reference).unwrap())
            }
        };
        assert_eq!(
            kargo_reads(&w["spec"]["subscriptions"][0]["image"], &schema),
            watcher_applies(&config),
            "{}",
            file.display()
        );
    }
    // Every external enrollment has a committed Warehouse, so none escapes the check.
    for image in enrollment.images.iter().filter(|i| !i.is_managed()) {
        assert!(
            files
                .iter()
                .any(|f| f.ends_with(format!("{}.yaml", image.name))),
            "{} has no Warehouse",
            image.name
        );
    }
}

#[test]
fn every_subscription_setting_reaches_kargo_and_the_watcher_alike() {
    let schema = image_schema();
    let strategies = [
        (Some("Digest"), [None, Some("1.2.3")]),
        (Some("SemVer"), [None, Some("^1.2")]),
        (Some("Lexical"), [None, Some("^1.2")]),
        (Some("NewestBuild"), [None, Some("^1.2")]),
        (None, [None, Some("1.2.3")]),
    ];
    let regexes = [
        "",
        "allowTagsRegexes: ['^1\\.']",
        "ignoreTagsRegexes: ['-rc$', '-beta']",
        "allowTagsRegexes: ['^1\\.']\n      ignoreTagsRegexes: ['-rc$']",
    ];
    let platforms = [None, Some("linux/arm64"), Some("linux/arm")];
    let stricts = [None, Some(true), Some(false)];
    let limits = [None, Some(1), Some(100)];
    let mut cases = 0;
    let mut applied_forms = std::collections::BTreeSet::new();
    for (strategy, constraints) in &strategies {
        for constraint in constraints {
            for regex in regexes {
                for platform in platforms {
                    for strict in stricts {
                        for limit in limits {
                            let mut lines = Vec::new();
                            if let Some(s) = strategy {
                                lines.push(format!("imageSelectionStrategy: {s}"));
                            }
                            if let Some(c) = constraint {
                                lines.push(format!("constraint: {c:?}"));
                            }
                            if !regex.is_empty() {
                                lines.push(regex.to_owned());
                            }
                            if let Some(p) = platform {
                                lines.push(format!("platform: {p}"));
                            }
                            if let Some(s) = strict {
                                lines.push(format!("strictSemvers: {s}"));
                            }
                            if let Some(l) = limit {
                                lines.push(format!("discoveryLimit: {l}"));
                            }
                            let warehouse = if lines.is_empty() {
                                String::new()
                            } else {
                                format!("    warehouse:\n      {}\n", lines.join("\n      "))
                            };
                            let text = format!(
                                "version: 1\nimages:\n  - name: tool\n    image: registry.example.com/team/tool:1.2.3\n{warehouse}"
                            );
                            let enrollment =
                                enrollment::parse("images.yaml", &text, std::path::Path::new("."))
                                    .unwrap_or_else(|e| panic!("{text}\n{e:?}"));
                            let image = &enrollment.images[0];
                            let w = kargo::warehouse(
                                &image.name,
                                &image.reference,
                                &image.warehouse,
                                &enrollment.project,
                            );
                            let kargo = kargo_reads(&written_subscription(&w), &schema);
                            let ours = watcher_applies(&image.warehouse);
                            assert_eq!(kargo, ours, "{text}");
                            applied_forms.insert(format!("{ours:?}"));
                            cases += 1;
                        }
                    }
                }
            }
        }
    }
    assert_eq!(cases, 5 * 2 * 4 * 3 * 3 * 3);
    // The settings really vary, so the comparison above is not between constants:
    // SemVer 2 constraints × 4 regex sets × 3 platforms × 2 (strict on/off) × 3 limits,
    // plus Digest (explicit or implied), Lexical, NewestBuild 4 × 3 × 3 each.
    assert_eq!(applied_forms.len(), 2 * 4 * 3 * 2 * 3 + 3 * (4 * 3 * 3));
}
