//! The dependency graph: a DAG with an edge `base → dependent` for every image a
//! managed image is built from, and the cascade plan of a base update.
//!
//! Pure: plain data in, plain data out; time is a value passed in.

mod render;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use serde::Serialize;

pub use render::{
    render_dot, render_dot_with, render_json, render_mermaid, render_mermaid_with, WorkloadUse,
};

use crate::enrollment::{Enrollment, RebuildPolicy};
use crate::reference::Reference;

/// What a node of the graph is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// Enrolled with a source: we build it.
    Managed,
    /// Enrolled without a source: only monitored.
    External,
    /// Named in a `FROM` (or `COPY --from`, `RUN --mount from=`) but not enrolled.
    Base,
}

/// One image in the graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// Enrollment name, or a name derived from the reference for discovered bases.
    pub name: String,
    /// The reference that identifies the node: `registry/repository:tag`, or
    /// `registry/repository@digest` for a digest-only use.
    pub reference: Reference,
    /// Managed, external or discovered base.
    pub kind: NodeKind,
    /// Rebuild policy: the enrollment's, or the file defaults for discovered bases.
    #[serde(skip)]
    pub rebuild: RebuildPolicy,
}

/// How a dependent uses a base image; several uses merge into one edge.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Edge {
    /// `from`, `copy`, `mount` — the instructions that name the base.
    pub via: BTreeSet<String>,
    /// Digests the dependent pins the base to (`FROM x:tag@sha256:…`).
    pub pinned: BTreeSet<String>,
}

/// One image a managed image is built from, as found in its Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Use {
    /// The normalized reference as written (may pin a digest).
    pub reference: Reference,
    /// `from`, `copy` or `mount`.
    pub via: String,
}

/// Graph errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// No node matches the reference asked about.
    #[error(
        "{reference} is not in the dependency graph; run `image-factory graph` to list its images"
    )]
    UnknownImage {
        /// The normalized reference.
        reference: String,
    },
    /// The graph has a cycle, so no cascade order exists.
    #[error("dependency cycle: {}", .path.join(" → "))]
    Cycle {
        /// Image names around the cycle, first name repeated at the end.
        path: Vec<String>,
    },
}

/// The dependency DAG of an enrollment.
#[derive(Debug, Clone)]
pub struct Graph {
    dag: DiGraph<Node, Edge>,
    /// `(repoURL, tag or "@digest")` → node, for every published tag of every node.
    by_reference: HashMap<(String, String), NodeIndex>,
    by_name: HashMap<String, NodeIndex>,
}

/// One rebuild in a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedRebuild {
    /// 1 for direct dependents of the updated image, 2 for theirs, …
    pub wave: usize,
    /// Managed image name.
    pub name: String,
    /// Its reference.
    pub reference: String,
    /// Updated images (the base or rebuilt parents) this rebuild waits for.
    pub after: Vec<String>,
    /// The hold that applies: in wave 1 the updated image's `delay` (or this image's own
    /// `delay` when it sets one), in later waves this image's `cascadeDelay`.
    #[serde(with = "humantime_serde_secs")]
    pub hold: Duration,
    /// Earliest time the rebuild may start (parents' rebuild time not included).
    #[serde(with = "humantime_serde_time")]
    pub due: SystemTime,
    /// `false` when the image waits for a person (`autoRebuild: false`).
    pub auto_rebuild: bool,
}

/// What a base update would rebuild.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The updated image's node reference.
    pub update: String,
    /// The digest of the update, if given.
    pub digest: Option<String>,
    /// When the update was discovered.
    #[serde(with = "humantime_serde_time")]
    pub discovered_at: SystemTime,
    /// Rebuilds in wave order, then by name.
    pub rebuilds: Vec<PlannedRebuild>,
}

mod humantime_serde_secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }
}

mod humantime_serde_time {
    pub fn serialize<S: serde::Serializer>(
        t: &std::time::SystemTime,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_seconds(*t))
    }
}

/// The key a reference is looked up by: its repository and its tag (or digest when it
/// has no tag). A digest next to a tag is a pin, not an identity.
fn key(reference: &Reference) -> (String, String) {
    let id = match (reference.tag(), reference.digest()) {
        (Some(tag), _) => tag.to_string(),
        (None, Some(digest)) => format!("@{digest}"),
        (None, None) => crate::reference::DEFAULT_TAG.to_string(),
    };
    (reference.repo_url(), id)
}

impl Graph {
    /// Builds the graph of `enrollment`, with `uses[name]` the images managed image
    /// `name` is built from. References that match a published tag of an enrolled image
    /// link to it; the rest become discovered base nodes with derived names.
    pub fn build(enrollment: &Enrollment, uses: &BTreeMap<String, Vec<Use>>) -> Self {
        Self::build_named(enrollment, uses, &BTreeMap::new())
    }

    /// As [`Graph::build`], with `names` (normalized reference → name) the names that
    /// discovered bases were given before: a discovered base keeps its name once given,
    /// and no new node takes a name that belongs to another reference, so a state file
    /// and its Warehouse keep watching the same image. Enrolled names always win.
    pub fn build_named(
        enrollment: &Enrollment,
        uses: &BTreeMap<String, Vec<Use>>,
        names: &BTreeMap<String, String>,
    ) -> Self {
        let mut graph = Self {
            dag: DiGraph::new(),
            by_reference: HashMap::new(),
            by_name: HashMap::new(),
        };
        for image in &enrollment.images {
            let idx = graph.dag.add_node(Node {
                name: image.name.clone(),
                reference: image.reference.clone(),
                kind: if image.is_managed() {
                    NodeKind::Managed
                } else {
                    NodeKind::External
                },
                rebuild: image.rebuild,
            });
            graph.by_name.insert(image.name.clone(), idx);
            for tag in &image.tags {
                graph
                    .by_reference
                    .insert((image.reference.repo_url(), tag.clone()), idx);
            }
        }
        let mut taken: BTreeSet<String> = graph.by_name.keys().cloned().collect();
        // Names given before are reserved for their references.
        taken.extend(names.values().cloned());
        for (name, used) in uses {
            let Some(&dependent) = graph.by_name.get(name) else {
                continue;
            };
            for u in used {
                let base = match graph.by_reference.get(&key(&u.reference)) {
                    Some(&idx) => idx,
                    None => {
                        let node_ref = u.reference.without_digest();
                        let given = names
                            .get(&node_ref.to_string())
                            .filter(|n| !graph.by_name.contains_key(n.as_str()));
                        let node_name = match given {
                            Some(name) => name.clone(),
                            None => unique_name(&base_name(&node_ref), &node_ref, &mut taken),
                        };
                        let idx = graph.dag.add_node(Node {
                            name: node_name.clone(),
                            reference: node_ref,
                            kind: NodeKind::Base,
                            rebuild: enrollment.defaults_rebuild,
                        });
                        graph.by_name.insert(node_name, idx);
                        graph.by_reference.insert(key(&u.reference), idx);
                        idx
                    }
                };
                let edge = match graph.edge_index(base, dependent) {
                    Some(e) => e,
                    None => graph.dag.add_edge(base, dependent, Edge::default()),
                };
                let weight = &mut graph.dag[edge];
                weight.via.insert(u.via.clone());
                if let (Some(_), Some(d)) = (u.reference.tag(), u.reference.digest()) {
                    weight.pinned.insert(d.to_string());
                }
            }
        }
        graph
    }

    /// All nodes, sorted by name.
    pub fn nodes(&self) -> Vec<&Node> {
        let mut nodes: Vec<&Node> = self.dag.node_weights().collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes
    }

    /// All edges as `(base, dependent, edge)`, sorted by names.
    pub fn edges(&self) -> Vec<(&Node, &Node, &Edge)> {
        let mut edges: Vec<_> = self
            .dag
            .edge_references()
            .map(|e| (&self.dag[e.source()], &self.dag[e.target()], e.weight()))
            .collect();
        edges.sort_by(|a, b| (&a.0.name, &a.1.name).cmp(&(&b.0.name, &b.1.name)));
        edges
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.by_name.get(name).map(|&i| &self.dag[i])
    }

    /// The node a reference resolves to (by repository and tag, or digest).
    pub fn find(&self, reference: &Reference) -> Option<&Node> {
        self.by_reference
            .get(&key(reference))
            .map(|&i| &self.dag[i])
    }

    /// Names of the images built directly on `name`, sorted.
    pub fn dependents(&self, name: &str) -> Vec<String> {
        self.neighbours(name, Direction::Outgoing)
    }

    /// Names of the images `name` is built directly on, sorted.
    pub fn bases(&self, name: &str) -> Vec<String> {
        self.neighbours(name, Direction::Incoming)
    }

    /// The edge `base → dependent`, if any.
    pub fn edge(&self, base: &str, dependent: &str) -> Option<&Edge> {
        let (b, d) = (self.by_name.get(base)?, self.by_name.get(dependent)?);
        self.edge_index(*b, *d).map(|e| &self.dag[e])
    }

    /// The edge `base → dependent`, searched from the dependent's side: a popular base
    /// has thousands of dependents, an image only a few bases (petgraph's `find_edge`
    /// walks the source's edges, which made building the graph quadratic).
    fn edge_index(
        &self,
        base: NodeIndex,
        dependent: NodeIndex,
    ) -> Option<petgraph::graph::EdgeIndex> {
        self.dag
            .edges_directed(dependent, Direction::Incoming)
            .find(|e| e.source() == base)
            .map(|e| e.id())
    }

    fn neighbours(&self, name: &str, direction: Direction) -> Vec<String> {
        let Some(&idx) = self.by_name.get(name) else {
            return Vec::new();
        };
        let mut names: Vec<String> = self
            .dag
            .neighbors_directed(idx, direction)
            .map(|n| self.dag[n].name.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Every cycle, each as the names around it with the first repeated at the end,
    /// sorted; empty for a DAG. A self-loop (an image built on itself) is a cycle.
    pub fn cycles(&self) -> Vec<Vec<String>> {
        let mut cycles = Vec::new();
        for scc in tarjan_scc(&self.dag) {
            let self_loop = scc.len() == 1 && self.dag.find_edge(scc[0], scc[0]).is_some();
            if scc.len() < 2 && !self_loop {
                continue;
            }
            cycles.push(self.cycle_path(&scc));
        }
        cycles.sort();
        cycles
    }

    /// A concrete cycle through the strongly connected component `scc`, starting at its
    /// smallest name, walking to the smallest-named successor inside the component.
    fn cycle_path(&self, scc: &[NodeIndex]) -> Vec<String> {
        let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
        let Some(&start) = scc.iter().min_by_key(|&&i| &self.dag[i].name) else {
            return Vec::new();
        };
        let mut path = vec![self.dag[start].name.clone()];
        let mut seen = BTreeSet::from([start]);
        let mut current = start;
        loop {
            let next = self
                .dag
                .neighbors_directed(current, Direction::Outgoing)
                .filter(|n| members.contains(n))
                .min_by_key(|&n| (n != start, &self.dag[n].name));
            let Some(next) = next else { break };
            path.push(self.dag[next].name.clone());
            if next == start || !seen.insert(next) {
                break;
            }
            current = next;
        }
        path
    }

    /// Depth of every node: 0 for images built on nothing we know, else one more than
    /// its deepest base. The cascade order of a full rebuild, wave by wave.
    ///
    /// # Errors
    ///
    /// [`GraphError::Cycle`] when the graph has a cycle.
    pub fn levels(&self) -> Result<BTreeMap<String, usize>, GraphError> {
        let order = self.topological_order()?;
        let mut level: HashMap<NodeIndex, usize> = HashMap::new();
        for idx in order {
            let depth = self
                .dag
                .neighbors_directed(idx, Direction::Incoming)
                .filter_map(|p| level.get(&p).map(|l| l + 1))
                .max()
                .unwrap_or(0);
            level.insert(idx, depth);
        }
        Ok(level
            .into_iter()
            .map(|(i, l)| (self.dag[i].name.clone(), l))
            .collect())
    }

    fn topological_order(&self) -> Result<Vec<NodeIndex>, GraphError> {
        toposort(&self.dag, None).map_err(|_| GraphError::Cycle {
            path: self.cycles().into_iter().next().unwrap_or_default(),
        })
    }

    /// What an update of `reference` (discovered at `discovered_at`) rebuilds: every
    /// managed image downstream, in waves. An image with several updated ancestors is
    /// rebuilt once, in the wave after the last of them; its due time is the latest of
    /// `discovered_at + delay` (if built directly on the update) and each updated
    /// parent's due time `+ cascadeDelay`.
    ///
    /// # Errors
    ///
    /// [`GraphError::UnknownImage`] when no node matches `reference`;
    /// [`GraphError::Cycle`] when the graph has a cycle.
    pub fn plan(
        &self,
        reference: &Reference,
        discovered_at: SystemTime,
    ) -> Result<Plan, GraphError> {
        let &root =
            self.by_reference
                .get(&key(reference))
                .ok_or_else(|| GraphError::UnknownImage {
                    reference: reference.to_string(),
                })?;
        let order = self.topological_order()?;
        let mut wave: HashMap<NodeIndex, usize> = HashMap::from([(root, 0)]);
        let mut due: HashMap<NodeIndex, SystemTime> = HashMap::from([(root, discovered_at)]);
        let mut rebuilds = Vec::new();
        for idx in order {
            if idx == root {
                continue;
            }
            let parents: Vec<NodeIndex> = self
                .dag
                .neighbors_directed(idx, Direction::Incoming)
                .filter(|p| wave.contains_key(p))
                .collect();
            if parents.is_empty() {
                continue;
            }
            let node = &self.dag[idx];
            let policy = node.rebuild;
            let mut when = discovered_at;
            let mut hold = Duration::ZERO;
            for &p in &parents {
                let (h, base_time) = if p == root {
                    (policy.hold_for(&self.dag[root].rebuild), discovered_at)
                } else {
                    (policy.cascade_delay, due[&p])
                };
                if base_time + h >= when {
                    when = base_time + h;
                    hold = h;
                }
            }
            let w = parents.iter().map(|p| wave[p] + 1).max().unwrap_or(1);
            wave.insert(idx, w);
            due.insert(idx, when);
            let mut after: Vec<String> =
                parents.iter().map(|&p| self.dag[p].name.clone()).collect();
            after.sort();
            rebuilds.push(PlannedRebuild {
                wave: w,
                name: node.name.clone(),
                reference: node.reference.to_string(),
                after,
                hold,
                due: when,
                auto_rebuild: policy.auto_rebuild,
            });
        }
        rebuilds.sort_by(|a, b| (a.wave, &a.name).cmp(&(b.wave, &b.name)));
        Ok(Plan {
            update: self.dag[root].reference.to_string(),
            digest: reference.digest().map(str::to_string),
            discovered_at,
            rebuilds,
        })
    }
}

/// A readable name for a discovered base: the reference without `docker.io/library/`,
/// lower-case alphanumerics and `-` only, at most 63 characters.
fn base_name(reference: &Reference) -> String {
    let full = reference.to_string();
    let short = full
        .strip_prefix("docker.io/library/")
        .or_else(|| full.strip_prefix("docker.io/"))
        .unwrap_or(&full);
    let short = match short.split_once("@sha256:") {
        Some((name, digest)) => format!("{name}-sha256-{}", &digest[..digest.len().min(12)]),
        None => short.to_string(),
    };
    let slug = crate::reference::slug(&short)
        .trim_end_matches('-')
        .to_string();
    if slug.len() > 63 {
        slug[..54].trim_end_matches('-').to_string()
    } else {
        slug
    }
}

/// `wanted`, or `wanted-<hash of reference>` when the name is taken (two references
/// that differ only in punctuation, or an enrollment already using the name).
fn unique_name(wanted: &str, reference: &Reference, taken: &mut BTreeSet<String>) -> String {
    let name = if taken.contains(wanted) {
        let base = &wanted[..wanted.len().min(54)];
        format!(
            "{}-{:08x}",
            base.trim_end_matches('-'),
            fnv1a(reference.to_string().as_bytes())
        )
    } else {
        wanted.to_string()
    };
    taken.insert(name.clone());
    name
}

/// 32-bit FNV-1a: a stable hash for name suffixes (the same on every platform and release).
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests;
