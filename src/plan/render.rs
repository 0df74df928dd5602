//! Terraform-style rendering of a plan for people. Values, reasons and
//! drift can come from a server: their control characters are escaped, so
//! the only escape sequences in the output are the palette's.

use std::fmt::Write;

use serde_json::Value;

use super::{Action, Change, Plan};
use crate::graph::Kind;
use crate::terminal::escape_controls;

/// Colours for the terminal; all empty when colour is off.
#[derive(Debug, Clone, Copy)]
pub struct Palette {
    pub green: &'static str,
    pub yellow: &'static str,
    pub red: &'static str,
    pub bold: &'static str,
    pub dim: &'static str,
    pub reset: &'static str,
}

impl Palette {
    pub const PLAIN: Palette = Palette {
        green: "",
        yellow: "",
        red: "",
        bold: "",
        dim: "",
        reset: "",
    };
    pub const ANSI: Palette = Palette {
        green: "\x1b[32m",
        yellow: "\x1b[33m",
        red: "\x1b[31m",
        bold: "\x1b[1m",
        dim: "\x1b[2m",
        reset: "\x1b[0m",
    };

    fn action(&self, a: Action) -> &'static str {
        match a {
            Action::Create => self.green,
            Action::Update => self.yellow,
            Action::Replace | Action::Archive | Action::Delete => self.red,
            Action::NoOp => "",
        }
    }
}

pub fn render(plan: &Plan, p: Palette) -> String {
    let mut out = String::new();
    if !plan.drift.is_empty() {
        let _ = writeln!(
            out,
            "{}Objects changed outside agentform:{}",
            p.bold, p.reset
        );
        for d in &plan.drift {
            let _ = writeln!(out, "  {}: {}", d.address, escape_controls(&d.detail));
        }
        out.push('\n');
    }
    if !plan.has_changes() {
        let _ = writeln!(
            out,
            "{}No changes.{} The deployed resources match the {}.",
            p.bold,
            p.reset,
            if plan.destroy {
                "state (nothing to destroy)"
            } else {
                "manifest"
            }
        );
        return out;
    }
    let _ = writeln!(out, "agentform will perform these actions:\n");
    for c in plan.pending() {
        render_change(&mut out, c, p);
        out.push('\n');
    }
    out.push_str(&summary_line(plan, p));
    out.push('\n');
    out
}

pub fn summary_line(plan: &Plan, p: Palette) -> String {
    let s = plan.summary;
    let mut line = format!(
        "{}Plan:{} {} to add, {} to change, {} to destroy",
        p.bold, p.reset, s.add, s.change, s.destroy
    );
    if s.archive > 0 {
        let _ = write!(line, ", {} to archive", s.archive);
    }
    line.push('.');
    line
}

fn headline(c: &Change) -> String {
    let what = match c.action {
        Action::Create => "will be created".to_string(),
        Action::Update if c.address.kind == Kind::Agent => match c.version {
            Some(v) => format!("will be updated: new version {}", v + 1),
            None => "will be updated: new version".to_string(),
        },
        Action::Update => "will be updated in place".to_string(),
        Action::Replace => "must be replaced".to_string(),
        Action::Archive => "will be archived (agents cannot be deleted)".to_string(),
        Action::Delete => "will be deleted".to_string(),
        Action::NoOp => "is up to date".to_string(),
    };
    format!("# {} {what}", c.address)
}

fn render_change(out: &mut String, c: &Change, p: Palette) {
    let color = p.action(c.action);
    let _ = writeln!(out, "  {}{}{}", p.bold, headline(c), p.reset);
    for r in &c.reasons {
        let _ = writeln!(
            out,
            "  {}#   {}{}",
            p.dim,
            escape_controls(&r.to_string()),
            p.reset
        );
    }
    let id = c
        .remote_id
        .as_deref()
        .map(|id| format!(" ({})", escape_controls(id)))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "{color}{:>5}{} {}{id}",
        c.action.symbol(),
        p.reset,
        c.address
    );
    if matches!(c.action, Action::Archive | Action::Delete) {
        return;
    }
    for a in &c.attributes {
        let (sym, col) = match (&a.old, &a.new, a.unknown) {
            (None, _, _) => ("+", p.green),
            (Some(_), None, false) => ("-", p.red),
            _ => ("~", p.yellow),
        };
        let value = |v: &Option<Value>| v.as_ref().map(show).unwrap_or_default();
        let new = if a.unknown {
            "(known after apply)".to_string()
        } else {
            value(&a.new)
        };
        let line = match (&a.old, a.unknown || a.new.is_some()) {
            (None, _) => format!("{}: {new}", a.path),
            (Some(_), true) => format!("{}: {} → {new}", a.path, value(&a.old)),
            (Some(_), false) => format!("{}: {}", a.path, value(&a.old)),
        };
        let _ = writeln!(
            out,
            "      {col}{sym}{} {}",
            p.reset,
            escape_controls(&line)
        );
    }
    if c.action == Action::Update && c.address.kind == Kind::Agent {
        if let Some(v) = c.version {
            let _ = writeln!(out, "        version: {v} → {}", v + 1);
        }
    }
}

/// One value on one line; long strings are cut.
fn show(v: &Value) -> String {
    let s = match v {
        Value::String(s) if s == super::SENSITIVE => return s.clone(),
        other => other.to_string(),
    };
    const MAX: usize = 120;
    if s.chars().count() > MAX {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut}…")
    } else {
        s
    }
}
