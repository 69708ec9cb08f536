use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rstest::rstest;

use super::*;

fn sample() -> ImageState {
    ImageState {
        version: IMAGES_VERSION,
        name: "app".into(),
        kind: NodeKind::Managed,
        reference: "ghcr.io/acme/app:1".into(),
        orphaned: false,
        stale: false,
        stale_reason: None,
        stale_since: None,
        tags: vec!["1".into()],
        source: Some(SourceState {
            path: Some("examples/app".into()),
            dockerfile: "Dockerfile".into(),
            context: ".".into(),
            ..SourceState::default()
        }),
        build_args: BTreeMap::from([("A".into(), "1".into())]),
        base_images: vec![],
        unresolved: vec![],
        dependents: vec![],
        rebuild: None,
        warehouse: None,
    }
}

fn changes(files: &[(&str, Option<&str>)]) -> Changes {
    let mut c = Changes::default();
    for (rel, content) in files {
        match content {
            Some(text) => c.write(*rel, text.to_string()),
            None => c.remove(*rel),
        }
    }
    c
}

fn read(dir: &Path, rel: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(rel)).ok()
}

#[test]
fn analysis_records_round_trip_with_their_version_first() {
    let text = render(Path::new("x"), &sample()).unwrap();
    assert!(
        text.starts_with(&format!("{HEADER}version: 2\nname: app\n")),
        "{text}"
    );
    let back: ImageState = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(back, sample());
}

#[test]
fn a_version_1_file_is_read_and_its_runtime_sections_are_returned_for_migration() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("images")).unwrap();
    // The exact shape release 0.1 wrote, with a hand-recorded update.
    std::fs::write(
        dir.path().join("images/python.yaml"),
        "# Written by image-factory. Do not edit: images.yaml is the source of truth.\nname: python\nkind: external\nreference: docker.io/library/python:3.12-slim\nrebuild:\n  delay: 3days\n  cascadeDelay: 0s\n  autoRebuild: true\nwarehouse: python\ncurrent: {}\nhistory:\n- digest: sha256:1111111111111111111111111111111111111111111111111111111111111111\n  discoveredAt: 2026-11-01T00:00:00Z\n  origin: watcher\nrebuilds: []\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("images/empty.yaml"),
        "name: empty\nkind: base\nreference: docker.io/library/debian:12\ncurrent: {}\nhistory: []\nrebuilds: []\n",
    )
    .unwrap();
    let loaded = load_images(dir.path()).unwrap();
    assert_eq!(loaded.images["python"].version, 1);
    assert_eq!(loaded.images["python"].warehouse.as_deref(), Some("python"));
    let legacy = &loaded.legacy["docker.io/library/python:3.12-slim"];
    assert_eq!(legacy.history.len(), 1);
    assert_eq!(legacy.history[0].origin.as_deref(), Some("watcher"));
    assert!(
        !loaded.legacy.contains_key("docker.io/library/debian:12"),
        "empty runtime sections need no migration"
    );
}

#[test]
fn a_file_of_a_newer_release_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("images")).unwrap();
    std::fs::write(
        dir.path().join("images/x.yaml"),
        "version: 9\nname: x\nkind: external\nreference: docker.io/library/x:1\n",
    )
    .unwrap();
    let err = load_images(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("version 9") && err.contains("upgrade image-factory"),
        "{err}"
    );
}

#[test]
fn corrupt_state_says_which_file_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("images")).unwrap();
    std::fs::write(dir.path().join("images/x.yaml"), "name: [unclosed\n").unwrap();
    let err = load_images(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("images/x.yaml") && err.contains("restore it from git"),
        "{err}"
    );
}

#[rstest]
#[case("python:3.12-slim", "runtime/docker.io/library/python/3.12-slim.yaml")]
#[case("ghcr.io/acme/app:1", "runtime/ghcr.io/acme/app/1.yaml")]
#[case(
    "localhost:5000/team/app:v1.2",
    "runtime/localhost_5000/team/app/v1.2.yaml"
)]
#[case(
    "python:3.12@sha256:1111111111111111111111111111111111111111111111111111111111111111",
    "runtime/docker.io/library/python/3.12.yaml"
)]
#[case(
    "quay.io/x/y@sha256:1111111111111111111111111111111111111111111111111111111111111111",
    "runtime/quay.io/x/y/@sha256-1111111111111111111111111111111111111111111111111111111111111111.yaml"
)]
fn runtime_records_are_named_by_normalized_reference(#[case] raw: &str, #[case] path: &str) {
    let reference = crate::reference::Reference::parse(raw).unwrap();
    assert_eq!(runtime_path(&reference), PathBuf::from(path));
}

#[test]
fn runtime_paths_of_different_references_never_collide() {
    let refs = [
        "localhost:5000/a:1",
        "localhost/5000/a:1",
        "a/b/c:1",
        "a/b:c",
        "docker.io/a/b_c:1",
        "docker.io/a_b/c:1",
    ];
    let paths: std::collections::BTreeSet<PathBuf> = refs
        .iter()
        .map(|r| runtime_path(&crate::reference::Reference::parse(r).unwrap()))
        .collect();
    assert_eq!(paths.len(), refs.len(), "{paths:?}");
}

#[test]
fn commit_writes_only_changes_and_removes_what_it_is_told_to() {
    let dir = tempfile::tempdir().unwrap();
    let first = journal::commit(
        dir.path(),
        &changes(&[
            ("images/a.yaml", Some("a\n")),
            ("images/b.yaml", Some("b\n")),
        ]),
    )
    .unwrap();
    assert_eq!(first.written.len(), 2);
    let again = journal::commit(
        dir.path(),
        &changes(&[
            ("images/a.yaml", Some("a\n")),
            ("images/b.yaml", Some("b\n")),
        ]),
    )
    .unwrap();
    assert_eq!((again.written.len(), again.unchanged), (0, 2));
    let third = journal::commit(
        dir.path(),
        &changes(&[
            ("images/a.yaml", Some("a2\n")),
            ("images/b.yaml", None),
            ("images/c.yaml", None),
        ]),
    )
    .unwrap();
    assert_eq!(third.removed, [PathBuf::from("images/b.yaml")]);
    assert_eq!(read(dir.path(), "images/a.yaml").as_deref(), Some("a2\n"));
    assert!(!dir.path().join(journal::JOURNAL_DIR).exists());
}

#[test]
fn a_folder_in_the_way_fails_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    journal::commit(
        dir.path(),
        &changes(&[("warehouses/a.yaml", Some("old\n"))]),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("warehouses/blocked.yaml")).unwrap();
    let err = journal::commit(
        dir.path(),
        &changes(&[
            ("warehouses/a.yaml", Some("new\n")),
            ("warehouses/blocked.yaml", Some("x\n")),
            (
                "warehouses/kustomization.yaml",
                Some("resources: [a.yaml, blocked.yaml]\n"),
            ),
        ]),
    )
    .unwrap_err();
    assert!(matches!(err, StateError::FolderInTheWay { .. }), "{err}");
    assert!(err.to_string().contains("nothing was changed"), "{err}");
    assert_eq!(
        read(dir.path(), "warehouses/a.yaml").as_deref(),
        Some("old\n")
    );
    assert!(!dir.path().join("warehouses/kustomization.yaml").exists());
}

#[test]
fn a_failure_after_the_commit_point_says_what_was_written_and_the_next_run_completes_it() {
    let dir = tempfile::tempdir().unwrap();
    // `runtime` is a file, so the folder a runtime record needs cannot be made.
    std::fs::write(dir.path().join("runtime"), "in the way").unwrap();
    let err = journal::commit(
        dir.path(),
        &changes(&[
            ("images/a.yaml", Some("a\n")),
            ("runtime/x/y.yaml", Some("y\n")),
        ]),
    )
    .unwrap_err();
    let StateError::Interrupted {
        applied, pending, ..
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!(applied, &[PathBuf::from("images/a.yaml")]);
    assert_eq!(pending, &[PathBuf::from("runtime/x/y.yaml")]);
    assert!(
        err.to_string()
            .contains("1 of 2 file(s) were written (images/a.yaml)"),
        "{err}"
    );
    std::fs::remove_file(dir.path().join("runtime")).unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(read(dir.path(), "runtime/x/y.yaml").as_deref(), Some("y\n"));
    assert!(!dir.path().join(journal::JOURNAL_DIR).exists());
    assert_eq!(
        store.list(Path::new("runtime")).unwrap(),
        [PathBuf::from("runtime/x/y.yaml")]
    );
}

#[test]
fn a_crash_before_the_commit_point_is_rolled_back_and_after_it_rolled_forward() {
    let dir = tempfile::tempdir().unwrap();
    journal::commit(dir.path(), &changes(&[("images/a.yaml", Some("a\n"))])).unwrap();
    // Before the commit point: a staging folder with a staged file and no rename.
    let staging = dir.path().join(".journal-x1y2");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("0.stage"), "never\n").unwrap();
    // After the commit point: a committed journal, one entry applied, two not yet.
    let journal = dir.path().join(journal::JOURNAL_DIR);
    std::fs::create_dir_all(&journal).unwrap();
    std::fs::write(journal.join("1.stage"), "b\n").unwrap();
    std::fs::write(
        journal.join("journal.yaml"),
        "version: 1\nentries:\n- target: images/gone.yaml\n  staged: 0.stage\n- target: images/b.yaml\n  staged: 1.stage\n- target: images/a.yaml\n",
    )
    .unwrap();
    let recovered = journal::recover(dir.path()).unwrap();
    assert_eq!(
        recovered,
        [
            PathBuf::from("images/b.yaml"),
            PathBuf::from("images/a.yaml")
        ]
    );
    assert_eq!(read(dir.path(), "images/b.yaml").as_deref(), Some("b\n"));
    assert!(!dir.path().join("images/a.yaml").exists());
    assert!(!staging.exists() && !journal.exists());
    assert!(!dir.path().join("images/gone.yaml").exists());
    // Recovering again is a no-op.
    assert!(journal::recover(dir.path()).unwrap().is_empty());
}

#[test]
fn removing_the_last_record_of_a_repository_leaves_no_empty_folders() {
    let dir = tempfile::tempdir().unwrap();
    journal::commit(
        dir.path(),
        &changes(&[("runtime/r/a/b/1.yaml", Some("x\n"))]),
    )
    .unwrap();
    journal::commit(dir.path(), &changes(&[("runtime/r/a/b/1.yaml", None)])).unwrap();
    assert!(!dir.path().join("runtime").exists());
}

#[test]
fn the_memory_store_counts_only_commits_that_change_something() {
    let store = MemoryStore::new();
    let c = changes(&[("runtime/a.yaml", Some("1\n"))]);
    store.commit(&c).unwrap();
    store.commit(&c).unwrap();
    assert_eq!(store.commits(), 1);
    assert_eq!(
        store.read(Path::new("runtime/a.yaml")).unwrap().as_deref(),
        Some("1\n")
    );
    assert_eq!(store.list(Path::new("runtime")).unwrap().len(), 1);
}
