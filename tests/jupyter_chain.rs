//! The real jupyter/docker-stacks chain (shared/corpus/chains) enrolled as local sources:
//! the graph must have exactly the edges of its EXPECTED_EDGES.tsv.

use std::collections::BTreeSet;

use image_factory::analyze;
use image_factory::dockerfile::From;
use image_factory::reference::Reference;

use crate::support::shared_dir;

/// `images/<dir>/Dockerfile` → (image name, reference), as the Makefile names images:
/// the directory is the image; variant folders (`cuda12`) are extra tags of their parent.
fn image_of(dockerfile: &str) -> (String, String) {
    let parts: Vec<&str> = dockerfile.split('/').collect();
    match parts.as_slice() {
        ["images", name, "Dockerfile"] => (name.to_string(), format!("quay.io/jupyter/{name}")),
        ["images", name, variant, "Dockerfile"] => (
            format!("{name}-{variant}"),
            format!("quay.io/jupyter/{name}:{variant}"),
        ),
        _ => panic!("unexpected path {dockerfile}"),
    }
}

#[test]
fn the_graph_matches_the_expected_edges() {
    let chain = shared_dir().join("corpus/chains/jupyter-docker-stacks");
    let tsv = std::fs::read_to_string(chain.join("EXPECTED_EDGES.tsv")).unwrap();
    let rows: Vec<Vec<&str>> = tsv
        .lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| l.split('\t').collect())
        .collect();
    let dockerfiles: BTreeSet<&str> = rows.iter().map(|r| r[0]).collect();

    let mut yaml = String::from("version: 1\nimages:\n");
    for dockerfile in &dockerfiles {
        let (name, reference) = image_of(dockerfile);
        let dir = chain.join(dockerfile).parent().unwrap().to_path_buf();
        yaml.push_str(&format!(
            "  - name: {name}\n    image: {reference}\n    source: {{path: '{}'}}\n",
            dir.display()
        ));
    }
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("images.yaml");
    std::fs::write(&file, yaml).unwrap();
    let model = analyze::model(&file, work.path(), false, &analyze::NoProgress).unwrap();
    assert!(model.graph.cycles().is_empty());

    let mut expected = BTreeSet::new();
    for row in &rows {
        let (dockerfile, from_resolved, kind) = (row[0], row[3], row[4]);
        let (name, _) = image_of(dockerfile);
        if kind.starts_with("stage") {
            // `FROM $ROOT_IMAGE` with ROOT_IMAGE naming the first stage.
            let stages = &model.analyzed[&name].analysis.stages;
            let last = stages.last().unwrap();
            assert_eq!(from_resolved, "stage:default_root_image");
            assert!(
                matches!(last.from, From::Stage { stage: 0, .. }),
                "{name}: {:?}",
                last.from
            );
            assert_eq!(stages[0].name.as_deref(), Some("default_root_image"));
            continue;
        }
        let base = Reference::parse(from_resolved).unwrap();
        let node = model
            .graph
            .find(&base)
            .unwrap_or_else(|| panic!("{from_resolved} not in graph"));
        let edge = model
            .graph
            .edge(&node.name, &name)
            .unwrap_or_else(|| panic!("no edge {} → {name}", node.name));
        if let Some(digest) = base.digest() {
            assert!(edge.pinned.contains(digest), "{name}: pin {digest} missing");
        }
        expected.insert((node.name.clone(), name));
    }
    let actual: BTreeSet<(String, String)> = model
        .graph
        .edges()
        .iter()
        .map(|(b, d, _)| (b.name.clone(), d.name.clone()))
        .collect();
    assert_eq!(
        actual, expected,
        "the graph has edges EXPECTED_EDGES.tsv does not"
    );

    // Depth 6: ubuntu → foundation → base → minimal → scipy → pyspark → all-spark.
    let levels = model.graph.levels().unwrap();
    assert_eq!(levels["all-spark-notebook"], 6);
    let plan = model
        .graph
        .plan(
            &Reference::parse("quay.io/jupyter/minimal-notebook").unwrap(),
            std::time::SystemTime::UNIX_EPOCH,
        )
        .unwrap();
    let waves: Vec<(usize, &str)> = plan
        .rebuilds
        .iter()
        .map(|r| (r.wave, r.name.as_str()))
        .collect();
    assert_eq!(waves.len(), 11, "{waves:?}");
    assert!(waves.contains(&(3, "all-spark-notebook")), "{waves:?}");
}
