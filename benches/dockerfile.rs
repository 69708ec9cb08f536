//! Throughput of Dockerfile analysis over the real corpus (`shared/corpus/dockerfiles`,
//! found next to the repository root). Run with `cargo bench --bench dockerfile`.
//!
//! Prints files per second and MB per second for [`analyze`] on in-memory text, so file
//! system time is not measured.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use image_factory::dockerfile::analyze;

const ROUNDS: usize = 20;

fn corpus_dir() -> Option<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join("shared/corpus/dockerfiles"))
        .find(|dir| dir.join("MANIFEST.tsv").is_file())
}

fn main() {
    let Some(dir) = corpus_dir() else {
        eprintln!("shared/corpus/dockerfiles not found next to the repository root");
        std::process::exit(1);
    };
    let manifest = std::fs::read_to_string(dir.join("MANIFEST.tsv")).unwrap_or_default();
    let files: Vec<(String, String)> = manifest
        .lines()
        .skip(1)
        .filter_map(|line| line.split('\t').next())
        .filter_map(|file| {
            let bytes = std::fs::read(dir.join(file)).ok()?;
            Some((
                file.to_owned(),
                String::from_utf8_lossy(&bytes).into_owned(),
            ))
        })
        .collect();
    let bytes: usize = files.iter().map(|(_, text)| text.len()).sum();
    let build_args = BTreeMap::new();

    // One warm-up round, so lazily built regexes are not timed.
    let mut stages = 0;
    for (file, text) in &files {
        stages += analyze(file, text, &build_args).stages.len();
    }

    let start = Instant::now();
    for _ in 0..ROUNDS {
        for (file, text) in &files {
            std::hint::black_box(analyze(file, std::hint::black_box(text), &build_args));
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let analyzed = (files.len() * ROUNDS) as f64;
    let megabytes = (bytes * ROUNDS) as f64 / 1_000_000.0;
    println!(
        "dockerfile analyze: {} files ({:.2} MB, {stages} stages) x {ROUNDS} rounds in {seconds:.3} s",
        files.len(),
        bytes as f64 / 1_000_000.0
    );
    println!(
        "  {:.0} files/s, {:.2} MB/s, {:.1} µs/file",
        analyzed / seconds,
        megabytes / seconds,
        seconds * 1e6 / analyzed
    );
}
