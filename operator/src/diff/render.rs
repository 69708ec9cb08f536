//! A [`Diff`] for people (text), tools (JSON) and pull requests (a GitHub Actions job
//! summary in Markdown plus workflow-command annotations on the `images.yaml` lines).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;

use super::{Changed, Diff, EdgeUse, FieldChange, WarehouseEntry};
use crate::enrollment::{escape_data, escape_property};
use crate::graph::NodeKind;

/// What was compared, for the heading of every output and the JSON document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Compared {
    /// The enrollment file, relative to the repository root (`images.yaml`).
    pub file: String,
    /// The git ref compared with, as given (`HEAD`, `origin/main`).
    #[serde(rename = "ref")]
    pub reference: String,
    /// The commit it resolved to (40 hex digits).
    pub commit: String,
    /// Whether the file exists at that commit (when not, everything is added).
    pub found: bool,
}

/// The JSON document of `diff --output json`: `{"base": {"file", "ref", "commit",
/// "found"}, "images", "bases", "edges", "warehouses", "policies", "unresolved"}` with
/// the [`Diff`] fields in camelCase.
#[derive(Debug, Serialize)]
pub struct Document<'a> {
    /// What was compared.
    pub base: &'a Compared,
    /// The differences.
    #[serde(flatten)]
    pub diff: &'a Diff,
}

/// The diff as pretty-printed JSON with a trailing newline (see [`Document`]).
///
/// # Errors
///
/// serde_json's error when a value cannot be serialized (never for these types).
pub fn json(compared: &Compared, diff: &Diff) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(&Document {
        base: compared,
        diff,
    })
    .map(|s| s + "\n")
}

fn kind(k: NodeKind) -> &'static str {
    match k {
        NodeKind::Managed => "managed",
        NodeKind::External => "external",
        NodeKind::Base => "discovered base",
    }
}

fn value(v: Option<&String>) -> &str {
    v.map_or("(none)", String::as_str)
}

fn change_text(c: &FieldChange) -> String {
    format!(
        "{}: {} → {}",
        c.field,
        value(c.before.as_ref()),
        value(c.after.as_ref())
    )
}

fn usage_text(u: &EdgeUse) -> String {
    let mut out = u.via.join(", ");
    if !u.pinned.is_empty() {
        out.push_str(&format!("; pinned {}", u.pinned.join(", ")));
    }
    out
}

fn usage_changes(before: &EdgeUse, after: &EdgeUse) -> Vec<FieldChange> {
    let mut out = Vec::new();
    for (field, b, a) in [
        ("via", &before.via, &after.via),
        ("pinned", &before.pinned, &after.pinned),
    ] {
        if b != a {
            let text = |v: &Vec<String>| (!v.is_empty()).then(|| v.join(", "));
            out.push(FieldChange {
                field: field.to_string(),
                before: text(b),
                after: text(a),
            });
        }
    }
    out
}

fn warehouse_text(w: &WarehouseEntry) -> String {
    let mut out = format!("{} {}", w.repo_url, w.image_selection_strategy);
    if let Some(c) = &w.constraint {
        out.push_str(&format!(" {c}"));
    }
    out
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The counts in one line: `1 image added, 2 edges removed, …`; `no changes` when the
/// diff is empty.
pub fn counts(diff: &Diff) -> String {
    let parts = [
        (diff.images.added.len(), "image added", "images added"),
        (diff.images.removed.len(), "image removed", "images removed"),
        (diff.images.moved.len(), "image moved", "images moved"),
        (diff.images.changed.len(), "image changed", "images changed"),
        (
            diff.bases.added.len(),
            "new discovered base",
            "new discovered bases",
        ),
        (
            diff.bases.removed.len(),
            "discovered base gone",
            "discovered bases gone",
        ),
        (diff.edges.added.len(), "edge added", "edges added"),
        (diff.edges.removed.len(), "edge removed", "edges removed"),
        (diff.edges.changed.len(), "edge changed", "edges changed"),
        (
            diff.warehouses.added.len(),
            "Warehouse added",
            "Warehouses added",
        ),
        (
            diff.warehouses.changed.len(),
            "Warehouse changed",
            "Warehouses changed",
        ),
        (
            diff.warehouses.removed.len(),
            "Warehouse removed",
            "Warehouses removed",
        ),
        (
            diff.policies.len(),
            "rebuild policy changed",
            "rebuild policies changed",
        ),
        (
            diff.unresolved.added.len(),
            "new unresolved reference",
            "new unresolved references",
        ),
        (
            diff.unresolved.removed.len(),
            "unresolved reference resolved",
            "unresolved references resolved",
        ),
    ];
    let text: Vec<String> = parts
        .iter()
        .filter(|(n, _, _)| *n > 0)
        .map(|(n, one, many)| plural(*n, one, many))
        .collect();
    if text.is_empty() {
        "no changes".to_string()
    } else {
        text.join(", ")
    }
}

fn against(compared: &Compared) -> String {
    let short = compared.commit.get(..12).unwrap_or(&compared.commit);
    let mut out = format!(
        "{} compared with {} ({short})",
        compared.file, compared.reference
    );
    if !compared.found {
        out.push_str(&format!(", where {} does not exist", compared.file));
    }
    out
}

/// The diff for people: a heading, then one section per kind of change (`+` added,
/// `-` removed, `~` changed), then the counts. Empty sections are left out.
pub fn text(compared: &Compared, diff: &Diff) -> String {
    let mut out = format!("{}\n", against(compared));
    let mut section = |title: &str, lines: Vec<String>| {
        if !lines.is_empty() {
            let _ = writeln!(out, "{title}:");
            for line in lines {
                let _ = writeln!(out, "  {line}");
            }
        }
    };
    let at = |line: Option<u64>| line.map(|l| format!(" (line {l})")).unwrap_or_default();
    let mut images = Vec::new();
    for i in &diff.images.added {
        images.push(format!(
            "+ {} ({}) {}{}",
            i.name,
            kind(i.kind),
            i.reference,
            at(i.line)
        ));
    }
    for i in &diff.images.removed {
        images.push(format!("- {} ({}) {}", i.name, kind(i.kind), i.reference));
    }
    for m in &diff.images.moved {
        images.push(format!(
            "~ {}: {} → {}{}",
            m.name,
            kind(m.from),
            kind(m.to),
            at(m.line)
        ));
    }
    for c in &diff.images.changed {
        images.extend(changed_lines(c));
    }
    section("images", images);
    let mut bases = Vec::new();
    for b in &diff.bases.added {
        bases.push(format!(
            "+ {} {}, used by {}",
            b.name,
            b.reference,
            b.dependents.join(", ")
        ));
    }
    for b in &diff.bases.removed {
        bases.push(format!("- {} {}", b.name, b.reference));
    }
    section("discovered bases", bases);
    let mut edges = Vec::new();
    for e in &diff.edges.added {
        edges.push(format!(
            "+ {} → {} ({})",
            e.base,
            e.dependent,
            usage_text(&e.usage)
        ));
    }
    for e in &diff.edges.removed {
        edges.push(format!(
            "- {} → {} ({})",
            e.base,
            e.dependent,
            usage_text(&e.usage)
        ));
    }
    for e in &diff.edges.changed {
        for c in usage_changes(&e.before, &e.after) {
            edges.push(format!(
                "~ {} → {}: {}",
                e.base,
                e.dependent,
                change_text(&c)
            ));
        }
    }
    section("dependency edges", edges);
    let mut warehouses = Vec::new();
    for w in &diff.warehouses.added {
        warehouses.push(format!("+ {}: {}", w.name, warehouse_text(w)));
    }
    for w in &diff.warehouses.changed {
        for c in &w.changes {
            warehouses.push(format!("~ {}: {}", w.name, change_text(c)));
        }
    }
    for w in &diff.warehouses.removed {
        warehouses.push(format!("- {}: {}", w.name, warehouse_text(w)));
    }
    section("Warehouses", warehouses);
    let policies = diff.policies.iter().flat_map(changed_lines).collect();
    section("rebuild policies", policies);
    let mut unresolved = Vec::new();
    for u in &diff.unresolved.added {
        unresolved.push(format!("+ {}: {}", u.image, u.raw));
    }
    for u in &diff.unresolved.removed {
        unresolved.push(format!("- {}: {}", u.image, u.raw));
    }
    section("unresolved references", unresolved);
    let _ = writeln!(out, "{}", counts(diff));
    out
}

fn changed_lines(c: &Changed) -> Vec<String> {
    c.changes
        .iter()
        .map(|f| format!("~ {} ({}): {}", c.name, kind(c.kind), change_text(f)))
        .collect()
}

/// Markdown inline code that survives any content (GitHub Flavored Markdown: a code
/// span's fence is longer than any backtick run inside), with `|` escaped for tables.
fn code(s: &str) -> String {
    let longest = s.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    let pad = if s.starts_with('`') || s.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{}{pad}{fence}", s.replace('|', "\\|"))
}

fn code_value(v: Option<&String>) -> String {
    v.map_or_else(|| "*(none)*".to_string(), |s| code(s))
}

fn change_md(c: &FieldChange) -> String {
    format!(
        "{}: {} → {}",
        c.field,
        code_value(c.before.as_ref()),
        code_value(c.after.as_ref())
    )
}

fn table(out: &mut String, title: &str, header: &[&str], rows: &[Vec<String>]) {
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n### {title}\n");
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(
        out,
        "|{}",
        header.iter().map(|_| " --- |").collect::<String>()
    );
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
}

/// The GitHub Actions job summary (GitHub Flavored Markdown): a heading with the counts,
/// then one table per kind of change.
pub fn summary(compared: &Compared, diff: &Diff) -> String {
    let short = compared.commit.get(..12).unwrap_or(&compared.commit);
    let mut out = format!(
        "## image-factory diff\n\n{} compared with {} ({}){}: **{}**\n",
        code(&compared.file),
        code(&compared.reference),
        code(short),
        if compared.found {
            String::new()
        } else {
            format!(", where {} does not exist", code(&compared.file))
        },
        counts(diff)
    );
    let mut rows = Vec::new();
    for i in &diff.images.added {
        rows.push(vec![
            "added".to_string(),
            code(&i.name),
            kind(i.kind).to_string(),
            code(&i.reference),
        ]);
    }
    for i in &diff.images.removed {
        rows.push(vec![
            "removed".to_string(),
            code(&i.name),
            kind(i.kind).to_string(),
            code(&i.reference),
        ]);
    }
    for m in &diff.images.moved {
        rows.push(vec![
            "moved".to_string(),
            code(&m.name),
            format!("{} → {}", kind(m.from), kind(m.to)),
            code(&m.reference),
        ]);
    }
    for c in &diff.images.changed {
        rows.push(vec![
            "changed".to_string(),
            code(&c.name),
            kind(c.kind).to_string(),
            c.changes
                .iter()
                .map(change_md)
                .collect::<Vec<_>>()
                .join("<br>"),
        ]);
    }
    table(
        &mut out,
        "Images",
        &["change", "image", "kind", "details"],
        &rows,
    );
    let mut rows = Vec::new();
    for (change, list) in [("new", &diff.bases.added), ("gone", &diff.bases.removed)] {
        for b in list {
            rows.push(vec![
                change.to_string(),
                code(&b.name),
                code(&b.reference),
                b.dependents
                    .iter()
                    .map(|d| code(d))
                    .collect::<Vec<_>>()
                    .join(", "),
            ]);
        }
    }
    table(
        &mut out,
        "Discovered base images",
        &["change", "base", "reference", "used by"],
        &rows,
    );
    let mut rows = Vec::new();
    for (change, list) in [
        ("added", &diff.edges.added),
        ("removed", &diff.edges.removed),
    ] {
        for e in list {
            rows.push(vec![
                change.to_string(),
                code(&e.base),
                code(&e.dependent),
                usage_text(&e.usage),
            ]);
        }
    }
    for e in &diff.edges.changed {
        rows.push(vec![
            "changed".to_string(),
            code(&e.base),
            code(&e.dependent),
            usage_changes(&e.before, &e.after)
                .iter()
                .map(change_md)
                .collect::<Vec<_>>()
                .join("<br>"),
        ]);
    }
    table(
        &mut out,
        "Dependency edges",
        &["change", "base", "dependent", "use"],
        &rows,
    );
    let mut rows = Vec::new();
    for w in &diff.warehouses.added {
        rows.push(vec![
            "added".to_string(),
            code(&w.name),
            code(&warehouse_text(w)),
        ]);
    }
    for w in &diff.warehouses.changed {
        rows.push(vec![
            "changed".to_string(),
            code(&w.name),
            w.changes
                .iter()
                .map(change_md)
                .collect::<Vec<_>>()
                .join("<br>"),
        ]);
    }
    for w in &diff.warehouses.removed {
        rows.push(vec![
            "removed".to_string(),
            code(&w.name),
            code(&warehouse_text(w)),
        ]);
    }
    table(
        &mut out,
        "Kargo Warehouses",
        &["change", "Warehouse", "subscription"],
        &rows,
    );
    let rows: Vec<Vec<String>> = diff
        .policies
        .iter()
        .map(|c| {
            vec![
                code(&c.name),
                kind(c.kind).to_string(),
                c.changes
                    .iter()
                    .map(change_md)
                    .collect::<Vec<_>>()
                    .join("<br>"),
            ]
        })
        .collect();
    table(
        &mut out,
        "Rebuild policies",
        &["image", "kind", "change"],
        &rows,
    );
    let mut rows = Vec::new();
    for (change, list) in [
        ("new", &diff.unresolved.added),
        ("resolved", &diff.unresolved.removed),
    ] {
        for u in list {
            rows.push(vec![change.to_string(), code(&u.image), code(&u.raw)]);
        }
    }
    table(
        &mut out,
        "Unresolved FROM references",
        &["change", "image", "reference"],
        &rows,
    );
    out
}

/// How loud an annotation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Notice,
    Warning,
}

/// The annotations of a diff as GitHub Actions workflow commands, one per line (GitHub
/// docs, "Workflow commands for GitHub Actions": `::notice file=…,line=…,title=…::msg`):
/// one per changed entry of `compared.file`, at its line (`lines`: image name → line of
/// its entry now), listing everything that changes for that image — a `warning` when
/// something needs a look (it is no longer built here, a `FROM` became unresolved), else
/// a `notice`; one file-level `warning` per removed image; and one file-level `notice`
/// counting what is tied to no entry (discovered bases, `defaults`).
pub fn annotations(compared: &Compared, diff: &Diff, lines: &BTreeMap<String, u64>) -> String {
    let mut entries: BTreeMap<(u64, String), Vec<(Level, String)>> = BTreeMap::new();
    let mut file_level: Vec<(Level, String)> = Vec::new();
    let mut untied = 0usize;
    let removed: BTreeSet<&str> = diff
        .images
        .removed
        .iter()
        .map(|i| i.name.as_str())
        .collect();
    let mut note = |name: &str, level: Level, text: String| match lines.get(name) {
        Some(&line) => entries
            .entry((line, name.to_string()))
            .or_default()
            .push((level, text)),
        // A removed image's warning below says it all.
        None if removed.contains(name) => {}
        None => untied += 1,
    };
    for i in &diff.images.added {
        note(
            &i.name,
            Level::Notice,
            format!("added: {} image {}", kind(i.kind), i.reference),
        );
    }
    for m in &diff.images.moved {
        let (level, why) = match (m.from, m.to) {
            (NodeKind::Managed, _) => (
                Level::Warning,
                "no longer built here: its base updates no longer rebuild it",
            ),
            (_, NodeKind::Managed) => (
                Level::Notice,
                "built here from now on, rebuilt when its bases change",
            ),
            _ => (Level::Notice, "watched through its own Warehouse settings"),
        };
        if m.line.is_some() {
            note(
                &m.name,
                level,
                format!("moved: {} → {}: {why}", kind(m.from), kind(m.to)),
            );
        } else {
            file_level.push((
                Level::Warning,
                format!(
                    "{}: no longer enrolled, still used as a base ({} → {})",
                    m.name,
                    kind(m.from),
                    kind(m.to)
                ),
            ));
        }
    }
    for c in diff.images.changed.iter().chain(&diff.policies) {
        for f in &c.changes {
            note(&c.name, Level::Notice, change_text(f));
        }
    }
    for e in &diff.edges.added {
        note(
            &e.dependent,
            Level::Notice,
            format!("now built on {} ({})", e.base, usage_text(&e.usage)),
        );
    }
    for e in &diff.edges.removed {
        note(
            &e.dependent,
            Level::Notice,
            format!("no longer built on {}", e.base),
        );
    }
    for e in &diff.edges.changed {
        for c in usage_changes(&e.before, &e.after) {
            note(
                &e.dependent,
                Level::Notice,
                format!("built on {}: {}", e.base, change_text(&c)),
            );
        }
    }
    for b in &diff.bases.added {
        for d in &b.dependents {
            note(
                d,
                Level::Notice,
                format!(
                    "new discovered base {} ({}): a Warehouse {} is generated for it",
                    b.name, b.reference, b.name
                ),
            );
        }
    }
    // A discovered base that is gone is said at its dependents' entries ("no longer
    // built on").
    for w in &diff.warehouses.changed {
        for c in &w.changes {
            note(
                &w.name,
                Level::Notice,
                format!("Warehouse {}", change_text(c)),
            );
        }
    }
    for u in &diff.unresolved.added {
        note(
            &u.image,
            Level::Warning,
            format!(
                "FROM {} cannot be resolved: the image is not rebuilt when that base changes (give the ARG a default or a buildArgs value)",
                u.raw
            ),
        );
    }
    for i in &diff.images.removed {
        file_level.push((
            Level::Warning,
            format!(
                "{} removed: {} image {} is no longer {}",
                i.name,
                kind(i.kind),
                i.reference,
                if i.kind == NodeKind::Managed {
                    "rebuilt"
                } else {
                    "watched"
                }
            ),
        ));
    }
    if untied > 0 {
        file_level.push((
            Level::Notice,
            format!(
                "{} tied to no image entry (discovered bases, defaults): see the job summary",
                plural(untied, "further change", "further changes")
            ),
        ));
    }
    let file = escape_property(&compared.file);
    let mut out = String::new();
    for ((line, name), items) in entries {
        let level = items.iter().map(|(l, _)| *l).max().unwrap_or(Level::Notice);
        let text: Vec<&str> = items.iter().map(|(_, t)| t.as_str()).collect();
        let _ = writeln!(
            out,
            "::{} file={file},line={line},title={}::{}",
            level_name(level),
            escape_property(&format!("image-factory diff: {name}")),
            escape_data(&text.join("\n"))
        );
    }
    for (level, text) in file_level {
        let _ = writeln!(
            out,
            "::{} file={file},title={}::{}",
            level_name(level),
            escape_property("image-factory diff"),
            escape_data(&text)
        );
    }
    out
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Notice => "notice",
        Level::Warning => "warning",
    }
}
