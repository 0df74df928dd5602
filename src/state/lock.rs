//! An advisory lock on the state directory, held for the life of the process.
//! The kernel releases it when the process dies, so a crash never leaves a stale lock.
//! A caller may wait for it a while (`--lock-timeout`) instead of failing at once.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use super::StateError;

pub struct StateLock {
    _file: File,
}

/// How often a waiting process tries the lock again.
pub(super) const RETRY_EVERY: Duration = Duration::from_millis(100);

impl StateLock {
    pub fn acquire(dir: &Path, command: &str) -> Result<Self, StateError> {
        Self::acquire_within(dir, command, Duration::ZERO)
    }

    /// Takes the lock, waiting up to `timeout` for its holder to let go.
    pub fn acquire_within(
        dir: &Path,
        command: &str,
        timeout: Duration,
    ) -> Result<Self, StateError> {
        let started = Instant::now();
        loop {
            match Self::try_acquire(dir, command) {
                Err(StateError::Locked { .. }) if started.elapsed() + RETRY_EVERY <= timeout => {
                    std::thread::sleep(RETRY_EVERY)
                }
                Err(StateError::Locked {
                    location,
                    pid,
                    host,
                    holder,
                    ..
                }) => {
                    return Err(StateError::Locked {
                        location,
                        pid,
                        host,
                        holder,
                        waited: (!timeout.is_zero()).then_some(timeout),
                    })
                }
                other => return other,
            }
        }
    }

    fn try_acquire(dir: &Path, command: &str) -> Result<Self, StateError> {
        let path = dir.join("lock");
        let io = |error| StateError::Io {
            dir: dir.to_path_buf(),
            error,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let mut lines = holder.lines();
                let pid = lines.next().unwrap_or("unknown").to_string();
                let what = lines.next().unwrap_or("agentform").to_string();
                let since = lines
                    .next()
                    .map(|s| format!(", since {s}"))
                    .unwrap_or_default();
                return Err(StateError::Locked {
                    location: format!("`{}`", dir.display()),
                    pid,
                    host: None,
                    holder: format!("`{what}`{since}"),
                    waited: None,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(
            file,
            "{}\nagentform {command}\n{}",
            std::process::id(),
            super::now()
        )
        .map_err(io)?;
        file.flush().map_err(io)?;
        Ok(StateLock { _file: file })
    }
}
