//! `/api/v1/store`: the store file as a whole, for operators.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::Response;

use super::{ApiError, App};
use crate::seal::KeySource;

/// The header saying where the gateway's sealing key is, which a backup
/// does not contain: the key file's absolute path on the gateway's machine,
/// or `configured` when it is set in the configuration.
pub const SEALING_KEY_HEADER: &str = "callisto-sealing-key";

/// A consistent copy of the store: one snapshot, copied table by table into
/// a new redb file, streamed back. The gateway keeps serving meanwhile;
/// what is committed after the snapshot is not in it. The sealing key is
/// not in it: the `callisto-sealing-key` header says where the key is.
#[utoipa::path(get, path = "/api/v1/store/backup", tag = "store",
    responses(
        (status = 200, description = "The store as a redb file", content_type = "application/octet-stream",
            body = Vec<u8>,
            headers(("callisto-sealing-key" = String,
                description = "Where the sealing key is (not in the backup): the key file's path on the gateway's machine, or `configured`"))),
        (status = 401, body = super::ErrorBody),
        (status = 500, body = super::ErrorBody),
        (status = 503, body = super::ErrorBody)),
    security(("admin_token" = [])))]
pub async fn backup(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    // Beside the store, so that it is on the same disk and never on a
    // small tmpfs; removed as soon as the copy is open.
    let dir = tempfile::Builder::new()
        .prefix(".backup-")
        .tempdir_in(&app.config.data_dir)
        .map_err(|e| ApiError::internal(format!("a directory for the backup: {e}")))?;
    let path = dir.path().join("callisto.redb");
    let copy = app.store.backup_to(&path).await?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiError::internal(format!("reading the backup back: {e}")))?;
    // The open file stays readable once unlinked: nothing is left behind
    // even if the client goes away mid-download.
    drop(dir);

    let key = match KeySource::of(
        &app.config.seal_key_path(),
        app.config.secret_key.as_deref(),
    ) {
        KeySource::Configured => "configured".to_owned(),
        KeySource::File(path) => std::path::absolute(&path)
            .unwrap_or(path)
            .display()
            .to_string(),
    };
    let stamp = crate::event::Timestamp::now()
        .to_rfc3339()
        .replace([':', '-'], "");
    let mut response = Response::new(Body::from_stream(tokio_util::io::ReaderStream::new(file)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(copy.bytes));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"callisto-{stamp}.redb\""))
    {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&key) {
        headers.insert(SEALING_KEY_HEADER, v);
    }
    Ok(response)
}
