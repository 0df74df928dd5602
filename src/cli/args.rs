//! Arguments every command shares (manifest files, state, variables,
//! verbosity), their parsers, and what they open: the manifest, the state,
//! the providers.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use agentform::graph::Address;
use agentform::manifest::{self, LoadOptions, Manifest};
use agentform::runtime::Providers;
use agentform::state::{Location, OpenOptions, StateStore, DEFAULT_BACKUPS};

use super::output::Printer;

#[derive(Args, Debug)]
pub struct Global {
    /// Manifest file or directory (every `*.yaml` in it); repeatable
    #[arg(short = 'f', long = "file", global = true, value_name = "PATH")]
    pub files: Vec<PathBuf>,
    /// State directory, or PostgreSQL:
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=…&schema=…]`
    /// (the password may also come from `PGPASSWORD` or `~/.pgpass`)
    #[arg(
        long,
        global = true,
        env = "AGENTFORM_STATE",
        hide_env_values = true,
        default_value = "state",
        value_name = "DIR|URL"
    )]
    pub state: StateArg,
    /// Wait this long for another process's lock on the state instead of
    /// failing at once (e.g. `30s`, `5m`)
    #[arg(
        long,
        global = true,
        env = "AGENTFORM_LOCK_TIMEOUT",
        default_value = "0s",
        value_parser = parse_duration_arg,
        value_name = "DURATION"
    )]
    pub lock_timeout: Duration,
    /// Backups of the state kept in `STATE/backups` (written before each
    /// apply or destroy that changes something); 0 writes none
    #[arg(
        long,
        global = true,
        env = "AGENTFORM_STATE_BACKUPS",
        default_value_t = DEFAULT_BACKUPS,
        value_name = "N"
    )]
    pub state_backups: usize,
    /// Set a manifest variable (also `-var NAME=VALUE`); repeatable
    #[arg(long = "var", global = true, value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
    /// More logging (-v info, -vv debug, -vvv trace); `RUST_LOG` overrides
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// No colours (also when `NO_COLOR` is set or output is not a terminal)
    #[arg(long, global = true)]
    pub no_color: bool,
}

impl Global {
    /// The manifest files (default `agentform.yaml`) and variables.
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            files: if self.files.is_empty() {
                vec![PathBuf::from("agentform.yaml")]
            } else {
                self.files.clone()
            },
            vars: self.vars.clone(),
            allow_empty: false,
        }
    }

    /// The manifest; from now on its secrets are masked in all output.
    pub fn load(&self) -> Result<Manifest> {
        self.load_allowing_empty(false)
    }

    /// [`Global::load`], accepting an empty file when `allow_empty`.
    pub fn load_allowing_empty(&self, allow_empty: bool) -> Result<Manifest> {
        let options = LoadOptions {
            allow_empty,
            ..self.load_options()
        };
        let m = manifest::load(&options).map_err(anyhow::Error::new)?;
        super::output::learn(&m.secrets());
        Ok(m)
    }

    /// The state, locked for `command` until dropped.
    pub fn open_state(&self, command: &str) -> Result<StateStore> {
        Ok(StateStore::open_at(
            &self.location()?,
            command,
            &self.open_options(),
        )?)
    }

    /// Where the state is.
    pub fn location(&self) -> Result<Location> {
        self.state.location()
    }

    /// The state's directory, for what only a directory has (backups).
    pub fn state_dir(&self, what: &str) -> Result<PathBuf> {
        match self.location()? {
            Location::Dir(dir) => Ok(dir),
            Location::Postgres(url) => anyhow::bail!(
                "the state at {url} is in PostgreSQL, which keeps no {what} of agentform's own\n\
                 hint: back it up with PostgreSQL's tools (`pg_dump --schema={}`), or copy it \
                 with `agentform state migrate --to DIR`",
                url.schema
            ),
        }
    }

    pub fn open_options(&self) -> OpenOptions {
        OpenOptions {
            backups: self.state_backups,
            lock_timeout: self.lock_timeout,
        }
    }
}

/// `--state` as given: a directory or a URL that may hold a password, so
/// it is parsed (and reported) by agentform, never echoed by the parser,
/// and its `Debug` shows no password.
#[derive(Clone)]
pub struct StateArg(pub String);

impl StateArg {
    pub fn location(&self) -> Result<Location> {
        Location::parse(&self.0).map_err(anyhow::Error::msg)
    }
}

impl std::str::FromStr for StateArg {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(StateArg(s.to_string()))
    }
}

impl std::fmt::Debug for StateArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match Location::parse(&self.0) {
            Ok(location) => write!(f, "{location}"),
            Err(_) => f.write_str("(an invalid state URL)"),
        }
    }
}

/// The providers, with credentials and settings from the process environment.
pub fn providers(state: &StateStore, manifest: Option<&Manifest>) -> Result<Providers> {
    Ok(agentform::ops::providers::providers(
        state,
        manifest,
        |name| std::env::var(name).ok(),
    )?)
}

#[derive(Args, Debug)]
pub struct Targeting {
    /// Limit to this resource (and what it needs); repeatable
    #[arg(long = "target", value_name = "ADDR", value_parser = parse_address)]
    pub targets: Vec<Address>,
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not NAME=VALUE")),
    }
}

pub fn parse_address(s: &str) -> Result<Address, String> {
    s.parse()
}

pub fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    agentform::manifest::parse_duration(s)
        .ok_or_else(|| format!("`{s}` is not a duration; write e.g. `500ms`, `30s`, `10m`, `1h`"))
}

/// Terraform users type `-var k=v`; clap only knows `--var`.
pub fn normalize_args() -> Vec<std::ffi::OsString> {
    std::env::args_os()
        .map(|a| if a == "-var" { "--var".into() } else { a })
        .collect()
}

/// Says so when the manifest runs the local runtime's tools unconfined.
pub fn warn_unconfined(m: &Manifest, printer: &Printer) {
    if let Some(warning) = agentform::ops::providers::unconfined_warning(m) {
        printer.warn(warning);
    }
}
