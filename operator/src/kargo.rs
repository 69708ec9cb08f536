//! Kargo resources: the Warehouses we generate for base and external images.
//!
//! Field names are Kargo's own (`kargo.akuity.io/v1alpha1`, Warehouse CRD and the image
//! subscription schema `pkg/subscription/schemas/image.json`). Kargo ≥ 1.11 rejects the
//! retired `allowTags` / `ignoreTags`; we only write `allowTagsRegexes` /
//! `ignoreTagsRegexes`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::enrollment::WarehouseConfig;
use crate::reference::Reference;
use crate::registry::TagSelection;

/// Kargo's API group and version.
pub const API_VERSION: &str = "kargo.akuity.io/v1alpha1";
/// Label naming the image (enrollment or discovered-base name) a Warehouse watches;
/// the controller maps Freight back to the image through it.
pub const LABEL_IMAGE: &str = "imagefactory.dev/image";
/// Standard label marking objects we own.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGER: &str = "image-factory";
/// Annotation with the full normalized reference watched (label values cannot hold it).
pub const ANNOTATION_REFERENCE: &str = "imagefactory.dev/reference";

/// Object metadata, the subset we write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// Object name (DNS subdomain).
    pub name: String,
    /// Kargo Project namespace.
    pub namespace: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
}

/// A Kargo Warehouse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Warehouse {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// Always `Warehouse`.
    pub kind: String,
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: WarehouseSpec,
}

/// `Warehouse.spec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WarehouseSpec {
    /// Go duration string (`5m0s`), CRD pattern `^([0-9]+(\.[0-9]+)?(s|m|h))+$`.
    pub interval: String,
    /// `Automatic`: Kargo creates Freight for each discovered revision.
    pub freight_creation_policy: String,
    /// One image subscription.
    pub subscriptions: Vec<Subscription>,
}

/// One item of `spec.subscriptions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// An image subscription.
    pub image: ImageSubscription,
}

/// Kargo's image subscription (`image.json`, `additionalProperties: false`): the
/// repository plus the one model of what to select from it, [`TagSelection`], whose
/// fields are flattened after `repoURL` exactly as Kargo spells them.
///
/// This is also what our own watcher applies: [`Self::selection`] is the
/// [`TagSelection`] to compile, so the watcher and Kargo cannot read different settings
/// from the same enrollment. Kargo's defaults for omitted fields are the
/// `registry::select::KARGO_DEFAULT_*` constants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSubscription {
    /// Repository without tag (`docker.io/library/python`).
    #[serde(rename = "repoURL")]
    pub repo_url: String,
    /// Strategy, constraint, tag regexes, platform, `discoveryLimit`, `strictSemvers`.
    #[serde(flatten)]
    pub selection: TagSelection,
}

impl ImageSubscription {
    /// The tag selection the watcher applies for this subscription.
    pub fn selection(&self) -> &TagSelection {
        &self.selection
    }
}

impl From<&WarehouseConfig> for TagSelection {
    /// The enrollment's validated settings as a tag selection. Every field is copied
    /// as configured; omitted ones keep Kargo's defaults inside [`TagSelection`], so
    /// this conversion and the Warehouse ([`ImageSubscription::from`]) cannot disagree.
    fn from(config: &WarehouseConfig) -> Self {
        TagSelection {
            image_selection_strategy: config.image_selection_strategy,
            constraint: config.constraint.clone(),
            allow_tags_regexes: config.allow_tags_regexes.clone(),
            ignore_tags_regexes: config.ignore_tags_regexes.clone(),
            platform: config.platform.clone(),
            discovery_limit: config.discovery_limit,
            strict_semvers: config.strict_semvers,
        }
    }
}

impl From<&WarehouseConfig> for ImageSubscription {
    /// The subscription written into the Warehouse for an enrollment's settings.
    fn from(config: &WarehouseConfig) -> Self {
        ImageSubscription {
            repo_url: config.repo_url.clone(),
            selection: TagSelection::from(config),
        }
    }
}

/// The Warehouse that watches `reference` for image `name` with `config`, in Kargo
/// Project `project`. The Warehouse is named after the image.
pub fn warehouse(
    name: &str,
    reference: &Reference,
    config: &WarehouseConfig,
    project: &str,
) -> Warehouse {
    let labels = BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), MANAGER.to_string()),
        (LABEL_IMAGE.to_string(), name.to_string()),
    ]);
    let annotations = BTreeMap::from([(ANNOTATION_REFERENCE.to_string(), reference.to_string())]);
    Warehouse {
        api_version: API_VERSION.to_string(),
        kind: "Warehouse".to_string(),
        metadata: ObjectMeta {
            name: name.to_string(),
            namespace: project.to_string(),
            labels,
            annotations,
        },
        spec: WarehouseSpec {
            interval: go_duration(config.interval),
            freight_creation_policy: "Automatic".to_string(),
            subscriptions: vec![Subscription {
                image: ImageSubscription::from(config),
            }],
        },
    }
}

/// A duration the way Go's `time.Duration.String` prints whole seconds (`5m0s`, `2h0m0s`,
/// `45s`), which is what Kubernetes `metav1.Duration` fields hold.
pub fn go_duration(d: Duration) -> String {
    let secs = d.as_secs().max(1);
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrollment::{SelectionStrategy, DEFAULT_INTERVAL};

    #[test]
    fn freight_ids_follow_kargos_rule() {
        let mut f = Freight::new("images", "");
        f.origin = FreightOrigin {
            kind: "Warehouse".into(),
            name: "base".into(),
        };
        // Images in either order give the same id: the artifacts are sorted.
        for (a, b) in [
            ("ghcr.io/org/tool", "docker.io/library/alpine"),
            ("docker.io/library/alpine", "ghcr.io/org/tool"),
        ] {
            let image = |repo: &str| FreightImage {
                repo_url: Some(repo.into()),
                tag: Some(if repo.contains("alpine") { "3.20" } else { "1" }.into()),
                digest: Some(format!(
                    "sha256:{}",
                    if repo.contains("alpine") { "a" } else { "b" }.repeat(64)
                )),
            };
            f.images = vec![image(a), image(b)];
            // sha1("Warehouse/base:" + sorted "repoURL:tag@digest" joined by "|"), by Python's hashlib.
            assert_eq!(f.generate_id(), "9ac47b88153c243a3f735cfd94a1c674559d4bf3");
        }
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(DEFAULT_INTERVAL), "5m0s");
        assert_eq!(go_duration(Duration::from_secs(45)), "45s");
        assert_eq!(go_duration(Duration::from_secs(86400)), "24h0m0s");
    }

    #[test]
    fn writes_kargo_field_names() {
        let r = Reference::parse("python:3.12-slim").unwrap();
        let config = WarehouseConfig {
            repo_url: r.repo_url(),
            image_selection_strategy: SelectionStrategy::Digest,
            constraint: Some("3.12-slim".into()),
            allow_tags_regexes: vec![],
            ignore_tags_regexes: vec!["-rc".into()],
            platform: Some("linux/amd64".into()),
            discovery_limit: 20,
            strict_semvers: None,
            interval: DEFAULT_INTERVAL,
        };
        let w = serde_json::to_value(warehouse("python-3-12-slim", &r, &config, "image-factory"))
            .unwrap();
        let image = &w["spec"]["subscriptions"][0]["image"];
        assert_eq!(image["repoURL"], "docker.io/library/python");
        assert_eq!(image["imageSelectionStrategy"], "Digest");
        assert_eq!(image["ignoreTagsRegexes"][0], "-rc");
        assert!(image.get("allowTagsRegexes").is_none());
        assert_eq!(w["metadata"]["labels"][LABEL_IMAGE], "python-3-12-slim");
    }
}

/// A Kargo `Freight` (`kargo.akuity.io/v1alpha1`, namespaced), the subset we read.
///
/// Freight has no `spec`: `alias`, `origin`, `images[]` and `discoveredAt` sit next to
/// `metadata` (`../shared/kargo/crds/kargo.akuity.io_freights.yaml`), so this type has a
/// hand-written [`kube::Resource`] impl instead of `#[derive(CustomResource)]`. Kargo puts
/// no Warehouse label on Freight: filter on [`FreightOrigin::name`] client-side. The
/// object name is Kargo's Freight ID (a SHA-1 hex of the artifacts), our idempotency key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Freight {
    /// `kargo.akuity.io/v1alpha1` ([`API_VERSION`]).
    #[serde(default = "freight_api_version")]
    pub api_version: String,
    /// `Freight`.
    #[serde(default = "freight_kind")]
    pub kind: String,
    /// Standard object metadata.
    pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    /// Kargo's human-friendly alias (`wonky-wombat`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Where the Freight comes from: a Warehouse.
    #[serde(default)]
    pub origin: FreightOrigin,
    /// The images it carries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<FreightImage>,
    /// When the Warehouse discovered the artifacts; absent on old Kargo versions (then
    /// `metadata.creationTimestamp` stands in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovered_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

/// `Freight.origin`: `kind` is always `Warehouse`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreightOrigin {
    /// `Warehouse`.
    pub kind: String,
    /// The Warehouse's name.
    pub name: String,
}

/// `Freight.images[]`: Kargo's schema requires none of its fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FreightImage {
    /// The repository, without tag or digest (Kargo's spelling).
    #[serde(rename = "repoURL", default, skip_serializing_if = "Option::is_none")]
    pub repo_url: Option<String>,
    /// The tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The digest (`sha256:…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

fn freight_api_version() -> String {
    API_VERSION.to_string()
}

fn freight_kind() -> String {
    "Freight".to_string()
}

impl Freight {
    /// An empty Freight named `name` in `namespace` (the Kargo Project), with
    /// `apiVersion` and `kind` set, as a base for tests and replays.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            api_version: freight_api_version(),
            kind: freight_kind(),
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Kargo's Freight ID for this Freight's origin and images: the lowercase hex SHA-1 of
    /// `Kind/name:` followed by the sorted `repoURL:tag@digest` of every image joined
    /// with `|` (Kargo's `Freight.GenerateID` in `api/v1alpha1/freight_types.go`; Git
    /// commits and charts, which we never carry, would join the same list). Kargo names
    /// the Freight object by it, so it is our idempotency key.
    pub fn generate_id(&self) -> String {
        use sha1::Digest as _;
        let mut artifacts: Vec<String> = self
            .images
            .iter()
            .map(|i| {
                format!(
                    "{}:{}@{}",
                    i.repo_url.as_deref().unwrap_or_default(),
                    i.tag.as_deref().unwrap_or_default(),
                    i.digest.as_deref().unwrap_or_default()
                )
            })
            .collect();
        artifacts.sort();
        let text = format!(
            "{}/{}:{}",
            self.origin.kind,
            self.origin.name,
            artifacts.join("|")
        );
        crate::runtime::hex_of(&sha1::Sha1::digest(text.as_bytes()))
    }

    /// Discovered-at: `discoveredAt`, else `metadata.creationTimestamp`.
    pub fn discovered_at(&self) -> Option<jiff::Timestamp> {
        self.discovered_at
            .as_ref()
            .or(self.metadata.creation_timestamp.as_ref())
            .map(|t| t.0)
    }
}

impl kube::Resource for Freight {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> std::borrow::Cow<'_, str> {
        "Freight".into()
    }
    fn group(_: &()) -> std::borrow::Cow<'_, str> {
        "kargo.akuity.io".into()
    }
    fn version(_: &()) -> std::borrow::Cow<'_, str> {
        "v1alpha1".into()
    }
    fn api_version(_: &()) -> std::borrow::Cow<'_, str> {
        API_VERSION.into()
    }
    /// Kargo's CRD names the plural `freights`.
    fn plural(_: &()) -> std::borrow::Cow<'_, str> {
        "freights".into()
    }
    fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &mut self.metadata
    }
}
