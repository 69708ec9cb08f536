//! The trigger contract: environment and payload shapes, the command backend against
//! real processes, the webhook backend against a local HTTP receiver (wiremock) that
//! checks the HMAC.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request as Received, Respond, ResponseTemplate};

use super::command::CommandBackend;
use super::webhook::{sign, WebhookBackend};
use super::*;
use crate::enrollment::{Command, Program};
use crate::runtime::{Digest, UpdateRef};

const CANARY: &str = "canary-secret-7f3a9d";

fn digest(c: char) -> Digest {
    Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
}

fn request() -> Request {
    let base = PinnedBase::new(
        "python-3-12",
        "docker.io/library/python:3.12-slim",
        Some(&digest('a')),
    );
    Request {
        id: RebuildId::parse("app-0123456789").unwrap(),
        attempt: 2,
        image: "app".into(),
        reference: "ghcr.io/acme/app:1".into(),
        tags: vec![
            "ghcr.io/acme/app:1".into(),
            "ghcr.io/acme/app:latest".into(),
        ],
        bases: vec![base],
        build_args: [("PY".to_string(), "3.12".to_string())].into(),
        source: SourceInfo {
            git: Some("https://github.com/acme/app.git".into()),
            reference: Some("main".into()),
            commit: None,
            dockerfile: "Dockerfile".into(),
            context: ".".into(),
        },
        local: None,
        cause: Cause {
            updates: vec![UpdateRef {
                image: "python-3-12".into(),
                reference: "docker.io/library/python:3.12-slim".into(),
                digest: digest('a'),
            }],
            parents: vec![],
        },
    }
}

fn shell(line: &str, timeout: Duration) -> Command {
    Command {
        program: Program::Shell(line.to_string()),
        timeout,
    }
}

#[test]
fn env_carries_the_pins_and_the_rebuild() {
    let env: BTreeMap<String, String> = request().env().into_iter().collect();
    assert_eq!(
        env["IMAGE_FACTORY_BASE_PYTHON_3_12"],
        format!("docker.io/library/python:3.12-slim@{}", digest('a'))
    );
    assert_eq!(env["IMAGE_FACTORY_REBUILD_ID"], "app-0123456789");
    assert_eq!(env["IMAGE_FACTORY_IDEMPOTENCY_KEY"], "app-0123456789.2");
    assert_eq!(
        env["IMAGE_FACTORY_TAGS"],
        "ghcr.io/acme/app:1 ghcr.io/acme/app:latest"
    );
    let bases: serde_json::Value = serde_json::from_str(&env["IMAGE_FACTORY_BASES"]).unwrap();
    assert_eq!(bases[0]["image"], "python-3-12");
    assert!(bases[0]["pinned"]
        .as_str()
        .unwrap()
        .ends_with(&digest('a').to_string()));
    assert!(
        !env.contains_key("IMAGE_FACTORY_DOCKERFILE"),
        "no local source"
    );
}

#[test]
fn base_variables_are_shell_names() {
    assert_eq!(
        base_variable("gcr-io.distroless"),
        "IMAGE_FACTORY_BASE_GCR_IO_DISTROLESS"
    );
    assert_eq!(base_variable("python"), "IMAGE_FACTORY_BASE_PYTHON");
}

#[test]
fn payload_has_the_documented_shape() {
    let r = request();
    let v = serde_json::to_value(r.payload()).unwrap();
    for key in [
        "version",
        "event",
        "rebuildId",
        "attempt",
        "idempotencyKey",
        "image",
        "reference",
        "tags",
        "bases",
        "buildArgs",
        "source",
        "cause",
    ] {
        assert!(v.get(key).is_some(), "payload lacks {key}: {v}");
    }
    assert_eq!(v["version"], 1);
    assert_eq!(v["source"]["ref"], "main");
    assert_eq!(v["bases"][0]["pinned"], r.bases[0].pinned);
}

#[test]
fn tail_keeps_the_end_on_a_character_boundary() {
    assert_eq!(tail(b"short", 10), "short");
    let text = "ééééé".as_bytes();
    let t = tail(text, 3);
    assert!(t.starts_with('…'));
    assert_eq!(t.trim_start_matches('…'), "é");
}

#[test]
fn secrets_never_print() {
    let s = Secret::new(CANARY);
    assert!(!format!("{s:?} {s}").contains(CANARY));
    assert_eq!(s.redact(&format!("token={CANARY}")), "token=***");
}

#[test]
fn secret_references_read_env_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{CANARY}\n")).unwrap();
    let s = Secret::read(&SecretRef::File(file)).unwrap();
    assert_eq!(s.expose(), CANARY);
    let missing = Secret::read(&SecretRef::Env("IMAGE_FACTORY_TEST_UNSET_VAR".into())).unwrap_err();
    assert!(
        missing.reason.contains("IMAGE_FACTORY_TEST_UNSET_VAR"),
        "{missing}"
    );
}

#[tokio::test]
async fn command_success_keeps_the_output_tail_and_sees_the_pins() {
    let backend = CommandBackend::new(shell(
        "echo building $IMAGE_FACTORY_REFERENCE on $IMAGE_FACTORY_BASE_PYTHON_3_12; echo oops >&2",
        Duration::from_secs(10),
    ));
    let r = request();
    let report = backend.run(&r, &Context::detached()).await.unwrap();
    let log = report.log_tail.unwrap();
    assert!(
        log.contains(
            "building ghcr.io/acme/app:1 on docker.io/library/python:3.12-slim@sha256:aaaa"
        ),
        "{log}"
    );
    assert!(log.contains("oops"));
}

#[tokio::test]
async fn command_runs_argv_without_a_shell() {
    let backend = CommandBackend::new(Command {
        program: Program::Args(vec![
            "echo".into(),
            "$IMAGE_FACTORY_IMAGE; no expansion".into(),
        ]),
        timeout: Duration::from_secs(10),
    });
    let report = backend.run(&request(), &Context::detached()).await.unwrap();
    assert_eq!(
        report.log_tail.unwrap().trim(),
        "$IMAGE_FACTORY_IMAGE; no expansion"
    );
}

#[tokio::test]
async fn command_exit_status_is_the_result() {
    let backend = CommandBackend::new(shell("echo compile error; exit 3", Duration::from_secs(10)));
    let f = backend
        .run(&request(), &Context::detached())
        .await
        .unwrap_err();
    assert!(f.reason.contains("exited with status 3"), "{f}");
    assert!(!f.transient);
    assert!(f.log_tail.unwrap().contains("compile error"));
}

#[tokio::test]
async fn command_not_found_says_so() {
    let backend = CommandBackend::new(Command {
        program: Program::Args(vec!["image-factory-no-such-builder".into()]),
        timeout: Duration::from_secs(10),
    });
    let f = backend
        .run(&request(), &Context::detached())
        .await
        .unwrap_err();
    assert!(
        f.reason.contains("cannot start") && f.reason.contains("PATH"),
        "{f}"
    );
}

#[tokio::test]
async fn command_timeout_kills_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("finished");
    let backend = CommandBackend::new(shell(
        &format!("echo started; sleep 30; touch {}", marker.display()),
        Duration::from_millis(500),
    ));
    let started = Instant::now();
    let f = backend
        .run(&request(), &Context::detached())
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(f.reason.contains("timed out after 500ms"), "{f}");
    assert!(f.transient);
    assert!(f.log_tail.unwrap().contains("started"));
    assert!(!marker.exists());
}

#[tokio::test]
async fn command_cancellation_kills_the_child_and_reports_started() {
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let ctx = Context::new(cancel.clone(), Some(tx));
    let backend = CommandBackend::new(shell("exec sleep 30", Duration::from_secs(60)));
    let r = request();
    let run = backend.run(&r, &ctx);
    let canceller = async {
        let handle = rx.recv().await.unwrap();
        assert!(handle.contains("pid"), "{handle}");
        cancel.cancel();
    };
    let (result, ()) = tokio::join!(run, canceller);
    let f = result.unwrap_err();
    assert!(f.reason.contains("cancelled"), "{f}");
}

/// Answers 500 `failures` times, then 200; counts and keeps every request.
struct Flaky {
    failures: usize,
    seen: Arc<AtomicUsize>,
    body: serde_json::Value,
}

impl Respond for Flaky {
    fn respond(&self, _: &Received) -> ResponseTemplate {
        let n = self.seen.fetch_add(1, Ordering::SeqCst);
        if n < self.failures {
            ResponseTemplate::new(500)
        } else {
            ResponseTemplate::new(202).set_body_json(self.body.clone())
        }
    }
}

fn fast(backend: WebhookBackend) -> WebhookBackend {
    backend.with_intervals(Duration::from_millis(20), Duration::from_millis(20))
}

/// Sets a process-wide variable for the webhook's secrets (names unique per test).
fn secret_env(name: &str, value: &str) -> SecretRef {
    std::env::set_var(name, value);
    SecretRef::Env(name.to_string())
}

#[tokio::test]
async fn webhook_retries_a_500_with_the_same_idempotency_key_and_a_valid_signature() {
    let server = MockServer::start().await;
    let seen = Arc::new(AtomicUsize::new(0));
    Mock::given(method("POST"))
        .and(path("/hook"))
        .and(header("Idempotency-Key", "app-0123456789.2"))
        .respond_with(Flaky {
            failures: 1,
            seen: Arc::clone(&seen),
            body: serde_json::json!({}),
        })
        .mount(&server)
        .await;
    let signing = secret_env("IF_TEST_WEBHOOK_SIGNING_1", "shared-key");
    let token = secret_env("IF_TEST_WEBHOOK_TOKEN_1", CANARY);
    let backend = fast(
        WebhookBackend::new(
            format!("{}/hook", server.uri()),
            Some(token),
            Some(signing),
            Duration::from_secs(10),
        )
        .unwrap(),
    );
    let r = request();
    let report = backend.run(&r, &Context::detached()).await.unwrap();
    assert!(report.handle.is_some());
    assert_eq!(seen.load(Ordering::SeqCst), 2, "one retry after the 500");

    let received = server.received_requests().await.unwrap();
    assert_eq!(received.len(), 2);
    for req in &received {
        let sig = req
            .headers
            .get("X-Image-Factory-Signature")
            .unwrap()
            .to_str()
            .unwrap();
        assert_eq!(sig, sign(&Secret::new("shared-key"), &req.body).unwrap());
        assert_eq!(
            req.headers.get("Authorization").unwrap().to_str().unwrap(),
            format!("Bearer {CANARY}")
        );
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(body["rebuildId"], "app-0123456789");
        assert_eq!(body["bases"][0]["pinned"], r.bases[0].pinned);
    }
    assert_eq!(received[0].body, received[1].body, "same payload on retry");
}

#[test]
fn signature_matches_an_independent_hmac() {
    // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
    let sig = sign(&Secret::new("Jefe"), b"what do ya want for nothing?").unwrap();
    assert_eq!(
        sig,
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[tokio::test]
async fn webhook_follows_the_status_url_to_failure_with_its_log() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(
            ResponseTemplate::new(202).set_body_json(
                serde_json::json!({"statusUrl": format!("{}/status/1", server.uri())}),
            ),
        )
        .mount(&server)
        .await;
    let polls = Arc::new(AtomicUsize::new(0));
    struct Status(Arc<AtomicUsize>);
    impl Respond for Status {
        fn respond(&self, _: &Received) -> ResponseTemplate {
            if self.0.fetch_add(1, Ordering::SeqCst) < 2 {
                ResponseTemplate::new(200).set_body_json(serde_json::json!({"status": "running"}))
            } else {
                ResponseTemplate::new(200).set_body_json(serde_json::json!({
                    "status": "failed", "message": "step 3 failed", "log": format!("error: {CANARY} rejected")
                }))
            }
        }
    }
    Mock::given(method("GET"))
        .and(path("/status/1"))
        .respond_with(Status(Arc::clone(&polls)))
        .mount(&server)
        .await;
    let token = secret_env("IF_TEST_WEBHOOK_TOKEN_2", CANARY);
    let backend = fast(
        WebhookBackend::new(
            format!("{}/hook", server.uri()),
            Some(token),
            None,
            Duration::from_secs(10),
        )
        .unwrap(),
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let ctx = Context::new(CancellationToken::new(), Some(tx));
    let f = backend.run(&request(), &ctx).await.unwrap_err();
    assert!(f.reason.contains("step 3 failed"), "{f}");
    assert_eq!(polls.load(Ordering::SeqCst), 3);
    assert!(rx.recv().await.unwrap().ends_with("/status/1"));
    let log = f.log_tail.unwrap();
    assert!(
        !log.contains(CANARY) && log.contains("***"),
        "secret echoed: {log}"
    );
}

#[tokio::test]
async fn webhook_4xx_fails_at_once_without_the_secret() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(403).set_body_string(format!("bad token {CANARY}")))
        .expect(1)
        .mount(&server)
        .await;
    let token = secret_env("IF_TEST_WEBHOOK_TOKEN_3", CANARY);
    let backend = fast(
        WebhookBackend::new(
            format!("{}/hook", server.uri()),
            Some(token),
            None,
            Duration::from_secs(10),
        )
        .unwrap(),
    );
    let f = backend
        .run(&request(), &Context::detached())
        .await
        .unwrap_err();
    assert!(f.reason.contains("HTTP 403"), "{f}");
    assert!(!format!("{f:?}").contains(CANARY), "{f:?}");
}

#[tokio::test]
async fn webhook_gives_up_after_bounded_retries() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .expect(u64::from(webhook::RETRIES))
        .mount(&server)
        .await;
    let backend = fast(
        WebhookBackend::new(
            format!("{}/hook", server.uri()),
            None,
            None,
            Duration::from_secs(30),
        )
        .unwrap(),
    );
    let f = backend
        .run(&request(), &Context::detached())
        .await
        .unwrap_err();
    assert!(f.transient);
    assert!(f.reason.contains("HTTP 503"), "{f}");
}

#[tokio::test]
async fn webhook_unreachable_is_transient() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let backend = fast(
        WebhookBackend::new(
            format!("http://127.0.0.1:{port}/hook"),
            None,
            None,
            Duration::from_secs(5),
        )
        .unwrap(),
    );
    let f = backend
        .run(&request(), &Context::detached())
        .await
        .unwrap_err();
    assert!(f.transient, "{f}");
    assert!(f.reason.contains("not delivered"), "{f}");
}
