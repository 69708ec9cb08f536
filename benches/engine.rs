//! Rebuild engine benchmark on a synthetic fleet of 10,000 images: 100 external bases
//! and 9,900 managed images in 7 levels (each managed image built from one image of the
//! level above and, from level 2 down, one external base as well) — the shape issue 8
//! asks for.
//!
//! Run: `cargo bench --bench engine` (release build). Set `IMAGES=N` for another fleet
//! size. Prints:
//!
//! - engine construction time (graph build shown separately);
//! - a burst of 1,000 simultaneous base updates (10 new digests of each of the 100
//!   bases, discovered in the same minute): applying them all, then one `tick` past the
//!   7-day delay, and the triggers that tick decides;
//! - the full cascade that follows: every triggered rebuild succeeds, its `Outcome` is
//!   applied, and the rebuilds it cascades into are fed in turn until none is left — the
//!   number of rebuilds and the total time;
//! - the latency of one `Outcome` event over that cascade: median, p99, max;
//! - the `plan` of one base update (the dry run `image-factory plan` prints);
//! - the peak resident memory (`VmHWM`) before and after.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use image_factory::engine::{self, Decision, Engine, EngineConfig, Event, Outcome, PlanUpdate};
use image_factory::graph::{Graph, Use};
use image_factory::reference::Reference;
use image_factory::runtime::{Digest, UpdateSource};
use jiff::{SignedDuration, Timestamp};

const BASES: usize = 100;
const DIGESTS_PER_BASE: usize = 10;
const DAY: i64 = 86_400;

/// Levels of managed images.
const LEVELS: usize = 7;

/// Managed images per level for a fleet of `n`: the first level a tenth, the rest
/// shared evenly (the last takes the remainder).
fn level_sizes(n: usize) -> [usize; LEVELS] {
    let first = n / 10;
    let rest = (n - first) / (LEVELS - 1);
    let mut sizes = [rest; LEVELS];
    sizes[0] = first;
    sizes[LEVELS - 1] = n - first - rest * (LEVELS - 2);
    sizes
}

fn base_reference(i: usize) -> String {
    format!("registry.example.com/upstream/base-{i:03}:1")
}

/// The enrollment text and the `FROM`s of every managed image; returns the level sizes.
fn fleet(n: usize) -> (String, BTreeMap<String, Vec<Use>>, [usize; LEVELS]) {
    let mut yaml = String::from("version: 1\ndefaults:\n  rebuild: {delay: 7d}\nimages:\n");
    for i in 0..BASES {
        let _ = writeln!(
            yaml,
            "  - {{name: base-{i:03}, image: '{}'}}",
            base_reference(i)
        );
    }
    let mut uses = BTreeMap::new();
    let sizes = level_sizes(n);
    let mut previous: Vec<String> = (0..BASES).map(base_reference).collect();
    let mut index = 0usize;
    for (level, &size) in sizes.iter().enumerate() {
        let mut current = Vec::with_capacity(size);
        for k in 0..size {
            let name = format!("img-{index:05}");
            let image = format!("registry.example.com/team-{level}/{name}:1");
            let _ = writeln!(
                yaml,
                "  - {{name: {name}, image: '{image}', source: {{path: .}}}}"
            );
            let mut from = vec![Use {
                reference: Reference::parse(&previous[(k * 7 + level) % previous.len()]).unwrap(),
                via: "from".to_string(),
            }];
            if level > 0 {
                from.push(Use {
                    reference: Reference::parse(&base_reference((k * 13 + 5) % BASES)).unwrap(),
                    via: "copy".to_string(),
                });
            }
            uses.insert(name, from);
            current.push(image);
            index += 1;
        }
        previous = current;
    }
    (yaml, uses, sizes)
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

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn t0() -> Timestamp {
    Timestamp::from_second(1_790_000_000).unwrap()
}

fn at(seconds: i64) -> Timestamp {
    t0() + SignedDuration::from_secs(seconds)
}

fn digest(n: usize) -> Digest {
    Digest::sha256_of(n.to_string().as_bytes())
}

fn triggers(decisions: &[Decision]) -> impl Iterator<Item = &engine::Trigger> {
    decisions.iter().filter_map(|d| match d {
        Decision::Trigger(t) => Some(t),
        _ => None,
    })
}

fn main() {
    let n: usize = std::env::var("IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000 - BASES);
    let rss_start = peak_rss_mb();
    let (yaml, uses, sizes) = fleet(n);
    let dir = tempfile::tempdir().unwrap();
    let enrollment = image_factory::enrollment::parse("images.yaml", &yaml, dir.path()).unwrap();
    println!("engine benchmark: {BASES} external bases, {n} managed images in levels of {sizes:?}");

    let start = Instant::now();
    let graph = Graph::build(&enrollment, &uses);
    let t_graph = start.elapsed();
    let start = Instant::now();
    let mut e = Engine::new(&graph, BTreeMap::new(), EngineConfig::default()).unwrap();
    let t_new = start.elapsed();
    println!(
        "  (d) graph build {}, Engine::new {}",
        ms(t_graph),
        ms(t_new)
    );

    // (a) A burst of updates, then the tick that ends their hold.
    let start = Instant::now();
    let mut recorded = 0;
    for round in 0..DIGESTS_PER_BASE {
        for b in 0..BASES {
            let discovered = at(i64::try_from(round).unwrap());
            let out = e.apply(
                Event::Update {
                    image: format!("base-{b:03}"),
                    tag: "1".to_string(),
                    digest: digest(round * BASES + b),
                    platforms: BTreeMap::new(),
                    discovered_at: discovered,
                    source: UpdateSource::Watcher,
                    signature: None,
                },
                discovered,
            );
            recorded += out
                .iter()
                .filter(|d| matches!(d, Decision::Recorded { .. }))
                .count();
        }
    }
    let t_apply = start.elapsed();
    let changed_after_apply = e.take_changed().len();
    let start = Instant::now();
    let now = at(7 * DAY + 60);
    let out = e.tick(now);
    let t_tick = start.elapsed();
    let mut queue: VecDeque<engine::Trigger> = triggers(&out).cloned().collect();
    let first_wave = queue.len();
    let changed_after_tick = e.take_changed().len();
    println!(
        "  (a) {recorded} base updates: apply all {}, tick past the delay {} → {first_wave} triggers; total {} ({} + {} records changed)",
        ms(t_apply),
        ms(t_tick),
        ms(t_apply + t_tick),
        changed_after_apply,
        changed_after_tick
    );

    // (b) + (c) Every rebuild succeeds; each Outcome may trigger the next wave.
    let mut latencies = Vec::with_capacity(n);
    let mut rebuilds = 0usize;
    let mut built = 0usize;
    let start = Instant::now();
    while let Some(t) = queue.pop_front() {
        rebuilds += 1;
        built += 1;
        let event = Event::Outcome {
            id: t.id.clone(),
            outcome: Outcome::Success {
                digest: digest(1_000_000 + built),
                base_digests: vec![],
            },
        };
        let one = Instant::now();
        let out = e.apply(event, now);
        latencies.push(one.elapsed());
        queue.extend(triggers(&out).cloned());
        e.take_changed();
    }
    let t_cascade = start.elapsed();
    let leftover = e.tick(now);
    let late = triggers(&leftover).count();
    latencies.sort_unstable();
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!(
        "  (c) full cascade: {rebuilds} rebuilds triggered ({first_wave} in wave 1, {} cascaded), {} in total{}",
        rebuilds - first_wave,
        ms(t_cascade),
        if late > 0 {
            format!(", {late} more after a tick")
        } else {
            String::new()
        }
    );
    println!(
        "  (b) one Outcome event ({} samples): median {}, p99 {}, max {}",
        latencies.len(),
        us(pick(0.5)),
        us(pick(0.99)),
        us(latencies[latencies.len() - 1])
    );

    // The dry run people see, for one base of the settled fleet.
    let runtime: BTreeMap<String, _> = e
        .runtimes()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let update = PlanUpdate {
        image: "base-000".to_string(),
        tag: "1".to_string(),
        digest: digest(2_000_000),
        discovered_at: now,
    };
    let start = Instant::now();
    let plan = engine::plan(&graph, &runtime, &EngineConfig::default(), &update, now).unwrap();
    let t_plan = start.elapsed();
    let waves = plan.rebuilds.iter().map(|r| r.wave).max().unwrap_or(0);
    println!(
        "  plan of one base update: {} rebuilds in {waves} waves, {}",
        plan.rebuilds.len(),
        ms(t_plan)
    );
    println!(
        "  (e) peak resident memory: {rss_start:.0} MB at start, {:.0} MB at the end",
        peak_rss_mb()
    );
}
