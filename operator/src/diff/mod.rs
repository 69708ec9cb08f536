//! `image-factory diff`: what a change to `images.yaml` (and the Dockerfiles it points
//! at) does, compared with the same file at a git ref.
//!
//! ```text
//! images.yaml @ GIT_REF ──tree::materialize──▶ temp dir ──analyze::model──▶ Model ─┐
//! images.yaml (working tree) ─────────────────────────────analyze::model──▶ Model ─┤
//!                                           Snapshot::of ×2 ──▶ compare ──▶ Diff ◀─┘
//!                                                   render::{text, json, github}(Diff)
//! ```
//!
//! Both sides go through the same analysis `analyze` runs (git sources fetched into the
//! same cache), then [`Snapshot::of`] keeps the plain facts a reviewer cares about and
//! [`compare`] turns two snapshots into a [`Diff`]: images added, removed or moved between
//! managed, external and discovered base; discovered bases; dependency edges; the
//! generated Kargo Warehouses; rebuild policies; unresolved `FROM` references. Both
//! steps are pure; rendering is in [`render`], the git side in [`tree`].

pub mod render;
pub mod tree;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::analyze::Model;
use crate::dockerfile::From;
use crate::enrollment::{self, Image, Source, Trigger};
use crate::graph::NodeKind;

/// The facts of one image (a node of the graph) that a diff compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    /// Normalized reference.
    pub reference: String,
    /// Managed, external or discovered base.
    pub kind: NodeKind,
    /// 1-based line of its entry in `images.yaml`; `None` for a discovered base.
    pub line: Option<u64>,
    /// Enrollment fields other than the rebuild policy (`reference`, `tags`, `source`,
    /// `dockerfile`, `context`, `buildArgs`), each as one display string.
    pub fields: BTreeMap<String, String>,
    /// The rebuild policy (`delay`, and for managed images `cascadeDelay`,
    /// `autoRebuild`, `maxAttempts`, `trigger`, `test`), each as one display string.
    pub policy: BTreeMap<String, String>,
}

/// How a dependent uses a base: the instructions (`from`, `copy`, `mount`) and the
/// digests it pins the base to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EdgeUse {
    /// `from`, `copy`, `mount`, sorted.
    pub via: Vec<String>,
    /// Pinned digests (`sha256:…`), sorted.
    pub pinned: Vec<String>,
}

/// One side of a diff: the plain facts of one analysis ([`Model`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Every node of the graph, by name.
    pub nodes: BTreeMap<String, NodeFacts>,
    /// Every edge, by `(base, dependent)`.
    pub edges: BTreeMap<(String, String), EdgeUse>,
    /// Every generated Kargo Warehouse as JSON, by name.
    pub warehouses: BTreeMap<String, serde_json::Value>,
    /// `(managed image, FROM text as written)` the analysis could not resolve.
    pub unresolved: BTreeSet<(String, String)>,
}

impl Snapshot {
    /// The facts of `model`: nodes, edges, the Warehouses `analyze` would generate
    /// ([`Model::warehouses`]) and the unresolved `FROM` references. Pure.
    pub fn of(model: &Model) -> Self {
        let images: BTreeMap<&str, &Image> = model
            .enrollment
            .images
            .iter()
            .map(|i| (i.name.as_str(), i))
            .collect();
        let nodes = model
            .graph
            .nodes()
            .into_iter()
            .map(|node| {
                let image = images.get(node.name.as_str()).copied();
                let facts = NodeFacts {
                    reference: node.reference.to_string(),
                    kind: node.kind,
                    line: image.map(|i| i.at.line),
                    fields: image.map(image_fields).unwrap_or_default(),
                    policy: policy_fields(node.kind, &node.rebuild, image),
                };
                (node.name.clone(), facts)
            })
            .collect();
        let edges = model
            .graph
            .edges()
            .into_iter()
            .map(|(base, dependent, edge)| {
                let usage = EdgeUse {
                    via: edge.via.iter().cloned().collect(),
                    pinned: edge.pinned.iter().cloned().collect(),
                };
                ((base.name.clone(), dependent.name.clone()), usage)
            })
            .collect();
        let warehouses = model
            .warehouses()
            .into_iter()
            .filter_map(|(name, w)| Some((name, serde_json::to_value(w).ok()?)))
            .collect();
        let unresolved = model
            .analyzed
            .iter()
            .flat_map(|(name, a)| {
                a.analysis.stages.iter().filter_map(move |s| match &s.from {
                    From::Unresolved { raw } => Some((name.clone(), raw.clone())),
                    _ => None,
                })
            })
            .collect();
        Self {
            nodes,
            edges,
            warehouses,
            unresolved,
        }
    }

    /// The line of each enrolled image's entry in `images.yaml`, by name.
    pub fn lines(&self) -> BTreeMap<String, u64> {
        self.nodes
            .iter()
            .filter_map(|(name, n)| Some((name.clone(), n.line?)))
            .collect()
    }

    /// The names of the images built directly on `base`, sorted.
    fn dependents(&self, base: &str) -> Vec<String> {
        self.edges
            .keys()
            .filter(|(b, _)| b == base)
            .map(|(_, d)| d.clone())
            .collect()
    }
}

/// The enrollment fields compared as "changed", as display strings.
fn image_fields(image: &Image) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::from([
        ("reference".to_string(), image.reference.to_string()),
        (
            "tags".to_string(),
            image.tags.iter().cloned().collect::<Vec<_>>().join(", "),
        ),
    ]);
    if let Some(build) = &image.build {
        let source = match &build.source {
            Source::Path { raw, .. } => format!("path {raw}"),
            Source::Git { url, reference } => format!(
                "git {}{}",
                crate::source::redact_url(url),
                reference
                    .as_deref()
                    .map(|r| format!(" ref {r}"))
                    .unwrap_or_default()
            ),
        };
        fields.insert("source".to_string(), source);
        fields.insert("dockerfile".to_string(), build.dockerfile.clone());
        fields.insert("context".to_string(), build.context.clone());
        if !build.build_args.is_empty() {
            let args: Vec<String> = build
                .build_args
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            fields.insert("buildArgs".to_string(), args.join(" "));
        }
    }
    fields
}

/// The rebuild policy as display strings. Only what applies to the kind is listed: a
/// base or external image's `delay` is the soak of its updates; a managed image's
/// `delay` applies only when it sets its own (else the updated base's applies), and its
/// cascade delay, `autoRebuild`, attempts, trigger and test follow.
fn policy_fields(
    kind: NodeKind,
    policy: &enrollment::RebuildPolicy,
    image: Option<&Image>,
) -> BTreeMap<String, String> {
    let duration = |d| humantime::format_duration(d).to_string();
    let mut fields = BTreeMap::new();
    if kind != NodeKind::Managed {
        fields.insert("delay".to_string(), duration(policy.delay));
        return fields;
    }
    fields.insert(
        "delay".to_string(),
        if policy.own_delay {
            duration(policy.delay)
        } else {
            "the updated base's".to_string()
        },
    );
    fields.insert("cascadeDelay".to_string(), duration(policy.cascade_delay));
    fields.insert("autoRebuild".to_string(), policy.auto_rebuild.to_string());
    fields.insert("maxAttempts".to_string(), policy.max_attempts.to_string());
    if let Some(build) = image.and_then(|i| i.build.as_ref()) {
        fields.insert(
            "trigger".to_string(),
            build
                .trigger
                .as_ref()
                .map_or_else(|| "none".to_string(), trigger_summary),
        );
        if let Some(test) = &build.test {
            fields.insert("test".to_string(), command_summary(test));
        }
    }
    fields
}

/// A trigger in one line: its backend and what identifies the build it starts. Secrets
/// are left out (their references too); URLs lose their user info.
fn trigger_summary(trigger: &Trigger) -> String {
    match trigger {
        Trigger::Command(command) => format!("command {}", command_summary(command)),
        Trigger::Webhook { url, timeout, .. } => format!(
            "webhook {} (timeout {})",
            crate::source::redact_url(url),
            humantime::format_duration(*timeout)
        ),
        Trigger::GithubWorkflow {
            repository,
            workflow,
            reference,
            inputs,
            ..
        } => {
            let inputs: Vec<String> = inputs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let mut out = format!("githubWorkflow {repository} {workflow}@{reference}");
            if !inputs.is_empty() {
                out.push_str(&format!(" inputs {}", inputs.join(" ")));
            }
            out
        }
        Trigger::KubernetesJob {
            namespace,
            template_config_map,
        } => format!("kubernetesJob {namespace}/{template_config_map}"),
        Trigger::KargoPromotion {
            stage,
            project,
            task,
        } => {
            let mut out = format!("kargoPromotion {project}/{stage}");
            if let Some(task) = task {
                out.push_str(&format!(" task {}", task.name));
            }
            out
        }
    }
}

fn command_summary(command: &enrollment::Command) -> String {
    let program = match &command.program {
        enrollment::Program::Args(args) => args.join(" "),
        enrollment::Program::Shell(line) => format!("sh -c {line}"),
    };
    format!(
        "`{program}` (timeout {})",
        humantime::format_duration(command.timeout)
    )
}

/// One field that differs: its value before and after (`None`: not set on that side).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    /// The field (`delay`, `reference`, `spec.subscriptions[0].image.constraint`, …).
    pub field: String,
    /// The value at the base ref.
    pub before: Option<String>,
    /// The value now.
    pub after: Option<String>,
}

/// An image present on one side only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageEntry {
    /// Its name.
    pub name: String,
    /// Its reference.
    pub reference: String,
    /// Managed or external.
    pub kind: NodeKind,
    /// Line of its entry in the changed `images.yaml`; `None` when removed.
    pub line: Option<u64>,
}

/// An image whose kind changed: managed ↔ external, or a discovered base enrolled (or
/// an enrolled image dropped from `images.yaml` while still used as a base).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Move {
    /// Its name.
    pub name: String,
    /// Its reference now.
    pub reference: String,
    /// The kind at the base ref.
    pub from: NodeKind,
    /// The kind now.
    pub to: NodeKind,
    /// Line of its entry now; `None` when it is no longer enrolled.
    pub line: Option<u64>,
}

/// The changed fields of one image present on both sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Changed {
    /// Its name.
    pub name: String,
    /// Its kind now.
    pub kind: NodeKind,
    /// Line of its entry now; `None` for a discovered base.
    pub line: Option<u64>,
    /// Each field that differs, sorted by field.
    pub changes: Vec<FieldChange>,
}

/// Enrolled images (managed and external) added, removed, moved or changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Images {
    /// Enrolled now, unknown at the base ref.
    pub added: Vec<ImageEntry>,
    /// Enrolled at the base ref, unknown now.
    pub removed: Vec<ImageEntry>,
    /// The kind changed.
    pub moved: Vec<Move>,
    /// Enrollment fields changed (`reference`, `tags`, `source`, `dockerfile`,
    /// `context`, `buildArgs`).
    pub changed: Vec<Changed>,
}

/// A discovered base image: named in a `FROM` but not enrolled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BaseEntry {
    /// Its derived name (also its Warehouse's name).
    pub name: String,
    /// Its reference.
    pub reference: String,
    /// The managed images built directly on it (on the side it exists on).
    pub dependents: Vec<String>,
}

/// Discovered base images that appear or disappear.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Bases {
    /// Discovered now, not a node at the base ref.
    pub added: Vec<BaseEntry>,
    /// Discovered at the base ref, not a node now.
    pub removed: Vec<BaseEntry>,
}

/// A dependency edge `base → dependent`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EdgeEntry {
    /// The image built on.
    pub base: String,
    /// The managed image built on it.
    pub dependent: String,
    /// How (on the side it exists on).
    #[serde(flatten)]
    pub usage: EdgeUse,
}

/// An edge on both sides whose use changed (another instruction, another pin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EdgeChange {
    /// The image built on.
    pub base: String,
    /// The managed image built on it.
    pub dependent: String,
    /// The use at the base ref.
    pub before: EdgeUse,
    /// The use now.
    pub after: EdgeUse,
}

/// Dependency edges added, removed or changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Edges {
    /// New edges.
    pub added: Vec<EdgeEntry>,
    /// Edges gone.
    pub removed: Vec<EdgeEntry>,
    /// Edges whose `via` or `pinned` changed.
    pub changed: Vec<EdgeChange>,
}

/// A generated Warehouse on one side only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WarehouseEntry {
    /// Its name (the image's).
    pub name: String,
    /// The repository it subscribes to.
    #[serde(rename = "repoURL")]
    pub repo_url: String,
    /// Its `imageSelectionStrategy`.
    pub image_selection_strategy: String,
    /// Its `constraint`, if any.
    pub constraint: Option<String>,
}

/// A generated Warehouse on both sides with different content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WarehouseChange {
    /// Its name.
    pub name: String,
    /// Each differing field of the Warehouse object by its path
    /// (`spec.subscriptions[0].image.constraint`), sorted; values as JSON text.
    pub changes: Vec<FieldChange>,
}

/// Generated Kargo Warehouses added, changed or removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Warehouses {
    /// Generated now, not at the base ref.
    pub added: Vec<WarehouseEntry>,
    /// Generated on both sides, different.
    pub changed: Vec<WarehouseChange>,
    /// Generated at the base ref, not now.
    pub removed: Vec<WarehouseEntry>,
}

/// A `FROM` reference the analysis could not resolve.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct UnresolvedEntry {
    /// The managed image.
    pub image: String,
    /// The reference as written.
    pub raw: String,
}

/// Unresolved references that appear or disappear.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Unresolved {
    /// Unresolved now, not at the base ref.
    pub added: Vec<UnresolvedEntry>,
    /// Unresolved at the base ref, not now.
    pub removed: Vec<UnresolvedEntry>,
}

/// What a change does: every list sorted by name (then by the second name), so the
/// same two inputs always give the same value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Diff {
    /// Enrolled images.
    pub images: Images,
    /// Discovered base images.
    pub bases: Bases,
    /// Dependency edges.
    pub edges: Edges,
    /// Generated Kargo Warehouses.
    pub warehouses: Warehouses,
    /// Rebuild policies changed, of images on both sides (same kind or not).
    pub policies: Vec<Changed>,
    /// Unresolved `FROM` references.
    pub unresolved: Unresolved,
}

impl Diff {
    /// Whether the change does nothing this diff can see.
    pub fn is_empty(&self) -> bool {
        self == &Diff::default()
    }
}

/// What changes from `base` (the git ref) to `head` (the working tree). Pure.
///
/// Images are matched by name: a name on one side only is an added or removed image
/// (or discovered base), a name on both sides with another kind a [`Move`]. Edges are
/// matched by `(base, dependent)` names, Warehouses by name, unresolved references by
/// `(image, text)`.
pub fn compare(base: &Snapshot, head: &Snapshot) -> Diff {
    let mut diff = Diff::default();
    for (name, after) in &head.nodes {
        match base.nodes.get(name) {
            None if after.kind == NodeKind::Base => diff.bases.added.push(BaseEntry {
                name: name.clone(),
                reference: after.reference.clone(),
                dependents: head.dependents(name),
            }),
            None => diff.images.added.push(ImageEntry {
                name: name.clone(),
                reference: after.reference.clone(),
                kind: after.kind,
                line: after.line,
            }),
            Some(before) => compare_node(&mut diff, name, before, after),
        }
    }
    for (name, before) in &base.nodes {
        if head.nodes.contains_key(name) {
            continue;
        }
        if before.kind == NodeKind::Base {
            diff.bases.removed.push(BaseEntry {
                name: name.clone(),
                reference: before.reference.clone(),
                dependents: base.dependents(name),
            });
        } else {
            diff.images.removed.push(ImageEntry {
                name: name.clone(),
                reference: before.reference.clone(),
                kind: before.kind,
                line: None,
            });
        }
    }
    compare_edges(&mut diff.edges, base, head);
    compare_warehouses(&mut diff.warehouses, base, head);
    let entry = |(image, raw): &(String, String)| UnresolvedEntry {
        image: image.clone(),
        raw: raw.clone(),
    };
    diff.unresolved.added = head
        .unresolved
        .difference(&base.unresolved)
        .map(entry)
        .collect();
    diff.unresolved.removed = base
        .unresolved
        .difference(&head.unresolved)
        .map(entry)
        .collect();
    diff
}

/// A node on both sides: moved, changed fields, changed policy.
fn compare_node(diff: &mut Diff, name: &str, before: &NodeFacts, after: &NodeFacts) {
    if before.kind != after.kind {
        diff.images.moved.push(Move {
            name: name.to_string(),
            reference: after.reference.clone(),
            from: before.kind,
            to: after.kind,
            line: after.line,
        });
    }
    let mut fields = field_changes(&before.fields, &after.fields);
    // A discovered base has no enrollment fields; its reference is its identity.
    if before.reference != after.reference && !fields.iter().any(|c| c.field == "reference") {
        fields.insert(
            0,
            FieldChange {
                field: "reference".to_string(),
                before: Some(before.reference.clone()),
                after: Some(after.reference.clone()),
            },
        );
    }
    // Moving between kinds adds or drops every build field; the move says it all.
    if before.kind == after.kind && !fields.is_empty() {
        diff.images.changed.push(Changed {
            name: name.to_string(),
            kind: after.kind,
            line: after.line,
            changes: fields,
        });
    }
    let mut policy = field_changes(&before.policy, &after.policy);
    if before.kind != after.kind {
        // Managed-only settings appear or vanish with the move; what still applies
        // on both sides (the soak) is what changed about the policy.
        policy.retain(|c| c.before.is_some() && c.after.is_some());
    }
    if !policy.is_empty() {
        diff.policies.push(Changed {
            name: name.to_string(),
            kind: after.kind,
            line: after.line,
            changes: policy,
        });
    }
}

/// The keys of `before` and `after` whose values differ, sorted.
fn field_changes(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<FieldChange> {
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| FieldChange {
            field: k.clone(),
            before: before.get(k).cloned(),
            after: after.get(k).cloned(),
        })
        .collect()
}

fn compare_edges(edges: &mut Edges, base: &Snapshot, head: &Snapshot) {
    let entry = |(b, d): &(String, String), usage: &EdgeUse| EdgeEntry {
        base: b.clone(),
        dependent: d.clone(),
        usage: usage.clone(),
    };
    for (key, after) in &head.edges {
        match base.edges.get(key) {
            None => edges.added.push(entry(key, after)),
            Some(before) if before != after => edges.changed.push(EdgeChange {
                base: key.0.clone(),
                dependent: key.1.clone(),
                before: before.clone(),
                after: after.clone(),
            }),
            Some(_) => {}
        }
    }
    for (key, before) in &base.edges {
        if !head.edges.contains_key(key) {
            edges.removed.push(entry(key, before));
        }
    }
}

fn compare_warehouses(out: &mut Warehouses, base: &Snapshot, head: &Snapshot) {
    for (name, after) in &head.warehouses {
        match base.warehouses.get(name) {
            None => out.added.push(warehouse_entry(name, after)),
            Some(before) if before != after => {
                let mut old = BTreeMap::new();
                let mut new = BTreeMap::new();
                flatten("", before, &mut old);
                flatten("", after, &mut new);
                out.changed.push(WarehouseChange {
                    name: name.clone(),
                    changes: field_changes(&old, &new),
                });
            }
            Some(_) => {}
        }
    }
    for (name, before) in &base.warehouses {
        if !head.warehouses.contains_key(name) {
            out.removed.push(warehouse_entry(name, before));
        }
    }
}

/// The subscription of a Warehouse, for the added/removed lists.
fn warehouse_entry(name: &str, warehouse: &serde_json::Value) -> WarehouseEntry {
    let image = &warehouse["spec"]["subscriptions"][0]["image"];
    let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
    WarehouseEntry {
        name: name.to_string(),
        repo_url: text(&image["repoURL"]).unwrap_or_default(),
        image_selection_strategy: text(&image["imageSelectionStrategy"]).unwrap_or_default(),
        constraint: text(&image["constraint"]),
    }
}

/// Every leaf of `value` by path (`a.b[0].c`) → its JSON text. Objects and arrays of
/// objects are walked; an array of scalars is one leaf (`["^22\\."]`).
fn flatten(path: &str, value: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                flatten(&p, v, out);
            }
        }
        Value::Array(items) if items.iter().any(|v| v.is_object() || v.is_array()) => {
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{path}[{i}]"), v, out);
            }
        }
        leaf => {
            out.insert(path.to_string(), leaf.to_string());
        }
    }
}
