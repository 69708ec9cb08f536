use std::path::{Path, PathBuf};
use std::process::Command;

use rstest::rstest;

use super::credentials::{
    check_host_key, display_url, known_hosts_name, scrub, url_secrets, HostKeyVerdict,
};
use super::*;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Pat")
        .env("GIT_AUTHOR_EMAIL", "pat@example.com")
        .env("GIT_COMMITTER_NAME", "Pat")
        .env("GIT_COMMITTER_EMAIL", "pat@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn reason(summary: &str, images: &[&str]) -> Reason {
    Reason {
        summary: summary.into(),
        images: images.iter().map(|s| s.to_string()).collect(),
        ..Reason::default()
    }
}

#[rstest]
#[case::one_update_three_images(
    &[("rebuild platform-python on python:3.12-slim@sha256:ab12…", &["a", "b", "c"][..])],
    "rebuild platform-python on python:3.12-slim@sha256:ab12… (3 images)"
)]
#[case::same_summary_twice(&[("hold x", &["a"][..]), ("hold x", &["a"][..])], "hold x")]
#[case::different_summaries(
    &[("hold x", &["a"][..]), ("rebuild y", &["b"][..]), ("block z", &[][..])],
    "hold x (+2 more, 2 images)"
)]
#[case::newlines_flattened(&[("rebuild\nx", &[][..])], "rebuild x")]
#[case::empty_summary(&[("", &[][..])], "update state")]
fn subject(#[case] changes: &[(&str, &[&str])], #[case] expected: &str) {
    let reasons: Vec<Reason> = changes.iter().map(|(s, i)| reason(s, i)).collect();
    let refs: Vec<&Reason> = reasons.iter().collect();
    let message = compose_message(&refs, "00000000000000aa");
    assert_eq!(message.lines().next().unwrap(), expected);
}

#[test]
fn long_subject_is_cut_with_an_ellipsis() {
    let long = "rebuild ".to_string() + &"x".repeat(300);
    let r = reason(&long, &["a", "b"]);
    let subject = compose_message(&[&r], "1")
        .lines()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(subject.chars().count(), 100);
    assert!(subject.ends_with("… (2 images)"), "{subject}");
}

#[test]
fn trailers_round_trip_and_agree_with_git_interpret_trailers() {
    let r1 = Reason {
        summary: "rebuild platform-python on python:3.12-slim@sha256:ab12…".into(),
        images: vec!["registry.example/platform-python".into()],
        bases: vec!["docker.io/library/python:3.12-slim@sha256:ab12".into()],
        digests: vec!["sha256:ab12".into()],
        source: Some(ChangeSource::Freight {
            namespace: "platform".into(),
            name: "f00d".into(),
        }),
        rebuilds: vec!["platform-python-ab12".into()],
    };
    let r2 = Reason {
        summary: "expedite jupyter".into(),
        images: vec!["registry.example/jupyter".into()],
        source: Some(ChangeSource::Person("alice".into())),
        ..Reason::default()
    };
    let message = compose_message(&[&r1, &r2], "0123456789abcdef");
    let parsed = parse_trailers(&message);
    assert_eq!(parsed.batch.as_deref(), Some("0123456789abcdef"));
    assert_eq!(parsed.changes, Some(2));
    assert_eq!(
        parsed.images,
        [
            "registry.example/jupyter",
            "registry.example/platform-python"
        ]
    );
    assert_eq!(
        parsed.bases,
        ["docker.io/library/python:3.12-slim@sha256:ab12"]
    );
    assert_eq!(parsed.rebuilds, ["platform-python-ab12"]);
    assert_eq!(parsed.sources.len(), 2);
    assert!(message
        .contains("- rebuild platform-python on python:3.12-slim@sha256:ab12… [sha256:ab12]\n"));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("msg");
    std::fs::write(&file, &message).unwrap();
    let git_view = git(
        dir.path(),
        &["interpret-trailers", "--parse", file.to_str().unwrap()],
    );
    let ours: Vec<String> = git_view
        .lines()
        .filter(|l| l.starts_with(TRAILER_PREFIX))
        .map(str::to_string)
        .collect();
    assert_eq!(ours.len(), 2 + 2 + 1 + 2 + 1, "{git_view}");
    assert!(git_view.contains("Image-Factory-Source: freight/platform/f00d"));
}

#[rstest]
#[case::subject_only("just a subject\n")]
#[case::prose_last("subject\n\nsome prose: with a colon\nand more prose\n")]
fn messages_without_trailers_parse_to_nothing(#[case] message: &str) {
    assert_eq!(parse_trailers(message), Trailers::default());
}

#[rstest]
#[case("freight/ns/name")]
#[case("watcher")]
#[case("analyze")]
#[case("person/alice")]
fn change_source_round_trips(#[case] s: &str) {
    assert_eq!(ChangeSource::parse(s).unwrap().to_string(), s);
}

#[rstest]
#[case("https://user:tok3n@git.example/x.git", "https://git.example/x.git")]
#[case("https://tok3n@git.example/x.git", "https://git.example/x.git")]
#[case("https://git.example/x.git", "https://git.example/x.git")]
#[case("git@github.com:org/repo.git", "git@github.com:org/repo.git")]
#[case("ssh://git@host:2222/repo", "ssh://host:2222/repo")]
fn urls_are_shown_without_user_info(#[case] url: &str, #[case] shown: &str) {
    assert_eq!(display_url(url), shown);
}

#[test]
fn secrets_are_scrubbed_raw_and_percent_decoded() {
    let secrets = url_secrets("https://ci:p%40ssw0rd@host/x");
    let message = "failed for https://ci:p%40ssw0rd@host/x with p@ssw0rd";
    let clean = scrub(message, &secrets);
    assert!(!clean.contains("ssw0rd"), "{clean}");
}

#[test]
fn secret_sources_trim_and_never_print() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "CANARY123\n").unwrap();
    let secret = SecretSource::File(file).load().unwrap();
    assert_eq!(secret.expose(), "CANARY123");
    assert_eq!(format!("{secret:?} {secret}"), "*** ***");
    let missing = SecretSource::File(dir.path().join("absent"))
        .load()
        .unwrap_err();
    assert!(missing.to_string().contains("absent"), "{missing}");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    assert!(SecretSource::File(empty)
        .load()
        .unwrap_err()
        .to_string()
        .contains("empty"));
}

#[test]
fn known_hosts_lines_decide_host_keys() {
    let raw = [1u8, 2, 3, 4];
    let other = [9u8, 9];
    let b64 = "AQIDBA==";
    let file = format!("# comment\n|1|hashed|entry ssh-ed25519 {b64}\ngit.example,10.0.0.1 ssh-ed25519 {b64}\n[git.example]:2222 ssh-rsa AAAA\n");
    assert_eq!(
        check_host_key(&file, "git.example", "ssh-ed25519", &raw),
        HostKeyVerdict::Match
    );
    assert_eq!(
        check_host_key(&file, "10.0.0.1", "ssh-ed25519", &raw),
        HostKeyVerdict::Match
    );
    assert_eq!(
        check_host_key(&file, "git.example", "ssh-ed25519", &other),
        HostKeyVerdict::Mismatch
    );
    assert_eq!(
        check_host_key(&file, "elsewhere", "ssh-ed25519", &raw),
        HostKeyVerdict::Unknown
    );
    assert_eq!(known_hosts_name("git.example", 2222), "[git.example]:2222");
    assert_eq!(
        check_host_key(&file, "[git.example]:2222", "ssh-rsa", &raw),
        HostKeyVerdict::Mismatch
    );
}

fn seeded_clone(dir: &Path) -> (PathBuf, PathBuf) {
    let bare = dir.join("remote.git");
    std::fs::create_dir_all(&bare).unwrap();
    git(&bare, &["init", "--bare", "-q", "-b", "main"]);
    let work = dir.join("work");
    git(dir, &["clone", "-q", bare.to_str().unwrap(), "work"]);
    std::fs::write(work.join("images.yaml"), "images: []\n").unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "seed"]);
    git(&work, &["push", "-q", "origin", "main"]);
    (bare, work)
}

#[test]
fn commit_paths_commits_changes_and_skips_an_unchanged_tree() {
    let dir = tempfile::tempdir().unwrap();
    let (_bare, work) = seeded_clone(dir.path());
    let config = Config::new(&work);
    std::fs::create_dir_all(work.join("state")).unwrap();
    std::fs::write(work.join("state/a.yaml"), "a: 1\n").unwrap();
    let paths = [PathBuf::from("state")];
    let oid = commit_paths(&work, &paths, &Reason::new("analyze"), &config).unwrap();
    assert!(oid.is_some());
    assert_eq!(
        git(&work, &["log", "-1", "--format=%an <%ae>"]).trim(),
        "Image Factory <image-factory@localhost>"
    );
    assert_eq!(
        commit_paths(&work, &paths, &Reason::new("analyze"), &config).unwrap(),
        None
    );
    std::fs::remove_file(work.join("state/a.yaml")).unwrap();
    assert!(commit_paths(&work, &paths, &Reason::new("prune"), &config)
        .unwrap()
        .is_some());
    assert_eq!(git(&work, &["ls-files", "state"]), "");
}

#[test]
fn push_reapplies_local_commits_on_a_moved_remote_and_reports_upstream_files() {
    let dir = tempfile::tempdir().unwrap();
    let (bare, work) = seeded_clone(dir.path());
    let config = Config::new(&work).with_remote(Remote::new(bare.to_str().unwrap()));
    // Our commit, not pushed yet.
    std::fs::create_dir_all(work.join("state")).unwrap();
    std::fs::write(work.join("state/a.yaml"), "a: 2\n").unwrap();
    commit_paths(
        &work,
        &[PathBuf::from("state")],
        &Reason::new("ours"),
        &config,
    )
    .unwrap();
    // First sync learns the remote head.
    push(&work, &config).unwrap();
    // A person edits images.yaml and a state file we later rewrite.
    let other = dir.path().join("other");
    git(
        dir.path(),
        &["clone", "-q", bare.to_str().unwrap(), "other"],
    );
    std::fs::write(other.join("images.yaml"), "images: [{name: x}]\n").unwrap();
    std::fs::write(other.join("state/a.yaml"), "a: hand-edited\n").unwrap();
    git(&other, &["commit", "-q", "-am", "person"]);
    git(&other, &["push", "-q", "origin", "main"]);
    std::fs::write(work.join("state/a.yaml"), "a: 3\n").unwrap();
    commit_paths(
        &work,
        &[PathBuf::from("state")],
        &Reason::new("ours again"),
        &config,
    )
    .unwrap();

    let report = push(&work, &config).unwrap();
    assert_eq!(report.rebased, 1);
    assert_eq!(report.pushed, 1);
    assert_eq!(
        report.upstream_changed,
        [PathBuf::from("images.yaml"), PathBuf::from("state/a.yaml")]
    );
    assert_eq!(
        git(&bare, &["show", "main:state/a.yaml"]),
        "a: 3\n",
        "the machine's rendering wins"
    );
    assert_eq!(
        git(&bare, &["show", "main:images.yaml"]),
        "images: [{name: x}]\n",
        "the person's edit is kept"
    );
    assert_eq!(
        std::fs::read_to_string(work.join("images.yaml")).unwrap(),
        "images: [{name: x}]\n"
    );
    assert_eq!(
        git(&work, &["status", "--porcelain"]),
        "",
        "the working tree matches HEAD"
    );
}

#[test]
fn integrating_the_remote_never_overwrites_uncommitted_local_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (bare, work) = seeded_clone(dir.path());
    let config = Config::new(&work).with_remote(Remote::new(bare.to_str().unwrap()));
    push(&work, &config).unwrap();
    // Others change images.yaml, add notes.txt and README.md.
    let other = dir.path().join("other");
    git(
        dir.path(),
        &["clone", "-q", bare.to_str().unwrap(), "other"],
    );
    std::fs::write(other.join("images.yaml"), "images: [{name: remote}]\n").unwrap();
    std::fs::write(other.join("notes.txt"), "remote notes\n").unwrap();
    std::fs::write(other.join("README.md"), "remote readme\n").unwrap();
    git(&other, &["add", "."]);
    git(&other, &["commit", "-q", "-m", "others"]);
    git(&other, &["push", "-q", "origin", "main"]);
    // Meanwhile, in the factory's checkout: an edit not committed, an untracked file
    // where the remote adds one, and our own state commit to push.
    std::fs::write(work.join("images.yaml"), "images: [{name: local}]\n").unwrap();
    std::fs::write(work.join("notes.txt"), "local notes\n").unwrap();
    std::fs::create_dir_all(work.join("state")).unwrap();
    std::fs::write(work.join("state/a.yaml"), "a: 1\n").unwrap();
    commit_paths(
        &work,
        &[PathBuf::from("state")],
        &Reason::new("ours"),
        &config,
    )
    .unwrap();

    let report = push(&work, &config).unwrap();
    assert_eq!(report.pushed, 1);
    assert_eq!(
        report.kept_local,
        [PathBuf::from("images.yaml"), PathBuf::from("notes.txt")]
    );
    assert_eq!(
        std::fs::read_to_string(work.join("images.yaml")).unwrap(),
        "images: [{name: local}]\n",
        "the uncommitted edit is kept"
    );
    assert_eq!(
        std::fs::read_to_string(work.join("notes.txt")).unwrap(),
        "local notes\n"
    );
    assert_eq!(
        std::fs::read_to_string(work.join("README.md")).unwrap(),
        "remote readme\n",
        "a clean path takes the remote's content"
    );
    assert_eq!(git(&bare, &["show", "main:state/a.yaml"]), "a: 1\n");
    assert_eq!(
        git(&bare, &["show", "main:images.yaml"]),
        "images: [{name: remote}]\n"
    );
}

#[test]
fn paths_outside_the_state_directory_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (writer, task) = Writer::spawn(Config::new(dir.path().join("work")));
        for bad in ["../escape.yaml", "/etc/passwd"] {
            let mut files = std::collections::BTreeMap::new();
            files.insert(PathBuf::from(bad), Some("x".to_string()));
            let err = writer
                .submit(Change::new(files, Reason::new("bad")))
                .await
                .unwrap_err();
            assert!(matches!(err, GitError::OutsideState { .. }), "{err}");
        }
        let outcome = writer.shutdown().await.unwrap();
        assert!(outcome.commits.is_empty(), "nothing was queued");
        task.await.unwrap();
    });
    assert!(!dir.path().join("escape.yaml").exists());
}

#[test]
fn signed_commits_verify_with_git() {
    let dir = tempfile::tempdir().unwrap();
    let (_bare, work) = seeded_clone(dir.path());
    let key = dir.path().join("signing");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "factory", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut config = Config::new(&work);
    config.signing = Some(SigningKey::Ssh(key.clone()));
    std::fs::write(work.join("signed.yaml"), "x: 1\n").unwrap();
    commit_paths(
        &work,
        &[PathBuf::from("signed.yaml")],
        &Reason::new("signed"),
        &config,
    )
    .unwrap()
    .unwrap();
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let allowed = dir.path().join("allowed");
    std::fs::write(&allowed, format!("image-factory@localhost {public}")).unwrap();
    git(
        &work,
        &[
            "-c",
            "gpg.format=ssh",
            "-c",
            &format!("gpg.ssh.allowedSignersFile={}", allowed.display()),
            "verify-commit",
            "HEAD",
        ],
    );
}
