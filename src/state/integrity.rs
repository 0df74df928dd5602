//! The check a state passes when it is opened: its database against its
//! marker. A database that fell behind its serial, belongs to another
//! lineage or lost the records the marker counts is refused, with what
//! happened and how to recover; a state without a serial (written before
//! there was one) is given one.
//!
//! Deciding only: reading and writing are the store's.

use std::path::Path;

use super::marker::{Meta, MARKER_FILE};

/// What was found on opening.
pub(super) struct Found {
    /// The marker file: absent, or why it cannot be read.
    pub marker: Result<Option<Meta>, String>,
    /// The serial and lineage the database records, if any.
    pub db: Option<Meta>,
    /// Records counted in the database now.
    pub resources: u64,
    pub transcripts: u64,
}

/// What to do with a state.
#[derive(Debug, PartialEq)]
pub(super) enum Verdict {
    /// Open it with `meta`, bringing the database's and the marker's copy
    /// up to date where they differ.
    Use {
        meta: Meta,
        write_db: bool,
        write_marker: bool,
        /// A state without a serial got one.
        migrated: bool,
    },
    Refuse(Refusal),
}

/// Why a state is not opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The database has no serial, but the marker says it had records.
    Lost {
        marker: Meta,
        resources: u64,
        transcripts: u64,
    },
    /// The database's serial is lower than the marker's.
    Behind { marker: Meta, db: Meta },
    /// The database is another state's.
    OtherLineage { marker: Meta, db: Meta },
    /// At the marker's serial, the database holds fewer records than it counted.
    Vanished {
        marker: Meta,
        resources: u64,
        transcripts: u64,
    },
    /// The marker exists but is not readable.
    UnreadableMarker { message: String },
}

pub(super) fn check(found: Found) -> Verdict {
    let counted = |meta: &Meta| Meta {
        resources: found.resources,
        transcripts: found.transcripts,
        ..meta.clone()
    };
    let has_records = found.resources > 0 || found.transcripts > 0;
    let marker = match found.marker {
        Ok(m) => m,
        Err(message) => return Verdict::Refuse(Refusal::UnreadableMarker { message }),
    };
    match (marker, found.db) {
        (None, None) => {
            let fresh = Meta::new();
            Verdict::Use {
                meta: Meta {
                    serial: u64::from(has_records),
                    ..counted(&fresh)
                },
                write_db: true,
                write_marker: true,
                migrated: has_records,
            }
        }
        // The marker was removed (on purpose, or lost): the database says.
        (None, Some(db)) => Verdict::Use {
            write_db: counted(&db) != db,
            meta: counted(&db),
            write_marker: true,
            migrated: false,
        },
        (Some(marker), None) => {
            if marker.serial > 0 || marker.resources > 0 || marker.transcripts > 0 {
                return Verdict::Refuse(Refusal::Lost {
                    marker,
                    resources: found.resources,
                    transcripts: found.transcripts,
                });
            }
            // Created and never written to; records written since by a
            // version without serials count as one write.
            Verdict::Use {
                meta: Meta {
                    serial: u64::from(has_records),
                    ..counted(&marker)
                },
                write_db: true,
                write_marker: has_records,
                migrated: has_records,
            }
        }
        (Some(marker), Some(db)) => {
            if marker.lineage != db.lineage {
                return Verdict::Refuse(Refusal::OtherLineage { marker, db });
            }
            if db.serial < marker.serial {
                return Verdict::Refuse(Refusal::Behind { marker, db });
            }
            if db.serial == marker.serial
                && (found.resources < marker.resources || found.transcripts < marker.transcripts)
            {
                return Verdict::Refuse(Refusal::Vanished {
                    marker,
                    resources: found.resources,
                    transcripts: found.transcripts,
                });
            }
            let meta = counted(&db);
            Verdict::Use {
                write_db: meta != db,
                write_marker: meta != marker,
                meta,
                migrated: false,
            }
        }
    }
}

impl Refusal {
    /// What happened, why agentform stops, and how to recover.
    pub fn explain(&self, dir: &Path) -> String {
        let marker_path = dir.join(MARKER_FILE);
        let marker_file = marker_path.display();
        let db = dir.join(super::DB_DIR);
        let db = db.display();
        let mut instead = "to start over with what the database holds";
        let what = match self {
            Refusal::Lost {
                marker,
                resources,
                transcripts,
            } => format!(
                "the state at `{}` lost its records: the database `{db}` has no serial and holds \
                 {resources} resource record(s) and {transcripts} transcript(s), but \
                 `{marker_file}` says it reached serial {} with {} and {}\n\
                 the database was deleted, truncated or replaced",
                dir.display(),
                marker.serial,
                marker.resources,
                marker.transcripts
            ),
            Refusal::Behind { marker, db: found } => {
                instead = "to use the older database as it is";
                format!(
                "the state at `{}` is behind its marker: the database `{db}` is at serial {} but \
                 `{marker_file}` says serial {}\n\
                 the database was put back from an older copy, or lost its latest writes",
                dir.display(),
                found.serial,
                marker.serial
            )
            }
            Refusal::OtherLineage { marker, db: found } => {
                instead = "to adopt that database as this state";
                format!(
                    "the database `{db}` belongs to another state: its lineage is `{}` but \
                 `{marker_file}` says `{}`\n\
                 the database was replaced by another state's",
                    found.lineage, marker.lineage
                )
            }
            Refusal::Vanished {
                marker,
                resources,
                transcripts,
            } => format!(
                "the state at `{}` lost records: at serial {} the database `{db}` holds \
                 {resources} resource record(s) and {transcripts} transcript(s), but \
                 `{marker_file}` counts {} and {}\n\
                 part of the database was lost or damaged",
                dir.display(),
                marker.serial,
                marker.resources,
                marker.transcripts
            ),
            Refusal::UnreadableMarker { message } => {
                return format!(
                    "the state marker `{marker_file}` cannot be read: {message}\n\
                     hint: if the database `{db}` is intact, remove the marker and agentform \
                     writes a new one from the database"
                )
            }
        };
        format!(
            "{what}; agentform refuses to use it, since `plan` would propose to create \
             everything again\nhint: {}",
            super::error::recover_hint(dir, instead)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(serial: u64, resources: u64, transcripts: u64) -> Meta {
        Meta {
            lineage: "L".into(),
            serial,
            resources,
            transcripts,
        }
    }

    fn found(marker: Option<Meta>, db: Option<Meta>, resources: u64) -> Found {
        Found {
            marker: Ok(marker),
            db,
            resources,
            transcripts: 0,
        }
    }

    fn refusal(v: Verdict) -> Refusal {
        match v {
            Verdict::Refuse(r) => r,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_new_state_gets_a_lineage_at_serial_0() {
        let Verdict::Use {
            meta,
            write_db,
            write_marker,
            migrated,
        } = check(found(None, None, 0))
        else {
            panic!("refused")
        };
        assert_eq!(meta.serial, 0);
        assert!(write_db && write_marker && !migrated);
    }

    #[test]
    fn a_state_without_a_serial_is_migrated() {
        let Verdict::Use { meta, migrated, .. } = check(found(None, None, 3)) else {
            panic!("refused")
        };
        assert_eq!((meta.serial, meta.resources), (1, 3));
        assert!(migrated);
    }

    #[test]
    fn a_database_without_serial_under_a_marker_with_writes_is_lost() {
        let r = refusal(check(found(Some(meta(5, 2, 0)), None, 0)));
        assert!(matches!(r, Refusal::Lost { resources: 0, .. }), "{r:?}");
    }

    #[test]
    fn a_database_behind_its_marker_is_refused() {
        let r = refusal(check(found(Some(meta(5, 2, 0)), Some(meta(4, 2, 0)), 2)));
        assert!(matches!(r, Refusal::Behind { .. }), "{r:?}");
    }

    #[test]
    fn another_lineage_is_refused() {
        let other = Meta {
            lineage: "M".into(),
            ..meta(9, 2, 0)
        };
        let r = refusal(check(found(Some(meta(5, 2, 0)), Some(other), 2)));
        assert!(matches!(r, Refusal::OtherLineage { .. }), "{r:?}");
    }

    #[test]
    fn records_missing_at_the_same_serial_are_refused() {
        let r = refusal(check(found(Some(meta(5, 2, 0)), Some(meta(5, 2, 0)), 1)));
        assert!(matches!(r, Refusal::Vanished { resources: 1, .. }), "{r:?}");
    }

    #[test]
    fn a_database_ahead_of_its_marker_is_used_and_the_marker_caught_up() {
        // A crash between the database's flush and the marker's rename.
        let v = check(found(Some(meta(5, 2, 0)), Some(meta(6, 1, 0)), 1));
        assert_eq!(
            v,
            Verdict::Use {
                meta: meta(6, 1, 0),
                write_db: false,
                write_marker: true,
                migrated: false
            }
        );
    }

    #[test]
    fn a_lost_marker_is_written_again_from_the_database() {
        let v = check(found(None, Some(meta(6, 1, 0)), 1));
        assert!(matches!(
            v,
            Verdict::Use {
                write_marker: true,
                migrated: false,
                ..
            }
        ));
    }

    #[test]
    fn the_explanation_says_what_happened_and_how_to_recover() {
        let dir = tempfile::tempdir().unwrap();
        let text = Refusal::Lost {
            marker: meta(5, 2, 1),
            resources: 0,
            transcripts: 0,
        }
        .explain(dir.path());
        assert!(text.contains("has no serial"), "{text}");
        assert!(text.contains("serial 5 with 2 and 1"), "{text}");
        assert!(text.contains("refuses"), "{text}");
        assert!(text.contains("no backups"), "{text}");
        assert!(text.contains("remove `"), "{text}");
    }
}
