//! Crash points for the crash-safety tests: the running factory stops dead at a named
//! point of its work, as a container killed by the kernel would.
//!
//! `IMAGE_FACTORY_CRASH_AT=POINT[:N]` makes the `N`-th (default first) passage through
//! [`point`]`(POINT)` kill the process at once — no destructor, no flush. When the
//! process leads its own session (the tests start it with `setsid`), the whole session
//! is killed (`kill -KILL -s SID`), builds included, as a container's processes die
//! together; otherwise only this process aborts. Unset (the normal case), a passage
//! costs one relaxed atomic load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};

/// The environment variable naming the crash point: `POINT[:N]`.
pub const ENV: &str = "IMAGE_FACTORY_CRASH_AT";

/// 0 unknown, 1 off, 2 armed.
static STATE: AtomicU8 = AtomicU8::new(0);
static TARGET: OnceLock<Option<(String, u32)>> = OnceLock::new();
static SEEN: OnceLock<Mutex<HashMap<String, u32>>> = OnceLock::new();

fn target() -> Option<&'static (String, u32)> {
    TARGET
        .get_or_init(|| {
            let raw = std::env::var(ENV).ok()?;
            let (name, n) = match raw.rsplit_once(':') {
                Some((name, n)) => (name.to_string(), n.parse().ok()?),
                None => (raw, 1),
            };
            Some((name, n))
        })
        .as_ref()
}

/// Passes crash point `name` (see the module docs).
pub fn point(name: &str) {
    match STATE.load(Ordering::Relaxed) {
        1 => return,
        0 => {
            let armed = if target().is_some() { 2 } else { 1 };
            STATE.store(armed, Ordering::Relaxed);
            if armed == 1 {
                return;
            }
        }
        _ => {}
    }
    let Some((wanted, n)) = target() else {
        return;
    };
    if wanted != name {
        return;
    }
    let seen = SEEN.get_or_init(|| Mutex::new(HashMap::new()));
    let count = match seen.lock() {
        Ok(mut m) => {
            let c = m.entry(name.to_string()).or_insert(0);
            *c += 1;
            *c
        }
        Err(_) => return,
    };
    if count == *n {
        die(name);
    }
}

fn die(name: &str) -> ! {
    eprintln!("crash point {name} reached: killing the process ({ENV})");
    let pid = std::process::id();
    if session_of_self() == Some(pid) {
        let _ = std::process::Command::new("pkill")
            .args(["-KILL", "-s", &pid.to_string()])
            .status();
    }
    std::process::abort()
}

/// The session id of this process (`/proc/self/stat` field 6).
fn session_of_self() -> Option<u32> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // `pid (comm) state ppid pgrp session …`; comm may hold spaces and parentheses.
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_session() {
        assert!(session_of_self().is_some());
    }

    #[test]
    fn unarmed_points_cost_nothing() {
        // ENV is not set in unit tests: passing any point returns.
        for _ in 0..3 {
            point("anything");
        }
    }
}
