//! The fake's mounts: which content the store lacks
//! (`MountBatchedCheckExistence`), content put into it (`MountPutFile`,
//! inline or from an uploaded blob), mounts made of stored files
//! (`MountGetOrCreate`) and their placement into a new sandbox's directory
//! (`SandboxCreateV2`'s `definition.mount_ids`). The bytes live in the
//! content store of `blobs.rs`; this file keeps only the mounts' file lists.

use std::path::Path;
use std::time::SystemTime;

use agentform::sandbox::modal::proto::client as pb;
use sha2::{Digest, Sha256};
use tonic::Status;

use super::blobs::{hex, valid_sha256};
use super::{host_path, random_id, Inner, Shared};

/// A file's mode when its mount does not say.
const DEFAULT_MODE: u32 = 0o644;

fn now() -> prost_types::Timestamp {
    SystemTime::now().into()
}

pub fn check_existence(
    shared: &Shared,
    request: pb::MountBatchedCheckExistenceRequest,
) -> pb::MountBatchedCheckExistenceResponse {
    pb::MountBatchedCheckExistenceResponse {
        missing_sha256_hex_hashes: request
            .sha256_hex_hashes
            .into_iter()
            .filter(|h| !shared.blobs.has(h))
            .collect(),
        checked_at: Some(now()),
    }
}

pub fn put_file(
    shared: &Shared,
    request: pb::MountPutFileRequest,
) -> Result<pb::MountPutFileResponse, Status> {
    use pb::mount_put_file_request::DataOneof;
    match &request.data_oneof {
        Some(DataOneof::Data(data)) => shared.blobs.put_bytes(&request.sha256_hex, data)?,
        Some(DataOneof::DataBlobId(id)) => shared.blobs.put_blob(&request.sha256_hex, id)?,
        None => return Err(Status::invalid_argument("neither data nor data_blob_id")),
    }
    Ok(pb::MountPutFileResponse {
        exists: true,
        checked_at: Some(now()),
    })
}

pub fn get_or_create(
    shared: &Shared,
    request: pb::MountGetOrCreateRequest,
) -> Result<pb::MountGetOrCreateResponse, Status> {
    use pb::ObjectCreationType as Kind;
    let mut inner = shared.lock();
    match Kind::try_from(request.object_creation_type) {
        Ok(Kind::AnonymousOwnedByApp) => {
            if !inner.apps.values().any(|a| *a == request.app_id) {
                return Err(Status::not_found(format!(
                    "App {} not found",
                    request.app_id
                )));
            }
        }
        Ok(Kind::Ephemeral) => {}
        _ => {
            return Err(Status::unimplemented(format!(
                "the fake makes anonymous and ephemeral mounts only, not object_creation_type {}",
                request.object_creation_type
            )))
        }
    }
    let mut listing = Vec::new();
    for file in &request.files {
        if host_path(Path::new("/"), &file.filename).is_none_or(|p| p == Path::new("/")) {
            return Err(Status::invalid_argument(format!(
                "mount file {:?} is not an absolute path to a file",
                file.filename
            )));
        }
        if !valid_sha256(&file.sha256_hex) || !shared.blobs.has(&file.sha256_hex) {
            return Err(Status::failed_precondition(format!(
                "mount file {} has content {} that was never put (MountPutFile)",
                file.filename, file.sha256_hex
            )));
        }
        listing.push(format!(
            "{}\0{}\0{:o}\n",
            file.filename,
            file.sha256_hex,
            file.mode.unwrap_or(DEFAULT_MODE)
        ));
    }
    listing.sort();
    let checksum = hex(&Sha256::digest(listing.concat().as_bytes()));
    let id = random_id("mo-", 22);
    inner.mounts.insert(id.clone(), request.files);
    Ok(pb::MountGetOrCreateResponse {
        mount_id: id,
        handle_metadata: Some(pb::MountHandleMetadata {
            content_checksum_sha256_hex: checksum,
        }),
    })
}

/// The files of these mounts, in order; `NOT_FOUND` naming the first
/// unknown mount.
pub fn files_of(inner: &Inner, mount_ids: &[String]) -> Result<Vec<pb::MountFile>, Status> {
    let mut files = Vec::new();
    for id in mount_ids {
        match inner.mounts.get(id) {
            Some(f) => files.extend(f.iter().cloned()),
            None => return Err(Status::not_found(format!("Mount {id} not found"))),
        }
    }
    Ok(files)
}

/// Places `files` under a sandbox's `root`, each a hard link of its stored
/// content with its mode; a later mount's file wins over an earlier one's.
pub fn place(shared: &Shared, root: &Path, files: &[pb::MountFile]) -> Result<(), Status> {
    for file in files {
        let target = host_path(root, &file.filename).ok_or_else(|| {
            Status::invalid_argument(format!("mount file {:?} is not absolute", file.filename))
        })?;
        let mode = file.mode.unwrap_or(DEFAULT_MODE) & 0o7777;
        shared
            .blobs
            .place(&file.sha256_hex, mode, &target)
            .map_err(|e| Status::internal(format!("placing {}: {e}", file.filename)))?;
    }
    Ok(())
}
