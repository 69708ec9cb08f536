use super::*;

use rstest::rstest;

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(*name, HeaderValue::from_str(value).unwrap());
    }
    map
}

#[rstest]
#[case::primary_limit(403, &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1030")], "", Some(30))]
#[case::primary_limit_429(429, &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1002")], "", Some(2))]
#[case::reset_in_the_past_waits_a_second(403, &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "900")], "", Some(1))]
#[case::retry_after_wins(429, &[("retry-after", "7"), ("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1500")], "", Some(7))]
#[case::secondary_without_headers(403, &[("x-ratelimit-remaining", "12")], r#"{"message":"You have exceeded a secondary rate limit"}"#, Some(60))]
#[case::bare_429(429, &[], "", Some(60))]
#[case::permission_403(403, &[("x-ratelimit-remaining", "4999")], r#"{"message":"Resource not accessible by integration"}"#, None)]
#[case::not_a_limit_status(500, &[("x-ratelimit-remaining", "0")], "", None)]
fn rate_limit_waits_as_github_documents(
    #[case] status: u16,
    #[case] pairs: &[(&'static str, &str)],
    #[case] body: &str,
    #[case] seconds: Option<u64>,
) {
    let status = StatusCode::from_u16(status).unwrap();
    assert_eq!(
        rate_limit_wait(status, &headers(pairs), body, 1000),
        seconds.map(Duration::from_secs)
    );
}

fn run(id: u64, title: &str) -> Run {
    Run {
        id,
        name: Some("build-image".into()),
        display_title: Some(title.into()),
        status: Some("queued".into()),
        conclusion: None,
        html_url: format!("https://github.com/acme/images/actions/runs/{id}"),
    }
}

#[test]
fn the_run_is_matched_by_its_rebuild_id_as_a_whole_word() {
    let runs = [
        run(1, "image-factory rebuild web-0123456789"),
        run(2, "image-factory rebuild python-web-0123456789x"),
        run(3, "manual run"),
    ];
    assert_eq!(matching_run(&runs, "web-0123456789").map(|r| r.id), Some(1));
    assert!(matching_run(&runs, "python-web-0123456789").is_none());
    assert!(matching_run(&runs, "eb-0123456789").is_none());
}

#[test]
fn the_newest_of_several_matching_runs_is_followed() {
    let runs = [
        run(7, "image-factory rebuild web-0123456789"),
        run(9, "image-factory rebuild web-0123456789"),
        run(8, "image-factory rebuild web-0123456789"),
    ];
    assert_eq!(matching_run(&runs, "web-0123456789").map(|r| r.id), Some(9));
}

#[test]
fn an_installation_token_is_renewed_with_less_than_five_minutes_left() {
    let now = Timestamp::from_second(1_000_000).unwrap();
    let at = |s: i64| Timestamp::from_second(1_000_000 + s).unwrap();
    assert!(!needs_refresh(at(3600), now));
    assert!(!needs_refresh(at(301), now));
    assert!(needs_refresh(at(299), now));
    assert!(needs_refresh(at(-10), now));
}

#[test]
fn a_key_that_is_not_pem_fails_without_echoing_it() {
    let key = Secret::new("not-a-key-canary-73a9");
    let failure = app_jwt(42, &key, 1_000_000).unwrap_err();
    assert!(!failure.transient);
    assert!(failure.reason.contains("App 42"), "{}", failure.reason);
    assert!(!failure.reason.contains("canary"), "{}", failure.reason);
}

#[test]
fn conclusions_other_than_success_are_permanent_failures_naming_the_run() {
    let mut done = run(5, "t");
    done.status = Some("completed".into());
    done.conclusion = Some("success".into());
    assert_eq!(
        concluded(&done).unwrap().handle.as_deref(),
        Some("https://github.com/acme/images/actions/runs/5")
    );
    for conclusion in ["failure", "cancelled", "timed_out", "startup_failure"] {
        done.conclusion = Some(conclusion.into());
        let failure = concluded(&done).unwrap_err();
        assert!(!failure.transient);
        assert!(failure.reason.contains(conclusion), "{}", failure.reason);
        assert!(
            failure.reason.contains("/actions/runs/5"),
            "{}",
            failure.reason
        );
    }
}

#[test]
fn a_message_from_github_is_redacted_and_shortened() {
    let secret = Secret::new("ghp_canarycanary");
    let reply = Reply {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        body: format!(
            r#"{{"message":"token ghp_canarycanary {}"}}"#,
            "x".repeat(1000)
        ),
    };
    let message = reply.message(&secret);
    assert!(!message.contains("ghp_canarycanary"));
    assert!(message.starts_with("token *** x"));
    assert!(message.chars().count() <= MESSAGE_MAX + 1);
}

#[test]
fn another_trigger_is_refused() {
    let trigger = Trigger::KargoPromotion {
        stage: "s".into(),
        project: "p".into(),
        task: None,
    };
    let failure = GithubBackend::new(&trigger).unwrap_err();
    assert!(!failure.transient);
}
