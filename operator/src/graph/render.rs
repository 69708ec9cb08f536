//! The graph as Mermaid, Graphviz DOT or JSON, for people and tools.

use serde::Serialize;

use super::{Graph, NodeKind};

fn kind_label(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::Managed => "managed",
        NodeKind::External => "external",
        NodeKind::Base => "base",
    }
}

/// A workload using an image of the graph (`graph --workloads`): the image's node name
/// and the workload as `namespace/Kind/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct WorkloadUse {
    /// The image's node name.
    pub image: String,
    /// `namespace/Kind/name`.
    pub workload: String,
}

/// Mermaid `flowchart LR`: node ids are the image names, labels the references,
/// classes `managed` / `external` / `base`.
pub fn render_mermaid(graph: &Graph) -> String {
    render_mermaid_with(graph, &[])
}

/// [`render_mermaid`] plus one node per workload of `uses` (class `workload`, id
/// `workload_N` in the order of `uses`' distinct workloads) with a dotted edge from each
/// image it runs.
pub fn render_mermaid_with(graph: &Graph, uses: &[WorkloadUse]) -> String {
    let mut out = String::from("flowchart LR\n");
    for node in graph.nodes() {
        out.push_str(&format!(
            "  {}[\"{}<br/><small>{}</small>\"]:::{}\n",
            mermaid_id(&node.name),
            node.name,
            node.reference,
            kind_label(node.kind)
        ));
    }
    for (base, dependent, edge) in graph.edges() {
        let via: Vec<&str> = edge.via.iter().map(String::as_str).collect();
        let arrow = if edge.via.contains("from") {
            "-->"
        } else {
            "-.->"
        };
        out.push_str(&format!(
            "  {} {arrow}|{}| {}\n",
            mermaid_id(&base.name),
            via.join(","),
            mermaid_id(&dependent.name)
        ));
    }
    let ids = workload_ids(uses);
    for (workload, id) in &ids {
        out.push_str(&format!("  {id}[/\"{workload}\"/]:::workload\n"));
    }
    for u in uses {
        if let Some(id) = ids.get(u.workload.as_str()) {
            out.push_str(&format!("  {} -.-o {id}\n", mermaid_id(&u.image)));
        }
    }
    out.push_str("  classDef managed fill:#d4edda,stroke:#28a745\n");
    out.push_str("  classDef external fill:#fff3cd,stroke:#ffc107\n");
    out.push_str("  classDef base fill:#e2e3e5,stroke:#6c757d\n");
    if !ids.is_empty() {
        out.push_str("  classDef workload fill:#d1ecf1,stroke:#17a2b8\n");
    }
    out
}

fn workload_ids(uses: &[WorkloadUse]) -> std::collections::BTreeMap<&str, String> {
    let mut ids = std::collections::BTreeMap::new();
    for u in uses {
        let n = ids.len();
        ids.entry(u.workload.as_str())
            .or_insert_with(|| format!("workload_{n}"));
    }
    ids
}

/// Mermaid ids may not contain `.`; names are DNS labels so `-` is all we keep.
fn mermaid_id(name: &str) -> String {
    name.replace(['.', '-'], "_")
}

/// Graphviz DOT, left to right; managed images are boxes, others ellipses.
pub fn render_dot(graph: &Graph) -> String {
    render_dot_with(graph, &[])
}

/// [`render_dot`] plus one `component`-shaped node per workload of `uses`, named
/// `namespace/Kind/name`, with a dotted edge from each image it runs.
pub fn render_dot_with(graph: &Graph, uses: &[WorkloadUse]) -> String {
    let mut out = String::from("digraph images {\n  rankdir=LR;\n");
    for node in graph.nodes() {
        let shape = if node.kind == NodeKind::Managed {
            "box"
        } else {
            "ellipse"
        };
        out.push_str(&format!(
            "  {:?} [label={:?}, shape={shape}, tooltip={:?}];\n",
            node.name,
            format!("{}\n{}", node.name, node.reference),
            kind_label(node.kind)
        ));
    }
    for (base, dependent, edge) in graph.edges() {
        let via: Vec<&str> = edge.via.iter().map(String::as_str).collect();
        let style = if edge.via.contains("from") {
            "solid"
        } else {
            "dashed"
        };
        out.push_str(&format!(
            "  {:?} -> {:?} [label={:?}, style={style}];\n",
            base.name,
            dependent.name,
            via.join(",")
        ));
    }
    for (workload, _) in workload_ids(uses) {
        out.push_str(&format!("  {workload:?} [shape=component];\n"));
    }
    for u in uses {
        out.push_str(&format!(
            "  {:?} -> {:?} [style=dotted];\n",
            u.image, u.workload
        ));
    }
    out.push_str("}\n");
    out
}

#[derive(Serialize)]
struct JsonGraph<'a> {
    nodes: Vec<JsonNode<'a>>,
    edges: Vec<JsonEdge<'a>>,
    cycles: Vec<Vec<String>>,
}

#[derive(Serialize)]
struct JsonNode<'a> {
    name: &'a str,
    reference: String,
    kind: NodeKind,
    level: Option<usize>,
}

#[derive(Serialize)]
struct JsonEdge<'a> {
    base: &'a str,
    dependent: &'a str,
    via: Vec<&'a str>,
    pinned: Vec<&'a str>,
}

/// JSON: `{"nodes": [{"name", "reference", "kind", "level"}], "edges": [{"base",
/// "dependent", "via", "pinned"}], "cycles": [[name…]]}`, sorted by name; `level` is
/// the cascade depth (null when the graph has a cycle).
pub fn render_json(graph: &Graph) -> String {
    let levels = graph.levels().ok();
    let doc = JsonGraph {
        nodes: graph
            .nodes()
            .into_iter()
            .map(|n| JsonNode {
                name: &n.name,
                reference: n.reference.to_string(),
                kind: n.kind,
                level: levels.as_ref().and_then(|l| l.get(&n.name).copied()),
            })
            .collect(),
        edges: graph
            .edges()
            .into_iter()
            .map(|(b, d, e)| JsonEdge {
                base: &b.name,
                dependent: &d.name,
                via: e.via.iter().map(String::as_str).collect(),
                pinned: e.pinned.iter().map(String::as_str).collect(),
            })
            .collect(),
        cycles: graph.cycles(),
    };
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}
