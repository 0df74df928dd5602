//! Everything the CLI writes: data on stdout, progress and logs on stderr,
//! colour only on terminals and never with `NO_COLOR`. Text can quote a
//! model, a tool or a server, so its control characters are escaped on the
//! way out; only [`Printer::out_styled`] passes the renderers' own colours.
//! Every byte of it, logs included, passes the one redactor of the process:
//! once a manifest is loaded ([`learn`]), its secrets never reach the terminal.

use std::io::{IsTerminal, Write};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use agentform::apply::{Outcome, Reporter};
use agentform::manifest::Diagnostics;
use agentform::plan::render::Palette;
use agentform::plan::{Action, Change};
use agentform::redact::Secrets;
use agentform::terminal::escape_controls;

use super::args::Global;

/// The secrets of every manifest this process loaded.
static SECRETS: LazyLock<Secrets> = LazyLock::new(Secrets::default);

/// From now on, `secrets` (and what they learn later) are masked in
/// everything the CLI writes.
pub fn learn(secrets: &Secrets) {
    SECRETS.link(secrets);
}

/// `text` with every known secret masked.
pub fn redact(text: &str) -> String {
    SECRETS.redactor().text(text.to_owned())
}

pub struct Printer {
    color_out: bool,
    color_err: bool,
    quiet: bool,
    progress: bool,
}

fn color_allowed(no_color_flag: bool) -> bool {
    !no_color_flag && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

impl Printer {
    pub fn new(g: &Global) -> Self {
        let allowed = color_allowed(g.no_color);
        Printer {
            color_out: allowed && std::io::stdout().is_terminal(),
            color_err: allowed && std::io::stderr().is_terminal(),
            quiet: g.quiet,
            progress: std::io::stderr().is_terminal() && !g.quiet,
        }
    }

    pub fn palette(&self) -> Palette {
        if self.color_out {
            Palette::ANSI
        } else {
            Palette::PLAIN
        }
    }

    /// Data and results, on stdout.
    pub fn out(&self, text: &str) {
        self.out_styled(&escape_controls(text));
    }

    /// Text whose escape sequences are the palette's own: a renderer that
    /// escaped everything it quotes (the plan).
    pub fn out_styled(&self, text: &str) {
        let text = redact(text);
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }

    /// Progress and notes, on stderr; silenced by `-q`.
    pub fn info(&self, text: &str) {
        if !self.quiet {
            let _ = writeln!(
                std::io::stderr().lock(),
                "{}",
                escape_controls(&redact(text))
            );
        }
    }

    pub fn prompt(&self, text: &str) {
        let text = redact(text);
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "{text}");
        let _ = err.flush();
    }

    /// A warning on stderr; not silenced by `-q`.
    pub fn warn(&self, text: &str) {
        let label = if self.color_err {
            "\x1b[1;33mwarning\x1b[0m"
        } else {
            "warning"
        };
        let _ = writeln!(
            std::io::stderr().lock(),
            "{label}: {}",
            escape_controls(&redact(text))
        );
    }

    pub fn error(&self, text: &str) {
        let label = if self.color_err {
            "\x1b[1;31merror\x1b[0m"
        } else {
            "error"
        };
        let _ = writeln!(
            std::io::stderr().lock(),
            "{label}: {}",
            escape_controls(&redact(text))
        );
    }

    pub fn diagnostics(&self, d: &Diagnostics) {
        let text = redact(&d.render(self.color_err));
        let _ = write!(std::io::stderr().lock(), "{text}");
    }
}

pub fn init_tracing(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("agentform={level},warn")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| RedactedStderr(Vec::new()))
        .with_ansi(std::io::stderr().is_terminal() && color_allowed(false))
        .with_target(false)
        .try_init();
}

/// One log record, written to stderr with its secrets masked when the
/// subscriber is done with it (it formats a record, then drops the writer).
struct RedactedStderr(Vec<u8>);

impl Write for RedactedStderr {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactedStderr {
    fn drop(&mut self) {
        let text = redact(&String::from_utf8_lossy(&self.0));
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}

/// Shows apply/destroy progress: a bar on terminals, one line per event otherwise.
pub struct ProgressReporter {
    bar: Option<ProgressBar>,
    quiet: bool,
    lock: Mutex<()>,
}

impl ProgressReporter {
    pub fn new(printer: &Printer, total: usize) -> Self {
        let bar = printer.progress.then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {wide_msg}",
            ) {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        ProgressReporter {
            bar,
            quiet: printer.quiet,
            lock: Mutex::new(()),
        }
    }

    fn line(&self, text: String) {
        let text = escape_controls(&redact(&text)).into_owned();
        match &self.bar {
            Some(bar) => bar.println(text),
            None if !self.quiet => {
                let _guard = self.lock.lock();
                let _ = writeln!(std::io::stderr().lock(), "{text}");
            }
            None => {}
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn verb(a: Action) -> &'static str {
    match a {
        Action::Create => "creating",
        Action::Update => "updating",
        Action::Replace => "replacing",
        Action::Archive => "archiving",
        Action::Delete => "deleting",
        Action::NoOp => "checking",
    }
}

impl Reporter for ProgressReporter {
    fn started(&self, change: &Change) {
        match &self.bar {
            Some(bar) => bar.set_message(format!("{} {}", verb(change.action), change.address)),
            None => self.line(format!("{}: {}…", change.address, verb(change.action))),
        }
    }

    fn finished(&self, change: &Change, outcome: &Outcome, elapsed: Duration) {
        let text = match outcome {
            Outcome::Done(what) => {
                format!("{}: {what} [{:.1}s]", change.address, elapsed.as_secs_f64())
            }
            Outcome::Failed(e) => format!("{}: failed: {e}", change.address),
            Outcome::Skipped { because } => {
                format!("{}: skipped because {because} failed", change.address)
            }
        };
        self.line(text);
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }
}

/// Shows run progress: sessions done and failed.
pub struct RunProgress {
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl RunProgress {
    pub fn new(printer: &Printer, total: usize) -> Self {
        let bar = printer.progress.then(|| {
            let bar = ProgressBar::with_draw_target(
                if total > 0 { Some(total as u64) } else { None },
                ProgressDrawTarget::stderr(),
            );
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {pos} sessions done {wide_msg}",
            ) {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        RunProgress {
            bar,
            quiet: printer.quiet,
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl agentform::runner::RunReporter for RunProgress {
    fn finished(&self, outcome: &agentform::runner::SessionOutcome) {
        let line = format!(
            "{}: {}",
            outcome.address,
            if outcome.passed() { "passed" } else { "failed" }
        );
        match &self.bar {
            Some(bar) => {
                bar.inc(1);
                if !outcome.passed() {
                    bar.set_message(format!("(last failure: {})", outcome.address));
                }
            }
            None if !self.quiet => {
                let _ = writeln!(std::io::stderr().lock(), "{line}");
            }
            None => {}
        }
    }
}
