//! Kargo resources: the Warehouses we generate for base and external images, the
//! Stages we generate for images built through a Kargo Promotion (`kargo.stages`), and
//! the typed `Freight`, `Stage` and `Promotion` the controller and the `kargoPromotion`
//! trigger read and write.
//!
//! Field names are Kargo's own (`kargo.akuity.io/v1alpha1`, Warehouse CRD and the image
//! subscription schema `pkg/subscription/schemas/image.json`). Kargo ≥ 1.11 rejects the
//! retired `allowTags` / `ignoreTags`; we only write `allowTagsRegexes` /
//! `ignoreTagsRegexes`.

use std::collections::{BTreeMap, BTreeSet};
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
    fn a_stage_requests_each_warehouse_once_and_promotes_with_the_task() {
        let r = Reference::parse("registry.example.com/team/app:1").unwrap();
        let task = PromotionTaskReference {
            kind: TaskKind::PromotionTask,
            name: "build-image".into(),
        };
        let warehouses = ["python-3-12-slim", "debian", "python-3-12-slim"].map(String::from);
        let s = stage("app-build", "images", "team/app", &r, &warehouses, &task);
        let yaml = crate::state::render(std::path::Path::new("stages/app-build.yaml"), &s).unwrap();
        assert_eq!(
            yaml,
            "\
# Written by image-factory. Do not edit: images.yaml is the source of truth.
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata:
  annotations:
    imagefactory.dev/reference: registry.example.com/team/app:1
  labels:
    app.kubernetes.io/managed-by: image-factory
    imagefactory.dev/image: team-app
  name: app-build
  namespace: images
spec:
  requestedFreight:
  - origin:
      kind: Warehouse
      name: debian
    sources:
      direct: true
  - origin:
      kind: Warehouse
      name: python-3-12-slim
    sources:
      direct: true
  promotionTemplate:
    spec:
      steps:
      - task:
          kind: PromotionTask
          name: build-image
"
        );
        // It reads back as the trigger reads a Stage from the API.
        let back: Stage = serde_saphyr::from_str(&yaml).unwrap();
        assert_eq!(back, s);
        assert_eq!(
            back.warehouses().into_iter().collect::<Vec<_>>(),
            ["debian", "python-3-12-slim"]
        );
        assert_eq!(back.steps().len(), 1);
    }

    #[test]
    fn a_stage_written_by_hand_keeps_what_we_do_not_read() {
        let text = "\
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata: {name: test, namespace: demo}
spec:
  shard: east
  requestedFreight:
  - origin: {kind: Warehouse, name: nginx}
    sources: {stages: [dev], requiredSoakTime: 1h}
  promotionTemplate:
    spec:
      vars: [{name: gitRepo, value: 'https://git.example/x.git'}]
      steps:
      - uses: git-clone
        as: clone
        config: {repoURL: '${{ vars.gitRepo }}', checkout: [{branch: main, path: ./src}]}
      - task: {name: update-manifests}
status: {phase: Steady}
";
        let s: Stage = serde_saphyr::from_str(text).unwrap();
        assert_eq!(s.warehouses().into_iter().collect::<Vec<_>>(), ["nginx"]);
        assert_eq!(
            s.vars(),
            [ExpressionVariable::new(
                "gitRepo",
                "https://git.example/x.git"
            )]
        );
        let steps = s.steps();
        assert_eq!(steps[0].uses.as_deref(), Some("git-clone"));
        assert_eq!(steps[0].other["as"], "clone");
        assert_eq!(steps[0].other["config"]["checkout"][0]["branch"], "main");
        assert_eq!(
            steps[1].task.as_ref().unwrap().kind,
            TaskKind::PromotionTask
        );
        assert_eq!(s.spec.other["shard"], "east");
        // A Stage without a template has no steps to promote with.
        let bare: Stage =
            serde_saphyr::from_str("metadata: {name: x}\nspec: {requestedFreight: []}\n").unwrap();
        assert!(bare.steps().is_empty() && bare.vars().is_empty());
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
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
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

/// Implements [`kube::Resource`] for a namespaced Kargo kind whose struct has a
/// `metadata: ObjectMeta` field (hand-written: these types carry
/// only the fields we use, so they are not derived from a CRD).
macro_rules! kargo_resource {
    ($type:ty, $kind:literal, $plural:literal) => {
        impl kube::Resource for $type {
            type DynamicType = ();
            type Scope = k8s_openapi::NamespaceResourceScope;

            fn kind(_: &()) -> std::borrow::Cow<'_, str> {
                $kind.into()
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
            fn plural(_: &()) -> std::borrow::Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.metadata
            }
            fn meta_mut(
                &mut self,
            ) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

// Kargo's CRD names the plural `freights`.
kargo_resource!(Freight, "Freight", "freights");

/// Opaque fields of a Kargo object we carry over without reading them (a step's
/// `config`, `if`, `retry`; a Stage's `shard`, `verification`), by field name.
pub type Opaque = BTreeMap<String, serde_json::Value>;

/// A Kargo `Stage` (`kargo.akuity.io/v1alpha1`, namespaced in its Project): what we
/// generate for an image whose trigger is `kargoPromotion` (`kargo.stages: true`), and
/// what that trigger reads. Only the fields we use are typed; the rest of `spec` is kept
/// in [`StageSpec::other`], `status` is ignored (`../shared/kargo/crds/kargo.akuity.io_stages.yaml`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stage {
    /// [`API_VERSION`].
    #[serde(default = "freight_api_version")]
    pub api_version: String,
    /// `Stage`.
    #[serde(default = "stage_kind")]
    pub kind: String,
    /// Standard object metadata.
    pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    /// The spec.
    #[serde(default)]
    pub spec: StageSpec,
}

/// `Stage.spec`: `requestedFreight` (required, at least one) and `promotionTemplate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageSpec {
    /// Where the Stage takes Freight from.
    #[serde(default)]
    pub requested_freight: Vec<FreightRequest>,
    /// How a Promotion into the Stage is made; without steps, Kargo cannot promote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion_template: Option<PromotionTemplate>,
    /// `shard`, `targets`, `vars`, `verification`: carried, not read.
    #[serde(flatten)]
    pub other: Opaque,
}

/// One item of `Stage.spec.requestedFreight`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FreightRequest {
    /// The Warehouse the Freight comes from.
    pub origin: FreightOrigin,
    /// Where the Stage may take it from.
    #[serde(default)]
    pub sources: FreightSources,
}

/// `requestedFreight[].sources`: `direct` (straight from the Warehouse) or `stages`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FreightSources {
    /// Freight may come straight from the Warehouse.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub direct: bool,
    /// Upstream Stages the Freight must have passed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<String>,
}

/// `Stage.spec.promotionTemplate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PromotionTemplate {
    /// The template of the Promotion's spec.
    #[serde(default)]
    pub spec: PromotionTemplateSpec,
}

/// `promotionTemplate.spec`: `vars` and `steps`, as a Promotion's spec takes them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PromotionTemplateSpec {
    /// Variables the steps' expressions read as `vars.NAME`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vars: Vec<ExpressionVariable>,
    /// The steps (CRD: at least one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<PromotionStep>,
}

/// Kargo's `ExpressionVariable`: `name` matches `^[a-zA-Z_]\w*$`; `value` may hold
/// `${{ … }}` expressions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpressionVariable {
    /// The variable's name.
    pub name: String,
    /// Its value (Go's `omitempty`: empty is left out).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
}

impl ExpressionVariable {
    /// `name` = `value`.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// One promotion step: `uses` a step runner, or (in a Stage's template) refers to a
/// `task`; `as`, `if`, `config`, `vars`, `retry`, `continueOnError` are carried as
/// written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PromotionStep {
    /// The step runner (`git-clone`, `argocd-update`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<String>,
    /// A `PromotionTask` / `ClusterPromotionTask` whose steps Kargo inflates in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<PromotionTaskReference>,
    /// Every other field of the step, unread.
    #[serde(flatten)]
    pub other: Opaque,
}

/// `steps[].task`: a reference to a (Cluster)PromotionTask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionTaskReference {
    /// `PromotionTask` (Kargo's default) or `ClusterPromotionTask`.
    #[serde(default)]
    pub kind: TaskKind,
    /// The task's name (DNS subdomain, at most 253 characters).
    pub name: String,
}

/// The kinds a step's `task.kind` may name (Kargo's enum).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskKind {
    /// A task in the Stage's Project.
    #[default]
    PromotionTask,
    /// A task shared by every Project.
    ClusterPromotionTask,
}

impl TaskKind {
    /// Kargo's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PromotionTask => "PromotionTask",
            Self::ClusterPromotionTask => "ClusterPromotionTask",
        }
    }

    /// The kind spelled as Kargo spells it (case-sensitive), if it is one.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "PromotionTask" => Some(Self::PromotionTask),
            "ClusterPromotionTask" => Some(Self::ClusterPromotionTask),
            _ => None,
        }
    }
}

fn stage_kind() -> String {
    "Stage".to_string()
}

fn promotion_kind() -> String {
    "Promotion".to_string()
}

kargo_resource!(Stage, "Stage", "stages");

impl Stage {
    /// The Warehouses the Stage requests Freight from (`requestedFreight[].origin.name`).
    pub fn warehouses(&self) -> BTreeSet<&str> {
        self.spec
            .requested_freight
            .iter()
            .filter(|r| r.origin.kind.is_empty() || r.origin.kind == "Warehouse")
            .map(|r| r.origin.name.as_str())
            .collect()
    }

    /// `spec.promotionTemplate.spec.steps`, empty when there is no template.
    pub fn steps(&self) -> &[PromotionStep] {
        self.spec
            .promotion_template
            .as_ref()
            .map_or(&[], |t| t.spec.steps.as_slice())
    }

    /// `spec.promotionTemplate.spec.vars`, empty when there is no template.
    pub fn vars(&self) -> &[ExpressionVariable] {
        self.spec
            .promotion_template
            .as_ref()
            .map_or(&[], |t| t.spec.vars.as_slice())
    }
}

/// The Stage that managed image `image` (reference `reference`) is promoted — built —
/// through: named `name`, in Project `project`, taking Freight directly from each of
/// `warehouses` (the generated Warehouses of the image's base and external images;
/// sorted and deduplicated here), promoting with the one step `{task: task}`.
///
/// Labels: `app.kubernetes.io/managed-by: image-factory` and `imagefactory.dev/image`
/// (the image name as a label value); annotation `imagefactory.dev/reference`.
pub fn stage(
    name: &str,
    project: &str,
    image: &str,
    reference: &Reference,
    warehouses: &[String],
    task: &PromotionTaskReference,
) -> Stage {
    let origins: BTreeSet<&String> = warehouses.iter().collect();
    let requested_freight = origins
        .into_iter()
        .map(|w| FreightRequest {
            origin: FreightOrigin {
                kind: "Warehouse".to_string(),
                name: w.clone(),
            },
            sources: FreightSources {
                direct: true,
                stages: Vec::new(),
            },
        })
        .collect();
    Stage {
        api_version: API_VERSION.to_string(),
        kind: stage_kind(),
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(project.to_string()),
            labels: Some(BTreeMap::from([
                (LABEL_MANAGED_BY.to_string(), MANAGER.to_string()),
                (LABEL_IMAGE.to_string(), crate::crd::label_value(image)),
            ])),
            annotations: Some(BTreeMap::from([(
                ANNOTATION_REFERENCE.to_string(),
                reference.to_string(),
            )])),
            ..Default::default()
        },
        spec: StageSpec {
            requested_freight,
            promotion_template: Some(PromotionTemplate {
                spec: PromotionTemplateSpec {
                    vars: Vec::new(),
                    steps: vec![PromotionStep {
                        uses: None,
                        task: Some(task.clone()),
                        other: Opaque::new(),
                    }],
                },
            }),
            other: Opaque::new(),
        },
    }
}

/// A Kargo `Promotion` (`kargo.akuity.io/v1alpha1`, namespaced): a request to move one
/// piece of Freight into a Stage by running `steps`. Kargo's controller runs it and
/// writes `status.phase` (status subresource). Its spec is immutable once created.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Promotion {
    /// [`API_VERSION`].
    #[serde(default = "freight_api_version")]
    pub api_version: String,
    /// `Promotion`.
    #[serde(default = "promotion_kind")]
    pub kind: String,
    /// Standard object metadata.
    pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    /// What to promote where, and how.
    #[serde(default)]
    pub spec: PromotionSpec,
    /// Kargo's account of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PromotionStatus>,
}

kargo_resource!(Promotion, "Promotion", "promotions");

/// `Promotion.spec` (`stage` and `steps` required; exactly one of `freight` or `origin`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PromotionSpec {
    /// The Stage promoted into.
    pub stage: String,
    /// The Freight's name (its ID).
    pub freight: String,
    /// The steps, as in the Stage's template; Kargo's admission webhook inflates task
    /// references into the tasks' steps when the Promotion is created.
    #[serde(default)]
    pub steps: Vec<PromotionStep>,
    /// Variables for the steps' expressions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vars: Vec<ExpressionVariable>,
}

/// `Promotion.status`, the fields we read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionStatus {
    /// `Pending`, `Running`, `Succeeded`, `Failed`, `Errored` or `Aborted`.
    #[serde(default)]
    pub phase: String,
    /// Why it ended as it did (set with `Failed` and `Errored`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl Promotion {
    /// Kargo's verdict: `Some(Ok)` for `Succeeded`, `Some(Err(phase: message))` for
    /// `Failed`, `Errored` or `Aborted` (Kargo's terminal phases), `None` while it is
    /// pending or running.
    pub fn verdict(&self) -> Option<Result<(), String>> {
        let status = self.status.as_ref()?;
        match status.phase.as_str() {
            "Succeeded" => Some(Ok(())),
            phase @ ("Failed" | "Errored" | "Aborted") => Some(Err(if status.message.is_empty() {
                format!("{phase} (no message)")
            } else {
                format!("{phase}: {}", status.message)
            })),
            _ => None,
        }
    }
}
