//! Generated Warehouses against Kargo's own definitions: the Warehouse CRD on a real API
//! server (server-side dry-run), and Kargo's image-subscription JSON Schema (the CRD leaves
//! `spec.subscriptions` opaque since Kargo 1.9; Kargo's webhook checks `image.json`).

use crate::support::{k8s::kubectl, repo_root, shared_dir};

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
    let crd = shared_dir().join("kargo/crds/kargo.akuity.io_warehouses.yaml");
    let (ok, out) = kubectl(&["apply", "--server-side", "-f", &crd.display().to_string()]);
    assert!(ok, "{out}");
    let (ok, out) = kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/warehouses.kargo.akuity.io",
        "--timeout=30s",
    ]);
    assert!(ok, "{out}");
    let _ = kubectl(&["create", "namespace", "image-factory"]);
    // deploy/ is what Argo CD syncs; it includes state/warehouses/.
    let dir = repo_root().join("deploy");
    let (ok, out) = kubectl(&[
        "apply",
        "--dry-run=server",
        "-k",
        &dir.display().to_string(),
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
