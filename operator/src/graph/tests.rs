use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::enrollment;

const DAY: Duration = Duration::from_secs(86400);

/// An enrollment of managed images `names` (all from one dummy dir) plus `externals`.
fn enrollment(managed: &[&str], externals: &[(&str, &str)], extra: &str) -> Enrollment {
    let mut text = String::from("version: 1\nimages:\n");
    for (name, image) in externals {
        text.push_str(&format!("  - {{name: {name}, image: '{image}'}}\n"));
    }
    for name in managed {
        text.push_str(&format!(
            "  - {{name: {name}, image: 'registry.example.com/team/{name}', source: {{path: .}}}}\n"
        ));
    }
    text.push_str(extra);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/graph/testdata");
    enrollment::parse("images.yaml", &text, &dir).unwrap()
}

fn uses(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<Use>> {
    pairs
        .iter()
        .map(|(name, refs)| {
            let list = refs
                .iter()
                .map(|r| Use {
                    reference: Reference::parse(r).unwrap(),
                    via: "from".to_string(),
                })
                .collect();
            (name.to_string(), list)
        })
        .collect()
}

fn internal(name: &str) -> String {
    format!("registry.example.com/team/{name}")
}

fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_790_000_000)
}

#[test]
fn links_enrolled_images_and_discovers_bases() {
    let e = enrollment(&["base", "app"], &[("python", "python:3.12-slim")], "");
    let g = Graph::build(
        &e,
        &uses(&[
            ("base", &["docker.io/library/python:3.12-slim@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"]),
            ("app", &[&internal("base"), "gcr.io/distroless/static:nonroot"]),
        ]),
    );
    assert_eq!(g.dependents("python"), ["base"]);
    assert_eq!(g.bases("app"), ["base", "gcr-io-distroless-static-nonroot"]);
    assert_eq!(
        g.node("gcr-io-distroless-static-nonroot").unwrap().kind,
        NodeKind::Base
    );
    let pin = g.edge("python", "base").unwrap();
    assert_eq!(pin.pinned.len(), 1);
    assert!(g.cycles().is_empty());
    assert_eq!(g.levels().unwrap()["app"], 2);
}

#[test]
fn names_the_cycle() {
    let e = enrollment(&["a", "b", "c"], &[], "");
    let g = Graph::build(
        &e,
        &uses(&[
            ("a", &[&internal("c")]),
            ("b", &[&internal("a")]),
            ("c", &[&internal("b")]),
        ]),
    );
    assert_eq!(g.cycles(), vec![vec!["a", "b", "c", "a"]]);
    let err = g.levels().unwrap_err();
    assert_eq!(err.to_string(), "dependency cycle: a → b → c → a");
}

#[test]
fn a_self_reference_is_a_cycle() {
    let e = enrollment(&["a"], &[], "");
    let g = Graph::build(&e, &uses(&[("a", &[&internal("a")])]));
    assert_eq!(g.cycles(), vec![vec!["a", "a"]]);
}

#[test]
fn plan_rebuilds_a_diamond_once_after_its_last_parent() {
    // python → base → (mid, app); mid → app: app waits for both and is in wave 3.
    let e = enrollment(
        &["base", "mid", "app", "unrelated"],
        &[("python", "python:3.12")],
        "",
    );
    let g = Graph::build(
        &e,
        &uses(&[
            ("base", &["python:3.12"]),
            ("mid", &[&internal("base")]),
            ("app", &[&internal("base"), &internal("mid")]),
            ("unrelated", &["alpine:3.19"]),
        ]),
    );
    let plan = g
        .plan(&Reference::parse("python:3.12").unwrap(), t0())
        .unwrap();
    let waves: Vec<(usize, &str)> = plan
        .rebuilds
        .iter()
        .map(|r| (r.wave, r.name.as_str()))
        .collect();
    assert_eq!(waves, [(1, "base"), (2, "mid"), (3, "app")]);
    assert_eq!(plan.rebuilds[0].due, t0() + 7 * DAY);
    assert_eq!(
        plan.rebuilds[2].due,
        t0() + 7 * DAY,
        "cascadeDelay defaults to 0"
    );
    assert_eq!(plan.rebuilds[2].after, ["base", "mid"]);
}

#[test]
fn plan_uses_each_images_delay_and_cascade_delay() {
    let extra = "  - {name: fast, image: 'registry.example.com/team/fast', source: {path: .}, rebuild: {delay: 1d, cascadeDelay: 2h, autoRebuild: false}}\n";
    let e = enrollment(&["base"], &[("python", "python:3.12")], extra);
    let g = Graph::build(
        &e,
        &uses(&[
            ("base", &["python:3.12"]),
            ("fast", &["python:3.12", &internal("base")]),
        ]),
    );
    let plan = g.plan(&Reference::parse("docker.io/library/python:3.12@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef").unwrap(), t0()).unwrap();
    assert!(plan.digest.is_some());
    let fast = plan.rebuilds.iter().find(|r| r.name == "fast").unwrap();
    // Direct: t0 + 1d. Via base: t0 + 7d + 2h. The later wins.
    assert_eq!(fast.due, t0() + 7 * DAY + Duration::from_secs(7200));
    assert_eq!(fast.hold, Duration::from_secs(7200));
    assert_eq!(fast.wave, 2);
    assert!(!fast.auto_rebuild);
}

#[test]
fn plan_of_an_unknown_image_says_how_to_find_one() {
    let e = enrollment(&["base"], &[], "");
    let g = Graph::build(&e, &uses(&[("base", &["python:3.12"])]));
    let err = g
        .plan(&Reference::parse("node:22").unwrap(), t0())
        .unwrap_err();
    assert!(err
        .to_string()
        .contains("docker.io/library/node:22 is not in the dependency graph"));
}

#[test]
fn discovered_names_are_readable_and_unique() {
    let e = enrollment(&["a"], &[], "");
    let g = Graph::build(&e, &uses(&[("a", &["python:3.12", "python:3-12", "ghcr.io/x/y@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"])]));
    let names: Vec<String> = g.nodes().iter().map(|n| n.name.clone()).collect();
    assert!(names.contains(&"python-3-12".to_string()));
    assert!(names
        .iter()
        .any(|n| n.starts_with("python-3-12-") && n.len() == "python-3-12-".len() + 8));
    assert!(names.contains(&"ghcr-io-x-y-sha256-0123456789ab".to_string()));
}

#[test]
fn renders_mermaid_dot_and_json() {
    let e = enrollment(&["base"], &[("python", "python:3.12")], "");
    let g = Graph::build(&e, &uses(&[("base", &["python:3.12"])]));
    let m = render_mermaid(&g);
    assert!(m.contains("python -->|from| base"), "{m}");
    let d = render_dot(&g);
    assert!(
        d.contains("\"python\" -> \"base\" [label=\"from\", style=solid];"),
        "{d}"
    );
    let j: serde_json::Value = serde_json::from_str(&render_json(&g)).unwrap();
    assert_eq!(j["edges"][0]["base"], "python");
    assert_eq!(j["nodes"][0]["level"], 1);
}

#[test]
fn the_updated_images_delay_applies_unless_the_dependent_sets_its_own() {
    let extra = "  - {name: python, image: 'python:3.12', rebuild: {delay: 3d}}\n  - {name: strict, image: 'registry.example.com/team/strict', source: {path: .}, rebuild: {delay: 10d}}\n";
    let e = enrollment(&["relaxed"], &[], extra);
    let g = Graph::build(
        &e,
        &uses(&[("relaxed", &["python:3.12"]), ("strict", &["python:3.12"])]),
    );
    let plan = g
        .plan(&Reference::parse("python:3.12").unwrap(), t0())
        .unwrap();
    let due: Vec<(&str, SystemTime)> = plan
        .rebuilds
        .iter()
        .map(|r| (r.name.as_str(), r.due))
        .collect();
    assert_eq!(
        due,
        [("relaxed", t0() + 3 * DAY), ("strict", t0() + 10 * DAY)]
    );
}
