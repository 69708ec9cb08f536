//! `analyze` and `plan` on a generated enrollment of 10,000 managed images.
//!
//! Run: `cargo bench --bench analyze` (release build). Set `IMAGES=N` for another size.
//! Prints wall times per phase, an incremental run with one changed source, the plan time
//! (median of 50) and the peak resident memory.
//!
//! The enrollment: 8 external bases, then 8 levels of managed images (depth 8 + the
//! bases), each Dockerfile multi-stage with global ARGs that build the parent reference,
//! a `--platform` builder stage, `COPY --from` an external image and a cache mount.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant, UNIX_EPOCH};

use image_factory::analyze;
use image_factory::reference::Reference;
use image_factory::state;

const BASES: [&str; 8] = [
    "python:3.12-slim",
    "debian:bookworm-slim",
    "ubuntu:24.04",
    "alpine:3.20",
    "node:22-bookworm-slim",
    "eclipse-temurin:21-jre",
    "golang:1.23-bookworm",
    "nginx:1.27-alpine",
];

/// Images per level, scaled so that the total is `n`.
fn level_sizes(n: usize) -> Vec<usize> {
    let weights = [2usize, 10, 40, 100, 200, 300, 348];
    let total: usize = weights.iter().sum();
    let mut sizes: Vec<usize> = weights.iter().map(|w| (w * n / total).max(1)).collect();
    let sum: usize = sizes.iter().sum();
    if let Some(last) = sizes.last_mut() {
        *last = (*last + n).saturating_sub(sum).max(1);
    }
    sizes
}

fn dockerfile(parent: &str, tag: &str, i: usize) -> String {
    let (registry, repository) = parent.split_once('/').unwrap_or(("docker.io", parent));
    let mut s = String::new();
    let _ = writeln!(s, "# syntax=docker/dockerfile:1.7");
    let _ = writeln!(s, "ARG REGISTRY={registry}");
    let _ = writeln!(s, "ARG PARENT={repository}");
    let _ = writeln!(s, "ARG TAG={tag}");
    let _ = writeln!(s, "ARG BASE=${{REGISTRY}}/${{PARENT}}:${{TAG}}");
    let _ = writeln!(
        s,
        "FROM --platform=$BUILDPLATFORM golang:1.23-bookworm AS tools"
    );
    let _ = writeln!(
        s,
        "RUN --mount=type=cache,target=/go/pkg/mod \\\n    go install example.com/tool@v1.{}",
        i % 10
    );
    let _ = writeln!(s, "FROM ${{BASE}} AS build");
    let _ = writeln!(
        s,
        "WORKDIR /src\nCOPY . .\nRUN make build \\\n && make test"
    );
    let _ = writeln!(s, "FROM $BASE");
    let _ = writeln!(s, "COPY --from=build /out /app");
    let _ = writeln!(s, "COPY --from=tools /go/bin/tool /usr/local/bin/tool");
    let _ = writeln!(
        s,
        "COPY --from=docker.io/library/busybox:1.36 /bin/busybox /bin/busybox"
    );
    let _ = writeln!(s, "LABEL org.opencontainers.image.title=\"img-{i}\"");
    let _ = writeln!(s, "USER 10001\nENTRYPOINT [\"/app\"]");
    s
}

/// Writes images.yaml and one folder + Dockerfile per managed image; returns the depth.
fn generate(dir: &Path, n: usize) -> usize {
    let mut yaml = String::from("version: 1\ndefaults:\n  rebuild: {delay: 7d}\nimages:\n");
    for (i, base) in BASES.iter().enumerate() {
        let _ = writeln!(yaml, "  - name: base-{i}\n    image: {base}");
    }
    let mut previous: Vec<String> = BASES
        .iter()
        .map(|b| Reference::parse(b).unwrap().to_string())
        .collect();
    let mut index = 0;
    let sizes = level_sizes(n);
    for (level, size) in sizes.iter().enumerate() {
        let mut current = Vec::with_capacity(*size);
        for k in 0..*size {
            let parent = &previous[(k * 7 + level) % previous.len()];
            let parent_ref = Reference::parse(parent).unwrap();
            let name = format!("img-{index:05}");
            let image = format!("registry.example.com/team-{level}/{name}:1.0");
            let src = dir.join("src").join(&name);
            std::fs::create_dir_all(&src).unwrap();
            std::fs::write(
                src.join("Dockerfile"),
                dockerfile(
                    &parent_ref.repo_url(),
                    parent_ref.tag().unwrap_or("latest"),
                    index,
                ),
            )
            .unwrap();
            let _ = writeln!(
                yaml,
                "  - name: {name}\n    image: {image}\n    source: {{path: src/{name}}}"
            );
            current.push(image);
            index += 1;
        }
        previous = current;
    }
    std::fs::write(dir.join("images.yaml"), yaml).unwrap();
    sizes.len()
}

fn graph_json(graph: &image_factory::graph::Graph) -> String {
    image_factory::graph::render_json(graph)
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let n: usize = std::env::var("IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().unwrap();
    let levels = generate(dir.path(), n);
    let file = dir.path().join("images.yaml");
    let state_dir = dir.path().join("state");
    let cache = dir.path().join("cache");
    println!("analyze benchmark: {n} managed images, 8 external bases, {levels} managed levels");

    let start = Instant::now();
    let enrollment = image_factory::enrollment::load(&file).unwrap();
    let t_enroll = start.elapsed();
    drop(enrollment);

    let start = Instant::now();
    let model = analyze::model(&file, &cache, true, &analyze::NoProgress).unwrap();
    let t_model = start.elapsed();
    let depth = model
        .graph
        .levels()
        .unwrap()
        .values()
        .copied()
        .max()
        .unwrap_or(0);

    let start = Instant::now();
    let old = state::load_images(&state_dir).unwrap();
    let (files, report) = analyze::render(&model, &old.images, false).unwrap();
    let t_render = start.elapsed();
    let start = Instant::now();
    let mut changes = state::Changes::default();
    for (rel, content) in &files {
        changes.write(rel.clone(), content.clone());
    }
    let written = state::journal::commit(&state_dir, &changes).unwrap();
    let t_write = start.elapsed();
    println!(
        "  graph: {} nodes ({} managed), {} edges, depth {depth}",
        report.managed + report.external + report.bases,
        report.managed,
        report.edges
    );
    println!("  load + validate images.yaml          {}", ms(t_enroll));
    println!(
        "  model (enrollment + read + parse Dockerfiles + graph)  {}",
        ms(t_model)
    );
    println!(
        "  render state + Warehouses ({} files)  {}",
        files.len(),
        ms(t_render)
    );
    println!(
        "  write (cold, {} files)               {}",
        written.written.len(),
        ms(t_write)
    );
    println!(
        "  analyze cold total (model+render+write)  {}",
        ms(t_model + t_render + t_write)
    );

    let options = analyze::Options {
        enrollment: file.clone(),
        state_dir: state_dir.clone(),
        cache_dir: cache.clone(),
        prune: false,
        dry_run: false,
        keep_going: false,
    };
    let start = Instant::now();
    let warm = analyze::run(&options, &analyze::NoProgress).unwrap();
    let t_warm = start.elapsed();
    assert_eq!(
        warm.write.written.len(),
        0,
        "a rerun must not change anything"
    );
    println!(
        "  analyze warm run (state unchanged: reads {} state files, writes 0)  {}",
        old.images.len().max(files.len()),
        ms(t_warm)
    );

    // Incremental analysis: one source changed, the other n - 1 reuse their analysis
    // from state (fingerprint unchanged: read and hashed, never parsed).
    let changed = dir.path().join("src/img-00042/Dockerfile");
    let mut text = std::fs::read_to_string(&changed).unwrap();
    text.push_str("LABEL changed=\"1\"\n");
    std::fs::write(&changed, text).unwrap();
    let start = Instant::now();
    let loaded = state::load_images(&state_dir).unwrap();
    let t_load = start.elapsed();
    let enrollment = image_factory::enrollment::load(&file).unwrap();
    // With the stat cache the warm run left (settled files are not read), then without
    // it (each run starts without the cache file: every source read and hashed, and the
    // cache written again).
    let stat_cache = cache.join(image_factory::statcache::FILE);
    let mut sources = Vec::new();
    let mut uncached = Vec::new();
    for round in 0..10 {
        let without = round >= 5;
        if without {
            let _ = std::fs::remove_file(&stat_cache);
        }
        let start = Instant::now();
        let results = analyze::read_sources_reusing(
            &enrollment,
            &cache,
            true,
            &loaded.images,
            &analyze::NoProgress,
        );
        if without {
            uncached.push(start.elapsed());
        } else {
            sources.push(start.elapsed());
        }
        let parsed = results
            .iter()
            .filter(|(_, r)| r.as_ref().unwrap().origin == analyze::Origin::Parsed)
            .count();
        assert_eq!(parsed, 1, "only the changed source is parsed");
    }
    sources.sort();
    uncached.sort();
    drop(loaded);
    drop(enrollment);
    let start = Instant::now();
    let incremental =
        analyze::model_named(&file, &cache, &state_dir, &analyze::NoProgress).unwrap();
    let t_model_incremental = start.elapsed();
    let reused = incremental
        .analyzed
        .values()
        .filter(|a| a.origin == analyze::Origin::Reused)
        .count();
    assert_eq!(reused, n - 1, "every unchanged source reuses its analysis");
    assert_eq!(
        graph_json(&incremental.graph),
        graph_json(&model.graph),
        "a reused analysis gives the same graph"
    );
    drop(incremental);
    let start = Instant::now();
    let report = analyze::run(&options, &analyze::NoProgress).unwrap();
    let t_incremental = start.elapsed();
    assert_eq!((report.parsed, report.reused), (1, n - 1));
    println!(
        "  incremental, 1 of {n} sources changed ({} parsed, {} reused):",
        report.parsed, report.reused
    );
    println!(
        "    sources with the stat cache: stat {n}, reuse {} analyses, read + parse 1  median {} (min {}, max {})",
        n - 1,
        ms(sources[sources.len() / 2]),
        ms(sources[0]),
        ms(sources[sources.len() - 1])
    );
    println!(
        "    sources without it: read + hash {n}, reuse {} analyses, parse 1, write the cache  median {} (min {}, max {})",
        n - 1,
        ms(uncached[uncached.len() / 2]),
        ms(uncached[0]),
        ms(uncached[uncached.len() - 1])
    );
    println!(
        "    load state/images ({} records)          {}",
        n + BASES.len() + 1,
        ms(t_load)
    );
    println!(
        "    model (enrollment + state + hash sources + reuse + graph)  {}",
        ms(t_model_incremental)
    );
    println!(
        "    analyze run (model + render + write {} file(s))  {}",
        report.write.written.len(),
        ms(t_incremental)
    );

    let mut times = Vec::new();
    let mut rebuilds = 0;
    let mut waves = 0;
    let update = Reference::parse("debian:bookworm-slim").unwrap();
    for _ in 0..50 {
        let start = Instant::now();
        let plan = model.graph.plan(&update, UNIX_EPOCH).unwrap();
        times.push(start.elapsed());
        rebuilds = plan.rebuilds.len();
        waves = plan.rebuilds.iter().map(|r| r.wave).max().unwrap_or(0);
    }
    times.sort();
    println!(
        "  plan --update debian:bookworm-slim: {rebuilds} rebuilds in {waves} waves, median {} (min {}, max {})",
        ms(times[times.len() / 2]),
        ms(times[0]),
        ms(times[times.len() - 1])
    );
    let _ = BTreeMap::<(), ()>::new();
    println!("  peak resident memory {:.0} MB", peak_rss_mb());
}
