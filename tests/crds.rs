//! The `ImageFactoryRebuild` CRD (`image-factory crds`) and the typed Kargo `Freight`,
//! against the real API server: the committed CRD does not drift, the server accepts it,
//! its CEL rules reject nonsense, status goes through the subresource with server-side
//! apply, `kubectl get ifr` prints the documented columns, and Freight shaped as Kargo
//! writes it reads back through our hand-written `Resource` impl.

use image_factory::crd::{
    FreightRef, ImageFactoryRebuild, ImageFactoryRebuildSpec, ImageFactoryRebuildStatus,
    RebuildPhase, TriggeringUpdate,
};
use image_factory::kargo::{Freight, FreightImage, FreightOrigin};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::support::k8s::{apply_crd, client, kubectl, namespace};
use crate::support::{image_factory, repo_root, shared_dir};

const DIGEST: &str = "sha256:4bcff63911fcb4448bd4fdacec207030997caf25e9bea4045fa6c8c44de311d1";

pub(crate) fn crds_applied() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        apply_crd(
            &repo_root().join("crds/imagefactory.dev_imagefactoryrebuilds.yaml"),
            "imagefactoryrebuilds.imagefactory.dev",
        );
        apply_crd(
            &shared_dir().join("kargo/crds/kargo.akuity.io_freights.yaml"),
            "freights.kargo.akuity.io",
        );
    });
}

fn rebuild(ns: &str, image: &str, freight: &str) -> ImageFactoryRebuild {
    let mut rebuild = ImageFactoryRebuild::new(
        image_factory::runtime::RebuildId::derive(image, freight, &[]).as_str(),
        ImageFactoryRebuildSpec {
            image: image.to_string(),
            update: TriggeringUpdate {
                base: "alpine".to_string(),
                reference: "docker.io/library/alpine:3.20".to_string(),
                tag: Some("3.20".to_string()),
                digest: DIGEST.to_string(),
                freight: Some(FreightRef {
                    name: freight.to_string(),
                    alias: Some("wonky-wombat".to_string()),
                    warehouse: Some("alpine".to_string()),
                }),
                discovered_at: Time("2026-12-01T10:00:00Z".parse().unwrap()),
            },
            pinned_bases: Vec::new(),
            parent: None,
            expedite: None,
        },
    );
    rebuild.metadata.namespace = Some(ns.to_string());
    rebuild
}

#[test]
fn the_committed_crds_are_what_the_binary_generates() {
    let out = image_factory(&repo_root(), &["crds", "--check"]);
    assert!(
        out.status.success(),
        "crds/ drifted: run `image-factory crds`\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // --check can fail: a changed file is reported and exits 1.
    let dir = tempfile::tempdir().unwrap();
    let written = image_factory(
        &repo_root(),
        &["crds", "--dir", &dir.path().display().to_string()],
    );
    assert!(written.status.success());
    let file = dir
        .path()
        .join("imagefactory.dev_imagefactoryrebuilds.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("ifr", "rebuild")).unwrap();
    let out = image_factory(
        &repo_root(),
        &[
            "crds",
            "--check",
            "--dir",
            &dir.path().display().to_string(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("differs from the generated CRD"));
}

#[tokio::test]
async fn the_api_server_serves_rebuilds_with_their_rules_status_and_columns() {
    crds_applied();
    let ns = namespace("ifr");
    let api: Api<ImageFactoryRebuild> = Api::namespaced(client().await, &ns);
    let created = api
        .create(
            &PostParams::default(),
            &rebuild(&ns, "team/app", "f0123456789abcdef"),
        )
        .await
        .unwrap();
    assert_eq!(created.spec.update.digest, DIGEST);

    // Status through the subresource, with server-side apply under our field manager.
    let status = serde_json::json!({
        "apiVersion": "imagefactory.dev/v1alpha1",
        "kind": "ImageFactoryRebuild",
        "status": ImageFactoryRebuildStatus {
            phase: Some(RebuildPhase::Waiting),
            due_at: Some(Time("2026-12-08T10:00:00Z".parse().unwrap())),
            observed_generation: created.metadata.generation,
            ..Default::default()
        },
    });
    let name = created.metadata.name.clone().unwrap();
    let params = PatchParams::apply("image-factory").force();
    let patched = api
        .patch_status(&name, &params, &Patch::Apply(&status))
        .await
        .unwrap();
    assert_eq!(
        patched.status.as_ref().and_then(|s| s.phase),
        Some(RebuildPhase::Waiting)
    );

    let (ok, out) = kubectl(&["get", "ifr", "-n", &ns]);
    assert!(ok, "{out}");
    let header = out.lines().find(|l| l.starts_with("NAME")).unwrap();
    let columns: Vec<_> = header.split_whitespace().collect();
    assert_eq!(
        columns,
        ["NAME", "IMAGE", "BASE", "PHASE", "DUE", "STALE", "AGE"],
        "{out}"
    );
    let row = out.lines().find(|l| l.starts_with(&name)).unwrap();
    assert!(
        row.contains("team/app")
            && row.contains("docker.io/library/alpine:3.20")
            && row.contains("Waiting")
            && row.contains("2026-12-08T10:00:00Z"),
        "{out}"
    );
    // The category and the field selector on the image work.
    let (ok, out) = kubectl(&["get", "imagefactory", "-n", &ns, "-o", "name"]);
    assert!(ok && out.contains(&name), "{out}");
    let (ok, out) = kubectl(&[
        "get",
        "ifr",
        "-n",
        &ns,
        "--field-selector",
        "spec.image=other",
        "-o",
        "name",
    ]);
    assert!(ok && !out.contains(&name), "{out}");

    // CEL: a bad digest, an expedite without a reason, an empty image.
    let mut bad = rebuild(&ns, "team/bad", "f1");
    bad.spec.update.digest = "sha256:NOTHEX".to_string();
    let err = api.create(&PostParams::default(), &bad).await.unwrap_err();
    assert!(err.to_string().contains("spec.update.digest"), "{err}");
    let mut bad = rebuild(&ns, "team/bad", "f2");
    bad.spec.expedite = Some(image_factory::crd::Expedite {
        reason: "  ".to_string(),
        by: None,
    });
    let err = api.create(&PostParams::default(), &bad).await.unwrap_err();
    assert!(err.to_string().contains("needs a reason"), "{err}");
    let mut bad = rebuild(&ns, "", "f3");
    bad.metadata.name = Some("empty-image".to_string());
    let err = api.create(&PostParams::default(), &bad).await.unwrap_err();
    assert!(err.to_string().contains("image must name"), "{err}");

    // The image and the triggering update are immutable; pins and expedite are not.
    let mut edited = api.get(&name).await.unwrap();
    edited.spec.image = "team/other".to_string();
    let err = api
        .replace(&name, &PostParams::default(), &edited)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("image is immutable"), "{err}");
    let mut edited = api.get(&name).await.unwrap();
    edited.spec.expedite = Some(image_factory::crd::Expedite {
        reason: "CVE-2026-0001".to_string(),
        by: Some("alice".to_string()),
    });
    let replaced = api
        .replace(&name, &PostParams::default(), &edited)
        .await
        .unwrap();
    assert_eq!(replaced.spec.expedite.unwrap().reason, "CVE-2026-0001");
}

#[tokio::test]
async fn freight_as_kargo_writes_it_reads_back_through_the_typed_api() {
    crds_applied();
    let ns = namespace("freight");
    let api: Api<Freight> = Api::namespaced(client().await, &ns);
    // Kargo's own example shape (shared/k8s/examples/freight.yaml), applied by kubectl.
    let example = std::fs::read_to_string(shared_dir().join("k8s/examples/freight.yaml"))
        .unwrap()
        .replace("metadata:\n", &format!("metadata:\n  namespace: {ns}\n"));
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), example).unwrap();
    let (ok, out) = kubectl(&["apply", "-f", &file.path().display().to_string()]);
    assert!(ok, "{out}");
    let read = api.get("f0123456789abcdef").await.unwrap();
    assert_eq!(read.alias.as_deref(), Some("wonky-wombat"));
    assert_eq!(read.origin.name, "my-warehouse");
    assert_eq!(
        read.images[0].repo_url.as_deref(),
        Some("example.invalid/nginx")
    );
    assert_eq!(read.images[0].tag.as_deref(), Some("1.27.0"));
    // No discoveredAt: creationTimestamp stands in.
    assert_eq!(
        read.discovered_at(),
        read.metadata.creation_timestamp.as_ref().map(|t| t.0)
    );

    // And one we create, with discoveredAt, through the typed API.
    let mut freight = Freight::new(&ns, "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678");
    freight.origin = FreightOrigin {
        kind: "Warehouse".to_string(),
        name: "alpine".to_string(),
    };
    freight.images = vec![FreightImage {
        repo_url: Some("docker.io/library/alpine".to_string()),
        tag: Some("3.20".to_string()),
        digest: Some(DIGEST.to_string()),
    }];
    freight.discovered_at = Some(Time("2026-12-01T10:00:00Z".parse().unwrap()));
    api.create(&PostParams::default(), &freight).await.unwrap();
    let listed = api.list(&Default::default()).await.unwrap();
    let ours = listed
        .items
        .iter()
        .find(|f| f.origin.name == "alpine")
        .unwrap();
    assert_eq!(ours.images, freight.images);
    assert_eq!(
        ours.discovered_at().unwrap().to_string(),
        "2026-12-01T10:00:00Z"
    );
    // Kargo's CRD rejects an origin of another kind: the typed fields are Kargo's.
    let mut bad = Freight::new(&ns, "bad");
    bad.origin = FreightOrigin {
        kind: "Stage".to_string(),
        name: "x".to_string(),
    };
    assert!(api.create(&PostParams::default(), &bad).await.is_err());
}
