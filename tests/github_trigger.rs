//! The `githubWorkflow` trigger against a mocked GitHub REST API (request and response
//! shapes from GitHub's docs, API version 2022-11-28), and the example workflow of
//! `examples/github-actions/build-image.yml`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use image_factory::enrollment::{GithubAuth, SecretRef, Trigger};
use image_factory::runtime::{Cause, PinnedBase, RebuildId};
use image_factory::trigger::github::GithubBackend;
use image_factory::trigger::{Backend, Context, Failure, Report, Request, SourceInfo};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::repo_root;

const TOKEN: &str = "ghp_canary0token0must0never0leak";
const REPO: &str = "/repos/acme/images/actions";
const DISPATCH: &str = "/repos/acme/images/actions/workflows/build.yml/dispatches";
const RUNS: &str = "/repos/acme/images/actions/workflows/build.yml/runs";
const REBUILD: &str = "platform-python-0123456789";

/// A GitHub stand-in, a token file, and the trigger pointing at both.
struct Github {
    server: MockServer,
    dir: tempfile::TempDir,
    timeout: Duration,
}

impl Github {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
        Self {
            server: MockServer::start().await,
            dir,
            timeout: Duration::from_secs(10),
        }
    }

    fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn trigger(&self, auth: GithubAuth) -> Trigger {
        Trigger::GithubWorkflow {
            repository: "acme/images".into(),
            workflow: "build.yml".into(),
            reference: "main".into(),
            inputs: BTreeMap::from([("flavor".to_string(), "slim".to_string())]),
            auth,
            api_url: format!("{}/", self.server.uri()),
            timeout: self.timeout,
        }
    }

    fn token_auth(&self) -> GithubAuth {
        GithubAuth::Token(SecretRef::File(self.dir.path().join("token")))
    }

    fn backend(&self, auth: GithubAuth) -> GithubBackend {
        GithubBackend::new(&self.trigger(auth))
            .unwrap()
            .with_poll(Duration::from_millis(20))
    }

    /// Runs the token-authenticated backend; the result and every handle reported started.
    async fn run(&self) -> (Result<Report, Failure>, Vec<String>) {
        run_backend(&self.backend(self.token_auth()), Context::detached()).await
    }

    async fn mount(&self, mock: Mock) {
        mock.mount(&self.server).await;
    }

    async fn requests_to(&self, wanted: &str) -> Vec<wiremock::Request> {
        self.server
            .received_requests()
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.url.path() == wanted)
            .collect()
    }
}

async fn run_backend(
    backend: &GithubBackend,
    ctx: Context,
) -> (Result<Report, Failure>, Vec<String>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let ctx = Context::new(ctx.cancel.clone(), Some(tx));
    let result = backend.run(&request(), &ctx).await;
    drop(ctx);
    let mut started = Vec::new();
    while let Some(handle) = rx.recv().await {
        started.push(handle);
    }
    (result, started)
}

fn request() -> Request {
    Request {
        id: RebuildId::parse(REBUILD).unwrap(),
        attempt: 1,
        image: "platform-python".into(),
        reference: "registry.example.com/platform/python:3.12".into(),
        tags: vec!["registry.example.com/platform/python:3.12".into()],
        bases: vec![PinnedBase {
            image: "python-3-12-slim".into(),
            pinned: format!(
                "docker.io/library/python:3.12-slim@sha256:{}",
                "a".repeat(64)
            ),
        }],
        build_args: BTreeMap::new(),
        source: SourceInfo {
            git: Some("https://github.com/acme/images.git".into()),
            reference: None,
            commit: None,
            dockerfile: "Dockerfile".into(),
            context: ".".into(),
        },
        local: None,
        cause: Cause::default(),
    }
}

fn html_url(id: u64) -> String {
    format!("https://github.com/acme/images/actions/runs/{id}")
}

/// A workflow run as "Get a workflow run" returns it (the fields that matter).
fn run_json(id: u64, status: &str, conclusion: Option<&str>) -> Value {
    json!({
        "id": id,
        "name": "build-image",
        "display_title": format!("image-factory rebuild {REBUILD}"),
        "event": "workflow_dispatch",
        "status": status,
        "conclusion": conclusion,
        "workflow_id": 161335,
        "run_number": 562,
        "html_url": html_url(id),
        "url": format!("https://api.github.com/repos/acme/images/actions/runs/{id}"),
        "created_at": "2026-05-01T10:00:00Z",
    })
}

fn dispatch_details(id: u64) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "workflow_run_id": id,
        "run_url": format!("https://api.github.com/repos/acme/images/actions/runs/{id}"),
        "html_url": html_url(id),
    }))
}

/// The run `id` answers `in_progress` once, then `completed` with `conclusion`.
async fn run_ends(github: &Github, id: u64, conclusion: &str) {
    github
        .mount(
            Mock::given(method("GET"))
                .and(path(format!("{REPO}/runs/{id}")))
                .respond_with(ResponseTemplate::new(200).set_body_json(run_json(
                    id,
                    "in_progress",
                    None,
                )))
                .up_to_n_times(1)
                .with_priority(1),
        )
        .await;
    github
        .mount(
            Mock::given(method("GET"))
                .and(path(format!("{REPO}/runs/{id}")))
                .respond_with(ResponseTemplate::new(200).set_body_json(run_json(
                    id,
                    "completed",
                    Some(conclusion),
                ))),
        )
        .await;
}

fn github_error(status: u16, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "message": message,
        "documentation_url": "https://docs.github.com/rest/actions/workflows#create-a-workflow-dispatch-event",
        "status": status.to_string(),
    }))
}

fn assert_no_token(text: &str) {
    assert!(!text.contains(TOKEN), "token leaked: {text}");
    assert!(!text.contains("canary0token"), "token leaked: {text}");
}

#[tokio::test]
async fn token_auth_dispatches_then_finds_the_run_by_its_title() {
    let github = Github::start().await;
    github
        .mount(
            Mock::given(method("POST"))
                .and(path(DISPATCH))
                .and(header("accept", "application/vnd.github+json"))
                .and(header("x-github-api-version", "2022-11-28"))
                .and(header("user-agent", "image-factory"))
                .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
                .respond_with(ResponseTemplate::new(204))
                .expect(1),
        )
        .await;
    // Not listed yet on the first search; then listed beside someone else's run.
    github
        .mount(
            Mock::given(method("GET"))
                .and(path(RUNS))
                .and(query_param("event", "workflow_dispatch"))
                .respond_with(
                    ResponseTemplate::new(200)
                        .set_body_json(json!({"total_count": 0, "workflow_runs": []})),
                )
                .up_to_n_times(1)
                .with_priority(1),
        )
        .await;
    let mut other = run_json(70, "completed", Some("success"));
    other["display_title"] = json!("image-factory rebuild reports-9999999999");
    github
        .mount(
            Mock::given(method("GET"))
                .and(path(RUNS))
                .and(query_param("event", "workflow_dispatch"))
                .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                    "total_count": 2,
                    "workflow_runs": [other, run_json(77, "queued", None)],
                }))),
        )
        .await;
    run_ends(&github, 77, "success").await;

    let (result, started) = github.run().await;

    let report = result.unwrap();
    assert_eq!(report.handle.as_deref(), Some(html_url(77).as_str()));
    assert_eq!(started, vec![html_url(77)]);
    let dispatch = &github.requests_to(DISPATCH).await[0];
    let body: Value = dispatch.body_json().unwrap();
    assert_eq!(
        body,
        json!({
            "ref": "main",
            "inputs": {
                "flavor": "slim",
                "rebuild_id": REBUILD,
                "bases": request().bases_json(),
            },
            "return_run_details": true,
        })
    );
    let bases: Value = serde_json::from_str(body["inputs"]["bases"].as_str().unwrap()).unwrap();
    assert_eq!(bases[0]["pinned"], json!(request().bases[0].pinned));
    let searches = github.requests_to(RUNS).await;
    assert_eq!(searches.len(), 2);
    let created = searches[0]
        .url
        .query_pairs()
        .find(|(k, _)| k == "created")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let since: jiff::Timestamp = created.strip_prefix(">=").unwrap().parse().unwrap();
    let age = jiff::Timestamp::now().duration_since(since);
    assert!(
        age > jiff::SignedDuration::ZERO && age < jiff::SignedDuration::from_secs(120),
        "{created}"
    );
}

#[tokio::test]
async fn a_dispatch_answered_with_the_run_id_needs_no_search() {
    let github = Github::start().await;
    github
        .mount(
            Mock::given(method("POST"))
                .and(path(DISPATCH))
                .respond_with(dispatch_details(88))
                .expect(1),
        )
        .await;
    github
        .mount(
            Mock::given(method("GET"))
                .and(path(RUNS))
                .respond_with(ResponseTemplate::new(500))
                .expect(0),
        )
        .await;
    run_ends(&github, 88, "success").await;

    let (result, started) = github.run().await;

    assert_eq!(result.unwrap().handle, Some(html_url(88)));
    assert_eq!(started, vec![html_url(88)]);
}

#[tokio::test]
async fn a_server_without_return_run_details_is_dispatched_again_without_it() {
    let github = Github::start().await;
    github
        .mount(
            Mock::given(method("POST"))
                .and(path(DISPATCH))
                .and(wiremock::matchers::body_partial_json(
                    json!({"return_run_details": true}),
                ))
                .respond_with(github_error(
                    422,
                    "Invalid request.\n\n\"return_run_details\" is not a permitted key.",
                ))
                .expect(1),
        )
        .await;
    github
        .mount(
            Mock::given(method("POST"))
                .and(path(DISPATCH))
                .respond_with(ResponseTemplate::new(204)),
        )
        .await;
    github
        .mount(Mock::given(method("GET")).and(path(RUNS)).respond_with(
            ResponseTemplate::new(200).set_body_json(json!({
                "total_count": 1,
                "workflow_runs": [run_json(98, "queued", None)],
            })),
        ))
        .await;
    run_ends(&github, 98, "success").await;

    assert_eq!(github.run().await.0.unwrap().handle, Some(html_url(98)));
    let dispatches = github.requests_to(DISPATCH).await;
    assert_eq!(dispatches.len(), 2);
    let retried: Value = dispatches[1].body_json().unwrap();
    assert!(retried.get("return_run_details").is_none(), "{retried}");
    assert_eq!(retried["inputs"]["rebuild_id"], json!(REBUILD));
}

#[tokio::test]
async fn app_auth_signs_a_jwt_and_uses_the_installation_token() {
    let github = Github::start().await;
    let key_path = repo_root().join("tests/testdata/github-app-test-key.pem");
    let expires = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    github
        .mount(
            Mock::given(method("POST"))
                .and(path("/app/installations/4242/access_tokens"))
                .and(header("accept", "application/vnd.github+json"))
                .and(header("x-github-api-version", "2022-11-28"))
                .respond_with(ResponseTemplate::new(201).set_body_json(json!({
                    "token": "ghs_installation0canary",
                    "expires_at": expires.round(jiff::Unit::Second).unwrap().to_string(),
                    "permissions": {"actions": "write"},
                    "repository_selection": "selected",
                })))
                .expect(1),
        )
        .await;
    github
        .mount(
            Mock::given(method("POST"))
                .and(path(DISPATCH))
                .and(header("authorization", "Bearer ghs_installation0canary"))
                .respond_with(dispatch_details(90))
                .expect(1),
        )
        .await;
    run_ends(&github, 90, "success").await;
    let auth = GithubAuth::App {
        app_id: 123456,
        installation_id: 4242,
        private_key: SecretRef::File(key_path),
    };

    let (result, _) = run_backend(&github.backend(auth), Context::detached()).await;

    assert_eq!(result.unwrap().handle, Some(html_url(90)));
    let exchange = &github
        .requests_to("/app/installations/4242/access_tokens")
        .await[0];
    let jwt = exchange.headers["authorization"]
        .to_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_string();
    let public =
        std::fs::read(repo_root().join("tests/testdata/github-app-test-key.pub.pem")).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_issuer(&["123456"]);
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    let claims = jsonwebtoken::decode::<Value>(
        &jwt,
        &jsonwebtoken::DecodingKey::from_rsa_pem(&public).unwrap(),
        &validation,
    )
    .unwrap()
    .claims;
    let now = jiff::Timestamp::now().as_second();
    let iat = claims["iat"].as_i64().unwrap();
    let exp = claims["exp"].as_i64().unwrap();
    assert!((now - 70..=now - 50).contains(&iat), "iat {iat}, now {now}");
    assert!(
        exp - iat <= 600,
        "GitHub refuses JWTs valid over 10 minutes"
    );
    // Every later call (the run's status polls) reuses the cached installation token.
    for polled in github.requests_to(&format!("{REPO}/runs/90")).await {
        assert_eq!(
            polled.headers["authorization"],
            "Bearer ghs_installation0canary"
        );
    }
}

#[tokio::test]
async fn an_unknown_workflow_is_a_permanent_failure_saying_what_to_check() {
    let github = Github::start().await;
    github
        .mount(
            Mock::given(method("POST"))
                .and(path(DISPATCH))
                .respond_with(github_error(404, "Not Found"))
                .expect(1),
        )
        .await;

    let failure = github.run().await.0.unwrap_err();

    assert!(!failure.transient);
    assert!(failure.reason.contains("build.yml"), "{}", failure.reason);
    assert!(failure.reason.contains("acme/images"), "{}", failure.reason);
    assert!(failure.reason.contains("not found"), "{}", failure.reason);
    assert!(
        failure.reason.contains("actions: write"),
        "{}",
        failure.reason
    );
}

#[tokio::test]
async fn bad_inputs_are_a_permanent_failure_with_githubs_message() {
    let github = Github::start().await;
    github
        .mount(
            Mock::given(method("POST"))
                .and(path(DISPATCH))
                .respond_with(github_error(
                    422,
                    "Unexpected inputs provided: [\"flavor\"]",
                ))
                .expect(1),
        )
        .await;

    let failure = github.run().await.0.unwrap_err();

    assert!(!failure.transient);
    assert!(
        failure
            .reason
            .contains("Unexpected inputs provided: [\"flavor\"]"),
        "{}",
        failure.reason
    );
    assert!(
        failure.reason.contains("workflow_dispatch"),
        "{}",
        failure.reason
    );
}

#[tokio::test]
async fn an_exhausted_rate_limit_is_waited_out_until_its_reset() {
    let github = Github::start().await;
    let reset = jiff::Timestamp::now().as_second() + 1;
    github
        .mount(
            Mock::given(method("POST"))
                .and(path(DISPATCH))
                .respond_with(
                    github_error(403, "API rate limit exceeded for installation ID 4242.")
                        .insert_header("x-ratelimit-limit", "5000")
                        .insert_header("x-ratelimit-remaining", "0")
                        .insert_header("x-ratelimit-used", "5000")
                        .insert_header("x-ratelimit-reset", reset.to_string().as_str()),
                )
                .up_to_n_times(1)
                .with_priority(1),
        )
        .await;
    github
        .mount(
            Mock::given(method("POST"))
                .and(path(DISPATCH))
                .respond_with(dispatch_details(91)),
        )
        .await;
    run_ends(&github, 91, "success").await;

    let (result, _) = github.run().await;

    assert_eq!(result.unwrap().handle, Some(html_url(91)));
    let dispatches = github.requests_to(DISPATCH).await;
    assert_eq!(dispatches.len(), 2, "one rate-limited dispatch, one retry");
    assert!(
        jiff::Timestamp::now().as_second() >= reset,
        "retried before x-ratelimit-reset"
    );
}

#[tokio::test]
async fn a_429_waits_retry_after_seconds() {
    let github = Github::start().await;
    github
        .mount(
            Mock::given(method("GET"))
                .and(path(format!("{REPO}/runs/92")))
                .respond_with(
                    github_error(429, "You have exceeded a secondary rate limit.")
                        .insert_header("retry-after", "1"),
                )
                .up_to_n_times(1)
                .with_priority(1),
        )
        .await;
    github
        .mount(
            Mock::given(method("POST"))
                .and(path(DISPATCH))
                .respond_with(dispatch_details(92)),
        )
        .await;
    run_ends(&github, 92, "success").await;
    let start = Instant::now();

    let (result, _) = github.run().await;

    assert_eq!(result.unwrap().handle, Some(html_url(92)));
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        github.requests_to(&format!("{REPO}/runs/92")).await.len(),
        3
    );
}

#[tokio::test]
async fn server_errors_are_retried() {
    let github = Github::start().await;
    github
        .mount(
            Mock::given(method("POST"))
                .and(path(DISPATCH))
                .respond_with(ResponseTemplate::new(502))
                .up_to_n_times(2)
                .with_priority(1),
        )
        .await;
    github
        .mount(
            Mock::given(method("POST"))
                .and(path(DISPATCH))
                .respond_with(dispatch_details(93)),
        )
        .await;
    run_ends(&github, 93, "success").await;

    assert_eq!(github.run().await.0.unwrap().handle, Some(html_url(93)));
    assert_eq!(github.requests_to(DISPATCH).await.len(), 3);
}

#[tokio::test]
async fn a_failed_run_is_a_permanent_failure_naming_its_conclusion_and_url() {
    let github = Github::start().await;
    github
        .mount(
            Mock::given(method("POST"))
                .and(path(DISPATCH))
                .respond_with(dispatch_details(94)),
        )
        .await;
    run_ends(&github, 94, "failure").await;

    let (result, started) = github.run().await;

    let failure = result.unwrap_err();
    assert!(!failure.transient);
    assert!(
        failure.reason.contains("concluded failure"),
        "{}",
        failure.reason
    );
    assert!(failure.reason.contains(&html_url(94)), "{}", failure.reason);
    assert_eq!(started, vec![html_url(94)]);
}

#[tokio::test]
async fn a_run_past_the_timeout_is_a_transient_failure_and_is_cancelled() {
    let github = Github::start().await.timeout(Duration::from_millis(400));
    github
        .mount(
            Mock::given(method("POST"))
                .and(path(DISPATCH))
                .respond_with(dispatch_details(95)),
        )
        .await;
    github
        .mount(
            Mock::given(method("GET"))
                .and(path(format!("{REPO}/runs/95")))
                .respond_with(
                    ResponseTemplate::new(200).set_body_json(run_json(95, "queued", None)),
                ),
        )
        .await;
    github
        .mount(
            Mock::given(method("POST"))
                .and(path(format!("{REPO}/runs/95/cancel")))
                .respond_with(ResponseTemplate::new(202).set_body_json(json!({})))
                .expect(1),
        )
        .await;
    let start = Instant::now();

    let failure = github.run().await.0.unwrap_err();

    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(failure.transient);
    assert!(
        failure.reason.starts_with("timed out after 400ms"),
        "{}",
        failure.reason
    );
    assert!(failure.reason.contains(&html_url(95)), "{}", failure.reason);
    assert!(failure.reason.contains("queued"), "{}", failure.reason);
}

#[tokio::test]
async fn a_run_never_listed_times_out_naming_the_run_name_rule() {
    let github = Github::start().await.timeout(Duration::from_millis(300));
    github
        .mount(
            Mock::given(method("POST"))
                .and(path(DISPATCH))
                .respond_with(ResponseTemplate::new(204)),
        )
        .await;
    github
        .mount(
            Mock::given(method("GET")).and(path(RUNS)).respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"total_count": 0, "workflow_runs": []})),
            ),
        )
        .await;

    let failure = github.run().await.0.unwrap_err();

    assert!(failure.transient);
    assert!(failure.reason.contains("run-name"), "{}", failure.reason);
    assert!(failure.reason.contains(REBUILD), "{}", failure.reason);
}

#[tokio::test]
async fn a_cancelled_rebuild_stops_polling_and_says_so() {
    let github = Github::start().await;
    github
        .mount(
            Mock::given(method("POST"))
                .and(path(DISPATCH))
                .respond_with(dispatch_details(96)),
        )
        .await;
    github
        .mount(
            Mock::given(method("GET"))
                .and(path(format!("{REPO}/runs/96")))
                .respond_with(ResponseTemplate::new(200).set_body_json(run_json(
                    96,
                    "in_progress",
                    None,
                ))),
        )
        .await;
    let cancel = CancellationToken::new();
    let stopper = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stopper.cancel();
    });
    let start = Instant::now();

    let (result, _) = run_backend(
        &github.backend(github.token_auth()),
        Context::new(cancel, None),
    )
    .await;

    let failure = result.unwrap_err();
    assert!(
        failure.reason.starts_with("cancelled"),
        "{}",
        failure.reason
    );
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_eq!(
        github
            .requests_to(&format!("{REPO}/runs/96/cancel"))
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn the_token_never_appears_in_a_failure_or_a_report() {
    // GitHub echoing the token back is unlikely; the factory must not repeat it if it does.
    let echo = format!("Bad credentials: {TOKEN}");
    let cases = [
        (DISPATCH, github_error(401, &echo)),
        (
            DISPATCH,
            github_error(422, &format!("Unexpected inputs provided: {TOKEN}")),
        ),
        (
            DISPATCH,
            github_error(403, &format!("Resource not accessible by {TOKEN}")),
        ),
        (DISPATCH, github_error(404, &echo)),
        (
            DISPATCH,
            ResponseTemplate::new(503).set_body_string(echo.clone()),
        ),
    ];
    for (at, answer) in cases {
        let github = Github::start().await;
        github
            .mount(
                Mock::given(method("POST"))
                    .and(path(at))
                    .respond_with(answer),
            )
            .await;
        let (result, started) = github.run().await;
        let failure = result.unwrap_err();
        assert_no_token(&failure.reason);
        assert_no_token(&format!("{failure:?}"));
        for handle in started {
            assert_no_token(&handle);
        }
    }

    let github = Github::start().await;
    github
        .mount(
            Mock::given(method("POST"))
                .and(path(DISPATCH))
                .respond_with(dispatch_details(97)),
        )
        .await;
    run_ends(&github, 97, "success").await;
    let report = github.run().await.0.unwrap();
    assert_no_token(&format!("{report:?}"));
    assert_no_token(&format!("{:?}", github.backend(github.token_auth())));

    let github = Github::start().await;
    github
        .mount(
            Mock::given(method("POST"))
                .and(path(DISPATCH))
                .respond_with(github_error(401, &echo)),
        )
        .await;
    let failure = github.run().await.0.unwrap_err();
    assert!(!failure.transient);
    assert!(failure.reason.contains("401"), "{}", failure.reason);
    assert!(failure.reason.contains("token"), "{}", failure.reason);
}

/// `examples/github-actions/build-image.yml`: the inputs the factory sends, and the
/// run name the run search matches on.
#[test]
fn the_example_workflow_takes_the_factorys_inputs_and_names_its_run() {
    let text = std::fs::read_to_string(repo_root().join("examples/github-actions/build-image.yml"))
        .unwrap();
    let workflow: Value = serde_saphyr::from_str(&text).unwrap();
    let inputs = &workflow["on"]["workflow_dispatch"]["inputs"];
    for input in image_factory::enrollment::RESERVED_INPUTS {
        assert!(
            inputs.get(input).is_some(),
            "input {input} missing: {inputs}"
        );
        assert_eq!(inputs[input]["required"], json!(true), "{input}");
    }
    let run_name = workflow["run-name"].as_str().unwrap();
    assert!(run_name.contains("inputs.rebuild_id"), "{run_name}");
    let steps = workflow["jobs"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|job| job["steps"].as_array().unwrap().iter())
        .filter_map(|s| s["run"].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(steps.contains("image-factory dockerfile --pin"), "{steps}");
    assert!(steps.contains(".pinned"), "{steps}");
}
