//! Everything the CLI writes: data on stdout, progress and logs on stderr,
//! colour only on terminals and never with `NO_COLOR`. Text can quote a
//! model, a tool or a server, so its control characters are escaped on the
//! way out; only [`Printer::out_styled`] passes the renderers' own colours.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use agentform::apply::{Outcome, Reporter};
use agentform::manifest::Diagnostics;
use agentform::plan::render::Palette;
use agentform::plan::{Action, Change};
use agentform::terminal::escape_controls;

use super::args::Global;

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
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }

    /// Progress and notes, on stderr; silenced by `-q`.
    pub fn info(&self, text: &str) {
        if !self.quiet {
            let _ = writeln!(std::io::stderr().lock(), "{}", escape_controls(text));
        }
    }

    pub fn prompt(&self, text: &str) {
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
            escape_controls(text)
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
            escape_controls(text)
        );
    }

    pub fn diagnostics(&self, d: &Diagnostics) {
        let _ = write!(std::io::stderr().lock(), "{}", d.render(self.color_err));
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
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && color_allowed(false))
        .with_target(false)
        .try_init();
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
        let text = escape_controls(&text).into_owned();
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
