//! Analysis at fleet scale: `analyze --keep-going` past an unreachable git repository,
//! incremental analysis (unchanged sources reuse their analysis from `state/`), and
//! `graph`/`plan` answering from `state/`. Real git repositories behind a real
//! `git daemon`, the real Dockerfile corpus and the jupyter chain.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use image_factory::analyze::{self, NoProgress, Origin};
use image_factory::state::{self, ImageState};

use crate::support::git::Upstream;
use crate::support::git_daemon::GitDaemon;
use crate::support::{image_factory, shared_dir, snapshot};

fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = image_factory(dir, args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn record(dir: &Path, name: &str) -> ImageState {
    state::read_image(&dir.join("state"), name)
        .unwrap()
        .unwrap_or_else(|| panic!("no record of {name}"))
}

fn base_refs(record: &ImageState) -> Vec<&str> {
    record
        .base_images
        .iter()
        .map(|b| b.reference.as_str())
        .collect()
}

/// Two repositories (`a.git`, `b.git`) behind one `git daemon`, and a working folder
/// with a local source `local/` built on the image of `a`.
struct Fleet {
    dir: tempfile::TempDir,
    daemon: GitDaemon,
    a: Upstream,
    b: Upstream,
    _served: tempfile::TempDir,
}

impl Fleet {
    fn new() -> Self {
        let served = tempfile::tempdir().unwrap();
        let a = Upstream::new(served.path().join("a.git"));
        let b = Upstream::new(served.path().join("b.git"));
        a.commit("Dockerfile", "FROM python:3.12-slim\n");
        a.push(&["main"]);
        b.commit("app/Dockerfile", "FROM debian:bookworm-slim\n");
        b.push(&["main"]);
        let daemon = GitDaemon::start(served.path());
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("local")).unwrap();
        std::fs::write(
            dir.path().join("local/Dockerfile"),
            "FROM registry.example.com/a:1\n",
        )
        .unwrap();
        let fleet = Self {
            dir,
            daemon,
            a,
            b,
            _served: served,
        };
        fleet.enroll("");
        fleet
    }

    /// Writes images.yaml with the three managed images, plus `extra` entries.
    fn enroll(&self, extra: &str) {
        let yaml = format!(
            "version: 1\nimages:\n\
             - name: a\n  image: registry.example.com/a:1\n  source: {{git: {{url: '{}', ref: main}}}}\n\
             - name: b\n  image: registry.example.com/b:1\n  source: {{git: {{url: '{}', ref: main}}, dockerfile: app/Dockerfile}}\n\
             - name: local\n  image: registry.example.com/local:1\n  source: {{path: local}}\n{extra}",
            self.daemon.url("a.git"),
            self.daemon.url("b.git"),
        );
        std::fs::write(self.dir.path().join("images.yaml"), yaml).unwrap();
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

#[test]
fn keep_going_keeps_the_last_analysis_of_an_unreachable_repository_and_exits_partial() {
    let mut fleet = Fleet::new();
    let (code, out, err) = run(fleet.path(), &["analyze"]);
    assert_eq!(code, 0, "{out}{err}");
    let b_before = record(fleet.path(), "b");
    assert_eq!(
        base_refs(&b_before),
        ["docker.io/library/debian:bookworm-slim"]
    );

    // Work continues elsewhere: a's Dockerfile moves on, the local one changes; then b's
    // repository goes away.
    fleet.a.commit("Dockerfile", "FROM python:3.13-slim\n");
    fleet.a.push(&["main"]);
    std::fs::write(
        fleet.path().join("local/Dockerfile"),
        "FROM registry.example.com/a:1\nCOPY --from=alpine:3.20 /bin/sh /bin/sh\n",
    )
    .unwrap();
    std::fs::rename(fleet.b.bare.clone(), fleet.b.bare.with_extension("gone")).unwrap();

    // Without --keep-going: all or nothing, as before.
    let before = snapshot(&fleet.state());
    let (code, out, err) = run(fleet.path(), &["analyze"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("image \"b\"") && err.contains("nothing written"),
        "{err}"
    );
    assert_eq!(before, snapshot(&fleet.state()), "nothing may be written");

    // With it: b keeps its last analysis, marked stale; a and local are analyzed.
    let (code, out, err) = run(fleet.path(), &["analyze", "--keep-going"]);
    assert_eq!(code, 3, "exit 3 means partial\n{out}{err}");
    assert!(out.contains("partial: 1 image(s) stale (b)"), "{out}");
    assert!(err.contains("kept its last analysis"), "{err}");
    let b = record(fleet.path(), "b");
    assert!(b.stale, "{b:?}");
    let reason = b.stale_reason.clone().unwrap();
    assert!(reason.contains("b.git"), "{reason}");
    let since = b.stale_since.clone().unwrap();
    since.parse::<jiff::Timestamp>().unwrap();
    assert_eq!(
        b.base_images, b_before.base_images,
        "the last analysis is kept"
    );
    assert_eq!(
        b.source.as_ref().unwrap().commit,
        b_before.source.as_ref().unwrap().commit
    );
    assert_eq!(
        base_refs(&record(fleet.path(), "a")),
        ["docker.io/library/python:3.13-slim"]
    );
    assert_eq!(
        base_refs(&record(fleet.path(), "local")),
        ["registry.example.com/a:1", "docker.io/library/alpine:3.20"]
    );
    // Its Warehouse (debian) is still generated: the graph does not silently lose b.
    assert!(fleet
        .state()
        .join("warehouses/debian-bookworm-slim.yaml")
        .is_file());

    // Still failing: the first failure's time stays.
    let (code, _, _) = run(fleet.path(), &["analyze", "--keep-going"]);
    assert_eq!(code, 3);
    assert_eq!(record(fleet.path(), "b").stale_since, Some(since));

    // An image enrolled on a missing repository has nothing to keep: said so, marked.
    fleet.enroll(&format!(
        "- name: c\n  image: registry.example.com/c:1\n  source: {{git: {{url: '{}', ref: main}}}}\n",
        fleet.daemon.url("c.git")
    ));
    let (code, out, err) = run(fleet.path(), &["analyze", "--keep-going"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains("image \"c\"") && err.contains("no earlier analysis"),
        "{err}"
    );
    let c = record(fleet.path(), "c");
    assert!(c.stale && c.base_images.is_empty(), "{c:?}");

    // The daemon stops mid-run history: every git source fails, the local one does not.
    fleet.daemon.stop();
    let (code, out, err) = run(fleet.path(), &["analyze", "--keep-going"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.contains("partial: 3 image(s) stale (a, b, c)"), "{out}");
    assert_eq!(
        base_refs(&record(fleet.path(), "a")),
        ["docker.io/library/python:3.13-slim"]
    );
    fleet.daemon.resume();

    // b's repository is back: the record is current again.
    std::fs::rename(fleet.b.bare.with_extension("gone"), fleet.b.bare.clone()).unwrap();
    fleet.enroll("");
    let (code, out, err) = run(fleet.path(), &["analyze"]);
    assert_eq!(code, 0, "{out}{err}");
    let b = record(fleet.path(), "b");
    assert!(
        !b.stale && b.stale_reason.is_none() && b.stale_since.is_none(),
        "{b:?}"
    );
}

#[test]
fn unchanged_sources_are_not_parsed_again_and_give_the_same_state() {
    let fleet = Fleet::new();
    let (code, out, err) = run(fleet.path(), &["analyze"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("dockerfiles: 3 parsed, 0 unchanged"), "{out}");
    let first = snapshot(&fleet.state());

    let (code, out, err) = run(fleet.path(), &["analyze"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("dockerfiles: 0 parsed, 3 unchanged"), "{out}");
    assert!(out.contains("state: 0 written"), "{out}");
    assert_eq!(first, snapshot(&fleet.state()));

    // A new commit in a, not touching its Dockerfile: the commit is the fingerprint.
    fleet.a.commit("README.md", "docs\n");
    fleet.a.push(&["main"]);
    std::fs::write(
        fleet.path().join("local/Dockerfile"),
        "FROM registry.example.com/a:1\n# comment\n",
    )
    .unwrap();
    let (code, out, err) = run(fleet.path(), &["analyze"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("dockerfiles: 2 parsed, 1 unchanged"), "{out}");
    // A changed build arg changes the fingerprint of a source whose files did not.
    let yaml = std::fs::read_to_string(fleet.path().join("images.yaml")).unwrap();
    std::fs::write(
        fleet.path().join("images.yaml"),
        yaml.replace(
            "source: {path: local}",
            "source: {path: local}\n  buildArgs: {X: \"1\"}",
        ),
    )
    .unwrap();
    let (code, out, err) = run(fleet.path(), &["analyze"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("dockerfiles: 1 parsed, 2 unchanged"), "{out}");

    // local names a by its further tag; a's reference then changes while local's
    // Dockerfile does not: the reused analysis must still link local to a.
    std::fs::write(
        fleet.path().join("local/Dockerfile"),
        "FROM registry.example.com/a:latest\n",
    )
    .unwrap();
    let yaml = std::fs::read_to_string(fleet.path().join("images.yaml")).unwrap();
    let yaml = yaml.replace(
        "image: registry.example.com/a:1\n",
        "image: registry.example.com/a:1\n  tags: [latest]\n",
    );
    std::fs::write(fleet.path().join("images.yaml"), &yaml).unwrap();
    let (code, out, err) = run(fleet.path(), &["analyze"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("dockerfiles: 1 parsed, 2 unchanged"), "{out}");
    let local = record(fleet.path(), "local");
    assert_eq!(
        local.base_images[0].written,
        ["registry.example.com/a:latest"]
    );
    std::fs::write(
        fleet.path().join("images.yaml"),
        yaml.replace(
            "image: registry.example.com/a:1",
            "image: registry.example.com/a:2",
        ),
    )
    .unwrap();
    let (code, out, err) = run(fleet.path(), &["analyze"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("dockerfiles: 0 parsed, 3 unchanged"), "{out}");
    let local = record(fleet.path(), "local");
    assert_eq!(local.base_images.len(), 1, "{local:?}");
    assert_eq!(local.base_images[0].name, "a");
    assert_eq!(local.base_images[0].reference, "registry.example.com/a:2");
}

/// Enrolls `dockerfiles` (folder → Dockerfile folder) as local sources named by folder.
fn enroll_local(dir: &Path, images: &BTreeMap<String, (String, PathBuf)>) -> PathBuf {
    let mut yaml = String::from("version: 1\nimages:\n");
    for (name, (reference, folder)) in images {
        yaml.push_str(&format!(
            "  - name: {name}\n    image: {reference}\n    source: {{path: '{}'}}\n",
            folder.display()
        ));
    }
    let file = dir.join("images.yaml");
    std::fs::write(&file, yaml).unwrap();
    file
}

/// Analyzes twice: cold, then with every analysis reused from state; the graphs, the
/// state and the stale images must be the same.
fn assert_reuse_is_exact(file: &Path, dir: &Path) {
    let options = analyze::Options {
        enrollment: file.to_path_buf(),
        state_dir: dir.join("state"),
        cache_dir: dir.join("cache"),
        prune: false,
        dry_run: false,
        keep_going: true,
    };
    let (cold, cold_model) = analyze::run_with_model(&options, &NoProgress).unwrap();
    assert!(cold.parsed > 0 && cold.reused == 0, "{cold:?}");
    let written = snapshot(&dir.join("state"));
    let (warm, warm_model) = analyze::run_with_model(&options, &NoProgress).unwrap();
    let reused = warm_model
        .analyzed
        .values()
        .filter(|a| a.origin == Origin::Reused)
        .count();
    assert_eq!(reused, cold.parsed, "every parsed analysis is reused");
    assert_eq!(warm.reused, cold.parsed);
    assert_eq!(
        image_factory::graph::render_json(&warm_model.graph),
        image_factory::graph::render_json(&cold_model.graph)
    );
    assert_eq!(warm.unresolved, cold.unresolved);
    assert_eq!(warm.stale, cold.stale);
    assert!(warm.write.written.is_empty(), "{:?}", warm.write.written);
    assert_eq!(written, snapshot(&dir.join("state")));
}

#[test]
fn reused_analyses_of_the_jupyter_chain_give_the_same_graph_and_state() {
    let chain = shared_dir().join("corpus/chains/jupyter-docker-stacks/images");
    let mut images = BTreeMap::new();
    for entry in std::fs::read_dir(&chain).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().join("Dockerfile").is_file() {
            images.insert(
                name.clone(),
                (format!("quay.io/jupyter/{name}"), entry.path()),
            );
        }
        // Variant folders (`cuda12`) are extra tags of their parent's repository.
        for variant in std::fs::read_dir(entry.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if variant.path().join("Dockerfile").is_file() {
                let v = variant.file_name().to_string_lossy().into_owned();
                images.insert(
                    format!("{name}-{v}"),
                    (format!("quay.io/jupyter/{name}:{v}"), variant.path()),
                );
            }
        }
    }
    assert!(images.len() > 5, "{images:?}");
    let dir = tempfile::tempdir().unwrap();
    let file = enroll_local(dir.path(), &images);
    assert_reuse_is_exact(&file, dir.path());
}

#[test]
fn reused_analyses_of_the_corpus_give_the_same_graph_and_state() {
    let corpus = shared_dir().join("corpus/dockerfiles");
    let mut files = Vec::new();
    let mut stack = vec![corpus.clone()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_none_or(|e| e != "tsv" && e != "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    // Each corpus file into a folder of its own, as the Dockerfile of one image.
    let dir = tempfile::tempdir().unwrap();
    let mut images = BTreeMap::new();
    for (i, file) in files.iter().take(300).enumerate() {
        let folder = dir.path().join("src").join(format!("i{i:03}"));
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::copy(file, folder.join("Dockerfile")).unwrap();
        images.insert(
            format!("i{i:03}"),
            (format!("registry.example.com/corpus/i{i:03}:1"), folder),
        );
    }
    assert!(images.len() >= 100, "corpus too small: {}", images.len());
    let file = enroll_local(dir.path(), &images);
    assert_reuse_is_exact(&file, dir.path());
}

#[test]
fn graph_and_plan_answer_from_current_state_without_fetching() {
    let mut fleet = Fleet::new();
    // No analysis yet: analyzed, and said so.
    let (code, _, err) = run(fleet.path(), &["graph"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(
            "re-analyzed (state/ is not current for images.yaml and its local Dockerfiles)"
        ),
        "{err}"
    );
    let (code, out, err) = run(fleet.path(), &["analyze"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, refreshed, err) = run(fleet.path(), &["graph", "--format", "json", "--refresh"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("re-analyzed (--refresh)"), "{err}");

    // The repositories are unreachable: state answers alone.
    fleet.daemon.stop();
    let (code, from_state, err) = run(fleet.path(), &["graph", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.starts_with("from state/ (analyzed at 20"), "{err}");
    assert_eq!(
        from_state, refreshed,
        "state gives the graph analysis gives"
    );
    let (code, out, err) = run(
        fleet.path(),
        &["plan", "--update", "python:3.12-slim", "--output", "json"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.starts_with("from state/"), "{err}");
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rebuilt: Vec<&str> = plan["rebuilds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["image"].as_str().unwrap())
        .collect();
    assert_eq!(rebuilt, ["a", "local"], "{out}");
    // --refresh does fetch, and fails without the repositories.
    let (code, _, err) = run(fleet.path(), &["graph", "--refresh"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot fetch"), "{err}");

    // A local Dockerfile changed since: state is not current, the sources are analyzed.
    fleet.daemon.resume();
    std::fs::write(
        fleet.path().join("local/Dockerfile"),
        "FROM registry.example.com/a:1\nCOPY --from=alpine:3.20 /bin/sh /bin/sh\n",
    )
    .unwrap();
    let (code, out, err) = run(fleet.path(), &["graph"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("re-analyzed (state/ is not current"), "{err}");
    assert!(out.contains("alpine"), "{out}");

    // images.yaml changed since: likewise.
    fleet.enroll("- name: redis\n  image: redis:7\n");
    let (code, out, err) = run(fleet.path(), &["graph"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("re-analyzed (state/ is not current"), "{err}");
    assert!(out.contains("redis"), "{out}");
}

/// The stat cache (`CACHE_DIR/dockerfile-stat-cache`): a local Dockerfile unchanged for
/// longer than `statcache::SETTLE` is fingerprinted from its `stat`, not read; an edit
/// that keeps its size and puts its modification time back is still seen (the change
/// time moves), and so is a build arg.
#[test]
fn settled_local_dockerfiles_are_fingerprinted_from_the_stat_cache_and_edits_are_still_seen() {
    use image_factory::statcache;
    let fleet = Fleet::new();
    let cache = fleet.path().join(".cache").join(statcache::FILE);
    let (code, out, err) = run(fleet.path(), &["analyze"]);
    assert_eq!(code, 0, "{out}{err}");
    // Just written: nothing cached yet (racily clean).
    let cached = std::fs::read_to_string(&cache).unwrap_or_default();
    assert!(!cached.contains("local/Dockerfile"), "{cached}");
    std::thread::sleep(statcache::SETTLE + std::time::Duration::from_millis(300));
    let (code, out, err) = run(fleet.path(), &["analyze"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("dockerfiles: 0 parsed, 3 unchanged"), "{out}");
    let cached = std::fs::read_to_string(&cache).unwrap();
    assert_eq!(cached.lines().count(), 1, "only the local source: {cached}");
    assert!(cached.contains("local/Dockerfile"), "{cached}");
    let first = snapshot(&fleet.state());
    let (code, out, _) = run(fleet.path(), &["analyze"]);
    assert_eq!(code, 0);
    assert!(out.contains("dockerfiles: 0 parsed, 3 unchanged"), "{out}");
    assert_eq!(
        first,
        snapshot(&fleet.state()),
        "the cached fingerprint is the same"
    );

    // Same size, modification time put back: still re-read, re-parsed.
    let file = fleet.path().join("local/Dockerfile");
    let before = std::fs::read_to_string(&file).unwrap();
    let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
    let after = before.replace("registry.example.com/a:1", "registry.example.com/b:1");
    assert_eq!(before.len(), after.len());
    std::fs::write(&file, &after).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let (code, out, err) = run(fleet.path(), &["analyze"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("dockerfiles: 1 parsed, 2 unchanged"), "{out}");
    assert_eq!(
        base_refs(&record(fleet.path(), "local")),
        ["registry.example.com/b:1"]
    );
}
