//! Registry client benchmark against a local `docker-registry` (CNCF distribution 2.8)
//! on 127.0.0.1 with 1,000 repositories and one 5,000-tag repository.
//!
//! Measures, side by side: resolving every tag's digest cold and warm with
//! `RegistryClient`, bare concurrent `HEAD` requests (the floor), `skopeo inspect --raw`
//! run sequentially (sampled over 50 repositories and extrapolated to 1,000), listing
//! 5,000 tags with the client and with `skopeo list-tags`; then `run`'s watcher, cosign
//! verification of 100 key-signed digests, and the CPU cost of one keyless verification
//! (the recorded cosign v3 bundle of tests/testdata/sigstore, offline).
//!
//! Run: `cargo bench --bench registry` (needs docker-registry, umoci, skopeo, curl).

#[path = "support/mod.rs"]
mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use image_factory::reference::Reference;
use image_factory::registry::{ClientSettings, CredentialStore, RegistryClient, RegistrySettings};
use support::{cpu_seconds, in_parallel, peak_rss_mb, run, start_registry, Conn, Registry, Seed};

const REPOSITORIES: usize = 1_000;
const MANY_TAGS: usize = 5_000;
const SKOPEO_SAMPLE: usize = 50;
const CONCURRENCY: usize = 16;

fn fill(registry: &Registry) -> Result<()> {
    let seed = Seed::push(registry)?;
    seed.mount(&mut Conn::new(&registry.host)?, "bench/many")?;
    in_parallel(&registry.host, 8, |conn, w, workers| {
        for i in (w..REPOSITORIES).step_by(workers) {
            let repo = format!("bench/r{i:04}");
            seed.mount(conn, &repo)?;
            seed.put(conn, &repo, "1")?;
        }
        for t in (w..MANY_TAGS).step_by(workers) {
            seed.put(conn, "bench/many", &format!("t{t:05}"))?;
        }
        Ok(())
    })
}

async fn bare_heads(host: &str, refs: &[String]) -> Result<Duration> {
    let http = reqwest::Client::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for path in refs {
        let url = format!("http://{host}/v2/{path}/manifests/1");
        let http = http.clone();
        let slots = slots.clone();
        set.spawn(async move {
            let _permit = slots.acquire_owned().await;
            http.head(url)
                .header("Accept", "application/vnd.oci.image.manifest.v1+json")
                .send()
                .await
                .map(|r| r.status().as_u16())
        });
    }
    while let Some(joined) = set.join_next().await {
        let status = joined??;
        if status != 200 {
            bail!("bare HEAD: HTTP {status}");
        }
    }
    Ok(started.elapsed())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> Result<()> {
    let registry = start_registry()?;
    let fill_started = Instant::now();
    tokio::task::block_in_place(|| fill(&registry))?;
    println!(
        "filled {} with {REPOSITORIES} repositories and a {MANY_TAGS}-tag repository in {:.1} s",
        registry.host,
        fill_started.elapsed().as_secs_f64()
    );
    let mut settings = ClientSettings::default();
    settings.registries.insert(
        registry.host.clone(),
        RegistrySettings {
            requests_per_second: None,
            max_concurrency: CONCURRENCY,
            ..RegistrySettings::default()
        },
    );
    let client = RegistryClient::new(settings, CredentialStore::new());
    let paths: Vec<String> = (0..REPOSITORIES)
        .map(|i| format!("bench/r{i:04}"))
        .collect();
    let refs = paths
        .iter()
        .map(|p| Reference::parse(&format!("{}/{p}:1", registry.host)))
        .collect::<Result<Vec<_>, _>>()?;

    let started = Instant::now();
    for result in client.resolve_all(&refs).await {
        result?;
    }
    let cold = started.elapsed();
    let cold_stats = client.stats();

    client.new_scan();
    let started = Instant::now();
    for result in client.resolve_all(&refs).await {
        result?;
    }
    let warm = started.elapsed();
    let warm_stats = client.stats();
    let warm_requests = warm_stats.total() - cold_stats.total();
    let warm_heads = warm_stats.manifest_heads - cold_stats.manifest_heads;

    let bare = bare_heads(&registry.host, &paths).await?;

    let many = Reference::parse(&format!("{}/bench/many", registry.host))?;
    let before = client.stats();
    let started = Instant::now();
    let tags = client.list_tags(&many).await?;
    let list = started.elapsed();
    let list_requests = client.stats().total() - before.total();
    if tags.len() != MANY_TAGS {
        bail!("listed {} tags, expected {MANY_TAGS}", tags.len());
    }

    let started = Instant::now();
    for path in paths.iter().take(SKOPEO_SAMPLE) {
        run(Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{}/{path}:1", registry.host)))?;
    }
    let skopeo_sample = started.elapsed();
    let skopeo_all = skopeo_sample.mul_f64(REPOSITORIES as f64 / SKOPEO_SAMPLE as f64);

    let started = Instant::now();
    let listed = run(Command::new("skopeo")
        .args(["list-tags", "--tls-verify=false"])
        .arg(format!("docker://{}/bench/many", registry.host)))?;
    let skopeo_list = started.elapsed();
    let skopeo_tags = serde_json::from_slice::<serde_json::Value>(&listed)?["Tags"]
        .as_array()
        .map_or(0, Vec::len);

    println!();
    println!(
        "{:<58} {:>10} {:>12}",
        "resolve 1,000 tags (concurrency 16)", "requests", "wall ms"
    );
    println!(
        "{:<58} {:>10} {:>12.1}",
        "image-factory cold",
        cold_stats.total(),
        ms(cold)
    );
    println!(
        "{:<58} {:>10} {:>12.1}",
        format!("image-factory warm ({warm_heads} HEAD)"),
        warm_requests,
        ms(warm)
    );
    println!(
        "{:<58} {:>10} {:>12.1}",
        "bare reqwest HEADs (same concurrency)",
        REPOSITORIES,
        ms(bare)
    );
    println!(
        "{:<58} {:>10} {:>12.1}",
        format!(
            "skopeo inspect --raw, sequential ({SKOPEO_SAMPLE} sampled, ×{})",
            REPOSITORIES / SKOPEO_SAMPLE
        ),
        "≥2/tag",
        ms(skopeo_all)
    );
    println!();
    println!(
        "{:<58} {:>10} {:>12}",
        format!("list {MANY_TAGS} tags"),
        "requests",
        "wall ms"
    );
    println!(
        "{:<58} {:>10} {:>12.1}",
        "image-factory list_tags",
        list_requests,
        ms(list)
    );
    println!(
        "{:<58} {:>10} {:>12.1}",
        format!("skopeo list-tags ({skopeo_tags} tags)"),
        "≥2",
        ms(skopeo_list)
    );
    println!();
    println!(
        "warm scan = one HEAD per tag: {}",
        warm_requests == REPOSITORIES as u64 && warm_heads == REPOSITORIES as u64
    );
    println!(
        "warm vs sequential skopeo: {:.1}× faster (target ≥ 10×)",
        skopeo_all.as_secs_f64() / warm.as_secs_f64()
    );
    println!(
        "warm vs bare HEADs: {:.2}× (target ≤ 2×)",
        warm.as_secs_f64() / bare.as_secs_f64()
    );
    watcher(&registry, &refs).await?;
    signatures(&registry, &refs[..SIGNED]).await?;
    keyless().await
}

/// Keyless verifications timed for the per-digest figure.
const KEYLESS_RUNS: usize = 200;

/// The CPU cost of one keyless verification, offline (the registry requests are those
/// of a key-based check): the recorded cosign v3 bundle (tests/testdata/sigstore)
/// against the embedded public-good root — building the check (parsing the trusted
/// root, as `Verifier::verify` does on each cache miss) and checking the bundle
/// (sigstore's `Verifier`: chain, SCT, policy, DSSE signature, log entry; our SET check).
async fn keyless() -> Result<()> {
    use image_factory::verify::{Keyless, KeylessCheck, PUBLIC_GOOD_TRUSTED_ROOT};

    let bundle = include_bytes!("../tests/testdata/sigstore/cosign_v3_keyless_bundle.json");
    let digest = "sha256:c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172";
    let policy = Keyless {
        identity: "^https://github.com/kubewarden/".into(),
        issuer: "^https://token.actions.githubusercontent.com$".into(),
        rekor: true,
        trusted_root: None,
    };
    let mut build = Vec::with_capacity(KEYLESS_RUNS);
    let mut verify = Vec::with_capacity(KEYLESS_RUNS);
    for _ in 0..KEYLESS_RUNS {
        let t = Instant::now();
        let check =
            KeylessCheck::new(&policy, PUBLIC_GOOD_TRUSTED_ROOT).map_err(anyhow::Error::msg)?;
        build.push(t.elapsed());
        let t = Instant::now();
        check
            .check_bundle(bundle, digest)
            .await
            .map_err(anyhow::Error::msg)?;
        verify.push(t.elapsed());
    }
    build.sort();
    verify.sort();
    println!();
    println!(
        "{:<58} {:>12} {:>12}",
        format!("keyless verification, {KEYLESS_RUNS} runs (offline)"),
        "median ms",
        "max ms"
    );
    for (what, times) in [
        ("build the check (parse the trusted root)", &build),
        (
            "check the cosign v3 bundle (sigstore Verifier + SET)",
            &verify,
        ),
    ] {
        println!(
            "{:<58} {:>12.2} {:>12.2}",
            what,
            ms(times[times.len() / 2]),
            ms(times[times.len() - 1])
        );
    }
    Ok(())
}

/// Repositories whose digest is signed for the verification figures.
const SIGNED: usize = 100;

/// Uploads `bytes` as a blob of `repo` (POST, then PUT with the digest); its digest.
async fn push_blob(http: &reqwest::Client, host: &str, repo: &str, bytes: &[u8]) -> Result<String> {
    let digest = image_factory::registry::digest::sha256_digest(bytes);
    let start = http
        .post(format!("http://{host}/v2/{repo}/blobs/uploads/"))
        .send()
        .await?;
    let location = start
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let location = if location.starts_with('/') {
        format!("http://{host}{location}")
    } else {
        location
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = http
        .put(format!("{location}{sep}digest={digest}"))
        .body(bytes.to_vec())
        .send()
        .await?;
    if put.status().as_u16() != 201 {
        bail!("blob upload to {repo}: HTTP {}", put.status());
    }
    Ok(digest)
}

/// Signature verification (issue 14) of `refs` (each a repository holding the seed
/// digest, signed with a fresh P-256 key under `sha256-<hex>.sig`): the cost of a new
/// digest (distribution 2.8 has no referrers API: one 404 per registry, then the tag
/// scheme) and of the same digests again (the verdict cache: no request).
async fn signatures(registry: &Registry, refs: &[Reference]) -> Result<()> {
    use base64::Engine as _;
    use image_factory::runtime::{SignatureVerdict, VerifyMode};
    use image_factory::verify::{KeySource, Requirement, Verifier, VerifyPolicy};
    use sigstore::crypto::SigningScheme;

    let host = &registry.host;
    let http = reqwest::Client::new();
    let client = RegistryClient::new(ClientSettings::default(), CredentialStore::new());
    let digest = client.resolve(&refs[0]).await?.digest;
    let signer = SigningScheme::ECDSA_P256_SHA256_ASN1.create_signer()?;
    let pem = signer.to_sigstore_keypair()?.public_key_to_pem()?;
    let tag = format!("{}.sig", digest.replacen(':', "-", 1));
    for r in refs {
        let repo = r.repository();
        // One payload per repository (its identity differs), so no signature manifest
        // or payload is served from the digest cache of another repository.
        let payload = serde_json::to_vec(&serde_json::json!({
            "critical": {"identity": {"docker-reference": format!("{host}/{repo}")},
                         "image": {"docker-manifest-digest": digest},
                         "type": "cosign container image signature"},
            "optional": null
        }))?;
        let signature = base64::engine::general_purpose::STANDARD.encode(signer.sign(&payload)?);
        let config = push_blob(&http, host, repo, b"{}").await?;
        let layer = push_blob(&http, host, repo, &payload).await?;
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2, "digest": config},
            "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                        "size": payload.len(), "digest": layer,
                        "annotations": {"dev.cosignproject.cosign/signature": signature}}]
        }))?;
        let put = http
            .put(format!("http://{host}/v2/{repo}/manifests/{tag}"))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest)
            .send()
            .await?;
        if put.status().as_u16() != 201 {
            bail!("signature of {repo}: HTTP {}", put.status());
        }
    }
    let policy = VerifyPolicy {
        requirement: Requirement::Key(KeySource::Pem(pem)),
        mode: VerifyMode::Enforce,
    };
    let verifier = Verifier::new(client.clone());
    let before = client.stats();
    let started = Instant::now();
    let mut times = Vec::with_capacity(refs.len());
    for r in refs {
        let t = Instant::now();
        let judged = verifier.verify(r, &digest, &policy).await?;
        times.push(t.elapsed());
        if judged.check.verdict != SignatureVerdict::Verified {
            bail!("{r}: {:?}", judged.check);
        }
    }
    let new_t = started.elapsed();
    let new_stats = client.stats();
    let started = Instant::now();
    for r in refs {
        verifier.verify(r, &digest, &policy).await?;
    }
    let cached_t = started.elapsed();
    let cached_stats = client.stats();
    times.sort();
    let n = refs.len() as u64;
    let new_requests = new_stats.total() - before.total();
    println!();
    println!(
        "{:<58} {:>10} {:>12}",
        format!("cosign verification, {n} signed digests (sequential)"),
        "requests",
        "ms"
    );
    println!(
        "{:<58} {:>10} {:>12.1}",
        format!(
            "new digests ({} referrers, {} HEAD, {} GET manifest, {} GET blob)",
            new_stats.referrers_gets - before.referrers_gets,
            new_stats.manifest_heads - before.manifest_heads,
            new_stats.manifest_gets - before.manifest_gets,
            new_stats.blob_gets - before.blob_gets
        ),
        new_requests,
        ms(new_t)
    );
    println!(
        "{:<58} {:>10.2} {:>12.2}",
        "  per new digest (mean; median ms)",
        new_requests as f64 / n as f64,
        ms(times[times.len() / 2])
    );
    println!(
        "{:<58} {:>10} {:>12.1}",
        "the same digests again (verdict cache)",
        cached_stats.total() - new_stats.total(),
        ms(cached_t)
    );
    Ok(())
}

/// `run`'s registry watcher over the same 1,000 tags: a first pass with a cold,
/// persisted manifest cache, a steady pass one interval later, and the first pass of a
/// restarted process on the same cache folder (the bar: one `HEAD` per tag, no `GET`).
async fn watcher(registry: &Registry, refs: &[Reference]) -> Result<()> {
    use image_factory::watch::registry::{RegistryWatcher, Target};
    use image_factory::watch::EventSource;
    let cache = tempfile::tempdir()?;
    let selection: image_factory::registry::TagSelection =
        serde_json::from_str(r#"{"imageSelectionStrategy":"Digest","constraint":"1"}"#)?;
    let interval = Duration::from_secs(300);
    let targets = || {
        refs.iter()
            .enumerate()
            .map(|(i, r)| Target {
                image: format!("r{i:04}"),
                repository: r.clone(),
                selection: selection.clone(),
                interval,
                once: false,
            })
            .collect::<Vec<_>>()
    };
    let client = |settings: ClientSettings| {
        RegistryClient::with_content_dir(settings, CredentialStore::new(), cache.path())
    };
    let mut settings = ClientSettings::default();
    settings.registries.insert(
        registry.host.clone(),
        RegistrySettings {
            requests_per_second: None,
            max_concurrency: CONCURRENCY,
            ..RegistrySettings::default()
        },
    );
    let now = jiff::Timestamp::now();
    let first_client = client(settings.clone());
    let mut w = RegistryWatcher::new(first_client.clone(), targets());
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    let first = w.poll(now).await;
    let first_t = started.elapsed();
    let first_stats = first_client.stats();
    let later = now + jiff::SignedDuration::from_secs(300);
    let started = Instant::now();
    let steady = w.poll(later).await;
    let steady_t = started.elapsed();
    let steady_stats = first_client.stats();
    let restarted_client = client(settings);
    let mut r = RegistryWatcher::new(restarted_client.clone(), targets());
    let started = Instant::now();
    let restarted = r.poll(later).await;
    let restart_t = started.elapsed();
    let restart_stats = restarted_client.stats();
    let cpu = cpu_seconds() - cpu0;
    if !first.problems.is_empty() {
        bail!(
            "watcher problems: {:?}",
            &first.problems[..first.problems.len().min(3)]
        );
    }
    println!();
    println!(
        "{:<58} {:>10} {:>12}",
        "watcher, 1,000 tags (interval 5m)", "requests", "ms"
    );
    println!(
        "{:<58} {:>10} {:>12.1}",
        format!(
            "first pass, cold cache ({} digests)",
            first.observations.len()
        ),
        first_stats.total(),
        ms(first_t)
    );
    println!(
        "{:<58} {:>10} {:>12.1}",
        format!(
            "steady pass, nothing changed ({} HEAD, {} GET)",
            steady_stats.manifest_heads - first_stats.manifest_heads,
            steady_stats.manifest_gets - first_stats.manifest_gets
        ),
        steady_stats.total() - first_stats.total(),
        ms(steady_t)
    );
    println!(
        "{:<58} {:>10} {:>12.1}",
        format!(
            "after a restart, persisted cache ({} HEAD, {} GET)",
            restart_stats.manifest_heads, restart_stats.manifest_gets
        ),
        restart_stats.total(),
        ms(restart_t)
    );
    println!(
        "watcher CPU for the three passes: {cpu:.2} s; peak RSS of the benchmark: {} MB; steady observations: {} (the factory drops known digests)",
        peak_rss_mb(),
        steady.observations.len() + restarted.observations.len()
    );
    Ok(())
}
