//! Where a state is: a directory (sled, the default) or a PostgreSQL URL,
//! as `--state` and `AGENTFORM_STATE` give it.

use std::path::PathBuf;

use super::postgres::url::{is_postgres, PgUrl};

/// A state's place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A sled database in this directory.
    Dir(PathBuf),
    /// Tables in a PostgreSQL database.
    Postgres(PgUrl),
}

impl Location {
    /// `postgres://…` or `postgresql://…` is PostgreSQL; anything else a
    /// directory.
    pub fn parse(text: &str) -> Result<Location, String> {
        if is_postgres(text) {
            PgUrl::parse(text)
                .map(Location::Postgres)
                .map_err(|e| format!("the state URL is not valid: {e}"))
        } else {
            Ok(Location::Dir(PathBuf::from(text)))
        }
    }

    /// The directory, for a sled state.
    pub fn dir(&self) -> Option<&std::path::Path> {
        match self {
            Location::Dir(dir) => Some(dir),
            Location::Postgres(_) => None,
        }
    }
}

/// The directory as given, or the URL without its password.
impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Dir(dir) => write!(f, "{}", dir.display()),
            Location::Postgres(url) => write!(f, "{url}"),
        }
    }
}

impl std::str::FromStr for Location {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Location::parse(s)
    }
}
