//! One gRPC connection to Modal and one call over it under the shared retry
//! policy ([`RetryPolicy`]): HTTP/2 over rustls for `https`, h2c for a
//! loopback `http` (tests); every attempt carries the metadata the
//! official clients send, the same `x-idempotency-key` and its
//! `x-retry-attempt`; `UNAVAILABLE`, `RESOURCE_EXHAUSTED` and the other
//! transient codes are tried again with backoff. What a call means is the
//! caller's.

use std::future::Future;
use std::time::Duration;

use reqwest::Url;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::error::ModalError;
use crate::http::{Redactor, RetryPolicy};

/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings keep idle connections (and long output streams) open, as
/// the official clients' keepalive does.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// `User-Agent` of every call: agentform names itself here.
const USER_AGENT: &str = concat!("agentform/", env!("CARGO_PKG_VERSION"));

/// The client type and version headers, as modal-labs/modal-client's Go
/// SDK sends them (`go/client.go`, `injectRequiredHeaders`): its type
/// (`CLIENT_TYPE_LIBMODAL_GO` = 9), the Python client version whose
/// protocol it follows, and its own version. agentform speaks that
/// protocol (V2 sandboxes, the task command router).
pub const CLIENT_HEADERS: [(&str, &str); 3] = [
    ("x-modal-client-type", "9"),
    ("x-modal-client-version", "1.0.0"),
    ("x-modal-libmodal-version", "modal-go/0.9.0"),
];

/// A random UUID (version 4), as the official clients make idempotency
/// keys and exec ids.
pub fn uuid4() -> String {
    let n = (fastrand::u128(..) & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    let hex = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// A lazily connected channel to `url` (`https://host[:port]` or a loopback
/// `http://`).
pub fn channel(url: &Url) -> Result<Channel, String> {
    let mut endpoint = Endpoint::from_shared(url.as_str().trim_end_matches('/').to_owned())
        .map_err(|e| format!("`{url}` is not a usable gRPC address: {e}"))?
        .user_agent(USER_AGENT)
        .map_err(|e| e.to_string())?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    if url.scheme() == "https" {
        let host = url.host_str().unwrap_or_default().to_owned();
        let tls = ClientTlsConfig::new().with_webpki_roots().domain_name(host);
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| format!("TLS for `{url}`: {e}"))?;
    }
    Ok(endpoint.connect_lazy())
}

/// `value` as a metadata value, or why it cannot be one (`what` names it).
pub fn metadata_value(value: &str, what: &str) -> Result<AsciiMetadataValue, String> {
    // Printable ASCII only: HTTP/2 would take other bytes, Modal would not.
    if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(format!("{what} holds characters a gRPC header cannot"));
    }
    let mut v = AsciiMetadataValue::try_from(value)
        .map_err(|_| format!("{what} holds characters a gRPC header cannot"))?;
    v.set_sensitive(true);
    Ok(v)
}

/// A connection and the metadata every call on it carries.
#[derive(Clone)]
pub struct Rpc {
    pub channel: Channel,
    /// Sent with every call (tokens, client headers); sensitive values are
    /// marked so.
    pub metadata: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
    pub retry: RetryPolicy,
    /// Limit of one attempt of a unary call.
    pub timeout: Duration,
    /// Named when an auth refusal comes back.
    pub token_vars: String,
    pub redactor: Redactor,
}

impl Rpc {
    /// The metadata of one attempt.
    fn decorate(&self, map: &mut MetadataMap, extra: &[(AsciiMetadataKey, AsciiMetadataValue)]) {
        for (k, v) in self.metadata.iter().chain(extra) {
            map.insert(k.clone(), v.clone());
        }
    }

    /// `call` with `message` until it succeeds, fails for good or the
    /// retries are spent. `extra` is added to every attempt (an auth token).
    pub async fn unary<Req, Resp, F, Fut>(
        &self,
        label: &str,
        message: &Req,
        extra: &[(AsciiMetadataKey, AsciiMetadataValue)],
        call: F,
    ) -> Result<Resp, ModalError>
    where
        Req: Clone,
        F: Fn(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let key = uuid4();
        let mut attempt: u32 = 0;
        loop {
            let mut request = tonic::Request::new(message.clone());
            request.set_timeout(self.timeout);
            let map = request.metadata_mut();
            self.decorate(map, extra);
            map.insert("x-idempotency-key", header(&key));
            map.insert("x-retry-attempt", header(&attempt.to_string()));
            // The header asks the server to stop in time; this stops waiting.
            let answer = tokio::time::timeout(self.timeout, call(self.channel.clone(), request))
                .await
                .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("no answer in time")));
            match answer {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => {
                    let error =
                        ModalError::status(label, &status, &self.token_vars, &self.redactor);
                    if !error.is_transient() || attempt >= self.retry.max_retries {
                        return Err(error);
                    }
                    tracing::debug!(call = label, attempt, "{error}; retrying");
                    tokio::time::sleep(self.retry.delay(attempt, None)).await;
                    attempt += 1;
                }
            }
        }
    }

    /// A request for a streaming call: the metadata, no retries (the caller
    /// resumes the stream itself).
    pub fn request<Req>(
        &self,
        message: Req,
        extra: &[(AsciiMetadataKey, AsciiMetadataValue)],
    ) -> tonic::Request<Req> {
        let mut request = tonic::Request::new(message);
        self.decorate(request.metadata_mut(), extra);
        request
    }

    pub fn error(&self, label: &str, status: &tonic::Status) -> ModalError {
        ModalError::status(label, status, &self.token_vars, &self.redactor)
    }
}

/// A value known to be ASCII (ids, numbers).
fn header(value: &str) -> AsciiMetadataValue {
    AsciiMetadataValue::try_from(value).unwrap_or_else(|_| AsciiMetadataValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_read_as_version_4() {
        let a = uuid4();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
        assert_ne!(a, uuid4());
    }

    #[test]
    fn channels_take_https_and_h2c() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                assert!(channel(&Url::parse("https://api.modal.com:443").unwrap()).is_ok());
                assert!(channel(&Url::parse("http://127.0.0.1:9").unwrap()).is_ok());
            });
        assert!(metadata_value("é", "`MODAL_TOKEN_ID`")
            .unwrap_err()
            .contains("`MODAL_TOKEN_ID`"));
    }
}
