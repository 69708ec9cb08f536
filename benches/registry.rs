//! Registry client benchmark against a local `docker-registry` (CNCF distribution 2.8)
//! on 127.0.0.1 with 1,000 repositories and one 5,000-tag repository.
//!
//! Measures, side by side: resolving every tag's digest cold and warm with
//! `RegistryClient`, bare concurrent `HEAD` requests (the floor), `skopeo inspect --raw`
//! run sequentially (sampled over 50 repositories and extrapolated to 1,000), listing
//! 5,000 tags with the client and with `skopeo list-tags`.
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
    watcher(&registry, &refs).await
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
