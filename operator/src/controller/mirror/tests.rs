use super::*;
use crate::runtime::{Attempt, AttemptOutcome, Cause, Digest, Mark, PinnedBase, Update, UpdateRef};

fn digest(c: char) -> Digest {
    Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
}

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// `base` (external) got digest `b` from Freight `f1`; `platform` has a rebuild on it;
/// `app` a cascade from that rebuild.
fn records() -> (BTreeMap<String, ImageRuntime>, Rebuild, Rebuild) {
    let mut base = ImageRuntime::new("registry.example/base:1");
    base.updates.push(Update {
        digest: digest('b'),
        tag: "1".into(),
        platforms: BTreeMap::new(),
        discovered_at: at("2026-12-01T08:00:00Z"),
        source: UpdateSource::Freight {
            name: "0123abcd".into(),
            alias: Some("brave-otter".into()),
            warehouse: Some("base".into()),
        },
        superseded_by: None,
        expedited: None,
        signature: None,
    });
    let platform_id = RebuildId::derive("platform", "registry.example/platform:1", &["x".into()]);
    let platform = Rebuild {
        id: platform_id.clone(),
        cause: Cause {
            updates: vec![UpdateRef {
                image: "base".into(),
                reference: "registry.example/base:1".into(),
                digest: digest('b'),
            }],
            parents: vec![],
        },
        bases: vec![PinnedBase::new(
            "base",
            "registry.example/base:1",
            Some(&digest('b')),
        )],
        phase: Phase::Waiting,
        reason: None,
        created_at: at("2026-12-01T08:00:01Z"),
        due_at: at("2026-12-08T08:00:00Z"),
        needs_approval: false,
        approved: None,
        retried: vec![],
        attempts: vec![],
        trigger: None,
        digest: None,
    };
    let app = Rebuild {
        id: RebuildId::derive("app", "registry.example/app:1", &["y".into()]),
        cause: Cause {
            updates: vec![UpdateRef {
                image: "platform".into(),
                reference: "registry.example/platform:1".into(),
                digest: digest('c'),
            }],
            parents: vec![platform_id],
        },
        bases: vec![PinnedBase::new(
            "platform",
            "registry.example/platform:1",
            Some(&digest('c')),
        )],
        ..platform.clone()
    };
    let mut platform_rt = ImageRuntime::new("registry.example/platform:1");
    platform_rt.rebuilds.push(platform.clone());
    let mut app_rt = ImageRuntime::new("registry.example/app:1");
    app_rt.rebuilds.push(app.clone());
    let records = BTreeMap::from([
        ("base".to_string(), base),
        ("platform".to_string(), platform_rt),
        ("app".to_string(), app_rt),
    ]);
    (records, platform, app)
}

#[test]
fn a_held_rebuild_names_its_freight_pins_and_due_time() {
    let (records, platform, _) = records();
    let now = at("2026-12-01T09:00:00Z");
    let o = desired(&platform, "platform", &records, "images", None, now).unwrap();
    assert_eq!(o.metadata.name.as_deref(), Some(platform.id.as_str()));
    assert_eq!(o.metadata.namespace.as_deref(), Some("images"));
    let labels = o.metadata.labels.clone().unwrap();
    assert_eq!(labels[crd::LABEL_IMAGE], "platform");
    assert_eq!(labels[crd::LABEL_FREIGHT], "0123abcd");
    assert!(!labels.contains_key(crd::LABEL_PARENT));
    assert!(o.metadata.owner_references.is_none());
    let u = &o.spec.update;
    assert_eq!(
        (u.base.as_str(), u.reference.as_str()),
        ("base", "registry.example/base:1")
    );
    assert_eq!(u.tag.as_deref(), Some("1"));
    assert_eq!(u.digest, digest('b').to_string());
    assert_eq!(u.discovered_at.0, at("2026-12-01T08:00:00Z"));
    let f = u.freight.clone().unwrap();
    assert_eq!(
        (f.name.as_str(), f.alias.as_deref(), f.warehouse.as_deref()),
        ("0123abcd", Some("brave-otter"), Some("base"))
    );
    assert_eq!(o.spec.pinned_bases.len(), 1);
    assert_eq!(o.spec.pinned_bases[0].reference, "registry.example/base:1");
    let s = o.status.unwrap();
    assert_eq!(s.phase, Some(RebuildPhase::Waiting));
    assert_eq!(s.due_at.unwrap().0, at("2026-12-08T08:00:00Z"));
    assert_eq!(
        s.message.as_deref(),
        Some("held until 2026-12-08T08:00:00Z")
    );
    let held = s.conditions.iter().find(|c| c.type_ == "Held").unwrap();
    assert_eq!(
        (held.status.as_str(), held.last_transition_time.0),
        ("True", now)
    );
}

#[test]
fn a_cascade_names_and_is_owned_by_its_parent() {
    let (records, platform, app) = records();
    let o = desired(
        &app,
        "app",
        &records,
        "images",
        Some("uid-1"),
        Timestamp::now(),
    )
    .unwrap();
    assert_eq!(o.spec.parent.as_deref(), Some(platform.id.as_str()));
    assert_eq!(o.labels()[crd::LABEL_PARENT], platform.id.as_str());
    let owner = &o.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.name.as_str(), owner.uid.as_str()),
        (platform.id.as_str(), "uid-1")
    );
    assert_eq!(owner.kind, "ImageFactoryRebuild");
    // A managed parent's new digest has no Freight.
    assert!(o.spec.update.freight.is_none());
    assert_eq!(o.spec.update.digest, digest('c').to_string());
}

#[test]
fn unchanged_conditions_keep_their_transition_time() {
    let (records, platform, _) = records();
    let first = desired(
        &platform,
        "platform",
        &records,
        "ns",
        None,
        at("2026-12-01T09:00:00Z"),
    )
    .unwrap()
    .status
    .unwrap();
    let mut running = platform.clone();
    running.phase = Phase::Running;
    let mut second = desired(
        &running,
        "platform",
        &records,
        "ns",
        None,
        at("2026-12-01T10:00:00Z"),
    )
    .unwrap()
    .status
    .unwrap();
    keep_transitions(&mut second, Some(&first), Some(3));
    let ready = second
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    let held = second
        .conditions
        .iter()
        .find(|c| c.type_ == "Held")
        .unwrap();
    // Ready stayed False: its time is kept. Held went True → False: it is new.
    assert_eq!(ready.last_transition_time.0, at("2026-12-01T09:00:00Z"));
    assert_eq!(held.last_transition_time.0, at("2026-12-01T10:00:00Z"));
    assert_eq!(second.observed_generation, Some(3));
    assert!(second
        .conditions
        .iter()
        .all(|c| c.observed_generation == Some(3)));
}

#[test]
fn phase_changes_are_events_and_repeats_are_not() {
    let (mut records, platform, app) = records();
    let now = Timestamp::now();
    let held = desired(&platform, "platform", &records, "ns", None, now).unwrap();
    let reasons =
        |prev: Option<&ImageFactoryRebuild>, o: &ImageFactoryRebuild| -> Vec<&'static str> {
            event_for(prev, o).into_iter().map(|(_, r, _)| r).collect()
        };
    assert_eq!(reasons(None, &held), ["RebuildHeld"]);
    assert!(reasons(Some(&held), &held).is_empty());
    assert!(up_to_date(&held, &held));

    // Expedited by a person: one RebuildExpedited, no phase event.
    records.get_mut("base").unwrap().updates[0].expedited = Some(Mark {
        by: "annotation:kubectl-annotate".into(),
        reason: "CVE-2026-1".into(),
        at: now,
    });
    let expedited = desired(&platform, "platform", &records, "ns", None, now).unwrap();
    assert!(!up_to_date(&held, &expedited));
    assert_eq!(reasons(Some(&held), &expedited), ["RebuildExpedited"]);
    assert_eq!(
        expedited.spec.expedite.as_ref().unwrap().reason,
        "CVE-2026-1"
    );

    let mut r = platform.clone();
    r.phase = Phase::Triggered;
    r.attempts.push(Attempt {
        number: 1,
        triggered_at: now,
        finished_at: None,
        outcome: None,
        reason: None,
        log: None,
    });
    let triggered = desired(&r, "platform", &records, "ns", None, now).unwrap();
    assert_eq!(reasons(Some(&expedited), &triggered), ["RebuildTriggered"]);
    r.phase = Phase::Waiting;
    r.attempts[0].outcome = Some(AttemptOutcome::Failed);
    let retry = desired(&r, "platform", &records, "ns", None, now).unwrap();
    let events = event_for(Some(&triggered), &retry);
    assert_eq!(events[0].1, "RebuildRetryScheduled");
    assert_eq!(events[0].0, EventType::Warning);
    r.phase = Phase::Succeeded;
    r.digest = Some(digest('d'));
    let done = desired(&r, "platform", &records, "ns", None, now).unwrap();
    assert_eq!(reasons(Some(&retry), &done), ["RebuildSucceeded"]);
    assert_eq!(
        done.status.as_ref().unwrap().result_digest.as_deref(),
        Some(digest('d').as_str())
    );

    let queued = desired(&app, "app", &records, "ns", None, now).unwrap();
    assert_eq!(reasons(None, &queued), ["CascadeQueued"]);
}

#[test]
fn a_rebuild_without_a_cause_is_not_mirrored() {
    let (records, mut platform, _) = records();
    platform.cause = Cause::default();
    assert!(desired(
        &platform,
        "platform",
        &records,
        "ns",
        None,
        Timestamp::now()
    )
    .is_none());
}

#[tokio::test]
async fn stale_workloads_show_on_the_latest_succeeded_rebuild_only() {
    let (mut records, platform, _) = records();
    let finished = |r: &Rebuild, t: &str, c: char| Rebuild {
        id: RebuildId::derive("platform", "registry.example/platform:1", &[t.into()]),
        phase: Phase::Succeeded,
        attempts: vec![Attempt {
            number: 1,
            triggered_at: at(t),
            finished_at: Some(at(t)),
            outcome: None,
            reason: None,
            log: None,
        }],
        digest: Some(digest(c)),
        ..r.clone()
    };
    let older = finished(&platform, "2026-12-02T00:00:00Z", 'd');
    let newer = finished(&platform, "2026-12-03T00:00:00Z", 'e');
    let rt = records.get_mut("platform").unwrap();
    rt.rebuilds = vec![older.clone(), newer.clone(), platform.clone()];
    assert_eq!(latest_succeeded(rt), Some(&newer.id));

    let (service, _handle) = tower_test::mock::pair::<
        http::Request<kube::client::Body>,
        http::Response<kube::client::Body>,
    >();
    let client = kube::Client::new(service, "images");
    let mut mirror = Mirror::new(Api::namespaced(client, "images"), "images", None);
    let now = at("2026-12-04T00:00:00Z");
    mirror.absorb(records.into_iter().collect(), now);
    let stale_of = |m: &Mirror, r: &Rebuild| {
        m.desired_of(r, "platform", now)
            .and_then(|o| o.status)
            .and_then(|s| s.stale_workloads)
    };
    // Not tracked: no count anywhere.
    assert_eq!(stale_of(&mirror, &newer), None);
    let pending = mirror.pending();
    mirror.stale_workloads(BTreeMap::from([("platform".to_string(), 3)]), now);
    assert_eq!(stale_of(&mirror, &newer), Some(3));
    assert_eq!(stale_of(&mirror, &older), None);
    assert_eq!(stale_of(&mirror, &platform), None);
    assert_eq!(
        mirror.pending(),
        pending,
        "already pending, not queued twice"
    );
    // An image no workload runs stale shows 0 once tracked.
    mirror.stale_workloads(BTreeMap::new(), now);
    assert_eq!(stale_of(&mirror, &newer), Some(0));
}

#[test]
fn label_values_are_dns_labels() {
    assert_eq!(crd::label_value("team/App_1"), "team-app-1");
    assert!(crd::label_value(&"x".repeat(100)).len() <= 63);
}

/// The API server as the mirror sees it, asserting each request in order (the
/// controller-rs `ApiServerVerifier` pattern on `tower-test`).
mod api_server {
    use super::*;
    use http::{Request, Response};
    use kube::client::Body;
    use serde_json::{json, Value};

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    fn mirror() -> (Mirror, Handle) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "images");
        (
            Mirror::new(Api::namespaced(client, "images"), "images", None),
            handle,
        )
    }

    /// Expects a server-side apply of `path` under our field manager; answers `status`
    /// with the applied body plus `uid` and `generation`. Returns the body sent.
    async fn expect_apply(handle: &mut Handle, path: &str, code: u16, uid: &str) -> Value {
        let (request, send) = handle.next_request().await.expect("a request");
        assert_eq!(request.method(), http::Method::PATCH);
        assert_eq!(request.uri().path(), path);
        let query = request.uri().query().unwrap_or_default().to_string();
        assert!(query.contains("fieldManager=image-factory"), "{query}");
        assert!(query.contains("force=true"), "{query}");
        assert_eq!(
            request.headers()["content-type"],
            "application/apply-patch+yaml"
        );
        let body: Value =
            serde_json::from_slice(&request.into_body().collect_bytes().await.unwrap()).unwrap();
        if code != 200 {
            let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": "etcd is down", "reason": "InternalError", "code": code});
            send.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&status).unwrap()))
                    .unwrap(),
            );
            return body;
        }
        let mut object = body.clone();
        object["metadata"]["uid"] = json!(uid);
        object["metadata"]["generation"] = json!(1);
        object["metadata"]["namespace"] = json!("images");
        if object.get("spec").is_none() {
            object["spec"] = json!({"image": "x", "update": {"base": "b", "reference": "r",
                "digest": digest('b').to_string(), "discoveredAt": "2026-12-01T08:00:00Z"}});
            object["metadata"]["name"] = json!(path.rsplit('/').nth(1).unwrap());
        }
        send.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(&object).unwrap()))
                .unwrap(),
        );
        body
    }

    const BASE: &str = "/apis/imagefactory.dev/v1alpha1/namespaces/images/imagefactoryrebuilds";

    #[tokio::test]
    async fn parents_are_written_before_children_spec_then_status_and_failures_retried() {
        let (records, platform, app) = records();
        let (mirror, mut handle) = mirror();
        let metrics = std::sync::Arc::new(crate::factory::Metrics::new());
        let mut mirror = mirror.with_metrics(metrics.clone());
        mirror.absorb(records.into_iter().collect(), Timestamp::now());
        assert_eq!(mirror.pending(), 2);
        let server = tokio::spawn(async move {
            let p = format!("{BASE}/{}", platform.id);
            let a = format!("{BASE}/{}", app.id);
            // Round 1: the parent's spec, its status; then the child with the parent's
            // uid as owner, whose status write fails.
            let spec = expect_apply(&mut handle, &p, 200, "uid-p").await;
            assert_eq!(spec["spec"]["image"], "platform");
            assert!(spec.get("status").is_none(), "status goes to /status");
            assert!(spec["metadata"].get("ownerReferences").is_none());
            let status = expect_apply(&mut handle, &format!("{p}/status"), 200, "uid-p").await;
            assert_eq!(status["status"]["phase"], "Waiting");
            assert_eq!(status["status"]["observedGeneration"], 1);
            let spec = expect_apply(&mut handle, &a, 200, "uid-a").await;
            assert_eq!(spec["metadata"]["ownerReferences"][0]["uid"], "uid-p");
            expect_apply(&mut handle, &format!("{a}/status"), 500, "uid-a").await;
            // Round 2: only the child again, spec then status.
            expect_apply(&mut handle, &a, 200, "uid-a").await;
            expect_apply(&mut handle, &format!("{a}/status"), 200, "uid-a").await;
            handle
        });
        assert_eq!(mirror.flush(Timestamp::now()).await, 1);
        assert_eq!(mirror.pending(), 1);
        assert_eq!(mirror.flush(Timestamp::now()).await, 0);
        assert_eq!(mirror.pending(), 0);
        let mut handle = server.await.unwrap();
        // Nothing changed: the next flush sends nothing.
        assert_eq!(mirror.flush(Timestamp::now()).await, 0);
        drop(mirror);
        assert!(
            handle.next_request().await.is_none(),
            "an unexpected request"
        );
        let text = metrics.render();
        for line in [
            "image_factory_rebuild_object_writes_total{result=\"ok\"} 2",
            "image_factory_rebuild_object_writes_total{result=\"error\"} 1",
            "image_factory_reconcile_errors_total{reason=\"InternalError\"} 1",
            "image_factory_rebuild_objects{phase=\"Waiting\"} 2",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
    }
}
