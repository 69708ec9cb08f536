//! Throughput of Dockerfile analysis over the real corpus (`shared/corpus/dockerfiles`,
//! found next to the repository root). Run with `cargo bench --bench dockerfile`.
//!
//! Two parts:
//! - in process: files per second and MB per second for [`analyze`] on in-memory text, so
//!   file system time is not measured;
//! - whole process, side by side: the corpus copied 10 times into a temporary folder
//!   (4,950 files), then `image-factory dockerfile --output json FILE…` and Python's
//!   `dockerfile-parse` (`benches/python_dockerfile_parse.py`: each file's FROM images as JSON)
//!   timed on the same files, median of 5 runs each. The Python side runs when
//!   `python3 -c 'import dockerfile_parse'` works, or with `DOCKERFILE_PARSE_PYTHON=PATH`
//!   naming an interpreter that has it (`pip install dockerfile-parse`); otherwise it is
//!   reported as skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use image_factory::dockerfile::analyze;

const ROUNDS: usize = 20;
/// Copies of the corpus in the whole-process comparison.
const COPIES: usize = 10;
/// Runs of each command in the whole-process comparison; the median is reported.
const RUNS: usize = 5;
const BIN: &str = env!("CARGO_BIN_EXE_image-factory");

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
    whole_process(&dir, &files);
}

/// Median wall time of `RUNS` runs of `command` (its stdout discarded), or why it failed:
/// an exit code other than 0 or, when `findings_ok`, 1.
fn median_run(findings_ok: bool, mut command: impl FnMut() -> Command) -> Result<Duration, String> {
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let start = Instant::now();
        let out = command()
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| e.to_string())?;
        let took = start.elapsed();
        // image-factory's exit 1 means findings (an unresolved FROM in the corpus), not a
        // failure; Python's exit 1 is an uncaught exception.
        let code = out.status.code();
        if !(code == Some(0) || findings_ok && code == Some(1)) {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        times.push(took);
    }
    times.sort();
    Ok(times[RUNS / 2])
}

fn python_with_dockerfile_parse() -> Option<String> {
    let python = std::env::var("DOCKERFILE_PARSE_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import dockerfile_parse"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(python)
}

fn whole_process(dir: &Path, files: &[(String, String)]) {
    let Ok(copies) = tempfile::tempdir() else {
        eprintln!("whole process: cannot make a temporary folder");
        return;
    };
    let mut paths = Vec::with_capacity(files.len() * COPIES);
    for copy in 0..COPIES {
        for (file, _) in files {
            let to = copies.path().join(copy.to_string()).join(file);
            let copied = to
                .parent()
                .map(std::fs::create_dir_all)
                .and_then(Result::ok)
                .and_then(|()| std::fs::copy(dir.join(file), &to).ok());
            if copied.is_none() {
                eprintln!("whole process: cannot copy {file}");
                return;
            }
            paths.push(to);
        }
    }
    println!(
        "whole process, {} files (the corpus x {COPIES}), median of {RUNS} runs:",
        paths.len()
    );
    let ours = median_run(true, || {
        let mut c = Command::new(BIN);
        c.args(["dockerfile", "--output", "json"]).args(&paths);
        c
    });
    let ours = match ours {
        Ok(t) => {
            println!(
                "  image-factory dockerfile --output json: {:.3} s ({:.0} files/s)",
                t.as_secs_f64(),
                paths.len() as f64 / t.as_secs_f64()
            );
            t
        }
        Err(e) => {
            eprintln!("  image-factory dockerfile failed: {e}");
            return;
        }
    };
    let Some(python) = python_with_dockerfile_parse() else {
        println!(
            "  dockerfile-parse: skipped (pip install dockerfile-parse, or set DOCKERFILE_PARSE_PYTHON)"
        );
        return;
    };
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/python_dockerfile_parse.py");
    match median_run(false, || {
        let mut c = Command::new(&python);
        c.arg(&script).args(&paths);
        c
    }) {
        Ok(t) => println!(
            "  python dockerfile-parse (parent_images): {:.3} s ({:.0} files/s); image-factory is {:.1}x faster",
            t.as_secs_f64(),
            paths.len() as f64 / t.as_secs_f64(),
            t.as_secs_f64() / ours.as_secs_f64()
        ),
        Err(e) => eprintln!("  dockerfile-parse failed: {e}"),
    }
}
