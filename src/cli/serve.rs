//! `agentform serve`: the local runtime over HTTP until SIGINT or SIGTERM.
//! The signal handling lives here; the serving is `ops::serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;

use agentform::ops::serve::ServeOptions;
use agentform::serve::{FailStatus, MAX_CONNECTIONS};

use super::args::{parse_duration_arg, Global};
use super::output::Printer;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (IP:PORT); port 0 picks a free one
    #[arg(long, default_value = "127.0.0.1:8787", value_name = "ADDR", value_parser = parse_listen)]
    listen: SocketAddr,
    /// Where the served runtime keeps its database and workspaces
    #[arg(long, default_value = "serve-data", value_name = "DIR")]
    data: PathBuf,
    /// Require this key, as `x-api-key` or `Authorization: Bearer`
    #[arg(
        long,
        env = "AGENTFORM_SERVE_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    api_key: Option<String>,
    /// Allow a non-loopback --listen address (an API key is required then)
    #[arg(long)]
    allow_remote: bool,
    /// Run the tools unconfined, with this process's rights: only where the machine itself is the boundary (the remote sandbox of one session, as `provider: e2b` starts it)
    #[arg(long)]
    no_confinement: bool,
    /// Let web pages from ORIGIN (exactly, e.g. `http://localhost:3000`) call the server, with CORS; repeatable. Requests from any other origin are refused
    #[arg(long = "allow-origin", value_name = "ORIGIN", value_parser = agentform::serve::parse_origin)]
    allow_origins: Vec<String>,
    /// Time a client has to send a request's head (and then its body) before it is dropped
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_timeout)]
    header_timeout: Duration,
    /// A connection with no request for this long is closed (event streams are not idle)
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_timeout)]
    idle_timeout: Duration,
    /// Connections open at once; more wait to be accepted
    #[arg(long, value_name = "N", default_value_t = MAX_CONNECTIONS, value_parser = parse_max_connections)]
    max_connections: usize,
    /// Fault injection: each runtime call answers this many milliseconds late
    #[arg(long, default_value_t = 0, value_name = "MS")]
    latency_ms: u64,
    /// Fault injection: this fraction of requests (0 to 1) fails with --fail-status
    #[arg(long, default_value_t = 0.0, value_name = "F", value_parser = parse_fraction)]
    fail_rate: f64,
    /// Statuses of injected failures, picked at random: 429 (with retry-after), 500, 529
    #[arg(long, default_value = "529", value_name = "STATUS,...", value_delimiter = ',', value_parser = parse_fail_status)]
    fail_status: Vec<u16>,
    /// Fault injection: this fraction of the injected 500s and 529s fail after the request took effect
    #[arg(long, default_value_t = 0.0, value_name = "F", value_parser = parse_fraction)]
    fail_after: f64,
    /// Fault injection: event streams close after N events
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    drop_stream_after: Option<u64>,
    /// Interval of the event streams' `ping` events, in milliseconds
    #[arg(long, hide = true, default_value_t = 15_000, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    heartbeat_ms: u64,
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    match s.rsplit_once(':') {
        Some(("localhost", port)) => port
            .parse::<u16>()
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
            .map_err(|_| format!("`{port}` is not a port")),
        _ => Err(format!(
            "`{s}` is not an address; write IP:PORT, e.g. `127.0.0.1:8787` or `[::1]:8787`"
        )),
    }
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    match parse_duration_arg(s)? {
        d if d.is_zero() => Err(format!("`{s}`: a timeout must be longer than 0")),
        d => Ok(d),
    }
}

/// Past this the operating system's descriptor limit is the cap anyway.
const MOST_CONNECTIONS: usize = 1_000_000;

fn parse_max_connections(s: &str) -> Result<usize, String> {
    s.parse::<usize>()
        .ok()
        .filter(|n| (1..=MOST_CONNECTIONS).contains(n))
        .ok_or_else(|| {
            format!("`{s}` is not a number of connections between 1 and {MOST_CONNECTIONS}")
        })
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|f| (0.0..=1.0).contains(f))
        .ok_or_else(|| format!("`{s}` is not a fraction between 0 and 1"))
}

fn parse_fail_status(s: &str) -> Result<u16, String> {
    s.parse::<u16>()
        .ok()
        .filter(|n| FailStatus::from_status(*n).is_some())
        .ok_or_else(|| format!("`{s}`: expected 429, 500 or 529"))
}

impl ServeArgs {
    fn options(self) -> ServeOptions {
        ServeOptions {
            listen: self.listen,
            data: self.data,
            allow_remote: self.allow_remote,
            unconfined: self.no_confinement,
            latency: Duration::from_millis(self.latency_ms),
            drop_stream_after: self
                .drop_stream_after
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            server: agentform::serve::Options {
                api_key: self.api_key,
                fail_rate: self.fail_rate,
                fail_statuses: self
                    .fail_status
                    .iter()
                    .filter_map(|s| FailStatus::from_status(*s))
                    .collect(),
                fail_after: self.fail_after,
                heartbeat: Duration::from_millis(self.heartbeat_ms),
                allowed_origins: self.allow_origins,
                header_timeout: self.header_timeout,
                idle_timeout: self.idle_timeout,
                max_connections: self.max_connections,
                ..Default::default()
            },
        }
    }
}

pub async fn exec(g: &Global, args: ServeArgs, printer: &Printer) -> Result<ExitCode> {
    let options = args.options();
    options.check()?;
    let manifest = if g.files.is_empty() {
        None
    } else {
        Some(g.load()?)
    };
    let prepared = agentform::ops::serve::prepare(options, manifest.as_ref())?;
    let shutdown = shutdown_signal()?;
    let bound = prepared.bind().await?;
    printer.out(&format!("listening on http://{}", bound.address()));
    bound.serve(shutdown).await?;
    printer.info("stopped; the data is flushed");
    Ok(ExitCode::SUCCESS)
}

/// Completes on SIGINT or SIGTERM; the handlers are installed at once, so a
/// signal that arrives before the future is polled still counts.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt =
            signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
        let mut terminate =
            signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn the_defaults_are_the_servers() {
        let args = Cli::parse_from(["serve"]).serve;
        assert_eq!(args.header_timeout, agentform::serve::HEADER_TIMEOUT);
        assert_eq!(args.idle_timeout, agentform::serve::IDLE_TIMEOUT);
        assert_eq!(args.max_connections, MAX_CONNECTIONS);
        assert!(args.allow_origins.is_empty());
    }

    #[test]
    fn limits_and_origins_are_checked() {
        let args = Cli::parse_from([
            "serve",
            "--header-timeout",
            "250ms",
            "--idle-timeout",
            "2s",
            "--max-connections",
            "8",
            "--allow-origin",
            "http://localhost:3000",
            "--allow-origin",
            "https://app.example",
        ])
        .serve;
        assert_eq!(args.header_timeout, Duration::from_millis(250));
        assert_eq!(args.idle_timeout, Duration::from_secs(2));
        assert_eq!(args.max_connections, 8);
        assert_eq!(
            args.allow_origins,
            ["http://localhost:3000", "https://app.example"]
        );
        for bad in [
            &["--header-timeout", "0s"][..],
            &["--idle-timeout", "soon"],
            &["--max-connections", "0"],
            &["--allow-origin", "http://localhost:3000/"],
        ] {
            let argv = std::iter::once("serve").chain(bad.iter().copied());
            assert!(Cli::try_parse_from(argv).is_err(), "{bad:?}");
        }
    }
}
