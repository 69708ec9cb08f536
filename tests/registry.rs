//! The registry client against a real registry (CNCF distribution, `docker-registry`),
//! filled with images made by umoci, skopeo and buildah, optionally behind a
//! fault-injecting proxy.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use image_factory::reference::Reference;
use image_factory::registry::{
    ClientSettings, CredentialStore, Credentials, Platform, RegistryClient, RegistryError,
    RegistrySettings, SelectionStrategy, TagSelection,
};

use crate::support::registry::{
    buildah_build, Fault, FaultProxy, Layout, Mode, TestRegistry, PASSWORD, USER,
};

/// Repositories in the shared open registry.
struct Fixture {
    registry: TestRegistry,
    /// Tags of `many/tags` (1,200 semver tags plus a few others).
    many_tags: Vec<String>,
}

const MULTI: &str = "multi/tool:1.0";
const MANY_TAG_COUNT: usize = 1200;

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(build_fixture)
}

fn build_fixture() -> Fixture {
    let registry = TestRegistry::start(Mode::Open);
    let work = registry.scratch("images");
    // Base v1, an app built on it, base v2 under the same tag, an app built on v2.
    let base = Layout::build(
        &work,
        "base-v1",
        &[("os-release", "v1")],
        "amd64",
        "2024-01-01T00:00:00Z",
        &[("org.example.base", "alpine")],
    );
    registry.push_layout(&base.path, "base-v1", "library/alpine:3.19");
    buildah_build(&registry, "library/alpine:3.19", "team/app:1");
    Layout::build(
        &work,
        "base-v2",
        &[("os-release", "v2")],
        "amd64",
        "2024-02-01T00:00:00Z",
        &[("org.example.base", "alpine")],
    );
    registry.push_layout(&base.path, "base-v2", "library/alpine:3.19");
    buildah_build(&registry, "library/alpine:3.19", "team/app:2");
    // An image built on the base by umoci (no base annotations): layer-prefix staleness.
    registry.push_layout(&base.path, "base-v2", "team/plain:seed");
    // Multi-arch: two platform images and an OCI index (arm64 listed with variant v8).
    Layout::build(
        &work,
        "amd64",
        &[("arch", "amd64")],
        "amd64",
        "2024-03-01T00:00:00Z",
        &[],
    );
    Layout::build(
        &work,
        "arm64",
        &[("arch", "arm64")],
        "arm64",
        "2024-03-02T00:00:00Z",
        &[],
    );
    registry.push_layout(&base.path, "amd64", "multi/tool:amd64");
    registry.push_layout(&base.path, "arm64", "multi/tool:arm64");
    let (amd, amd_type) = registry.manifest("multi/tool", "amd64");
    let (arm, _) = registry.manifest("multi/tool", "arm64");
    let sha = image_factory::registry::digest::sha256_digest;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": amd_type, "digest": sha(&amd), "size": amd.len(), "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": amd_type, "digest": sha(&arm), "size": arm.len(), "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        ]
    });
    registry.put_manifest(
        "multi/tool",
        "1.0",
        &serde_json::to_vec(&index).unwrap(),
        "application/vnd.oci.image.index.v1+json",
    );
    // NewestBuild: tags whose builds are dated out of tag order.
    for (tag, created) in [
        ("b-1", "2024-05-03T00:00:00Z"),
        ("b-2", "2024-05-01T00:00:00Z"),
        ("b-3", "2024-05-02T00:00:00Z"),
        ("x-9", "2025-01-01T00:00:00Z"),
    ] {
        Layout::build(&work, tag, &[("build", tag)], "amd64", created, &[]);
        registry.push_layout(&base.path, tag, &format!("builds/app:{tag}"));
    }
    // Thousands of tags: seed the repository, then PUT the same manifest under each tag.
    registry.push_layout(&base.path, "base-v1", "many/tags:seed");
    let (seed, seed_type) = registry.manifest("many/tags", "seed");
    let mut many_tags: Vec<String> = (0..MANY_TAG_COUNT)
        .map(|i| format!("1.{}.{}", i / 100, i % 100))
        .collect();
    many_tags.extend([
        "latest".to_owned(),
        "v2.0".to_owned(),
        "2.0.0-rc.1".to_owned(),
    ]);
    registry.put_manifest_tags("many/tags", &seed, &seed_type, &many_tags);
    many_tags.push("seed".to_owned());
    many_tags.sort();
    Fixture {
        registry,
        many_tags,
    }
}

fn r(host: &str, path: &str) -> Reference {
    Reference::parse(&format!("{host}/{path}")).unwrap()
}

fn open_client() -> RegistryClient {
    RegistryClient::new(ClientSettings::default(), CredentialStore::new())
}

/// Settings for a proxy host: fast backoff so retry tests stay quick.
fn fast_retry(max_attempts: u32) -> RegistrySettings {
    RegistrySettings {
        max_attempts,
        backoff_base_ms: 20,
        backoff_max_ms: 5_000,
        timeout_ms: 2_000,
        ..RegistrySettings::default()
    }
}

fn client_for(
    host: &str,
    settings: RegistrySettings,
    credentials: CredentialStore,
) -> RegistryClient {
    let mut all = ClientSettings::default();
    all.registries.insert(host.to_owned(), settings);
    RegistryClient::new(all, credentials)
}

#[tokio::test]
async fn head_digest_matches_the_manifest_bytes_and_costs_one_request() {
    let f = fixture();
    let client = open_client();
    let reference = r(&f.registry.host, "library/alpine:3.19");
    let resolved = client.resolve(&reference).await.unwrap();
    let (bytes, media_type) = f.registry.manifest("library/alpine", "3.19");
    assert_eq!(
        resolved.digest,
        image_factory::registry::digest::sha256_digest(&bytes)
    );
    assert_eq!(resolved.media_type, media_type);
    assert!(resolved.platforms.is_empty());
    let stats = client.stats();
    assert_eq!((stats.manifest_heads, stats.total()), (1, 1), "{stats:?}");
}

#[tokio::test]
async fn warm_scan_costs_exactly_one_head_per_tag() {
    let f = fixture();
    let proxy = FaultProxy::start(&f.registry.host);
    let client = client_for(
        &proxy.host,
        RegistrySettings::default(),
        CredentialStore::new(),
    );
    let refs: Vec<Reference> = [
        "library/alpine:3.19",
        "team/app:1",
        "team/app:2",
        MULTI,
        "builds/app:b-1",
    ]
    .iter()
    .map(|p| r(&proxy.host, p))
    .collect();
    for result in client.resolve_all(&refs).await {
        result.unwrap();
    }
    // Same scan: answers are reused, nothing is sent.
    proxy.reset_seen();
    client.resolve_all(&refs).await;
    assert!(proxy.seen().is_empty(), "{:?}", proxy.seen());
    // Next scan of an unchanged registry: one HEAD per tag and nothing else.
    client.new_scan();
    for result in client.resolve_all(&refs).await {
        result.unwrap();
    }
    let seen = proxy.seen();
    assert_eq!(seen.len(), refs.len(), "{seen:?}");
    assert!(seen
        .iter()
        .all(|s| s.method == "HEAD" && s.path.contains("/manifests/")));
}

#[tokio::test]
async fn missing_digest_header_falls_back_to_get_and_hash() {
    let f = fixture();
    let proxy = FaultProxy::start(&f.registry.host);
    proxy.inject("/manifests/3.19", Fault::StripDigestHeader);
    let client = client_for(
        &proxy.host,
        RegistrySettings::default(),
        CredentialStore::new(),
    );
    let head = client
        .head_manifest(&r(&proxy.host, "library/alpine:3.19"))
        .await
        .unwrap();
    let (bytes, _) = f.registry.manifest("library/alpine", "3.19");
    assert_eq!(
        head.digest,
        image_factory::registry::digest::sha256_digest(&bytes)
    );
    assert_eq!(
        (
            proxy.count("HEAD", "/manifests/3.19"),
            proxy.count("GET", "/manifests/3.19")
        ),
        (1, 1)
    );
}

#[tokio::test]
async fn index_reports_index_and_platform_digests_with_docker_normalization() {
    let f = fixture();
    let client = open_client();
    let reference = r(&f.registry.host, MULTI);
    let resolved = client.resolve(&reference).await.unwrap();
    let (index_bytes, _) = f.registry.manifest("multi/tool", "1.0");
    let (arm_bytes, _) = f.registry.manifest("multi/tool", "arm64");
    let sha = image_factory::registry::digest::sha256_digest;
    assert_eq!(
        resolved.digest,
        sha(&index_bytes),
        "the tag's digest is the index digest"
    );
    assert!(resolved.is_index());
    let platforms: Vec<&str> = resolved
        .platforms
        .iter()
        .map(|p| p.platform.as_str())
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    for spelling in ["linux/arm64", "linux/arm64/v8", "linux/aarch64"] {
        let inspection = client
            .inspect(&reference, Some(&Platform::parse(spelling).unwrap()))
            .await
            .unwrap();
        assert_eq!(inspection.digest, sha(&index_bytes));
        assert_eq!(inspection.manifest_digest, sha(&arm_bytes), "{spelling}");
        assert_eq!(inspection.created.as_deref(), Some("2024-03-02T00:00:00Z"));
    }
    let err = client
        .inspect(&reference, Some(&Platform::parse("linux/arm/v7").unwrap()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RegistryError::PlatformNotFound { available, .. } if available == "linux/amd64, linux/arm64"),
        "{err}"
    );
}

#[tokio::test]
async fn distribution_2_answers_every_tag_in_one_response() {
    // distribution 2.8 ignores `n`: the client must notice and not ask again.
    let f = fixture();
    let proxy = FaultProxy::start(&f.registry.host);
    let settings = RegistrySettings {
        page_size: 100,
        ..RegistrySettings::default()
    };
    let client = client_for(&proxy.host, settings, CredentialStore::new());
    let mut tags = client
        .list_tags(&r(&proxy.host, "many/tags"))
        .await
        .unwrap();
    tags.sort();
    assert_eq!(tags, f.many_tags);
    assert_eq!(proxy.count("GET", "/tags/list"), 1);
}

#[tokio::test]
async fn thousands_of_tags_are_listed_across_pages() {
    let f = fixture();
    let proxy = FaultProxy::start(&f.registry.host);
    proxy.paginate_tags();
    let settings = RegistrySettings {
        page_size: 100,
        ..RegistrySettings::default()
    };
    let client = client_for(&proxy.host, settings, CredentialStore::new());
    let mut tags = client
        .list_tags(&r(&proxy.host, "many/tags"))
        .await
        .unwrap();
    tags.sort();
    assert_eq!(tags, f.many_tags);
    let pages = proxy.count("GET", "/tags/list");
    assert_eq!(
        pages,
        f.many_tags.len().div_ceil(100),
        "one request per page"
    );
    assert!(
        proxy
            .seen()
            .iter()
            .skip(1)
            .all(|s| s.path.contains("last=")),
        "pages follow the Link header"
    );
}

#[tokio::test]
async fn selection_strategies_follow_kargo_semantics() {
    let f = fixture();
    let client = open_client();
    let many = r(&f.registry.host, "many/tags");
    let semver = TagSelection {
        constraint: Some("^1.4, <1.5".into()),
        discovery_limit: 3,
        ..TagSelection::default()
    };
    let picked = client
        .select(&many, &semver.compile().unwrap())
        .await
        .unwrap();
    let tags: Vec<&str> = picked.iter().map(|p| p.tag.as_str()).collect();
    assert_eq!(tags, ["1.4.99", "1.4.98", "1.4.97"]);
    let (seed, _) = f.registry.manifest("many/tags", "seed");
    assert!(picked
        .iter()
        .all(|p| p.digest == image_factory::registry::digest::sha256_digest(&seed)));

    let lenient = TagSelection {
        strict_semvers: Some(false),
        constraint: Some(">=2".into()),
        ..TagSelection::default()
    };
    let picked = client
        .select(&many, &lenient.compile().unwrap())
        .await
        .unwrap();
    assert_eq!(
        picked.iter().map(|p| p.tag.as_str()).collect::<Vec<_>>(),
        ["v2.0"],
        "prereleases excluded, v2.0 admitted when not strict"
    );

    let lexical = TagSelection {
        image_selection_strategy: SelectionStrategy::Lexical,
        ignore_tags_regexes: vec!["^[0-9]".into()],
        ..TagSelection::default()
    };
    let picked = client
        .select(&many, &lexical.compile().unwrap())
        .await
        .unwrap();
    assert_eq!(
        picked.iter().map(|p| p.tag.as_str()).collect::<Vec<_>>(),
        ["v2.0", "seed", "latest"]
    );

    let digest = TagSelection {
        image_selection_strategy: SelectionStrategy::Digest,
        constraint: Some("3.19".into()),
        ..TagSelection::default()
    };
    let picked = client
        .select(
            &r(&f.registry.host, "library/alpine"),
            &digest.compile().unwrap(),
        )
        .await
        .unwrap();
    let (alpine, _) = f.registry.manifest("library/alpine", "3.19");
    assert_eq!(picked.len(), 1);
    assert_eq!(
        picked[0].digest,
        image_factory::registry::digest::sha256_digest(&alpine)
    );

    let newest = TagSelection {
        image_selection_strategy: SelectionStrategy::NewestBuild,
        allow_tags_regexes: vec!["^b-".into()],
        discovery_limit: 2,
        ..TagSelection::default()
    };
    let picked = client
        .select(
            &r(&f.registry.host, "builds/app"),
            &newest.compile().unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        picked.iter().map(|p| p.tag.as_str()).collect::<Vec<_>>(),
        ["b-1", "b-3"],
        "newest build first; x-9 not allowed"
    );
    assert_eq!(picked[0].created.as_deref(), Some("2024-05-03T00:00:00Z"));
}

#[tokio::test]
async fn newest_build_warm_scan_reads_no_metadata_again() {
    let f = fixture();
    let proxy = FaultProxy::start(&f.registry.host);
    let client = client_for(
        &proxy.host,
        RegistrySettings::default(),
        CredentialStore::new(),
    );
    let newest = TagSelection {
        image_selection_strategy: SelectionStrategy::NewestBuild,
        ..TagSelection::default()
    }
    .compile()
    .unwrap();
    let repo = r(&proxy.host, "builds/app");
    let cold = client.select(&repo, &newest).await.unwrap();
    assert_eq!(cold[0].tag, "x-9");
    assert_eq!(
        proxy.count("GET", "/blobs/"),
        4,
        "one config per distinct image"
    );
    proxy.reset_seen();
    client.new_scan();
    let warm = client.select(&repo, &newest).await.unwrap();
    assert_eq!(warm, cold);
    assert_eq!(
        proxy.count("GET", "/blobs/") + proxy.count("GET", "/manifests/"),
        0
    );
    assert_eq!(proxy.count("HEAD", "/manifests/"), 4);
}

#[tokio::test]
async fn inspection_reads_config_annotations_and_layers() {
    let f = fixture();
    let client = open_client();
    let app = client
        .inspect(&r(&f.registry.host, "team/app:1"), None)
        .await
        .unwrap();
    assert_eq!(
        app.labels.get("org.example.team").map(String::as_str),
        Some("platform")
    );
    assert!(app.created.is_some());
    let base_name = app.base.name.clone().unwrap();
    assert!(base_name.contains("library/alpine"), "{base_name}");
    assert!(app.base.digest.as_deref().unwrap().starts_with("sha256:"));
    let base = client
        .inspect(&r(&f.registry.host, "library/alpine:3.19"), None)
        .await
        .unwrap();
    assert_eq!(
        base.labels.get("org.example.base").map(String::as_str),
        Some("alpine")
    );
    assert_eq!(base.created.as_deref(), Some("2024-02-01T00:00:00Z"));
    assert_eq!(
        app.layers.len(),
        base.layers.len() + 1,
        "buildah adds one COPY layer"
    );
    let json: serde_json::Value =
        serde_json::from_str(&image_factory::cli::inspect::render_json(&[app])).unwrap();
    let object = &json[0];
    for key in [
        "reference",
        "digest",
        "mediaType",
        "platforms",
        "created",
        "labels",
        "base",
        "layers",
        "stale",
    ] {
        assert!(object.get(key).is_some(), "missing {key} in {object}");
    }
    assert!(object["base"].get("name").is_some() && object["base"].get("digest").is_some());
}

#[tokio::test]
async fn staleness_compares_the_base_annotation_with_the_current_base() {
    let f = fixture();
    let client = open_client();
    let base = r(&f.registry.host, "library/alpine:3.19");
    let (old, _) = client
        .inspect_against_base(&r(&f.registry.host, "team/app:1"), &base, None)
        .await
        .unwrap();
    assert_eq!(
        old.stale,
        Some(true),
        "app:1 was built on base v1, the tag now points at v2"
    );
    let (new, current) = client
        .inspect_against_base(&r(&f.registry.host, "team/app:2"), &base, None)
        .await
        .unwrap();
    assert_eq!(new.stale, Some(false));
    assert_eq!(new.base.digest.as_deref(), Some(current.digest.as_str()));
}

#[tokio::test]
async fn staleness_falls_back_to_layer_prefix_without_annotations() {
    let f = fixture();
    let client = open_client();
    let base = r(&f.registry.host, "library/alpine:3.19");
    // team/plain:seed is the base v2 content itself (no annotations): layers are a prefix.
    let (plain, _) = client
        .inspect_against_base(&r(&f.registry.host, "team/plain:seed"), &base, None)
        .await
        .unwrap();
    assert!(plain.base.digest.is_none());
    assert_eq!(plain.stale, Some(false));
    // many/tags:seed is base v1 content: v2's layers are not a prefix.
    let (old, _) = client
        .inspect_against_base(&r(&f.registry.host, "many/tags:seed"), &base, None)
        .await
        .unwrap();
    assert_eq!(old.stale, Some(true));
}

fn basic_store(host: &str, password: &str) -> CredentialStore {
    let mut store = CredentialStore::new();
    store.insert(
        host,
        Credentials::Basic {
            username: USER.into(),
            password: password.into(),
        },
    );
    store
}

#[tokio::test]
async fn basic_auth_registry_needs_the_configured_credentials() {
    let registry = TestRegistry::start(Mode::Basic);
    let work = registry.scratch("images");
    let layout = Layout::build(
        &work,
        "one",
        &[("f", "1")],
        "amd64",
        "2024-01-01T00:00:00Z",
        &[],
    );
    registry.push_layout(&layout.path, "one", "private/app:1");
    let reference = r(&registry.host, "private/app:1");

    let client = RegistryClient::new(
        ClientSettings::default(),
        basic_store(&registry.host, PASSWORD),
    );
    let inspected = client.inspect(&reference, None).await.unwrap();
    assert_eq!(inspected.created.as_deref(), Some("2024-01-01T00:00:00Z"));
    assert_eq!(client.list_tags(&reference).await.unwrap(), ["1"]);

    let err = open_client().resolve(&reference).await.unwrap_err();
    assert!(
        matches!(err, RegistryError::Unauthorized { ref registry, .. } if *registry == registry_host(&reference)),
        "{err}"
    );
    let wrong = RegistryClient::new(
        ClientSettings::default(),
        basic_store(&registry.host, "wrong-horse"),
    );
    let err = wrong.resolve(&reference).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert!(
        !format!("{err} {err:?} {wrong:?}").contains("wrong-horse"),
        "credentials leaked"
    );
}

fn registry_host(reference: &Reference) -> String {
    reference.registry().to_owned()
}

#[tokio::test]
async fn tls_registry_is_trusted_only_through_its_ca_bundle_or_insecure() {
    let registry = TestRegistry::start(Mode::Tls);
    let work = registry.scratch("images");
    let layout = Layout::build(
        &work,
        "one",
        &[("f", "1")],
        "amd64",
        "2024-01-01T00:00:00Z",
        &[],
    );
    registry.push_layout(&layout.path, "one", "secure/app:1");
    let reference = r(&registry.host, "secure/app:1");

    let with_ca = RegistrySettings {
        ca_bundle: Some(registry.ca_path()),
        ..RegistrySettings::default()
    };
    client_for(&registry.host, with_ca, CredentialStore::new())
        .resolve(&reference)
        .await
        .unwrap();

    // No CA, no insecure: loopback would default to plain HTTP; force HTTPS to prove the
    // system roots do not trust the self-signed CA.
    let https_only = RegistrySettings {
        plain_http: Some(false),
        max_attempts: 1,
        ..RegistrySettings::default()
    };
    let err = client_for(&registry.host, https_only, CredentialStore::new())
        .resolve(&reference)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains(&registry.host));

    let insecure = RegistrySettings {
        insecure: true,
        ..RegistrySettings::default()
    };
    client_for(&registry.host, insecure, CredentialStore::new())
        .resolve(&reference)
        .await
        .unwrap();
}

#[tokio::test]
async fn bearer_tokens_are_fetched_cached_and_refreshed_before_expiry() {
    let f = fixture();
    let proxy = FaultProxy::start(&f.registry.host);
    proxy.require_bearer(2, Some((USER, PASSWORD)));
    let client = client_for(
        &proxy.host,
        RegistrySettings::default(),
        basic_store(&proxy.host, PASSWORD),
    );
    let alpine = r(&proxy.host, "library/alpine:3.19");
    client.resolve(&alpine).await.unwrap();
    let flow: Vec<(String, Option<String>)> = proxy
        .seen()
        .iter()
        .map(|s| (s.method.clone(), s.auth_scheme.clone()))
        .collect();
    assert_eq!(
        flow,
        [
            ("HEAD".into(), None),
            ("GET".into(), Some("Basic".into())),
            ("HEAD".into(), Some("Bearer".into()))
        ],
        "challenge, token with basic credentials, retry with token"
    );
    // Cached: another request in the same repository uses the token directly.
    proxy.reset_seen();
    client.new_scan();
    client.resolve(&alpine).await.unwrap();
    assert_eq!(proxy.seen().len(), 1);
    // After the lifetime the client refreshes before sending, without a 401 round trip.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    proxy.reset_seen();
    client.new_scan();
    client.resolve(&alpine).await.unwrap();
    let paths: Vec<String> = proxy.seen().iter().map(|s| s.path.clone()).collect();
    assert_eq!(paths.len(), 2, "{paths:?}");
    assert!(paths[0].starts_with("/token?"));
    assert_eq!(client.stats().token_gets, 2);

    let anonymous = client_for(
        &proxy.host,
        RegistrySettings::default(),
        CredentialStore::new(),
    );
    let err = anonymous.resolve(&alpine).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
}

#[tokio::test]
async fn rate_limit_answers_are_honoured_with_retry_after() {
    let f = fixture();
    let proxy = FaultProxy::start(&f.registry.host);
    proxy.inject("/manifests/3.19", Fault::Status(429, Some(1)));
    let client = client_for(&proxy.host, fast_retry(4), CredentialStore::new());
    client
        .resolve(&r(&proxy.host, "library/alpine:3.19"))
        .await
        .unwrap();
    let seen = proxy.seen();
    assert_eq!(seen.len(), 2);
    let waited = seen[1].at - seen[0].at;
    assert!(
        waited >= Duration::from_millis(950),
        "waited {waited:?}, Retry-After was 1 s"
    );
    assert_eq!(client.stats().retries, 1);
}

#[tokio::test]
async fn persistent_rate_limiting_fails_naming_registry_and_limit() {
    let f = fixture();
    let proxy = FaultProxy::start(&f.registry.host);
    for _ in 0..3 {
        proxy.inject("/manifests/3.19", Fault::Status(429, Some(0)));
    }
    let client = client_for(&proxy.host, fast_retry(3), CredentialStore::new());
    let err = client
        .resolve(&r(&proxy.host, "library/alpine:3.19"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::RateLimited {
                attempts: 3,
                max_attempts: 3,
                ..
            }
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&proxy.host) && text.contains("429") && text.contains('3'),
        "{text}"
    );
    assert_eq!(
        proxy.count("HEAD", "/manifests/3.19"),
        3,
        "bounded attempts"
    );
}

#[tokio::test]
async fn server_errors_back_off_exponentially_then_succeed_or_fail_clearly() {
    let f = fixture();
    let proxy = FaultProxy::start(&f.registry.host);
    proxy.inject("/manifests/3.19", Fault::Status(503, None));
    proxy.inject("/manifests/3.19", Fault::Status(502, None));
    let client = client_for(&proxy.host, fast_retry(3), CredentialStore::new());
    client
        .resolve(&r(&proxy.host, "library/alpine:3.19"))
        .await
        .unwrap();
    let seen = proxy.seen();
    assert_eq!(seen.len(), 3);
    let first_wait = seen[1].at - seen[0].at;
    let second_wait = seen[2].at - seen[1].at;
    assert!(first_wait >= Duration::from_millis(10), "{first_wait:?}");
    assert!(
        second_wait >= Duration::from_millis(20),
        "backoff grows: {second_wait:?}"
    );

    for _ in 0..3 {
        proxy.inject("/manifests/2", Fault::Status(503, None));
    }
    let err = client
        .resolve(&r(&proxy.host, "team/app:2"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::Unavailable { attempts: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("HTTP 503") && err.to_string().contains(&proxy.host));
}

#[tokio::test]
async fn cut_and_slow_responses_are_retried() {
    let f = fixture();
    let proxy = FaultProxy::start(&f.registry.host);
    proxy.inject("/tags/list", Fault::Cut);
    proxy.inject("/manifests/1", Fault::Slow(Duration::from_millis(1500)));
    let settings = RegistrySettings {
        timeout_ms: 500,
        ..fast_retry(3)
    };
    let client = client_for(&proxy.host, settings, CredentialStore::new());
    assert_eq!(
        client
            .list_tags(&r(&proxy.host, "team/app"))
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(proxy.count("GET", "/tags/list"), 2);
    client.resolve(&r(&proxy.host, "team/app:1")).await.unwrap();
    assert_eq!(proxy.count("HEAD", "/manifests/1"), 2);
    assert_eq!(client.stats().retries, 2);
}

#[tokio::test]
async fn mirrors_are_tried_first_and_upstream_is_the_fallback() {
    let f = fixture();
    let mirror = FaultProxy::start(&f.registry.host);
    let settings = RegistrySettings {
        mirrors: vec![mirror.host.clone()],
        ..RegistrySettings::default()
    };
    let client = client_for(&f.registry.host, settings, CredentialStore::new());
    let inspected = client
        .inspect(&r(&f.registry.host, "team/app:1"), None)
        .await
        .unwrap();
    assert_eq!(mirror.count("HEAD", "/v2/team/app/manifests/1"), 1);
    assert_eq!(
        mirror.count("GET", "/v2/team/app/blobs/"),
        1,
        "config read through the mirror"
    );
    assert!(!inspected.layers.is_empty());

    mirror.inject("/manifests/2", Fault::Status(404, None));
    client
        .resolve(&r(&f.registry.host, "team/app:2"))
        .await
        .unwrap();

    let dead = format!("127.0.0.1:{}", crate::support::registry::free_port());
    let settings = RegistrySettings {
        mirrors: vec![dead.clone()],
        ..RegistrySettings::default()
    };
    let mut all = ClientSettings::default();
    all.registries.insert(f.registry.host.clone(), settings);
    all.registries.insert(
        dead,
        RegistrySettings {
            max_attempts: 1,
            ..RegistrySettings::default()
        },
    );
    RegistryClient::new(all, CredentialStore::new())
        .resolve(&r(&f.registry.host, "team/app:1"))
        .await
        .unwrap();
}

#[tokio::test]
async fn request_budget_paces_requests_per_second() {
    let f = fixture();
    let settings = RegistrySettings {
        requests_per_second: Some(20.0),
        ..RegistrySettings::default()
    };
    let client = client_for(&f.registry.host, settings, CredentialStore::new());
    let refs: Vec<Reference> = (0..11)
        .map(|i| r(&f.registry.host, &format!("many/tags:1.0.{i}")))
        .collect();
    let started = Instant::now();
    for result in client.resolve_all(&refs).await {
        result.unwrap();
    }
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn inspect_command_exits_zero_when_all_references_inspect_and_one_otherwise() {
    use image_factory::cli::inspect::{run, InspectArgs};
    use image_factory::cli::Output;
    use std::process::ExitCode;
    let f = fixture();
    let args = |refs: Vec<String>| InspectArgs {
        references: refs,
        base: Some(format!("{}/library/alpine:3.19", f.registry.host)),
        platform: "linux/arm64".into(),
        output: Output::Json,
        registry_settings: None,
        verify: false,
        key: None,
        enrollment: "images.yaml".into(),
    };
    let good = vec![
        format!("{}/team/app:2", f.registry.host),
        format!("{}/{MULTI}", f.registry.host),
    ];
    assert_eq!(run(args(good)).await.unwrap(), ExitCode::SUCCESS);
    let missing = vec![format!("{}/team/app:does-not-exist", f.registry.host)];
    assert_eq!(run(args(missing)).await.unwrap(), ExitCode::from(1));
    let bad_platform = InspectArgs {
        platform: "linux".into(),
        ..args(vec!["alpine".into()])
    };
    assert!(matches!(
        run(bad_platform).await,
        Err(RegistryError::Platform(_))
    ));
}

#[tokio::test]
async fn pinned_references_are_read_once_by_digest_and_never_headed() {
    let f = fixture();
    let (bytes, _) = f.registry.manifest("multi/tool", "1.0");
    let digest = image_factory::registry::digest::sha256_digest(&bytes);
    let pinned = r(&f.registry.host, &format!("multi/tool@{digest}"));
    let client = open_client();
    let resolved = client.resolve(&pinned).await.unwrap();
    assert_eq!(resolved.digest, digest);
    assert_eq!(resolved.platforms.len(), 2);
    client.new_scan();
    client.resolve(&pinned).await.unwrap();
    let stats = client.stats();
    assert_eq!(
        (stats.manifest_heads, stats.manifest_gets, stats.total()),
        (0, 1, 1),
        "{stats:?}"
    );
}

#[tokio::test]
async fn selection_skips_images_without_the_requested_platform() {
    let f = fixture();
    let client = open_client();
    let repo = r(&f.registry.host, "multi/tool");
    let on = |strategy, platform: Option<&str>| {
        TagSelection {
            image_selection_strategy: strategy,
            platform: platform.map(str::to_owned),
            ..TagSelection::default()
        }
        .compile()
        .unwrap()
    };
    let tags = |picked: Vec<image_factory::registry::SelectedImage>| {
        picked.into_iter().map(|p| p.tag).collect::<Vec<_>>()
    };
    let lexical = on(SelectionStrategy::Lexical, None);
    assert_eq!(
        tags(client.select(&repo, &lexical).await.unwrap()),
        ["arm64", "amd64", "1.0"]
    );
    let lexical_arm64 = on(SelectionStrategy::Lexical, Some("linux/arm64/v8"));
    assert_eq!(
        tags(client.select(&repo, &lexical_arm64).await.unwrap()),
        ["arm64", "1.0"],
        "the amd64-only image is skipped"
    );
    let newest = on(SelectionStrategy::NewestBuild, Some("linux/arm64/v8"));
    let picked = client.select(&repo, &newest).await.unwrap();
    assert_eq!(
        picked.iter().map(|p| p.tag.as_str()).collect::<Vec<_>>(),
        ["arm64", "1.0"]
    );
    assert!(picked
        .iter()
        .all(|p| p.created.as_deref() == Some("2024-03-02T00:00:00Z")));
}

#[tokio::test]
async fn identity_tokens_from_docker_config_are_exchanged_by_oauth_refresh() {
    let f = fixture();
    let proxy = FaultProxy::start(&f.registry.host);
    proxy.require_refresh_token(60, "refresh-me");
    let mut store = CredentialStore::new();
    let config = format!(
        r#"{{"auths":{{"{}":{{"auth":"PHRva2VuPjo=","identitytoken":"refresh-me"}}}}}}"#,
        proxy.host
    );
    store
        .add_docker_config_json(config.as_bytes(), "test config.json")
        .unwrap();
    let client = client_for(&proxy.host, RegistrySettings::default(), store);
    client
        .resolve(&r(&proxy.host, "library/alpine:3.19"))
        .await
        .unwrap();
    assert_eq!(proxy.count("POST", "/token"), 1);
    assert!(
        !format!("{client:?}").contains("refresh-me"),
        "refresh token in Debug output"
    );
}

#[tokio::test]
async fn the_watchers_first_pass_advances_its_progress_bar_once_per_image() {
    use image_factory::watch::registry::{RegistryWatcher, Target};
    use image_factory::watch::EventSource;
    let f = fixture();
    let targets: Vec<Target> = [
        ("library/alpine", "3.19"),
        ("team/app", "1"),
        ("team/app", "2"),
    ]
    .iter()
    .map(|(path, tag)| Target {
        image: format!("{path}:{tag}"),
        repository: r(&f.registry.host, &format!("{path}:{tag}")),
        selection: serde_json::from_value(serde_json::json!(
            {"imageSelectionStrategy": "Digest", "constraint": tag}
        ))
        .unwrap(),
        interval: std::time::Duration::from_secs(1),
        once: false,
    })
    .collect();
    let bar = indicatif::ProgressBar::hidden();
    let mut watcher =
        RegistryWatcher::new(open_client(), targets).with_first_pass_progress(bar.clone());
    let now = jiff::Timestamp::now();
    let first = watcher.poll(now).await;
    assert!(first.problems.is_empty(), "{:?}", first.problems);
    assert_eq!(first.observations.len(), 3);
    assert_eq!((bar.position(), bar.length()), (3, Some(3)));
    assert!(bar.is_finished());
    // Later passes do not touch it.
    watcher.poll(now + jiff::SignedDuration::from_secs(2)).await;
    assert_eq!(bar.position(), 3);
}
