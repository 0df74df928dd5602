//! Providers: each resource's provider must be one this build has, and the
//! `providers.anthropic`, `providers.e2b` and `providers.modal` settings
//! must be usable (base URLs, variable names rather than credentials,
//! durations, non-zero rate limits; plain HTTP only to this machine for E2B
//! and Modal).

use super::scripts::bad_duration;
use crate::manifest::declare::Declared;
use crate::manifest::diagnostic::{Diagnostic, Span};
use crate::manifest::parse_duration;
use crate::manifest::spec::{AnthropicProviderSpec, E2bProviderSpec, LimitSpec, ModalProviderSpec};
use crate::manifest::PROVIDERS;

pub(crate) fn unknown_provider(p: &str, span: Option<Span>) -> Diagnostic {
    Diagnostic::new(format!("unknown provider `{p}`"), span).help(format!(
        "this build of agentform provides: {}",
        PROVIDERS.join(", ")
    ))
}

/// A resource's own provider, at its `provider` key (or its name).
pub(super) fn check_resource(d: &Declared, problems: &mut Vec<Diagnostic>) {
    let provider = &d.resource.provider;
    if !PROVIDERS.contains(&provider.as_str()) {
        let span = d.spec_provider_span.or(Some(d.resource.span));
        problems.push(unknown_provider(provider, span));
    }
}

/// Problems of a `providers.anthropic` block; `at` finds a field.
pub(crate) fn validate_anthropic(
    spec: &AnthropicProviderSpec,
    at: &dyn Fn(&[&str]) -> Option<Span>,
) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    if let Some(url) = &spec.base_url {
        if let Err(why) = crate::http::check_base_url(url) {
            problems.push(
                Diagnostic::new(format!("`{url}` is not a usable base URL: {why}"), at(&["base_url"]))
                    .help("write scheme://host[:port][/prefix], e.g. `https://api.anthropic.com` or `http://127.0.0.1:8787`"),
            );
        }
    }
    check_variable_names(spec, at, &mut problems);
    check_durations(spec, at, &mut problems);
    check_rate_limits(spec, at, &mut problems);
    problems
}

fn check_variable_names(
    spec: &AnthropicProviderSpec,
    at: &dyn Fn(&[&str]) -> Option<Span>,
    problems: &mut Vec<Diagnostic>,
) {
    for (field, value) in [
        ("api_key_env", &spec.api_key_env),
        ("auth_token_env", &spec.auth_token_env),
    ] {
        check_variable_name(field, value, "ANTHROPIC_API_KEY", at, problems);
    }
}

fn check_variable_name(
    field: &str,
    value: &Option<String>,
    example: &str,
    at: &dyn Fn(&[&str]) -> Option<Span>,
    problems: &mut Vec<Diagnostic>,
) {
    let Some(name) = value else { return };
    let ok = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !ok {
        problems.push(
            Diagnostic::new(
                format!("`{name}` is not an environment variable name"),
                at(&[field]),
            )
            .help(format!("name the variable that holds the credential, e.g. `{example}`; never write the credential itself here")),
        );
    }
}

fn check_durations(
    spec: &AnthropicProviderSpec,
    at: &dyn Fn(&[&str]) -> Option<Span>,
    problems: &mut Vec<Diagnostic>,
) {
    for (field, value) in [
        ("retry_backoff", &spec.retry_backoff),
        ("timeout", &spec.timeout),
    ] {
        let Some(v) = value else { continue };
        match parse_duration(v) {
            None => problems.push(bad_duration(
                &format!("providers.anthropic.{field}"),
                v,
                at(&[field]),
            )),
            Some(d) if field == "timeout" && d.is_zero() => problems.push(
                Diagnostic::new("the timeout must be longer than zero", at(&[field]))
                    .help("e.g. `2m`"),
            ),
            Some(_) => {}
        }
    }
}

fn check_rate_limits(
    spec: &AnthropicProviderSpec,
    at: &dyn Fn(&[&str]) -> Option<Span>,
    problems: &mut Vec<Diagnostic>,
) {
    let limits = &spec.rate_limits;
    for (field, value) in [
        ("environments_per_minute", limits.environments_per_minute),
        ("environments_concurrency", limits.environments_concurrency),
        ("creates_per_minute", limits.creates_per_minute),
        ("other_per_minute", limits.other_per_minute),
    ] {
        if value == Some(LimitSpec::Count(0)) {
            problems.push(
                Diagnostic::new(
                    format!("`rate_limits.{field}` is 0, which would stop every request"),
                    at(&["rate_limits", field]),
                )
                .help("write a positive number, or `unlimited` to switch this limit off"),
            );
        }
    }
}

/// Problems of a `providers.e2b` block; `at` finds a field.
pub(crate) fn validate_e2b(
    spec: &E2bProviderSpec,
    at: &dyn Fn(&[&str]) -> Option<Span>,
) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    check_variable_name(
        "api_key_env",
        &spec.api_key_env,
        "E2B_API_KEY",
        at,
        &mut problems,
    );
    for (field, value) in [
        ("api_url", &spec.api_url),
        ("sandbox_url", &spec.sandbox_url),
    ] {
        let Some(url) = value else { continue };
        if let Err(why) = crate::sandbox::e2b::check_url(url) {
            problems.push(
                Diagnostic::new(format!("`{url}` is not a usable E2B URL: {why}"), at(&[field]))
                    .help("write https://host[:port][/prefix]; plain http only to this machine, e.g. `http://127.0.0.1:3000`"),
            );
        }
    }
    if let Some(domain) = &spec.domain {
        if !is_domain(domain) {
            problems.push(
                Diagnostic::new(format!("`{domain}` is not a domain name"), at(&["domain"]))
                    .help("write the domain alone, e.g. `e2b.app`: no scheme, port or path"),
            );
        }
    }
    if spec
        .template
        .as_deref()
        .is_some_and(|t| t.trim().is_empty())
    {
        problems.push(
            Diagnostic::new("the template is empty", at(&["template"]))
                .help("name an E2B template, e.g. `base` (the default)"),
        );
    }
    if let Some(v) = &spec.timeout {
        match parse_duration(v) {
            None => problems.push(
                Diagnostic::new(format!("`{v}` is not a duration"), at(&["timeout"]))
                    .help("write a number and a unit: `30s`, `10m` or `1h`"),
            ),
            Some(d) if d.as_secs() < 1 || d.as_secs() > E2B_MAX_TIMEOUT_SECS => problems.push(
                Diagnostic::new(
                    format!("the sandbox timeout `{v}` is not between 1s and 24h"),
                    at(&["timeout"]),
                )
                .help("E2B keeps a sandbox alive at most 24 h (Pro) or 1 h (Hobby); e.g. `1h`"),
            ),
            Some(_) => {}
        }
    }
    problems
}

/// The longest sandbox lifetime E2B grants (Pro plans).
const E2B_MAX_TIMEOUT_SECS: u64 = 24 * 3600;

/// Problems of a `providers.modal` block; `at` finds a field.
pub(crate) fn validate_modal(
    spec: &ModalProviderSpec,
    at: &dyn Fn(&[&str]) -> Option<Span>,
) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    check_variable_name(
        "token_id_env",
        &spec.token_id_env,
        "MODAL_TOKEN_ID",
        at,
        &mut problems,
    );
    check_variable_name(
        "token_secret_env",
        &spec.token_secret_env,
        "MODAL_TOKEN_SECRET",
        at,
        &mut problems,
    );
    if let Some(url) = &spec.server_url {
        if let Err(why) = crate::sandbox::modal::check_url(url) {
            problems.push(
                Diagnostic::new(format!("`{url}` is not a usable Modal server URL: {why}"), at(&["server_url"]))
                    .help("write https://host[:port]; plain http only to this machine, e.g. `http://127.0.0.1:50051`"),
            );
        }
    }
    if let Some(app) = &spec.app {
        let ok = !app.is_empty()
            && app.len() <= 64
            && app
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            problems.push(
                Diagnostic::new(format!("`{app}` is not a Modal app name"), at(&["app"]))
                    .help("use at most 64 letters, digits, `-`, `_` and `.`, e.g. `agentform` (the default)"),
            );
        }
    }
    if let Some(v) = &spec.timeout {
        match parse_duration(v) {
            None => problems.push(
                Diagnostic::new(format!("`{v}` is not a duration"), at(&["timeout"]))
                    .help("write a number and a unit: `30s`, `10m` or `1h`"),
            ),
            Some(d) if d.as_secs() < 1 || d > crate::sandbox::modal::MAX_TIMEOUT => problems.push(
                Diagnostic::new(
                    format!("the sandbox timeout `{v}` is not between 1s and 24h"),
                    at(&["timeout"]),
                )
                .help("Modal runs a sandbox at most 24 h, fixed when it is made; e.g. `1h`"),
            ),
            Some(_) => {}
        }
    }
    problems
}

/// Labels of letters, digits and hyphens, separated by dots.
fn is_domain(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use crate::manifest::test_support::{at, help, load, refusal, refusals};

    fn anthropic(settings: &str) -> String {
        format!("version: 1\nproviders:\n  anthropic:\n{settings}")
    }

    #[test]
    fn usable_settings_load() {
        let text = anthropic(
            "    base_url: http://127.0.0.1:8787\n    api_key_env: MY_KEY\n    timeout: 30s\n\
             \x20   rate_limits: { creates_per_minute: unlimited, other_per_minute: 10 }\n",
        );
        let m = load(&[("a.yaml", &text)]).unwrap();
        let a = m.providers.anthropic.unwrap();
        assert_eq!(a.api_key_env.as_deref(), Some("MY_KEY"));
    }

    #[test]
    fn a_credential_written_where_a_variable_name_belongs_is_refused() {
        let d = refusal(&anthropic("    api_key_env: sk-ant-123\n"));
        assert_eq!(
            d.message,
            "`sk-ant-123` is not an environment variable name"
        );
        assert_eq!(at(&d), (4, 18));
        assert!(help(&d).contains("never write the credential itself here"));
    }

    #[test]
    fn durations_base_urls_and_zero_limits_are_refused() {
        let d = refusals(&[(
            "a.yaml",
            &anthropic(
                "    base_url: api.anthropic.com\n    retry_backoff: soon\n    timeout: 0s\n\
                 \x20   rate_limits: { environments_per_minute: 0 }\n",
            ),
        )]);
        let messages: Vec<&str> = d.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(messages.len(), 4, "{messages:?}");
        assert!(messages[0].starts_with("`api.anthropic.com` is not a usable base URL: "));
        assert_eq!(
            messages[1],
            "`providers.anthropic.retry_backoff`: `soon` is not a duration"
        );
        assert_eq!(messages[2], "the timeout must be longer than zero");
        assert_eq!(
            messages[3],
            "`rate_limits.environments_per_minute` is 0, which would stop every request"
        );
        assert_eq!(at(&d[3]), (7, 45));
    }

    fn e2b(settings: &str) -> String {
        format!("version: 1\nproviders:\n  local: {{ sandbox: e2b }}\n  e2b:\n{settings}")
    }

    #[test]
    fn usable_e2b_settings_load() {
        let text = e2b(
            "    api_key_env: MY_E2B_KEY\n    domain: e2b.example.com\n    api_url: http://127.0.0.1:3000\n\
             \x20   sandbox_url: https://sandbox.example.com\n    template: my-template\n    timeout: 30m\n",
        );
        let m = load(&[("a.yaml", &text)]).unwrap();
        let e = m.providers.e2b.unwrap();
        assert_eq!(e.api_key_env.as_deref(), Some("MY_E2B_KEY"));
        assert_eq!(e.timeout.as_deref(), Some("30m"));
        assert_eq!(
            m.providers.local.unwrap().sandbox,
            crate::manifest::spec::SandboxKind::E2b
        );
    }

    #[test]
    fn bad_e2b_settings_are_refused_where_they_are() {
        let d = refusals(&[(
            "a.yaml",
            &e2b(
                "    api_key_env: e2b-0123-secret\n    domain: https://e2b.app\n    api_url: http://api.e2b.example\n\
                 \x20   sandbox_url: ftp://x\n    template: ''\n    timeout: 2d\n",
            ),
        )]);
        let messages: Vec<&str> = d.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(messages.len(), 6, "{messages:?}");
        assert_eq!(
            messages[0],
            "`e2b-0123-secret` is not an environment variable name"
        );
        assert_eq!(at(&d[0]), (5, 18));
        assert!(help(&d[0]).contains("`E2B_API_KEY`"));
        assert_eq!(
            messages[1],
            "`http://api.e2b.example` is not a usable E2B URL: plain `http` is allowed only to this machine (a loopback address)"
        );
        assert_eq!(at(&d[1]), (7, 14));
        assert!(messages[2].starts_with("`ftp://x` is not a usable E2B URL: "));
        assert_eq!(messages[3], "`https://e2b.app` is not a domain name");
        assert_eq!(messages[4], "the template is empty");
        assert_eq!(messages[5], "`2d` is not a duration");
        assert_eq!(at(&d[5]), (10, 14));
    }

    #[test]
    fn an_e2b_timeout_past_a_day_is_refused() {
        let d = refusal(&e2b("    timeout: 25h\n"));
        assert_eq!(
            d.message,
            "the sandbox timeout `25h` is not between 1s and 24h"
        );
        assert_eq!(at(&d), (5, 14));
    }

    fn modal(settings: &str) -> String {
        format!("version: 1\nproviders:\n  local: {{ sandbox: modal }}\n  modal:\n{settings}")
    }

    #[test]
    fn usable_modal_settings_load() {
        let text = modal(
            "    token_id_env: MY_ID\n    token_secret_env: MY_SECRET\n    server_url: http://127.0.0.1:50051\n\
             \x20   app: my-app.v2\n    timeout: 24h\n",
        );
        let m = load(&[("a.yaml", &text)]).unwrap();
        let spec = m.providers.modal.unwrap();
        assert_eq!(spec.token_secret_env.as_deref(), Some("MY_SECRET"));
        assert_eq!(spec.timeout.as_deref(), Some("24h"));
        assert_eq!(
            m.providers.local.unwrap().sandbox,
            crate::manifest::spec::SandboxKind::Modal
        );
    }

    #[test]
    fn bad_modal_settings_are_refused_where_they_are() {
        let d = refusals(&[(
            "a.yaml",
            &modal(
                "    token_id_env: ak-0123\n    token_secret_env: as-4567\n    server_url: http://api.modal.com\n\
                 \x20   app: 'my app'\n    timeout: 25h\n",
            ),
        )]);
        let messages: Vec<&str> = d.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(messages.len(), 5, "{messages:?}");
        assert_eq!(messages[0], "`ak-0123` is not an environment variable name");
        assert_eq!(at(&d[0]), (5, 19));
        assert!(help(&d[0]).contains("`MODAL_TOKEN_ID`"));
        assert_eq!(messages[1], "`as-4567` is not an environment variable name");
        assert!(help(&d[1]).contains("`MODAL_TOKEN_SECRET`"));
        assert_eq!(
            messages[2],
            "`http://api.modal.com` is not a usable Modal server URL: plain `http` is allowed only to this machine (a loopback address)"
        );
        assert_eq!(at(&d[2]), (7, 17));
        assert_eq!(messages[3], "`my app` is not a Modal app name");
        assert_eq!(
            messages[4],
            "the sandbox timeout `25h` is not between 1s and 24h"
        );
        assert_eq!(at(&d[4]), (9, 14));
    }

    #[test]
    fn a_resource_with_an_unknown_provider_is_refused_at_its_provider_key() {
        let d = refusal("version: 1\nagents:\n  a:\n    model: m\n    provider: lambda\n");
        assert_eq!(d.message, "unknown provider `lambda`");
        assert_eq!(at(&d), (5, 5));
    }
}
