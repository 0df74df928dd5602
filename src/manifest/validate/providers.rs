//! Providers: each resource's provider must be one this build has, and the
//! `providers.anthropic` settings must be usable (a base URL, variable names
//! rather than credentials, durations, non-zero rate limits).

use super::scripts::bad_duration;
use crate::manifest::declare::Declared;
use crate::manifest::diagnostic::{Diagnostic, Span};
use crate::manifest::parse_duration;
use crate::manifest::spec::{AnthropicProviderSpec, LimitSpec};
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
        let Some(name) = value else { continue };
        let ok = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !ok {
            problems.push(
                Diagnostic::new(
                    format!("`{name}` is not an environment variable name"),
                    at(&[field]),
                )
                .help("name the variable that holds the credential, e.g. `ANTHROPIC_API_KEY`; never write the credential itself here"),
            );
        }
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

    #[test]
    fn a_resource_with_an_unknown_provider_is_refused_at_its_provider_key() {
        let d = refusal("version: 1\nagents:\n  a:\n    model: m\n    provider: e2b\n");
        assert_eq!(d.message, "unknown provider `e2b`");
        assert_eq!(at(&d), (5, 5));
    }
}
