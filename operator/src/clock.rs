//! The factory's clock: the system clock, or the system clock shifted forward by an
//! offset read from a file (`run --clock-offset-file`), so tests and rehearsals can
//! pass a real 7-day hold in seconds without touching the machine's clock.
//!
//! The file holds one [humantime] duration (`7d 1m`, `36h`; empty = none). It is
//! re-read whenever its modification time or size changes; a file that cannot be read
//! or parsed keeps the last good offset (and says so once per change). The offset is
//! meant to only grow: moving it back makes time run backwards for the engine, which
//! then sees nothing due until the clock catches up again.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use jiff::{SignedDuration, Timestamp};
use tracing::{info, warn};

/// A source of "now" for the factory loop.
#[derive(Debug)]
pub struct Clock {
    file: Option<PathBuf>,
    /// The file's (modification time, length) when last read, and the offset it gave.
    seen: Mutex<(Option<(SystemTime, u64)>, SignedDuration)>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self {
            file: None,
            seen: Mutex::new((None, SignedDuration::ZERO)),
        }
    }

    /// The system clock plus the duration written in `file` (see the module docs).
    pub fn offset_file(file: impl Into<PathBuf>) -> Self {
        Self {
            file: Some(file.into()),
            seen: Mutex::new((None, SignedDuration::ZERO)),
        }
    }

    /// Whether the clock can jump (an offset file is in use): the factory loop then
    /// looks at it at least every [`Clock::POLL`].
    pub fn can_jump(&self) -> bool {
        self.file.is_some()
    }

    /// How often a jumping clock is looked at by a sleeping loop: 250 ms.
    pub const POLL: Duration = Duration::from_millis(250);

    /// Now, in whole-second resolution or finer.
    pub fn now(&self) -> Timestamp {
        let system = Timestamp::now();
        let Some(file) = &self.file else {
            return system;
        };
        let Ok(mut seen) = self.seen.lock() else {
            return system;
        };
        let stamp = std::fs::metadata(file)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        if stamp.is_some() && stamp != seen.0 {
            seen.0 = stamp;
            match std::fs::read_to_string(file)
                .map_err(|e| e.to_string())
                .and_then(|text| parse_offset(&text))
            {
                Ok(offset) => {
                    if offset != seen.1 {
                        info!(offset = %humantime::format_duration(offset.unsigned_abs()), file = %file.display(), "clock offset changed");
                    }
                    seen.1 = offset;
                }
                Err(e) => {
                    warn!(file = %file.display(), error = %e, "clock offset file not usable; keeping the last offset");
                }
            }
        }
        system.checked_add(seen.1).unwrap_or(system)
    }
}

/// Parses an offset: empty (zero) or a humantime duration, optionally with a leading `+`.
///
/// # Errors
/// A message naming what is wrong with the text.
fn parse_offset(text: &str) -> Result<SignedDuration, String> {
    let t = text.trim();
    let t = t.strip_prefix('+').unwrap_or(t).trim();
    if t.is_empty() {
        return Ok(SignedDuration::ZERO);
    }
    let d = humantime::parse_duration(t).map_err(|e| format!("{t:?}: {e} (write e.g. 7d 1m)"))?;
    SignedDuration::try_from(d).map_err(|e| format!("{t:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_is_read_and_a_bad_file_keeps_the_last_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("offset");
        let clock = Clock::offset_file(&file);
        let before = Timestamp::now();
        assert!(clock.now() >= before, "no file: the system clock");
        assert!(clock.now() < before + SignedDuration::from_hours(1));
        std::fs::write(&file, "7d 1m\n").unwrap();
        let shifted = clock.now();
        assert!(shifted >= before + SignedDuration::from_hours(7 * 24));
        std::fs::write(&file, "not a duration at all").unwrap();
        assert!(clock.now() >= before + SignedDuration::from_hours(7 * 24));
        std::fs::write(&file, "+1h").unwrap();
        let later = clock.now();
        assert!(later >= before + SignedDuration::from_hours(1));
        assert!(later < before + SignedDuration::from_hours(2));
        assert!(clock.can_jump());
        assert!(!Clock::system().can_jump());
        assert_eq!(parse_offset(""), Ok(SignedDuration::ZERO));
    }
}
