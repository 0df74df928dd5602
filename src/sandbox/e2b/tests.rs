//! The client against the tiny test server of `crate::http`: the wire as
//! the SDK writes it (headers, bodies, frames), paging, idempotent retries,
//! and a command that survives a broken stream.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use super::connect::{envelope, END_STREAM};
use super::*;
use crate::http::test_server::{requests, serve, serve_replies, Reply};
use crate::http::RetryPolicy;

const KEY: &str = "e2b_unit_test_key_0123";

fn config(base: &str) -> E2bConfig {
    let mut c = E2bConfig::new(KEY.into(), API_KEY_ENV, DEFAULT_DOMAIN).unwrap();
    c.api_url = check_url(base).unwrap();
    c.sandbox_url = Some(check_url(base).unwrap());
    c.retry = RetryPolicy {
        max_retries: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        max_retry_after: Duration::from_millis(5),
    };
    c
}

fn connection() -> Connection {
    Connection {
        sandbox_id: "sbx1".into(),
        envd_version: "0.5.7".into(),
        envd_access_token: Some("envd-token-secret-1".into()),
        traffic_access_token: None,
        domain: None,
    }
}

fn frame(event: Value) -> Vec<u8> {
    envelope(0, json!({ "event": event }).to_string().as_bytes())
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A streaming answer of `frames`; without `end` the connection closes
/// before the end envelope.
fn stream_reply(frames: &[Vec<u8>], end: Option<Value>) -> Reply {
    let mut parts = vec![
        b"HTTP/1.1 200 OK\r\ncontent-type: application/connect+json\r\nconnection: close\r\n\r\n"
            .to_vec(),
    ];
    parts.extend(frames.iter().cloned());
    if let Some(end) = end {
        parts.push(envelope(END_STREAM, end.to_string().as_bytes()));
    }
    Reply::Raw(parts)
}

#[tokio::test]
async fn a_process_stream_reads_events_as_the_sdk_writes_them() {
    let reply = stream_reply(
        &[
            frame(json!({"start": {"pid": 42}})),
            frame(json!({"keepalive": {}})),
            frame(json!({"data": {"stdout": b64("out\n")}})),
            frame(json!({"data": {"stderr": b64("err\n")}})),
            frame(json!({"end": {"exited": true, "status": "exit status 0"}})),
        ],
        Some(json!({})),
    );
    let (base, log) = serve_replies(vec![reply]).await;
    let api = Arc::new(E2bApi::new(config(&base)).unwrap());
    let envd = api.envd(&connection());
    let mut spec = ProcessSpec::bash("echo out; echo err >&2");
    spec.cwd = Some(WORKSPACE.into());
    spec.tag = Some("t1".into());
    let mut stream = envd.start(&spec).await.unwrap();
    let mut events = Vec::new();
    while let Some(event) = stream.next().await.unwrap() {
        events.push(event);
    }
    assert_eq!(
        events,
        vec![
            ProcessEvent::Start { pid: 42 },
            ProcessEvent::Keepalive,
            ProcessEvent::Stdout(b"out\n".to_vec()),
            ProcessEvent::Stderr(b"err\n".to_vec()),
            ProcessEvent::End(Exit {
                exit_code: 0,
                exited: true,
                status: "exit status 0".into(),
                error: None
            }),
        ]
    );
    let request = &requests(&log)[0];
    assert!(request.is("POST", "/process.Process/Start"));
    let h = |name: &str| request.headers.get(name).map(String::as_str);
    assert_eq!(h("content-type"), Some("application/connect+json"));
    assert_eq!(h("connect-protocol-version"), Some("1"));
    assert_eq!(h("e2b-sandbox-id"), Some("sbx1"));
    assert_eq!(h("e2b-sandbox-port"), Some("49983"));
    assert_eq!(h("x-access-token"), Some("envd-token-secret-1"));
    assert_eq!(h("keepalive-ping-interval"), Some("30"));
    assert_eq!(h("x-api-key"), None, "the API key never goes to a sandbox");
}

#[tokio::test]
async fn an_end_envelope_with_an_error_fails_the_stream() {
    let reply = stream_reply(
        &[],
        Some(json!({"error": {"code": "not_found", "message": "process with pid 9 not found"}})),
    );
    let (base, _) = serve_replies(vec![reply]).await;
    let api = Arc::new(E2bApi::new(config(&base)).unwrap());
    let mut stream = api
        .envd(&connection())
        .connect(&Selector::Pid(9))
        .await
        .unwrap();
    match stream.next().await {
        Err(StreamError::Failed(e)) => {
            assert_eq!(e.kind, E2bErrorKind::NotFound);
            assert!(
                e.message.contains("process with pid 9 not found"),
                "{}",
                e.message
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_command_whose_stream_breaks_is_re_attached() {
    let (base, log) = serve(|request, _| {
        if request.path == "/process.Process/Start" {
            // Started, some output, then the connection drops.
            stream_reply(
                &[
                    frame(json!({"start": {"pid": 7}})),
                    frame(json!({"data": {"stdout": b64("one\n")}})),
                ],
                None,
            )
        } else {
            stream_reply(
                &[
                    frame(json!({"start": {"pid": 7}})),
                    frame(json!({"data": {"stdout": b64("two\n")}})),
                    frame(
                        json!({"end": {"exitCode": 3, "exited": true, "status": "exit status 3"}}),
                    ),
                ],
                Some(json!({})),
            )
        }
    })
    .await;
    let api = Arc::new(E2bApi::new(config(&base)).unwrap());
    let envd = api.envd(&connection());
    let mut seen = String::new();
    let out = exec::run(
        &envd,
        ProcessSpec::bash("echo one; sleep 1; echo two; exit 3"),
        Duration::from_secs(20),
        &api.config().retry,
        &mut |s| seen.push_str(s),
    )
    .await
    .unwrap();
    assert_eq!(out.exit_code, Some(3));
    assert!(!out.timed_out);
    assert!(out.output.starts_with("one\n"), "{}", out.output);
    assert!(out.output.contains("re-attached"), "{}", out.output);
    assert!(out.output.ends_with("two\n"), "{}", out.output);
    assert_eq!(seen, out.output);
    let paths: Vec<String> = requests(&log).iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        ["/process.Process/Start", "/process.Process/Connect"]
    );
}

#[tokio::test]
async fn creates_retry_with_the_same_idempotency_key() {
    let created = json!({
        "templateID": "base", "sandboxID": "sbx9", "clientID": "c", "envdVersion": "0.5.7",
        "envdAccessToken": "tok", "trafficAccessToken": null, "domain": null
    });
    let (base, log) = serve_replies(vec![
        Reply::json(503, json!({"code": 503, "message": "busy"})),
        Reply::json(429, json!({"code": 429, "message": "slow"})).header("retry-after", "0"),
        Reply::json(201, created),
    ])
    .await;
    let api = E2bApi::new(config(&base)).unwrap();
    let body = NewSandbox {
        template_id: "base".into(),
        timeout: 60,
        auto_pause: false,
        metadata: Default::default(),
        env_vars: Default::default(),
        network: None,
    };
    let c = api.create(&body, "agentform-key-1").await.unwrap();
    assert_eq!(c.sandbox_id, "sbx9");
    let sent = requests(&log);
    assert_eq!(sent.len(), 3);
    for r in &sent {
        assert!(r.is("POST", "/v2/sandboxes"));
        assert_eq!(
            r.headers.get("idempotency-key").map(String::as_str),
            Some("agentform-key-1")
        );
        assert_eq!(r.headers.get("x-api-key").map(String::as_str), Some(KEY));
        assert_eq!(r.body["templateID"], "base");
    }
}

#[tokio::test]
async fn lists_follow_the_next_token_and_errors_never_show_the_key() {
    let item = |id: &str| {
        json!({"templateID": "base", "sandboxID": id, "clientID": "c", "startedAt": "2026-01-01T00:00:00Z",
               "endAt": "2026-01-01T01:00:00Z", "cpuCount": 1, "memoryMB": 1, "diskSizeMB": 1,
               "state": "running", "envdVersion": "0.5.7", "metadata": {"agentform.session": "s1"}})
    };
    let (base, log) = serve_replies(vec![
        Reply::ok(json!([item("a")])).header("x-next-token", "tok-2"),
        Reply::ok(json!([item("b")])),
        Reply::json(
            401,
            json!({"code": 401, "message": format!("bad key {KEY}")}),
        ),
    ])
    .await;
    let api = E2bApi::new(config(&base)).unwrap();
    let found = api.list(&[(META_SESSION, "s1")]).await.unwrap();
    let ids: Vec<&str> = found.iter().map(|l| l.sandbox_id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    let sent = requests(&log);
    assert_eq!(sent[0].param("metadata"), Some("agentform.session=s1"));
    assert_eq!(sent[0].param("nextToken"), None);
    assert_eq!(sent[1].param("nextToken"), Some("tok-2"));
    let refused = api.get("sbx1").await.unwrap_err();
    assert_eq!(refused.kind, E2bErrorKind::Auth);
    assert!(!refused.message.contains(KEY), "{}", refused.message);
    assert!(
        refused.message.contains("`E2B_API_KEY`"),
        "{}",
        refused.message
    );
}

#[tokio::test]
async fn kill_and_timeout_read_404_as_gone() {
    let (base, _) = serve_replies(vec![
        Reply::json(404, json!({"code": 404, "message": "not found"})),
        Reply::json(404, json!({"code": 404, "message": "not found"})),
        Reply::json(404, json!({"code": 404, "message": "not found"})),
    ])
    .await;
    let api = E2bApi::new(config(&base)).unwrap();
    assert_eq!(api.kill("sbx1").await, Ok(false));
    assert_eq!(api.get("sbx1").await, Ok(None));
    let e = api
        .set_timeout("sbx1", Duration::from_secs(60))
        .await
        .unwrap_err();
    assert_eq!(e.kind, E2bErrorKind::SandboxGone);
}
