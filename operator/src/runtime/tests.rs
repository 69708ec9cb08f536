use std::path::Path;

use rstest::rstest;

use super::*;

fn digest(c: char) -> Digest {
    Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
}

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn mark(by: &str, reason: &str, when: &str) -> Mark {
    Mark {
        by: by.into(),
        reason: reason.into(),
        at: at(when),
    }
}

impl Update {
    fn test(d: char, discovered: &str) -> Self {
        Update {
            digest: digest(d),
            tag: "3.12-slim".into(),
            platforms: BTreeMap::new(),
            discovered_at: at(discovered),
            source: UpdateSource::Watcher,
            superseded_by: None,
            expedited: None,
            signature: None,
        }
    }
}

impl Rebuild {
    fn test(id: &str, phase: Phase) -> Self {
        Rebuild {
            id: RebuildId::parse(id).unwrap(),
            cause: Cause::default(),
            bases: vec![],
            phase,
            reason: None,
            created_at: at("2026-11-01T00:00:00Z"),
            due_at: at("2026-11-08T00:00:00Z"),
            needs_approval: false,
            approved: None,
            retried: vec![],
            attempts: vec![],
            trigger: None,
            digest: None,
        }
    }
}

/// A record using every field, as the engine writes it mid-cascade.
fn sample() -> (ImageRuntime, ImageRuntime) {
    let mut python = ImageRuntime::new("docker.io/library/python:3.12-slim");
    python.current = Some(Observed {
        tag: "3.12-slim".into(),
        digest: digest('b'),
        platforms: BTreeMap::from([
            ("linux/amd64".into(), digest('c')),
            ("linux/arm64".into(), digest('d')),
        ]),
        first_seen: at("2026-11-02T09:30:00Z"),
    });
    let mut first = Update::test('a', "2026-11-01T08:00:00Z");
    first.source = UpdateSource::Freight {
        name: "0a1b2c3d4e".into(),
        alias: None,
        warehouse: None,
    };
    first.superseded_by = Some(digest('b'));
    first.expedited = Some(mark("alice", "CVE-2026-1234", "2026-11-01T12:00:00Z"));
    let mut second = Update::test('b', "2026-11-02T09:30:00.750Z");
    second.discovered_at = to_second(second.discovered_at);
    second.platforms = python.current.as_ref().unwrap().platforms.clone();
    python.updates = vec![first, second];
    python.blocks = vec![Block {
        digest: digest('e'),
        by: "bob".into(),
        reason: "breaks locale".into(),
        at: at("2026-11-03T00:00:00Z"),
    }];

    let mut app = ImageRuntime::new("registry.example.com/team/app:1");
    let pinned = vec![PinnedBase::new(
        "python",
        "docker.io/library/python:3.12-slim",
        Some(&digest('a')),
    )];
    let id = RebuildId::derive(
        "app",
        &app.reference,
        &pinned.iter().map(|p| p.pinned.clone()).collect::<Vec<_>>(),
    );
    let mut done = Rebuild::test(id.as_str(), Phase::Succeeded);
    done.cause.updates = vec![UpdateRef {
        image: "python".into(),
        reference: "docker.io/library/python:3.12-slim".into(),
        digest: digest('a'),
    }];
    done.bases = pinned;
    done.attempts = vec![
        Attempt {
            number: 1,
            triggered_at: at("2026-11-08T00:00:00Z"),
            finished_at: Some(at("2026-11-08T00:05:00Z")),
            outcome: Some(AttemptOutcome::Failed),
            reason: Some("exit status 1".into()),
            log: Some("error: compile failed\n".into()),
        },
        Attempt {
            number: 2,
            triggered_at: at("2026-11-08T00:06:00Z"),
            finished_at: Some(at("2026-11-08T00:10:00Z")),
            outcome: Some(AttemptOutcome::Succeeded),
            reason: None,
            log: None,
        },
    ];
    done.trigger = Some("job/app-build-2".into());
    done.digest = Some(digest('f'));
    let mut waiting = Rebuild::test("app-0123456789", Phase::Skipped);
    waiting.needs_approval = true;
    waiting.reason = Some("update available; approve it to rebuild".into());
    waiting.cause.parents = vec![RebuildId::parse("base-9876543210").unwrap()];
    app.rebuilds = vec![done, waiting];
    (python, app)
}

#[test]
fn runtime_files_match_the_golden_shape() {
    let (python, app) = sample();
    let text = format!("{}---\n{}", python.render().unwrap(), app.render().unwrap());
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/runtime/testdata/runtime.yaml");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &text).unwrap();
    }
    let want = std::fs::read_to_string(&golden).unwrap();
    assert_eq!(
        text, want,
        "rerun with UPDATE_GOLDEN=1 to accept a deliberate change"
    );
}

#[test]
fn runtime_files_round_trip() {
    let (python, app) = sample();
    for record in [python, app] {
        let text = record.render().unwrap();
        assert!(text.starts_with(HEADER));
        let back = ImageRuntime::parse("x.yaml", &text).unwrap();
        assert_eq!(back, record);
        assert_eq!(back.render().unwrap(), text, "rendering is deterministic");
    }
}

#[test]
fn timestamps_are_written_to_the_second() {
    let (python, _) = sample();
    let text = python.render().unwrap();
    assert!(
        text.contains("discoveredAt: \"2026-11-02T09:30:00Z\""),
        "{text}"
    );
    assert!(!text.contains(".750"));
}

#[test]
fn another_version_says_to_upgrade() {
    let err = ImageRuntime::parse("state/runtime/python.yaml", "version: 2\nreference: x\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("state/runtime/python.yaml"), "{err}");
    assert!(err.contains("version 2 is not supported") && err.contains("upgrade image-factory"));
}

#[test]
fn a_missing_version_is_a_located_error() {
    let err = ImageRuntime::parse("r.yaml", "reference: x\n").unwrap_err();
    assert!(
        matches!(err, RuntimeError::Corrupt { line: 1, .. }),
        "{err}"
    );
}

#[test]
fn a_bad_digest_in_a_file_is_located() {
    let text = "version: 1\nreference: x\nupdates:\n- digest: sha256:abc\n  tag: a\n  discoveredAt: 2026-11-01T00:00:00Z\n  source: {kind: watcher}\n";
    let err = ImageRuntime::parse("r.yaml", text).unwrap_err();
    let RuntimeError::Corrupt { line, message, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(*line, 4, "{err}");
    assert!(message.contains("wrong length"), "{message}");
}

#[test]
fn a_repeated_rebuild_id_is_refused() {
    let mut r = ImageRuntime::new("x");
    r.rebuilds = vec![
        Rebuild::test("app-0123456789", Phase::Failed),
        Rebuild::test("app-0123456789", Phase::Waiting),
    ];
    let err = ImageRuntime::parse("r.yaml", &r.render().unwrap()).unwrap_err();
    assert!(
        matches!(err, RuntimeError::DuplicateRebuild { .. }),
        "{err}"
    );
}

#[rstest]
#[case::sha256("sha256:", 64, true)]
#[case::sha384("sha384:", 96, true)]
#[case::sha512("sha512:", 128, true)]
#[case::short_sha256("sha256:", 63, false)]
#[case::sha512_length_for_sha256("sha256:", 128, false)]
#[case::unknown_algorithm("md5:", 32, false)]
#[case::no_colon("sha256", 64, false)]
fn digests_are_validated(#[case] prefix: &str, #[case] len: usize, #[case] ok: bool) {
    let text = format!("{prefix}{}", "0".repeat(len));
    assert_eq!(Digest::parse(&text).is_ok(), ok, "{text}");
}

#[test]
fn upper_case_hex_is_refused() {
    let err = Digest::parse(&format!("sha256:{}", "A".repeat(64))).unwrap_err();
    assert!(err.to_string().contains("not lower-case hex"));
    let d = digest('a');
    assert_eq!((d.algorithm(), d.hex().len()), ("sha256", 64));
    assert_eq!(
        Digest::sha256_of(b"").as_str(),
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn rebuild_ids_are_stable_and_order_independent() {
    let a = vec!["x:1@sha256:aa".to_string(), "y:2@sha256:bb".to_string()];
    let b = vec![a[1].clone(), a[0].clone()];
    let id = RebuildId::derive("app", "r/app:1", &a);
    assert_eq!(id, RebuildId::derive("app", "r/app:1", &b));
    assert_ne!(id, RebuildId::derive("app", "r/app:1", &a[..1]));
    assert!(
        id.as_str().starts_with("app-") && id.as_str().len() == 14,
        "{id}"
    );
    assert_eq!(RebuildId::parse(id.as_str()).unwrap(), id);
}

#[test]
fn rebuild_ids_of_long_names_fit_a_kubernetes_label() {
    let name = format!("Team_{}", "x".repeat(100));
    let id = RebuildId::derive(&name, "r/x:1", &[]);
    assert!(id.as_str().len() <= REBUILD_ID_MAX, "{id}");
    assert!(RebuildId::parse(id.as_str()).is_ok(), "{id}");
    assert!(id.as_str().starts_with("team-xxx"));
    assert!(RebuildId::parse("Bad_Id").is_err());
    assert!(RebuildId::parse(&"a".repeat(64)).is_err());
}

#[test]
fn trimming_keeps_the_newest_and_those_still_in_use() {
    let mut r = ImageRuntime::new("x");
    for (i, c) in ['1', '2', '3', '4', '5'].into_iter().enumerate() {
        r.insert_update(Update::test(c, &format!("2026-11-0{}T00:00:00Z", i + 1)));
    }
    let dropped = r.trim(2, &BTreeSet::from([digest('1')]));
    assert_eq!(dropped, 2);
    let kept: Vec<Digest> = r.updates.iter().map(|u| u.digest.clone()).collect();
    assert_eq!(kept, [digest('1'), digest('4'), digest('5')]);
}

#[test]
fn trimming_never_drops_an_open_rebuild() {
    let mut r = ImageRuntime::new("x");
    r.rebuilds = vec![
        Rebuild::test("a-1", Phase::Waiting),
        Rebuild::test("a-2", Phase::Succeeded),
        Rebuild::test("a-3", Phase::Failed),
        Rebuild::test("a-4", Phase::Superseded),
    ];
    r.trim(1, &BTreeSet::new());
    let ids: Vec<&str> = r.rebuilds.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["a-1", "a-4"]);
}

#[test]
fn updates_are_kept_in_discovery_order() {
    let mut r = ImageRuntime::new("x");
    r.insert_update(Update::test('2', "2026-11-02T00:00:00Z"));
    r.insert_update(Update::test('1', "2026-11-01T00:00:00Z"));
    r.insert_update(Update::test('3', "2026-11-02T00:00:00Z"));
    let order: Vec<Digest> = r.updates.iter().map(|u| u.digest.clone()).collect();
    assert_eq!(order, [digest('1'), digest('2'), digest('3')]);
}

#[test]
fn the_attempt_budget_restarts_after_a_manual_retry() {
    let mut r = Rebuild::test("a-1", Phase::Failed);
    for n in 1..=3 {
        r.attempts.push(Attempt {
            number: n,
            triggered_at: at(&format!("2026-11-0{n}T00:00:00Z")),
            finished_at: None,
            outcome: Some(AttemptOutcome::Failed),
            reason: None,
            log: None,
        });
    }
    assert_eq!(r.attempts_in_budget(), 3);
    r.retried
        .push(mark("alice", "registry was down", "2026-11-05T00:00:00Z"));
    assert_eq!(r.attempts_in_budget(), 0);
}
