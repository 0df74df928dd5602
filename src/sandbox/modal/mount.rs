//! Files Modal places in sandboxes instead of each sandbox being sent them:
//! a mount (`MountGetOrCreate`, owned by the app) lists files by their
//! SHA-256, and Modal keeps each content once. As the official client does
//! it (`modal` 1.6.4: `mount.py`, `_utils/blob_utils.py`): content Modal
//! has already (`MountBatchedCheckExistence`) is not sent again; content
//! under 4 MiB goes inline (`MountPutFile {data}`); larger content goes to
//! the blob store — `BlobCreate`, then the bytes `PUT` to the URL it hands
//! out (or in parts, then a completion), each checked by the MD5 its
//! `ETag` answers — and `MountPutFile {data_blob_id}` names the blob.
//! An upload URL is signed: errors name its host only.

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use reqwest::{Method, StatusCode, Url};
use sha2::Sha256;

use super::control::ModalApi;
use super::error::{ModalError, ModalErrorKind};
use super::proto::client as pb;
use crate::http::{describe_reqwest, Attempt, Client, Failure};

/// Content of this size or more goes through the blob store (the official
/// client's `LARGE_FILE_LIMIT`).
pub const LARGE_FILE_LIMIT: usize = 4 << 20;
/// How long storing one file may take (`MOUNT_PUT_FILE_CLIENT_TIMEOUT`).
const PUT_FILE_DEADLINE: Duration = Duration::from_secs(10 * 60);
/// How long one transfer to the blob store may take.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// The hosts whose uploads carry `Content-MD5` (the official client's
/// `use_md5`: other stores do not check it).
const MD5_HOSTS: [&str; 2] = [".amazonaws.com", ".r2.cloudflarestorage.com"];

/// One file of a mount.
#[derive(Clone)]
pub struct MountFile {
    /// Where it appears in the sandbox (absolute).
    pub path: String,
    pub content: Bytes,
    /// Its permission bits.
    pub mode: u32,
}

/// A file's SHA-256, as the calls name its content.
struct Hashed {
    sha256_hex: String,
    sha256_base64: String,
}

fn hashed(content: &[u8]) -> Hashed {
    let sha = <Sha256 as sha2::Digest>::digest(content);
    Hashed {
        sha256_hex: hex(&sha),
        sha256_base64: b64(&sha),
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn md5_of(content: &[u8]) -> Vec<u8> {
    <md5::Md5 as md5::Digest>::digest(content).to_vec()
}

impl ModalApi {
    /// A mount of `files`, owned by the app: its id. Content Modal has is
    /// not sent.
    pub async fn mount(&self, files: &[MountFile]) -> Result<String, ModalError> {
        if let Some(f) = files.iter().find(|f| !f.path.starts_with('/')) {
            return Err(ModalError::new(
                ModalErrorKind::Rejected,
                format!("a Modal mount's file `{}` must be an absolute path", f.path),
            ));
        }
        let contents: Vec<Bytes> = files.iter().map(|f| f.content.clone()).collect();
        let hashes = tokio::task::spawn_blocking(move || {
            contents.iter().map(|c| hashed(c)).collect::<Vec<_>>()
        })
        .await
        .map_err(|e| ModalError::new(ModalErrorKind::Protocol, e.to_string()))?;
        let request = pb::MountBatchedCheckExistenceRequest {
            sha256_hex_hashes: hashes.iter().map(|h| h.sha256_hex.clone()).collect(),
        };
        let missing = self
            .unary(
                "ModalClient/MountBatchedCheckExistence",
                &request,
                &[],
                |mut c, r| async move { c.mount_batched_check_existence(r).await },
            )
            .await?
            .missing_sha256_hex_hashes;
        let mut sent = std::collections::HashSet::new();
        for (file, hash) in files.iter().zip(&hashes) {
            if missing.contains(&hash.sha256_hex) && sent.insert(hash.sha256_hex.clone()) {
                self.put_file(file, hash).await?;
            }
        }
        let request = pb::MountGetOrCreateRequest {
            object_creation_type: pb::ObjectCreationType::AnonymousOwnedByApp as i32,
            files: files
                .iter()
                .zip(&hashes)
                .map(|(f, h)| pb::MountFile {
                    filename: f.path.clone(),
                    sha256_hex: h.sha256_hex.clone(),
                    size: Some(f.content.len() as u64),
                    mode: Some(f.mode),
                })
                .collect(),
            app_id: self.app_id().await?,
            ..Default::default()
        };
        let response = self
            .unary(
                "ModalClient/MountGetOrCreate",
                &request,
                &[],
                |mut c, r| async move { c.mount_get_or_create(r).await },
            )
            .await?;
        if response.mount_id.is_empty() {
            return Err(ModalError::new(
                ModalErrorKind::Protocol,
                "Modal answered MountGetOrCreate without a mount id",
            ));
        }
        tracing::debug!(mount = %response.mount_id, files = files.len(), "Modal mount ready");
        Ok(response.mount_id)
    }

    /// Stores one file's content: inline, or through the blob store.
    async fn put_file(&self, file: &MountFile, hash: &Hashed) -> Result<(), ModalError> {
        let data = if file.content.len() < LARGE_FILE_LIMIT {
            pb::mount_put_file_request::DataOneof::Data(file.content.to_vec())
        } else {
            let blob = self.blob(&file.content, hash).await?;
            pb::mount_put_file_request::DataOneof::DataBlobId(blob)
        };
        let request = pb::MountPutFileRequest {
            sha256_hex: hash.sha256_hex.clone(),
            data_oneof: Some(data),
        };
        // Modal answers `exists: false` while it is still storing the
        // content; the official client asks again until it is there.
        let deadline = tokio::time::Instant::now() + PUT_FILE_DEADLINE;
        while tokio::time::Instant::now() < deadline {
            let response = self
                .unary(
                    "ModalClient/MountPutFile",
                    &request,
                    &[],
                    |mut c, r| async move { c.mount_put_file(r).await },
                )
                .await?;
            if response.exists {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(ModalError::new(
            ModalErrorKind::Transient,
            format!(
                "Modal did not store `{}` within {PUT_FILE_DEADLINE:?}",
                file.path
            ),
        ))
    }

    /// Puts `content` in the blob store: its blob id.
    async fn blob(&self, content: &Bytes, hash: &Hashed) -> Result<String, ModalError> {
        // Only the blob store wants the MD5: made for it alone.
        let md5 = tokio::task::spawn_blocking({
            let content = content.clone();
            move || md5_of(&content)
        })
        .await
        .map_err(|e| ModalError::new(ModalErrorKind::Protocol, e.to_string()))?;
        let request = pb::BlobCreateRequest {
            content_md5: b64(&md5),
            content_sha256_base64: hash.sha256_base64.clone(),
            content_length: content.len() as i64,
        };
        let response = self
            .unary(
                "ModalClient/BlobCreate",
                &request,
                &[],
                |mut c, r| async move { c.blob_create(r).await },
            )
            .await?;
        let http = self.http().await?;
        let targets = targets(response)?;
        let mut last = None;
        // Each target is one store: the next is tried when one fails.
        for (blob_id, target) in targets {
            let sent = match &target {
                Target::Whole(url) => put_whole(http, url, content, &md5).await,
                Target::Parts(parts) => put_parts(http, parts, content).await,
            };
            match sent {
                Ok(()) => return Ok(blob_id),
                Err(e) => {
                    tracing::debug!(blob = %blob_id, "an upload to Modal's blob store failed: {e}");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            ModalError::new(
                ModalErrorKind::Protocol,
                "Modal answered BlobCreate without an upload URL",
            )
        }))
    }

    /// The HTTP client of the blob store, made at its first use.
    async fn http(&self) -> Result<&Client, ModalError> {
        self.blob_http()
            .get_or_try_init(|| async {
                Client::new(
                    Default::default(),
                    self.redactor().clone(),
                    self.rpc().retry,
                    TRANSFER_TIMEOUT,
                    Some(concat!("agentform/", env!("CARGO_PKG_VERSION"))),
                )
                .map_err(|e| ModalError::new(ModalErrorKind::Protocol, e))
            })
            .await
    }
}

/// Where one blob goes.
enum Target {
    Whole(Url),
    Parts(pb::MultiPartUpload),
}

/// The upload targets of a `BlobCreate` answer with their blob ids, in the
/// order to try them.
fn targets(response: pb::BlobCreateResponse) -> Result<Vec<(String, Target)>, ModalError> {
    use pb::blob_create_response::{UploadTypeOneof, UploadTypesOneof};
    let url = |u: &str| {
        Url::parse(u).map_err(|e| {
            ModalError::new(
                ModalErrorKind::Protocol,
                format!("Modal handed out an upload URL that does not parse: {e}"),
            )
        })
    };
    let mut out = Vec::new();
    match (response.upload_types_oneof, response.upload_type_oneof) {
        (Some(UploadTypesOneof::UploadUrls(list)), _) => {
            for (id, u) in response.blob_ids.iter().zip(&list.items) {
                out.push((id.clone(), Target::Whole(url(u)?)));
            }
        }
        (Some(UploadTypesOneof::Multiparts(list)), _) => {
            for (id, m) in response.blob_ids.iter().zip(list.items) {
                out.push((id.clone(), Target::Parts(m)));
            }
        }
        // An older server: one target.
        (None, Some(UploadTypeOneof::UploadUrl(u))) => {
            out.push((response.blob_id, Target::Whole(url(&u)?)));
        }
        (None, Some(UploadTypeOneof::Multipart(m))) => {
            out.push((response.blob_id, Target::Parts(m)));
        }
        (None, None) => {}
    }
    Ok(out)
}

/// `host` of an upload URL: all an error may say of it.
fn host(url: &Url) -> String {
    url.host_str().unwrap_or("?").to_owned()
}

/// One `PUT` of `body` (or a `POST` of a completion), tried again on a
/// broken connection or a busy store; the answer's body.
struct Transfer<'a> {
    http: &'a Client,
    method: Method,
    url: &'a Url,
    body: Bytes,
    headers: Vec<(&'static str, String)>,
    what: &'a str,
}

impl Attempt for Transfer<'_> {
    type Output = (reqwest::header::HeaderMap, Bytes);
    type Error = String;

    async fn run(&mut self, _retries_done: u32) -> Result<Self::Output, Failure<String>> {
        let mut request = self
            .http
            .request(self.method.clone(), self.url.clone())
            .timeout(TRANSFER_TIMEOUT)
            .body(self.body.clone());
        for (k, v) in &self.headers {
            request = request.header(*k, v);
        }
        let at = host(self.url);
        let broken = |e: reqwest::Error| {
            Failure::connection(format!(
                "{} to Modal's blob store at {at}: {}",
                self.what,
                describe_reqwest(e.without_url())
            ))
        };
        let response = request.send().await.map_err(broken)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(broken)?;
        if status != StatusCode::OK {
            let text = crate::http::snippet(&String::from_utf8_lossy(&body));
            return Err(Failure::answer(
                format!(
                    "{} to Modal's blob store at {at}: HTTP {status}: {text}",
                    self.what
                ),
                status.as_u16(),
                headers,
            ));
        }
        Ok((headers, body))
    }
}

/// The MD5 (hex) an `ETag` answers: quotes and a weak mark taken off.
fn etag(headers: &reqwest::header::HeaderMap) -> String {
    let raw = headers
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim();
    let raw = raw
        .strip_prefix("W/")
        .or_else(|| raw.strip_prefix("w/"))
        .unwrap_or(raw);
    raw.trim_matches('"').to_ascii_lowercase()
}

fn transfer_error(message: String) -> ModalError {
    ModalError::new(ModalErrorKind::Transient, message)
}

/// `PUT body` to `url`, tried again as [`Transfer`] is; the answer's
/// `ETag` must be `md5`, the body's.
async fn put_checked(
    http: &Client,
    url: &Url,
    body: Bytes,
    headers: Vec<(&'static str, String)>,
    what: &str,
    md5: &[u8],
) -> Result<(), ModalError> {
    let transfer = Transfer {
        http,
        method: Method::PUT,
        url,
        body,
        headers,
        what,
    };
    let (answer, _) = http
        .retrying("Modal blob upload", None, transfer)
        .await
        .map_err(transfer_error)?;
    let (remote, local) = (etag(&answer), hex(md5));
    if remote != local {
        return Err(ModalError::new(
            ModalErrorKind::Protocol,
            format!(
                "Modal's blob store at {} received other bytes than were sent in {what} \
                 (MD5 {remote}, sent {local})",
                host(url)
            ),
        ));
    }
    Ok(())
}

/// A single-part upload.
async fn put_whole(
    http: &Client,
    url: &Url,
    content: &Bytes,
    md5: &[u8],
) -> Result<(), ModalError> {
    let mut headers = vec![("content-type", "application/octet-stream".to_owned())];
    let host = host(url);
    if MD5_HOSTS.iter().any(|h| host.ends_with(h)) {
        headers.push(("content-md5", b64(md5)));
    }
    put_checked(http, url, content.clone(), headers, "an upload", md5).await
}

/// A multipart upload: every part at once, each `ETag` checked, then the
/// completion, whose answer must name the whole's multipart `ETag`.
async fn put_parts(
    http: &Client,
    upload: &pb::MultiPartUpload,
    content: &Bytes,
) -> Result<(), ModalError> {
    let part_length = usize::try_from(upload.part_length)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            ModalError::new(
                ModalErrorKind::Protocol,
                format!("Modal asked for parts of {} bytes", upload.part_length),
            )
        })?;
    let pieces: Vec<Bytes> = content
        .chunks(part_length)
        .enumerate()
        .map(|(i, c)| content.slice(i * part_length..i * part_length + c.len()))
        .collect();
    if pieces.len() != upload.upload_urls.len() {
        return Err(ModalError::new(
            ModalErrorKind::Protocol,
            format!(
                "Modal handed out {} part URLs for {} parts of {part_length} bytes",
                upload.upload_urls.len(),
                pieces.len()
            ),
        ));
    }
    let urls = upload
        .upload_urls
        .iter()
        .chain([&upload.completion_url])
        .map(|u| Url::parse(u))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            ModalError::new(
                ModalErrorKind::Protocol,
                format!("Modal handed out an upload URL that does not parse: {e}"),
            )
        })?;
    let Some((completion, part_urls)) = urls.split_last() else {
        return Err(ModalError::new(
            ModalErrorKind::Protocol,
            "no completion URL",
        ));
    };
    let sends = pieces.iter().zip(part_urls).map(|(piece, url)| async move {
        let digest = md5_of(piece);
        put_checked(
            http,
            url,
            piece.clone(),
            Vec::new(),
            "a part's upload",
            &digest,
        )
        .await?;
        Ok::<_, ModalError>(digest)
    });
    let digests = futures_util::future::try_join_all(sends).await?;
    let mut body = String::from("<CompleteMultipartUpload>");
    for (n, digest) in digests.iter().enumerate() {
        body.push_str(&format!(
            "\n<Part>\n<PartNumber>{}</PartNumber>\n<ETag>\"{}\"</ETag>\n</Part>",
            n + 1,
            hex(digest)
        ));
    }
    body.push_str("\n</CompleteMultipartUpload>");
    // S3's multipart ETag: the MD5 of the parts' MD5s, and their count.
    let expected = format!("{}-{}", hex(&md5_of(&digests.concat())), digests.len());
    let transfer = Transfer {
        http,
        method: Method::POST,
        url: completion,
        body: Bytes::from(body),
        headers: Vec::new(),
        what: "the completion of an upload",
    };
    let (_, answer) = http
        .retrying("Modal blob upload", None, transfer)
        .await
        .map_err(transfer_error)?;
    if !String::from_utf8_lossy(&answer).contains(&expected) {
        return Err(ModalError::new(
            ModalErrorKind::Protocol,
            format!(
                "Modal's blob store at {} assembled other parts than were sent (expected {expected})",
                host(completion)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_read_as_the_md5_they_quote() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "etag",
            "W/\"0CC175B9C0F1B6A831C399E269772661\"".parse().unwrap(),
        );
        assert_eq!(etag(&h), "0cc175b9c0f1b6a831c399e269772661");
        h.insert("etag", "\"abc\"".parse().unwrap());
        assert_eq!(etag(&h), "abc");
        assert_eq!(etag(&reqwest::header::HeaderMap::new()), "");
    }

    #[test]
    fn digests_are_those_modal_names_content_by() {
        let h = hashed(b"a");
        let md5 = md5_of(b"a");
        assert_eq!(
            h.sha256_hex,
            "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
        );
        assert_eq!(hex(&md5), "0cc175b9c0f1b6a831c399e269772661");
        assert_eq!(b64(&md5), "DMF1ucDxtqgxw5niaXcmYQ==");
        assert_eq!(
            h.sha256_base64,
            "ypeBEsobvcr6wjGzmiPcTaeG7/gUfE5yuYB3ha/uSLs="
        );
    }

    #[test]
    fn targets_prefer_the_list_and_keep_its_order() {
        use pb::blob_create_response::{UploadTypeOneof, UploadTypesOneof};
        let response = pb::BlobCreateResponse {
            blob_id: "bl-old".into(),
            upload_type_oneof: Some(UploadTypeOneof::UploadUrl("http://old/".into())),
            blob_ids: vec!["bl-1".into(), "bl-2".into()],
            upload_types_oneof: Some(UploadTypesOneof::UploadUrls(pb::UploadUrlList {
                items: vec!["http://one/".into(), "http://two/".into()],
            })),
        };
        let got: Vec<(String, String)> = targets(response)
            .unwrap()
            .into_iter()
            .map(|(id, t)| match t {
                Target::Whole(u) => (id, u.to_string()),
                Target::Parts(_) => (id, "parts".into()),
            })
            .collect();
        assert_eq!(
            got,
            [
                ("bl-1".to_owned(), "http://one/".to_owned()),
                ("bl-2".to_owned(), "http://two/".to_owned())
            ]
        );
        let old = pb::BlobCreateResponse {
            blob_id: "bl-old".into(),
            upload_type_oneof: Some(UploadTypeOneof::UploadUrl("http://old/".into())),
            ..Default::default()
        };
        assert_eq!(targets(old).unwrap().len(), 1);
        assert!(targets(pb::BlobCreateResponse::default())
            .unwrap()
            .is_empty());
    }
}
