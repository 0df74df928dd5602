//! The fake Modal's blob store and mounts, driven by hand where the official
//! client's lifecycle (`modal.rs`) does not reach: a multipart upload and
//! its S3 ETags, a `Content-MD5` mismatch, content that does not match its
//! sha256, a sandbox asking for an unknown mount, and a mounted file placed
//! in two sandboxes as one hard link with its mode.

use std::os::unix::fs::MetadataExt;

use agentform::sandbox::modal::proto::client as pb;
use base64::Engine;
use md5::Md5;
use pb::modal_client_client::ModalClientClient;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

use crate::fake_modal::{FakeModal, Options};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn md5(data: &[u8]) -> [u8; 16] {
    use md5::Digest as _;
    let mut out = [0u8; 16];
    out.copy_from_slice(&Md5::digest(data));
    out
}

fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(7);
    (0..n).map(|_| rng.u8(..)).collect()
}

/// A client of the fake's control plane, with its own runtime (the fake
/// runs on another).
struct Client {
    runtime: tokio::runtime::Runtime,
    grpc: ModalClientClient<Channel>,
    http: reqwest::Client,
    token_id: String,
    token_secret: String,
    auth_token: String,
}

impl Client {
    fn new(fake: &FakeModal) -> Client {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let channel = runtime.block_on(async {
            Channel::from_shared(fake.server_url.clone())
                .unwrap()
                .connect()
                .await
                .unwrap()
        });
        let mut client = Client {
            runtime,
            grpc: ModalClientClient::new(channel),
            http: reqwest::Client::new(),
            token_id: fake.token_id().to_owned(),
            token_secret: fake.token_secret().to_owned(),
            auth_token: String::new(),
        };
        client.auth_token = client
            .call(
                |mut c, r| async move { c.auth_token_get(r).await },
                Default::default(),
            )
            .unwrap()
            .token;
        client
    }

    /// One call with the tokens (and the auth token, once there is one).
    fn call<Req, Res, F, Fut>(&self, f: F, message: Req) -> Result<Res, tonic::Status>
    where
        F: FnOnce(ModalClientClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<Res>, tonic::Status>>,
    {
        let mut request = tonic::Request::new(message);
        let metadata = request.metadata_mut();
        metadata.insert("x-modal-token-id", self.token_id.parse().unwrap());
        metadata.insert("x-modal-token-secret", self.token_secret.parse().unwrap());
        if !self.auth_token.is_empty() {
            metadata.insert("x-modal-auth-token", self.auth_token.parse().unwrap());
        }
        self.runtime
            .block_on(f(self.grpc.clone(), request))
            .map(tonic::Response::into_inner)
    }

    fn blob_create(&self, data: &[u8]) -> pb::BlobCreateResponse {
        let b64 = base64::engine::general_purpose::STANDARD;
        let message = pb::BlobCreateRequest {
            content_md5: b64.encode(md5(data)),
            content_sha256_base64: b64.encode(Sha256::digest(data)),
            content_length: data.len() as i64,
        };
        self.call(|mut c, r| async move { c.blob_create(r).await }, message)
            .unwrap()
    }

    /// An HTTP request to the blob server: status, ETag header, body.
    fn send(&self, request: reqwest::RequestBuilder) -> (u16, String, String) {
        self.runtime.block_on(async {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let etag = response
                .headers()
                .get("etag")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (status, etag, response.text().await.unwrap())
        })
    }

    fn put(&self, url: &str, data: &[u8], content_md5: Option<&str>) -> (u16, String, String) {
        let mut request = self.http.put(url).body(data.to_vec());
        if let Some(m) = content_md5 {
            request = request.header("Content-MD5", m);
        }
        self.send(request)
    }

    fn put_file(&self, message: pb::MountPutFileRequest) -> Result<bool, tonic::Status> {
        self.call(|mut c, r| async move { c.mount_put_file(r).await }, message)
            .map(|r| r.exists)
    }

    fn missing(&self, hashes: &[&str]) -> Vec<String> {
        let message = pb::MountBatchedCheckExistenceRequest {
            sha256_hex_hashes: hashes.iter().map(|h| h.to_string()).collect(),
        };
        self.call(
            |mut c, r| async move { c.mount_batched_check_existence(r).await },
            message,
        )
        .unwrap()
        .missing_sha256_hex_hashes
    }

    fn app(&self) -> String {
        let message = pb::AppGetOrCreateRequest {
            app_name: "mounts".into(),
            ..Default::default()
        };
        self.call(
            |mut c, r| async move { c.app_get_or_create(r).await },
            message,
        )
        .unwrap()
        .app_id
    }

    fn mount(
        &self,
        app_id: &str,
        files: Vec<pb::MountFile>,
    ) -> Result<pb::MountGetOrCreateResponse, tonic::Status> {
        let message = pb::MountGetOrCreateRequest {
            object_creation_type: pb::ObjectCreationType::AnonymousOwnedByApp as i32,
            app_id: app_id.to_owned(),
            files,
            ..Default::default()
        };
        self.call(
            |mut c, r| async move { c.mount_get_or_create(r).await },
            message,
        )
    }

    fn sandbox(&self, app_id: &str, mount_ids: &[String]) -> Result<String, tonic::Status> {
        let message = pb::ImageGetOrCreateRequest {
            image: Some(pb::Image {
                dockerfile_commands: vec!["FROM debian:bookworm-slim".into()],
                ..Default::default()
            }),
            app_id: app_id.to_owned(),
            ..Default::default()
        };
        let image_id = self
            .call(
                |mut c, r| async move { c.image_get_or_create(r).await },
                message,
            )
            .unwrap()
            .image_id;
        let message = pb::SandboxCreateV2Request {
            app_id: app_id.to_owned(),
            definition: Some(pb::Sandbox {
                image_id,
                mount_ids: mount_ids.to_vec(),
                workdir: Some("/workspace".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.call(
            |mut c, r| async move { c.sandbox_create_v2(r).await },
            message,
        )
        .map(|r| r.sandbox_id)
    }
}

fn file(filename: &str, data: &[u8], mode: Option<u32>) -> pb::MountFile {
    pb::MountFile {
        filename: filename.into(),
        sha256_hex: sha256_hex(data),
        size: Some(data.len() as u64),
        mode,
    }
}

#[test]
fn a_multipart_upload_answers_s3_etags_and_its_blob_feeds_mount_put_file() {
    let fake = FakeModal::start(Options {
        multipart_over: 1 << 20,
        part_length: 1 << 20,
        ..Options::default()
    });
    let client = Client::new(&fake);
    let data = random_bytes((5 << 20) / 2);
    let sha = sha256_hex(&data);
    assert_eq!(client.missing(&[&sha]), [sha.as_str()]);

    let created = client.blob_create(&data);
    let Some(pb::blob_create_response::UploadTypesOneof::Multiparts(list)) =
        created.upload_types_oneof.clone()
    else {
        panic!("2.5 MiB over a 1 MiB threshold is multipart: {created:?}");
    };
    assert_eq!(created.blob_ids, [created.blob_id.as_str()]);
    let [upload] = &list.items[..] else {
        panic!("one upload per blob id: {list:?}")
    };
    assert_eq!(
        created.upload_type_oneof,
        Some(pb::blob_create_response::UploadTypeOneof::Multipart(
            upload.clone()
        ))
    );
    assert_eq!(upload.part_length, 1 << 20);
    assert_eq!(upload.upload_urls.len(), 3);
    let base = format!("/blobs/{}", created.blob_id);
    let path = |u: &str| u.split('?').next().unwrap_or_default().to_owned();
    assert!(path(&upload.upload_urls[0]).ends_with(&format!("{base}/parts/1")));
    assert!(path(&upload.completion_url).ends_with(&format!("{base}/complete")));
    assert!(
        upload
            .completion_url
            .contains("?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature="),
        "signed as S3's are: {}",
        upload.completion_url
    );

    // Completing before the parts are there is refused.
    let (status, _, body) = client.send(
        client
            .http
            .post(&upload.completion_url)
            .body("<CompleteMultipartUpload>\n</CompleteMultipartUpload>"),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("InvalidPart"), "{body}");
    // A part of the wrong length is refused.
    let (status, _, body) = client.put(&upload.upload_urls[2], &data[..10], None);
    assert_eq!(status, 400, "{body}");

    let parts: Vec<&[u8]> = data.chunks(1 << 20).collect();
    assert_eq!(parts.len(), 3);
    // Parts go up in any order; each answers the MD5 of its bytes.
    for n in [2, 0, 1] {
        let (status, etag, body) = client.put(&upload.upload_urls[n], parts[n], None);
        assert_eq!(status, 200, "{body}");
        assert_eq!(etag, format!("\"{}\"", hex(&md5(parts[n]))));
    }
    let mut xml = vec!["<CompleteMultipartUpload>".to_owned()];
    for (i, part) in parts.iter().enumerate() {
        xml.push(format!(
            "<Part>\n<PartNumber>{}</PartNumber>\n<ETag>\"{}\"</ETag>\n</Part>",
            i + 1,
            hex(&md5(part))
        ));
    }
    xml.push("</CompleteMultipartUpload>".into());
    let (status, _, body) = client.send(
        client
            .http
            .post(&upload.completion_url)
            .body(xml.join("\n")),
    );
    assert_eq!(status, 200, "{body}");
    let joined: Vec<u8> = parts.iter().flat_map(|p| md5(p)).collect();
    let expected = format!("{}-3", hex(&md5(&joined)));
    assert!(body.contains(&expected), "{expected} in {body}");
    assert_eq!(fake.calls_of("Blobs/PutPart"), 4);
    assert_eq!(fake.calls_of("Blobs/Complete"), 2);
    assert_eq!(fake.blob_bytes_received(), data.len() as u64 + 10);

    // The completed blob is the content of a MountPutFile.
    let put = pb::MountPutFileRequest {
        sha256_hex: sha.clone(),
        data_oneof: Some(pb::mount_put_file_request::DataOneof::DataBlobId(
            created.blob_id.clone(),
        )),
    };
    assert!(client.put_file(put).unwrap());
    assert!(client.missing(&[&sha]).is_empty());
    assert_eq!(std::fs::read(fake.stored(&sha).unwrap()).unwrap(), data);
}

#[test]
fn a_single_upload_checks_its_content_md5_and_unknown_or_unfinished_blobs_are_refused() {
    let fake = FakeModal::start(Options::default());
    let client = Client::new(&fake);
    let data = random_bytes(100_000);
    let created = client.blob_create(&data);
    let Some(pb::blob_create_response::UploadTypesOneof::UploadUrls(list)) =
        created.upload_types_oneof.clone()
    else {
        panic!("below the threshold is one PUT: {created:?}");
    };
    let [url] = &list.items[..] else {
        panic!("one URL per blob id: {list:?}")
    };
    assert_eq!(
        created.upload_type_oneof,
        Some(pb::blob_create_response::UploadTypeOneof::UploadUrl(
            url.clone()
        ))
    );
    assert!(
        url.split('?')
            .next()
            .is_some_and(|p| p.ends_with(&format!("/blobs/{}", created.blob_id))),
        "{url}"
    );

    // Not uploaded yet: MountPutFile cannot use it.
    let put = pb::MountPutFileRequest {
        sha256_hex: sha256_hex(&data),
        data_oneof: Some(pb::mount_put_file_request::DataOneof::DataBlobId(
            created.blob_id.clone(),
        )),
    };
    let refused = client.put_file(put.clone()).unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");

    let b64 = base64::engine::general_purpose::STANDARD;
    let (status, _, body) = client.put(url, &data, Some(&b64.encode(md5(b"other"))));
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("The Content-MD5 you specified did not match what we received."),
        "{body}"
    );
    let (status, etag, body) = client.put(url, &data, Some(&b64.encode(md5(&data))));
    assert_eq!(status, 200, "{body}");
    assert_eq!(etag, format!("\"{}\"", hex(&md5(&data))));
    assert!(client.put_file(put).unwrap());

    let unknown = url
        .split('?')
        .next()
        .unwrap_or_default()
        .replace(&created.blob_id, "bl-unknown");
    let (status, _, _) = client.put(&unknown, &data, None);
    assert_eq!(status, 404);
    let (status, _, _) = client.put(&format!("{unknown}/parts/1"), &data, None);
    assert_eq!(status, 404);
    let put = pb::MountPutFileRequest {
        sha256_hex: sha256_hex(&data),
        data_oneof: Some(pb::mount_put_file_request::DataOneof::DataBlobId(
            "bl-unknown".into(),
        )),
    };
    let refused = client.put_file(put).unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
}

#[test]
fn content_that_does_not_match_its_sha256_is_refused_and_a_mount_needs_stored_content() {
    let fake = FakeModal::start(Options::default());
    let client = Client::new(&fake);
    let app = client.app();
    let declared = sha256_hex(b"what was announced");
    let actual = sha256_hex(b"what was sent");
    let refused = client
        .put_file(pb::MountPutFileRequest {
            sha256_hex: declared.clone(),
            data_oneof: Some(pb::mount_put_file_request::DataOneof::Data(
                b"what was sent".to_vec(),
            )),
        })
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains(&declared) && refused.message().contains(&actual),
        "{refused:?}"
    );
    assert_eq!(
        client.missing(&[&declared, &actual]),
        [declared.clone(), actual.clone()]
    );
    assert!(fake.stored(&declared).is_none());

    let refused = client
        .mount(&app, vec![file("/data/x", b"what was announced", None)])
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains("/data/x"), "{refused:?}");

    assert!(client
        .put_file(pb::MountPutFileRequest {
            sha256_hex: actual.clone(),
            data_oneof: Some(pb::mount_put_file_request::DataOneof::Data(
                b"what was sent".to_vec(),
            )),
        })
        .unwrap());
    let refused = client
        .mount(&app, vec![file("data/x", b"what was sent", None)])
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    let refused = client
        .mount("ap-unknown", vec![file("/data/x", b"what was sent", None)])
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
    let made = client
        .mount(&app, vec![file("/data/x", b"what was sent", None)])
        .unwrap();
    assert!(made.mount_id.starts_with("mo-") && made.mount_id.len() == 25);
    assert!(!made
        .handle_metadata
        .unwrap()
        .content_checksum_sha256_hex
        .is_empty());
    assert_eq!(fake.mounts(), [made.mount_id.as_str()]);
}

#[test]
fn a_sandbox_with_an_unknown_mount_is_refused_and_nothing_is_created() {
    let fake = FakeModal::start(Options::default());
    let client = Client::new(&fake);
    let app = client.app();
    let refused = client
        .sandbox(&app, &["mo-unknown0000000000000000".into()])
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
    assert!(refused.message().contains("mo-unknown"), "{refused:?}");
    assert!(fake.created().is_empty());
    let dirs: Vec<_> = std::fs::read_dir(&fake.shared.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("sb-"))
        .collect();
    assert!(dirs.is_empty(), "{dirs:?}");
}

#[test]
fn a_mounted_file_is_one_hard_link_in_every_sandbox_with_its_mode() {
    let fake = FakeModal::start(Options::default());
    let client = Client::new(&fake);
    let app = client.app();
    let tool = b"#!/bin/sh\necho tool\n";
    let motd = b"hello\n";
    for data in [&tool[..], &motd[..]] {
        let put = pb::MountPutFileRequest {
            sha256_hex: sha256_hex(data),
            data_oneof: Some(pb::mount_put_file_request::DataOneof::Data(data.to_vec())),
        };
        assert!(client.put_file(put).unwrap());
    }
    let first = client
        .mount(
            &app,
            vec![
                file("/root/bin/tool", tool, Some(0o755)),
                file("/etc/motd", motd, None),
            ],
        )
        .unwrap()
        .mount_id;
    // The same content with another mode is another file.
    let second = client
        .mount(&app, vec![file("/opt/tool.txt", tool, Some(0o600))])
        .unwrap()
        .mount_id;
    let mounts = [first.clone(), second];
    let a = client.sandbox(&app, &mounts).unwrap();
    let b = client.sandbox(&app, &mounts).unwrap();
    assert_eq!(fake.definition(&a).unwrap().mount_ids, mounts);
    assert_eq!(
        fake.mount_files(&first).unwrap(),
        [
            file("/root/bin/tool", tool, Some(0o755)),
            file("/etc/motd", motd, None)
        ]
    );

    let meta = |id: &str, path: &str| std::fs::metadata(fake.root(id).join(path)).unwrap();
    let (ta, tb) = (meta(&a, "root/bin/tool"), meta(&b, "root/bin/tool"));
    assert_eq!((ta.dev(), ta.ino()), (tb.dev(), tb.ino()), "one hard link");
    assert_eq!(ta.mode() & 0o7777, 0o755);
    assert!(ta.nlink() >= 3, "the placed file and two sandboxes");
    assert_eq!(
        std::fs::read(fake.root(&a).join("root/bin/tool")).unwrap(),
        tool
    );
    let (ma, mb) = (meta(&a, "etc/motd"), meta(&b, "etc/motd"));
    assert_eq!(ma.ino(), mb.ino());
    assert_eq!(ma.mode() & 0o7777, 0o644, "the default mode");
    let (oa, ob) = (meta(&a, "opt/tool.txt"), meta(&b, "opt/tool.txt"));
    assert_eq!(oa.ino(), ob.ino());
    assert_ne!(oa.ino(), ta.ino(), "another mode, another file");
    assert_eq!(oa.mode() & 0o7777, 0o600);
    assert_eq!(
        std::fs::read(fake.root(&b).join("opt/tool.txt")).unwrap(),
        tool
    );
}
