//! Git state writer benchmark: 1,000 state changes submitted in a burst to the writer,
//! pushed to a local bare repository, against a plain `git add/commit/push` loop of the
//! same changes (git CLI), and a single CLI `add/commit/push` of all of them (the floor).
//!
//! Run: `cargo bench --bench git` (needs git). `GIT_BENCH_CLI_CHANGES=N` runs the CLI
//! loop for the first N changes only and extrapolates to 1,000.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use image_factory::git::{Change, ChangeSource, Config, Reason, Remote, Writer};

const CHANGES: usize = 1_000;

fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "Bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .with_context(|| format!("git {args:?}"))?;
    if !out.status.success() {
        bail!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A bare remote with one seed commit, and its path.
fn remote(dir: &Path, name: &str) -> Result<PathBuf> {
    let bare = dir.join(format!("{name}.git"));
    std::fs::create_dir_all(&bare)?;
    git(&bare, &["init", "--bare", "-q", "-b", "main"])?;
    let seed = dir.join(format!("{name}-seed"));
    std::fs::create_dir_all(&seed)?;
    git(&seed, &["init", "-q", "-b", "main"])?;
    std::fs::write(seed.join("images.yaml"), "images: []\n")?;
    git(&seed, &["add", "."])?;
    git(&seed, &["commit", "-q", "-m", "seed"])?;
    git(
        &seed,
        &["push", "-q", bare.to_str().unwrap_or_default(), "main"],
    )?;
    Ok(bare)
}

fn file(i: usize) -> (String, String) {
    (
        format!("runtime/image-{i:04}.yaml"),
        format!("version: 1\nimage: registry.example/team/image-{i:04}\nupdates:\n- digest: sha256:{i:064x}\n  discoveredAt: 2026-12-02T00:00:00Z\n"),
    )
}

fn commits(bare: &Path) -> Result<usize> {
    Ok(git(bare, &["rev-list", "--count", "main"])?
        .trim()
        .parse::<usize>()?
        - 1)
}

fn writer_burst(dir: &Path) -> Result<(Duration, usize)> {
    let bare = remote(dir, "writer")?;
    let mut config =
        Config::new(dir.join("writer-work")).with_remote(Remote::new(bare.display().to_string()));
    config.max_batch = 500;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let elapsed = runtime.block_on(async {
        let (writer, task) = Writer::spawn(config);
        // The start round (clone of the seed) is not part of the burst.
        writer.flush().await?;
        let started = Instant::now();
        for i in 0..CHANGES {
            let (path, content) = file(i);
            let mut files = BTreeMap::new();
            files.insert(PathBuf::from(path), Some(content));
            let reason = Reason {
                summary: format!("hold image-{i:04} on python:3.12-slim@sha256:ab12…"),
                images: vec![format!("registry.example/team/image-{i:04}")],
                source: Some(ChangeSource::Watcher),
                ..Reason::default()
            };
            writer.submit(Change::new(files, reason)).await?;
        }
        writer.shutdown().await?;
        let elapsed = started.elapsed();
        task.await?;
        anyhow::Ok(elapsed)
    })?;
    Ok((elapsed, commits(&bare)?))
}

fn cli_loop(dir: &Path, count: usize) -> Result<(Duration, usize)> {
    let bare = remote(dir, "cli")?;
    let work = dir.join("cli-work");
    git(
        dir,
        &["clone", "-q", bare.to_str().unwrap_or_default(), "cli-work"],
    )?;
    std::fs::create_dir_all(work.join("state/runtime"))?;
    let started = Instant::now();
    for i in 0..count {
        let (path, content) = file(i);
        let path = format!("state/{path}");
        std::fs::write(work.join(&path), content)?;
        git(&work, &["add", &path])?;
        git(
            &work,
            &["commit", "-q", "-m", &format!("hold image-{i:04}")],
        )?;
        git(&work, &["push", "-q", "origin", "main"])?;
    }
    Ok((started.elapsed(), commits(&bare)?))
}

fn cli_once(dir: &Path) -> Result<(Duration, usize)> {
    let bare = remote(dir, "once")?;
    let work = dir.join("once-work");
    git(
        dir,
        &[
            "clone",
            "-q",
            bare.to_str().unwrap_or_default(),
            "once-work",
        ],
    )?;
    std::fs::create_dir_all(work.join("state/runtime"))?;
    let started = Instant::now();
    for i in 0..CHANGES {
        let (path, content) = file(i);
        std::fs::write(work.join(format!("state/{path}")), content)?;
    }
    git(&work, &["add", "state"])?;
    git(&work, &["commit", "-q", "-m", "1000 holds"])?;
    git(&work, &["push", "-q", "origin", "main"])?;
    Ok((started.elapsed(), commits(&bare)?))
}

fn main() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cli_changes: usize = std::env::var("GIT_BENCH_CLI_CHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CHANGES)
        .clamp(1, CHANGES);
    let (writer, writer_commits) = writer_burst(dir.path())?;
    let (cli, cli_commits) = cli_loop(dir.path(), cli_changes)?;
    let (once, once_commits) = cli_once(dir.path())?;
    let cli_full = cli.mul_f64(CHANGES as f64 / cli_changes as f64);
    println!("git state writer, {CHANGES} changes in a burst to a local bare remote");
    println!("{:<44} {:>10} {:>8}", "", "time", "commits");
    println!(
        "{:<44} {:>9.3}s {:>8}",
        "Writer (batch ≤ 500, written + pushed)",
        writer.as_secs_f64(),
        writer_commits
    );
    let label = if cli_changes == CHANGES {
        "git CLI add/commit/push per change".to_string()
    } else {
        format!("git CLI add/commit/push per change (×{cli_changes}, extrapolated)")
    };
    println!(
        "{label:<44} {:>9.3}s {:>8}",
        cli_full.as_secs_f64(),
        cli_commits
    );
    println!(
        "{:<44} {:>9.3}s {:>8}",
        "git CLI one add/commit/push of all",
        once.as_secs_f64(),
        once_commits
    );
    println!(
        "writer vs CLI loop: {:.0}× faster; target < 2 s: {}",
        cli_full.as_secs_f64() / writer.as_secs_f64().max(1e-9),
        if writer < Duration::from_secs(2) {
            "met"
        } else {
            "MISSED"
        }
    );
    Ok(())
}
