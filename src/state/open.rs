//! Opening a state: a directory (the lock file, sled, the check of the
//! database against its marker) or a PostgreSQL URL (connect, lock,
//! migrate the tables; the serial lives in the database alone).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::db::{Db, SledDb};
use super::marker::{self, Meta};
use super::{
    decode, encode, integrity, Backend, Durable, Location, Refusal, StateError, StateLock,
    StateStore, DB_DIR, INTENTS, LOCAL_DIR, META, META_KEY, RESOURCES, TRANSCRIPTS,
    TRANSCRIPT_FILES,
};

/// How to open a state.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Backups kept by [`StateStore::backup`]; 0 writes none.
    pub backups: usize,
    /// How long to wait for another process's lock before giving up.
    pub lock_timeout: Duration,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            backups: super::DEFAULT_BACKUPS,
            lock_timeout: Duration::ZERO,
        }
    }
}

impl StateStore {
    /// Opens (creating if needed) the state in `dir`, holding its lock until
    /// dropped; refuses a database that lost what its marker records.
    pub fn open(dir: &Path, command: &str) -> Result<Self, StateError> {
        Self::open_with(dir, command, &OpenOptions::default())
    }

    /// [`open`](Self::open) with options.
    pub fn open_with(dir: &Path, command: &str, options: &OpenOptions) -> Result<Self, StateError> {
        match Self::open_for_restore(dir, command, options)? {
            (store, None) => Ok(store),
            (_, Some(refusal)) => Err(StateError::Refused {
                dir: dir.to_path_buf(),
                refusal: Box::new(refusal),
            }),
        }
    }

    /// Opens the state at `location`: a directory, or PostgreSQL.
    pub fn open_at(
        location: &Location,
        command: &str,
        options: &OpenOptions,
    ) -> Result<Self, StateError> {
        match location {
            Location::Dir(dir) => Self::open_with(dir, command, options),
            Location::Postgres(url) => {
                let local = std::env::current_dir()
                    .map(|cwd| cwd.join(LOCAL_DIR))
                    .unwrap_or_else(|_| PathBuf::from(LOCAL_DIR));
                Self::open_postgres(location, url, &local, command, options)
            }
        }
    }

    /// Opens a PostgreSQL state, keeping what stays on this machine in `local`.
    pub fn open_postgres(
        location: &Location,
        url: &super::postgres::url::PgUrl,
        local: &Path,
        command: &str,
        options: &OpenOptions,
    ) -> Result<Self, StateError> {
        let env = |name: &str| std::env::var(name).ok();
        let pg = super::postgres::PgDb::open(url, command, options.lock_timeout, &env)?;
        let db: Arc<dyn Db> = Arc::new(pg);
        let meta = match db.open_tree(META)?.get(META_KEY)? {
            Some(bytes) => decode("state meta", &bytes)?,
            None => {
                let meta = Meta::new();
                let bytes = encode("state meta", &meta)?;
                db.group(&mut |g| g.put(META, META_KEY, &bytes))?;
                meta
            }
        };
        Self::assemble(
            location.clone(),
            local.to_path_buf(),
            db,
            meta,
            0,
            Backend::Postgres,
        )
    }

    fn assemble(
        location: Location,
        dir: PathBuf,
        db: Arc<dyn Db>,
        meta: Meta,
        backups: usize,
        backend: Backend,
    ) -> Result<Self, StateError> {
        Ok(StateStore {
            location,
            dir,
            resources: db.open_tree(RESOURCES)?,
            intents: db.open_tree(INTENTS)?,
            transcripts: db.open_tree(TRANSCRIPTS)?,
            transcript_files: db.open_tree(TRANSCRIPT_FILES)?,
            db,
            durable: Mutex::new(Durable {
                flushed: meta.clone(),
                marked: meta.serial,
                marked_at: None,
            }),
            meta: Mutex::new(meta),
            backups,
            backend,
        })
    }

    /// Opens the state even when the check refuses it, to restore a backup
    /// into it; with the refusal. Nothing is written to a refused state.
    pub fn open_for_restore(
        dir: &Path,
        command: &str,
        options: &OpenOptions,
    ) -> Result<(Self, Option<Refusal>), StateError> {
        std::fs::create_dir_all(dir).map_err(|error| StateError::Io {
            dir: dir.to_path_buf(),
            error,
        })?;
        let lock = StateLock::acquire_within(dir, command, options.lock_timeout)?;
        let damaged = |e: sled::Error| StateError::Open {
            dir: dir.to_path_buf(),
            path: dir.join(DB_DIR),
            reason: e.to_string(),
        };
        let sled = sled::Config::new()
            .path(dir.join(DB_DIR))
            .flush_every_ms(None)
            // sled's default cache is 1 GiB; the state and the local runtime
            // need far less, and a CI machine has other work.
            .cache_capacity(64 * 1024 * 1024)
            .open()
            .map_err(damaged)?;
        let tree = |name: &str| sled.open_tree(name).map_err(damaged);
        let resources = tree(RESOURCES)?;
        let transcripts = tree(TRANSCRIPTS)?;
        let meta_tree = tree(META)?;
        let on_record: Option<Meta> = match meta_tree.get(META_KEY).map_err(damaged)? {
            Some(bytes) => Some(decode("state meta", &bytes)?),
            None => None,
        };
        let found = integrity::Found {
            marker: marker::read(dir),
            db: on_record.clone(),
            resources: resources.len() as u64,
            transcripts: transcripts.len() as u64,
        };
        let marker_lineage = found.marker.clone().ok().flatten().map(|m| m.lineage);
        let (meta, refusal) = match integrity::check(found) {
            integrity::Verdict::Refuse(refusal) => {
                // Kept in memory only, for a restore to count above.
                let meta = on_record.unwrap_or_else(|| Meta {
                    lineage: marker_lineage.unwrap_or_default(),
                    ..Meta::new()
                });
                (meta, Some(refusal))
            }
            integrity::Verdict::Use {
                meta,
                write_db,
                write_marker,
                migrated,
            } => {
                if write_db {
                    meta_tree.insert(META_KEY, encode("state meta", &meta)?)?;
                    super::flush(&sled)?;
                }
                if write_marker {
                    marker::write(dir, &meta)?;
                }
                if migrated {
                    tracing::info!(
                        "the state at `{}` had no serial: it now has lineage {} at serial {}",
                        dir.display(),
                        meta.lineage,
                        meta.serial
                    );
                }
                (meta, None)
            }
        };
        let store = Self::assemble(
            Location::Dir(dir.to_path_buf()),
            dir.to_path_buf(),
            Arc::new(SledDb::new(sled)),
            meta,
            options.backups,
            Backend::Sled { _lock: lock },
        )?;
        Ok((store, refusal))
    }

    /// Moves the database of the state in `dir` aside (to `db.damaged-TIME`),
    /// so that a restore can start from an empty one; where it went.
    pub fn set_aside_database(dir: &Path, command: &str) -> Result<PathBuf, StateError> {
        let _lock = StateLock::acquire(dir, command)?;
        let stamp = super::now().replace([':', '-'], "");
        let to = dir.join(format!("{DB_DIR}.damaged-{stamp}"));
        std::fs::rename(dir.join(DB_DIR), &to).map_err(|error| StateError::Write {
            path: to.clone(),
            error,
        })?;
        Ok(to)
    }
}
