//! The `ImageFactoryRebuild` custom resource (`imagefactory.dev/v1alpha1`): one rebuild of
//! one managed image for one base update, as the controller records it in the cluster.
//!
//! The CRD is derived from these types with kube + schemars; `image-factory crds` writes it
//! to `crds/` ([`write_crds`]) and a test fails when the committed file drifts. Field names
//! follow Kargo (`repoURL`-style spelling is not needed here; the triggering update names
//! its Freight as Kargo does: `name`, `alias`, `discoveredAt`) and Kubernetes API
//! conventions (`status.conditions[]` with `observedGeneration`, `phase`).
//!
//! Server-side rules (OpenAPI `pattern`/`maxLength` and CEL `x-kubernetes-validations`;
//! digests use a `pattern` because a CEL `matches()` on an unbounded string exceeds the
//! API server's cost budget) reject what no controller could act
//! on: an empty image, a digest that is not `sha256:` + 64 hex or `sha512:` + 128 hex (the
//! OCI image spec's registered algorithms), an expedite without a reason, and edits of the
//! image or the triggering update after creation (a different update is a different rebuild).

use std::path::{Path, PathBuf};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use serde::{Deserialize, Serialize};

/// The API group of our resources.
pub const GROUP: &str = "imagefactory.dev";
/// Annotation that expedites a rebuild: its value is the reason (`CVE-2026-1234 …`).
pub const ANNOTATION_EXPEDITE: &str = "imagefactory.dev/expedite";
/// Label naming the managed image a rebuild is for (the enrollment name, sanitized).
pub const LABEL_IMAGE: &str = crate::kargo::LABEL_IMAGE;
/// Label naming the Freight that triggered a rebuild (a Freight name is a label value).
pub const LABEL_FREIGHT: &str = "imagefactory.dev/freight";
/// Label naming the parent rebuild of a cascaded one.
pub const LABEL_PARENT: &str = "imagefactory.dev/parent";
/// Longest object name we generate: 63, so a name is also a valid label value. Rebuild
/// objects are named by their [`crate::runtime::RebuildId`], which fits.
pub const MAX_NAME_LEN: usize = 63;

/// The desired rebuild: which managed image, on which base update, with which pins.
//
// Printer columns: IMAGE, BASE (the updated base's reference), PHASE, DUE (RFC 3339, the
// end of the hold; kubectl shows future `date` columns as `<invalid>`), STALE (workloads
// still on an older digest, on the latest succeeded rebuild), AGE.
// clippy reads each `printcolumn(type_ = "string")` as a repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "imagefactory.dev",
    version = "v1alpha1",
    kind = "ImageFactoryRebuild",
    namespaced,
    shortname = "ifr",
    category = "imagefactory",
    status = "ImageFactoryRebuildStatus",
    doc = "One rebuild of one managed image for one base image update: held for its soak period, then triggered, observed and cascaded to the images built on it.",
    printcolumn(name = "Image", type_ = "string", json_path = ".spec.image"),
    printcolumn(name = "Base", type_ = "string", json_path = ".spec.update.reference"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Due", type_ = "string", json_path = ".status.dueAt"),
    printcolumn(
        name = "Stale",
        type_ = "integer",
        json_path = ".status.staleWorkloads",
        description = "Workloads still running an older digest of the image"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    selectable = ".spec.image"
)]
#[serde(rename_all = "camelCase")]
pub struct ImageFactoryRebuildSpec {
    /// The managed image to rebuild: its name in images.yaml (`images[].name`).
    #[x_kube(validation = Rule::new("self != ''").message("image must name an enrolled image"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("image is immutable: create another rebuild"))]
    pub image: String,
    /// The base image update this rebuild builds on.
    #[x_kube(validation = Rule::new("self == oldSelf").message("update is immutable: a different update is a different rebuild"))]
    pub update: TriggeringUpdate,
    /// Every base the build pins (`FROM` references with their digests), the updated one
    /// included; injected into the build as `--build-arg`s / the trigger's inputs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub pinned_bases: Vec<PinnedBase>,
    /// Name of the rebuild (same namespace) whose result this one builds on, for a cascade;
    /// absent for a rebuild triggered by an external base update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Skip the remaining hold; set by `image-factory decide` or the
    /// `imagefactory.dev/expedite` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expedite: Option<Expedite>,
}

/// The update that triggered a rebuild: a new digest of a base image.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TriggeringUpdate {
    /// The base image's name in the graph (an external image or a managed one).
    #[x_kube(validation = Rule::new("self != ''").message("base must name the updated base image"))]
    pub base: String,
    /// Normalized reference of the base without digest (`docker.io/library/alpine:3.20`).
    #[x_kube(validation = Rule::new("self != ''").message("reference must not be empty"))]
    pub reference: String,
    /// The tag the new digest was seen under, when the base is followed by tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The new digest (`sha256:` + 64 lowercase hex, or `sha512:` + 128).
    #[schemars(
        regex(pattern = r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$"),
        length(max = 135)
    )]
    pub digest: String,
    /// The Kargo Freight that carried the update; absent when the registry watcher saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freight: Option<FreightRef>,
    /// When the update was discovered (Freight `discoveredAt`, else its creation time);
    /// the hold counts from here.
    pub discovered_at: Time,
}

/// A Kargo Freight, by the names Kargo gives it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FreightRef {
    /// The Freight's object name (Kargo's Freight ID, a SHA-1 hex of its contents).
    #[x_kube(validation = Rule::new("self != ''").message("name must not be empty"))]
    pub name: String,
    /// Kargo's human-friendly alias (`wonky-wombat`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// The Warehouse the Freight originates from (`origin.name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warehouse: Option<String>,
}

/// One pinned base of a build.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PinnedBase {
    /// Normalized reference without digest.
    pub reference: String,
    /// The digest pinned.
    #[schemars(
        regex(pattern = r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$"),
        length(max = 135)
    )]
    pub digest: String,
}

/// Why and by whom a hold was skipped.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Expedite {
    /// The reason (a CVE, an incident); required.
    #[x_kube(validation = Rule::new("self.trim() != ''").message("an expedite needs a reason, e.g. the CVE it fixes"))]
    pub reason: String,
    /// Who expedited (a person or `annotation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// Where a rebuild is; Kubernetes API conventions' `phase`, one of seven values.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum RebuildPhase {
    /// Held until `dueAt`.
    #[default]
    Waiting,
    /// The trigger was fired; the build has not been seen running.
    Triggered,
    /// The build runs.
    Running,
    /// The build finished and its result was verified (built on the pinned digests).
    Succeeded,
    /// The build failed `attempts` times; see the `Ready` condition's message.
    Failed,
    /// A newer update of the same base replaced this one before it triggered.
    Superseded,
    /// Not built: blocked digest, policy, or signature verdict; see the message.
    Skipped,
}

/// What the controller observed, written with server-side apply under one field manager.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ImageFactoryRebuildStatus {
    /// The phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RebuildPhase>,
    /// End of the hold (discovered-at + soak period, or now when expedited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<Time>,
    /// Trigger attempts so far (count).
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub attempts: u32,
    /// What the trigger started: a Job name, a Promotion name, a workflow run URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_ref: Option<String>,
    /// Digest of the rebuilt image, once verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_digest: Option<String>,
    /// A one-line human summary of the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Workloads (count; a Deployment, StatefulSet, DaemonSet, CronJob… counted once,
    /// its Pods folded in) still running a digest of the image older than this
    /// rebuild's result. Set on the image's latest succeeded rebuild while the
    /// controller tracks workloads (`controller --workloads`); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub stale_workloads: Option<u32>,
    /// Standard conditions (`Ready`, `Held`), each with `observedGeneration`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A label value for `text` (an image or Freight name): its [`crate::reference::slug`],
/// at most 63 characters, no leading or trailing `-` (Kubernetes label value syntax).
pub fn label_value(text: &str) -> String {
    let mut s = crate::reference::slug(text);
    s.truncate(MAX_NAME_LEN);
    s.trim_matches('-').to_string()
}

/// The CRD of [`ImageFactoryRebuild`] as YAML, with a header saying it is generated.
///
/// # Errors
///
/// When the CRD cannot be serialized (it always can; the error is passed on, not hidden).
pub fn crd_yaml() -> Result<String, serde_saphyr::ser::Error> {
    let body = serde_saphyr::to_string(&ImageFactoryRebuild::crd())?;
    Ok(format!(
        "# Generated by `image-factory crds`; do not edit (a test fails when it drifts).\n{body}"
    ))
}

/// The files `image-factory crds` writes: `(file name, content)`.
///
/// # Errors
///
/// As [`crd_yaml`].
pub fn crd_files() -> Result<Vec<(String, String)>, serde_saphyr::ser::Error> {
    let name = format!("{GROUP}_imagefactoryrebuilds.yaml");
    Ok(vec![(name, crd_yaml()?)])
}

/// Writes every CRD into `dir` (created when missing), each through a temporary file and a
/// rename so a reader never sees half a file. Returns the paths written.
///
/// # Errors
///
/// [`std::io::Error`] when `dir` cannot be created or a file cannot be written; the YAML
/// serialization error is returned as `InvalidData`.
pub fn write_crds(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let files = crd_files().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (name, content) in files {
        let path = dir.join(&name);
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content)?;
        std::fs::rename(&tmp, &path)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Rebuild objects are named by the engine's rebuild id: whatever the image name,
        /// it is a DNS-1123 label of at most 63 characters (a valid object name and
        /// label value).
        #[test]
        fn any_rebuild_id_is_an_object_name(image in "\\PC{0,200}", pin in "\\PC{0,50}") {
            let name = crate::runtime::RebuildId::derive(&image, "r/x:1", &[pin]).to_string();
            let label = regex::Regex::new("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").unwrap();
            proptest::prop_assert!(name.len() <= MAX_NAME_LEN && label.is_match(&name), "{}", name);
        }
    }

    #[test]
    fn the_crd_names_printer_columns_and_rules_are_as_documented() {
        let crd = serde_json::to_value(ImageFactoryRebuild::crd()).unwrap();
        assert_eq!(
            crd["metadata"]["name"],
            "imagefactoryrebuilds.imagefactory.dev"
        );
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert_eq!(crd["spec"]["names"]["shortNames"][0], "ifr");
        assert_eq!(crd["spec"]["names"]["categories"][0], "imagefactory");
        let version = &crd["spec"]["versions"][0];
        let columns: Vec<_> = version["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(columns, ["Image", "Base", "Phase", "Due", "Stale", "Age"]);
        assert!(version["subresources"]["status"].is_object());
        let text = crd.to_string();
        for rule in [
            "self == oldSelf",
            "self.trim() != ''",
            "sha256:[a-f0-9]{64}",
            "maxItems",
        ] {
            assert!(text.contains(rule), "{rule} missing");
        }
        let phases = &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
            ["phase"]["enum"];
        assert_eq!(phases.as_array().unwrap().len(), 7, "{phases}");
    }
}
