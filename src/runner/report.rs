//! JUnit XML: one testcase per session, one failure per unmet expectation.

use std::fmt::Write;

use super::SessionOutcome;

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' && c != '\r' => {}
            c => out.push(c),
        }
    }
    out
}

pub fn junit(run_id: &str, outcomes: &[SessionOutcome], seconds: f64) -> String {
    let tests = outcomes.len();
    let failures = outcomes.iter().filter(|o| !o.passed()).count();
    let mut x = String::new();
    let _ = writeln!(x, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        x,
        r#"<testsuites name="agentform" tests="{tests}" failures="{failures}" time="{seconds:.3}">"#
    );
    let _ = writeln!(
        x,
        r#"  <testsuite name="agentform run {}" tests="{tests}" failures="{failures}" errors="0" time="{seconds:.3}">"#,
        esc(run_id)
    );
    for o in outcomes {
        let _ = write!(
            x,
            r#"    <testcase name="{}" classname="agentform.{}" time="{:.3}""#,
            esc(&o.address),
            esc(run_id),
            o.footer.duration_ms as f64 / 1000.0
        );
        let failures = o.failure_messages();
        if failures.is_empty() {
            let _ = writeln!(x, "/>");
            continue;
        }
        let _ = writeln!(x, ">");
        for (message, detail) in failures {
            let _ = writeln!(
                x,
                r#"      <failure message="{}" type="expectation">{}</failure>"#,
                esc(&message),
                esc(&detail)
            );
        }
        if let Some(path) = &o.transcript {
            let _ = writeln!(
                x,
                "      <system-out>transcript: {}</system-out>",
                esc(&path.display().to_string())
            );
        }
        let _ = writeln!(x, "    </testcase>");
    }
    let _ = writeln!(x, "  </testsuite>");
    let _ = writeln!(x, "</testsuites>");
    x
}
