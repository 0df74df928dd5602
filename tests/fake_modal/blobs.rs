//! The fake's blob store and content store. `BlobCreate` hands out upload
//! URLs served here by a small HTTP/1 server on a loopback listener of its
//! own, speaking the part of S3 the official client uses:
//! `PUT /blobs/{id}` (one upload), `PUT /blobs/{id}/parts/{n}` (part `n`,
//! from 1, of a multipart upload) and `POST /blobs/{id}/complete` (its
//! `<CompleteMultipartUpload>`), each answered with the S3 ETag the client
//! checks. The content store keeps mounted files by sha256 (`MountPutFile`)
//! and places them into sandboxes as hard links of one file per
//! (sha256, mode), so a big file is never copied into each sandbox. It
//! knows nothing of mounts or sandboxes beyond the path it is given.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use agentform::sandbox::modal::proto::client as pb;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures_util::StreamExt;
use md5::Md5;
use sha2::{Digest, Sha256};
use tonic::Status;

use super::{random_id, Options, Shared};

/// What S3 says when a body does not match its `Content-MD5` (the official
/// client looks for this sentence).
pub const BAD_DIGEST: &str = "The Content-MD5 you specified did not match what we received.";

/// Blobs being uploaded or uploaded, the content store and the placed files,
/// all under the fake's directory.
pub struct Blobs {
    /// `DIR/blobs`: uploaded blobs (`{id}`) and parts (`{id}.part{n}`).
    blobs: PathBuf,
    /// `DIR/store`: content by sha256 hex.
    store: PathBuf,
    /// `DIR/placed`: one file per (sha256, mode), hard-linked into sandboxes.
    placed: PathBuf,
    /// `http://127.0.0.1:PORT` of the blob server.
    url: OnceLock<String>,
    state: Mutex<BTreeMap<String, Blob>>,
    /// Bytes of uploaded content received (the bodies of the PUTs).
    received: AtomicU64,
    /// Serialises the making of placed files.
    placing: Mutex<()>,
    /// The signature of every URL handed out (S3 signs its upload URLs in
    /// their query): secrets a client must not show.
    signatures: Mutex<Vec<String>>,
}

struct Blob {
    length: u64,
    /// Part length and number of parts of a multipart upload.
    parts: Option<(u64, u32)>,
    /// The MD5 of each part received, by part number.
    part_md5: BTreeMap<u32, [u8; 16]>,
    complete: bool,
}

impl Blobs {
    pub fn new(dir: &Path) -> std::io::Result<Blobs> {
        let blobs = Blobs {
            blobs: dir.join("blobs"),
            store: dir.join("store"),
            placed: dir.join("placed"),
            url: OnceLock::new(),
            state: Mutex::new(BTreeMap::new()),
            received: AtomicU64::new(0),
            placing: Mutex::new(()),
            signatures: Mutex::new(Vec::new()),
        };
        for d in [&blobs.blobs, &blobs.store, &blobs.placed] {
            std::fs::create_dir_all(d)?;
        }
        Ok(blobs)
    }

    fn state(&self) -> MutexGuard<'_, BTreeMap<String, Blob>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn signatures(&self) -> Vec<String> {
        self.signatures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// `BlobCreate`: a new blob of `content_length` bytes, uploaded in one
    /// PUT, or in parts above `multipart_over`.
    pub fn create(
        &self,
        options: &Options,
        request: pb::BlobCreateRequest,
    ) -> pb::BlobCreateResponse {
        use pb::blob_create_response::{UploadTypeOneof, UploadTypesOneof};
        let length = u64::try_from(request.content_length).unwrap_or(0);
        let id = random_id("bl-", 22);
        let base = format!(
            "{}/blobs/{id}",
            self.url.get().map(String::as_str).unwrap_or_default()
        );
        // Signed as S3's presigned URLs are (the server ignores the query).
        let signature = random_id("", 40);
        let signed = format!("?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature={signature}");
        self.signatures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(signature);
        let part_length = options.part_length.max(1);
        let parts = (length > options.multipart_over)
            .then(|| (part_length, length.div_ceil(part_length).max(1) as u32));
        self.state().insert(
            id.clone(),
            Blob {
                length,
                parts,
                part_md5: BTreeMap::new(),
                complete: false,
            },
        );
        let (old, new) = match parts {
            None => (
                UploadTypeOneof::UploadUrl(format!("{base}{signed}")),
                UploadTypesOneof::UploadUrls(pb::UploadUrlList {
                    items: vec![format!("{base}{signed}")],
                }),
            ),
            Some((part_length, count)) => {
                let upload = pb::MultiPartUpload {
                    part_length: part_length as i64,
                    upload_urls: (1..=count)
                        .map(|n| format!("{base}/parts/{n}{signed}"))
                        .collect(),
                    completion_url: format!("{base}/complete{signed}"),
                };
                (
                    UploadTypeOneof::Multipart(upload.clone()),
                    UploadTypesOneof::Multiparts(pb::MultiPartUploadList {
                        items: vec![upload],
                    }),
                )
            }
        };
        pb::BlobCreateResponse {
            blob_id: id.clone(),
            upload_type_oneof: Some(old),
            blob_ids: vec![id],
            upload_types_oneof: Some(new),
        }
    }

    /// Whether the store holds this content.
    pub fn has(&self, sha256_hex: &str) -> bool {
        valid_sha256(sha256_hex) && self.store.join(sha256_hex).is_file()
    }

    /// Where the store keeps this content, if it does.
    pub fn stored(&self, sha256_hex: &str) -> Option<PathBuf> {
        self.has(sha256_hex).then(|| self.store.join(sha256_hex))
    }

    /// Stores `data`, which must hash to `sha256_hex`.
    pub fn put_bytes(&self, sha256_hex: &str, data: &[u8]) -> Result<(), Status> {
        check_sha256(sha256_hex, &hex(&Sha256::digest(data)))?;
        let tmp = self.store.join(format!(".{}", random_id("put-", 12)));
        std::fs::write(&tmp, data)
            .and_then(|()| std::fs::rename(&tmp, self.store.join(sha256_hex)))
            .map_err(internal)
    }

    /// Stores the uploaded blob `blob_id`, which must hash to `sha256_hex`.
    pub fn put_blob(&self, sha256_hex: &str, blob_id: &str) -> Result<(), Status> {
        if !self.state().get(blob_id).is_some_and(|b| b.complete) {
            return Err(Status::not_found(format!(
                "Blob {blob_id} not found or not uploaded"
            )));
        }
        let path = self.blobs.join(blob_id);
        check_sha256(sha256_hex, &sha256_file(&path).map_err(internal)?)?;
        let tmp = self.store.join(format!(".{}", random_id("put-", 12)));
        std::fs::hard_link(&path, &tmp)
            .or_else(|_| std::fs::copy(&path, &tmp).map(drop))
            .and_then(|()| std::fs::rename(&tmp, self.store.join(sha256_hex)))
            .map_err(internal)
    }

    /// Makes `target` a hard link of the stored content `sha256_hex` with
    /// `mode`, replacing what was there.
    pub fn place(&self, sha256_hex: &str, mode: u32, target: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let Some(stored) = self.stored(sha256_hex) else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("content {sha256_hex} is not stored"),
            ));
        };
        let placed = self.placed.join(format!("{sha256_hex}-{mode:o}"));
        {
            let _once = self.placing.lock().unwrap_or_else(|e| e.into_inner());
            if !placed.exists() {
                let tmp = self.placed.join(format!(".{}", random_id("place-", 12)));
                std::fs::copy(&stored, &tmp)?;
                std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
                std::fs::rename(&tmp, &placed)?;
            }
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match std::fs::remove_file(target) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::fs::hard_link(&placed, target)
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

pub fn valid_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn check_sha256(declared: &str, actual: &str) -> Result<(), Status> {
    if !valid_sha256(declared) {
        return Err(Status::invalid_argument(format!(
            "sha256_hex {declared:?} is not 64 lowercase hex digits"
        )));
    }
    if declared != actual {
        return Err(Status::invalid_argument(format!(
            "the content's sha256 is {actual}, not the declared {declared}"
        )));
    }
    Ok(())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hex(&hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

fn md5_of(data: &[u8]) -> [u8; 16] {
    use md5::Digest as _;
    let mut out = [0u8; 16];
    out.copy_from_slice(&Md5::digest(data));
    out
}

// ---------------------------------------------------------------------------------------------
// The HTTP server of the upload URLs

/// Serves the blob URLs on `listener`; records its URL for `BlobCreate`.
pub fn serve(shared: Arc<Shared>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    let url = format!("http://{}", listener.local_addr()?);
    let _ = shared.blobs.url.set(url);
    let router = axum::Router::new()
        .route("/blobs/{id}", axum::routing::put(put_whole))
        .route("/blobs/{id}/parts/{n}", axum::routing::put(put_part))
        .route("/blobs/{id}/complete", axum::routing::post(complete))
        .layer(DefaultBodyLimit::disable())
        .layer(super::latency::layer(shared.options.latency))
        .with_state(shared);
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(())
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    (status, body).into_response()
}

fn no_such_upload(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "NoSuchUpload",
        &format!("blob {id} (or its part) does not exist"),
    )
}

fn io_error(e: std::io::Error) -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        &e.to_string(),
    )
}

fn log(shared: &Shared, what: &str) {
    shared.lock().log.push(format!("Blobs/{what}"));
}

/// Reads a body to its end: an answer before it would break the client's
/// write instead of reaching it.
async fn drain(body: Body) {
    let mut stream = body.into_data_stream();
    while let Some(Ok(_)) = stream.next().await {}
}

/// S3's answer under load, while `Options::slow_down_puts` lasts.
fn slow_down(shared: &Shared) -> Option<Response> {
    let mut inner = shared.lock();
    if inner.slow_downs_left == 0 {
        return None;
    }
    inner.slow_downs_left -= 1;
    inner.log.push("Blobs/SlowDown".into());
    Some(error(
        StatusCode::SERVICE_UNAVAILABLE,
        "SlowDown",
        "Please reduce your request rate.",
    ))
}

/// Receives `body` into a new file `tmp`: its length and MD5.
async fn receive(blobs: &Blobs, body: Body, tmp: &Path) -> Result<(u64, [u8; 16]), Response> {
    use md5::Digest as _;
    let mut file = std::fs::File::create(tmp).map_err(io_error)?;
    let mut md5 = Md5::new();
    let mut length = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_file(tmp);
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "IncompleteBody",
                    &e.to_string(),
                ));
            }
        };
        blobs
            .received
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        length += chunk.len() as u64;
        md5.update(&chunk);
        file.write_all(&chunk).map_err(io_error)?;
    }
    let mut out = [0u8; 16];
    out.copy_from_slice(&md5.finalize());
    Ok((length, out))
}

/// Checks a received body against its expected length and its
/// `Content-MD5`, if sent; the answer with its ETag.
fn accept(
    headers: &HeaderMap,
    tmp: &Path,
    got: (u64, [u8; 16]),
    expected: u64,
    keep_as: &Path,
) -> Response {
    let (length, md5) = got;
    let refuse = |response: Response| {
        let _ = std::fs::remove_file(tmp);
        response
    };
    if let Some(sent) = headers.get("content-md5") {
        let ours = base64::engine::general_purpose::STANDARD.encode(md5);
        if sent.to_str().ok().map(str::trim) != Some(ours.as_str()) {
            return refuse(error(StatusCode::BAD_REQUEST, "BadDigest", BAD_DIGEST));
        }
    }
    if length != expected {
        return refuse(error(
            StatusCode::BAD_REQUEST,
            "IncompleteBody",
            &format!("received {length} bytes, expected {expected}"),
        ));
    }
    if let Err(e) = std::fs::rename(tmp, keep_as) {
        return refuse(io_error(e));
    }
    (
        StatusCode::OK,
        [(header::ETAG, format!("\"{}\"", hex(&md5)))],
    )
        .into_response()
}

/// One upload of `expected` bytes (`None`: nothing to upload there) kept
/// as `keep_as`: a busy store's or an unknown blob's answer once the body
/// is read, else the body checked; the answer and the body's MD5.
async fn upload(
    shared: &Shared,
    id: &str,
    expected: Option<u64>,
    keep_as: &Path,
    headers: &HeaderMap,
    body: Body,
) -> (Response, Option<[u8; 16]>) {
    if let Some(busy) = slow_down(shared) {
        drain(body).await;
        return (busy, None);
    }
    let Some(expected) = expected else {
        drain(body).await;
        return (no_such_upload(id), None);
    };
    let blobs = &shared.blobs;
    let tmp = blobs.blobs.join(format!(".{}", random_id("up-", 12)));
    match receive(blobs, body, &tmp).await {
        Ok(got) => (accept(headers, &tmp, got, expected, keep_as), Some(got.1)),
        Err(response) => (response, None),
    }
}

async fn put_whole(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    log(&shared, "Put");
    let blobs = &shared.blobs;
    let length = blobs
        .state()
        .get(&id)
        .filter(|b| b.parts.is_none())
        .map(|b| b.length);
    let keep_as = blobs.blobs.join(&id);
    let (response, _) = upload(&shared, &id, length, &keep_as, &headers, body).await;
    if response.status() == StatusCode::OK {
        if let Some(blob) = blobs.state().get_mut(&id) {
            blob.complete = true;
        }
    }
    response
}

async fn put_part(
    State(shared): State<Arc<Shared>>,
    UrlPath((id, n)): UrlPath<(String, u32)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    log(&shared, "PutPart");
    let blobs = &shared.blobs;
    let expected = blobs.state().get(&id).and_then(|b| match b.parts {
        Some((part_length, count)) if (1..=count).contains(&n) && !b.complete => {
            let start = u64::from(n - 1) * part_length;
            Some(part_length.min(b.length.saturating_sub(start)))
        }
        _ => None,
    });
    let keep_as = blobs.blobs.join(format!("{id}.part{n}"));
    let (response, md5) = upload(&shared, &id, expected, &keep_as, &headers, body).await;
    if let (StatusCode::OK, Some(md5)) = (response.status(), md5) {
        if let Some(blob) = blobs.state().get_mut(&id) {
            blob.part_md5.insert(n, md5);
        }
    }
    response
}

/// The (part number, ETag) pairs of a `<CompleteMultipartUpload>` body.
fn listed_parts(xml: &str) -> Vec<(u32, String)> {
    let inner = |s: &str, tag: &str| -> Option<String> {
        let open = format!("<{tag}>");
        let start = s.find(&open)? + open.len();
        let end = s[start..].find(&format!("</{tag}>"))? + start;
        Some(s[start..end].trim().to_owned())
    };
    xml.split("<Part>")
        .skip(1)
        .filter_map(|part| {
            let number = inner(part, "PartNumber")?.parse().ok()?;
            let etag = inner(part, "ETag")?.trim_matches('"').to_owned();
            Some((number, etag))
        })
        .collect()
}

async fn complete(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    body: String,
) -> Response {
    log(&shared, "Complete");
    let blobs = &shared.blobs;
    let (count, md5s, done) = match blobs.state().get(&id) {
        Some(Blob {
            parts: Some((_, count)),
            part_md5,
            complete,
            ..
        }) => (*count, part_md5.clone(), *complete),
        _ => return no_such_upload(&id),
    };
    let listed = listed_parts(&body);
    let expected: Vec<(u32, String)> = (1..=count)
        .map(|n| (n, md5s.get(&n).map(|m| hex(m)).unwrap_or_default()))
        .collect();
    if listed != expected {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidPart",
            "the parts listed are not the parts uploaded (all of them, in order, with their ETags)",
        );
    }
    if !done {
        let tmp = blobs.blobs.join(format!(".{}", random_id("join-", 12)));
        let joined = (|| -> std::io::Result<()> {
            let mut out = std::fs::File::create(&tmp)?;
            for n in 1..=count {
                let part = blobs.blobs.join(format!("{id}.part{n}"));
                std::io::copy(&mut std::fs::File::open(&part)?, &mut out)?;
            }
            out.flush()?;
            std::fs::rename(&tmp, blobs.blobs.join(&id))?;
            for n in 1..=count {
                let _ = std::fs::remove_file(blobs.blobs.join(format!("{id}.part{n}")));
            }
            Ok(())
        })();
        if let Err(e) = joined {
            let _ = std::fs::remove_file(&tmp);
            return io_error(e);
        }
        if let Some(blob) = blobs.state().get_mut(&id) {
            blob.complete = true;
        }
    }
    let concatenated: Vec<u8> = md5s.values().flatten().copied().collect();
    let etag = format!("{}-{count}", hex(&md5_of(&concatenated)));
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CompleteMultipartUploadResult><Location>{}/blobs/{id}</Location><Key>{id}</Key><ETag>\"{etag}\"</ETag></CompleteMultipartUploadResult>",
        blobs.url.get().map(String::as_str).unwrap_or_default()
    );
    (StatusCode::OK, body).into_response()
}
