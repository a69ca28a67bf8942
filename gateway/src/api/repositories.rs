//! `/api/v1/repositories`

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::input::{self, ApiJson, ApiPath, RepositoryInput, RepositoryPatch};
use super::views::{RepositoryView, TagView, WebhookView};
use super::webhooks::{NewWebhook, prepare_webhook};
use super::{ApiError, ErrorBody};
use crate::event::{Timestamp, new_id};
use crate::poll::reference;
use crate::server::App;
use crate::store::{
    self, InitialSync, Reader, RemoteSettings, Repository, RepositoryKind, StoreError,
};

pub const MIN_POLL_INTERVAL: u64 = 10;
pub const DEFAULT_POLL_INTERVAL: u64 = 60;

/// Create a repository, with its webhooks.
#[utoipa::path(post, path = "/api/v1/repositories", tag = "repositories",
    request_body = RepositoryInput,
    responses(
        (status = 201, body = RepositoryView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody),
    ),
    security(("admin_token" = [])))]
pub async fn create(
    State(app): State<Arc<App>>,
    ApiJson(input): ApiJson<RepositoryInput>,
) -> Result<(StatusCode, Json<RepositoryView>), ApiError> {
    let kind = input.kind.unwrap_or(RepositoryKind::Local);
    let now = Timestamp::now();
    let (registry, name, remote) = match kind {
        RepositoryKind::Local => {
            for (field, given) in [
                ("poll_interval_secs", input.poll_interval_secs.is_some()),
                ("initial_sync", input.initial_sync.is_some()),
                ("insecure", input.insecure.is_some()),
                ("credentials", input.credentials.is_some()),
                ("tags", input.tags.is_some()),
                ("exclude_tags", input.exclude_tags.is_some()),
                ("max_tags", input.max_tags.is_some()),
            ] {
                if given {
                    return Err(ApiError::bad_request(format!(
                        "{field} applies to remote repositories only (set \"kind\": \"remote\")"
                    )));
                }
            }
            let name = input.name.trim().to_owned();
            input::validate_repository_name(&name)?;
            let registry = input
                .registry
                .as_deref()
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_owned);
            (registry, name, None)
        }
        RepositoryKind::Remote => {
            let (registry, name) = reference::normalize(&input.name, input.registry.as_deref())
                .map_err(ApiError::bad_request)?;
            input::validate_repository_name(&name)?;
            let settings = remote_settings(
                &app.sealer,
                RemoteSettings {
                    poll_interval_secs: DEFAULT_POLL_INTERVAL,
                    initial_sync: InitialSync::Notify,
                    insecure: false,
                    username: None,
                    password: None,
                    tags: Vec::new(),
                    exclude_tags: Vec::new(),
                    max_tags: None,
                },
                RepositoryPatch {
                    registry: None,
                    poll_interval_secs: input.poll_interval_secs,
                    initial_sync: input.initial_sync,
                    insecure: input.insecure,
                    credentials: input.credentials.map(Some),
                    tags: input.tags,
                    exclude_tags: input.exclude_tags,
                    max_tags: input.max_tags.map(Some),
                },
            )?;
            (Some(registry), name, Some(settings))
        }
    };

    let mut webhooks = Vec::with_capacity(input.webhooks.len());
    let repo_id = new_id("repo");
    for (i, w) in input.webhooks.into_iter().enumerate() {
        let prepared = prepare_webhook(&app, &repo_id, w)
            .await
            .map_err(|e| ApiError {
                message: format!("webhooks[{i}]: {}", e.message),
                ..e
            })?;
        webhooks.push(prepared);
    }

    let repo = Repository {
        id: repo_id,
        name,
        kind,
        registry,
        remote,
        poll: Default::default(),
        created_at: now,
        updated_at: now,
    };
    let stored = repo.clone();
    let to_store: Vec<_> = webhooks
        .iter()
        .map(|w: &NewWebhook| w.webhook.clone())
        .collect();
    app.store
        .write(move |txn| {
            let clash = txn
                .repositories_named(&stored.name)?
                .into_iter()
                .any(|r| r.kind == stored.kind && r.registry == stored.registry);
            if clash {
                return Err(StoreError::Conflict(format!(
                    "a {} repository named {} already exists{}",
                    kind_name(stored.kind),
                    stored.name,
                    stored
                        .registry
                        .as_deref()
                        .map(|r| format!(" on {r}"))
                        .unwrap_or_default()
                )));
            }
            store::repos::put_repository(txn, &stored)?;
            for w in &to_store {
                store::repos::put_webhook(txn, w)?;
            }
            Ok(())
        })
        .await?;
    if repo.kind == RepositoryKind::Remote {
        app.poller.schedule(&repo.id);
    }
    let views = webhooks.iter().map(NewWebhook::view).collect();
    Ok((
        StatusCode::CREATED,
        Json(RepositoryView::new(&repo, 0, Some(views))),
    ))
}

fn kind_name(kind: RepositoryKind) -> &'static str {
    match kind {
        RepositoryKind::Local => "local",
        RepositoryKind::Remote => "remote",
    }
}

/// Applies a patch to remote settings, validating as it goes.
fn remote_settings(
    sealer: &crate::seal::Sealer,
    mut s: RemoteSettings,
    patch: RepositoryPatch,
) -> Result<RemoteSettings, ApiError> {
    if let Some(interval) = patch.poll_interval_secs {
        if interval < MIN_POLL_INTERVAL {
            return Err(ApiError::bad_request(format!(
                "poll_interval_secs must be at least {MIN_POLL_INTERVAL}"
            )));
        }
        s.poll_interval_secs = interval;
    }
    if let Some(sync) = patch.initial_sync {
        s.initial_sync = sync;
    }
    if let Some(insecure) = patch.insecure {
        s.insecure = insecure;
    }
    match patch.credentials {
        Some(Some(c)) => {
            if c.username.trim().is_empty() || c.password.is_empty() {
                return Err(ApiError::bad_request(
                    "credentials need a username and a password",
                ));
            }
            s.username = Some(c.username.trim().to_owned());
            s.password = Some(sealer.seal(&c.password));
        }
        Some(None) => {
            s.username = None;
            s.password = None;
        }
        None => {}
    }
    for (field, list, target) in [
        ("tags", patch.tags, &mut s.tags),
        ("exclude_tags", patch.exclude_tags, &mut s.exclude_tags),
    ] {
        if let Some(list) = list {
            let globs = list.into_vec();
            for g in &globs {
                if g.matches('[').count() != g.matches(']').count() {
                    return Err(ApiError::bad_request(format!(
                        "{field}: `{g}` is not a glob (unbalanced [ ])"
                    )));
                }
            }
            *target = globs;
        }
    }
    if let Some(max) = patch.max_tags {
        if max == Some(0) {
            return Err(ApiError::bad_request(
                "max_tags must be at least 1 (or null for no limit)",
            ));
        }
        s.max_tags = max;
    }
    Ok(s)
}

/// List repositories.
#[utoipa::path(get, path = "/api/v1/repositories", tag = "repositories",
    responses((status = 200, body = Vec<RepositoryView>), (status = 401, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn list(State(app): State<Arc<App>>) -> Result<Json<Vec<RepositoryView>>, ApiError> {
    let txn = app.store.read()?;
    let repos = store::repos::list_repositories(&txn)?;
    let mut out = Vec::with_capacity(repos.len());
    for r in &repos {
        let tags = if r.kind == RepositoryKind::Remote {
            txn.tags_of(&r.id)?.len()
        } else {
            0
        };
        out.push(RepositoryView::new(r, tags, None));
    }
    Ok(Json(out))
}

fn load(app: &App, id: &str) -> Result<(Repository, redb::ReadTransaction), ApiError> {
    let txn = app.store.read()?;
    let repo = txn
        .repository(id)?
        .ok_or_else(|| ApiError::not_found("repository", id))?;
    Ok((repo, txn))
}

/// One repository, with its webhooks.
#[utoipa::path(get, path = "/api/v1/repositories/{id}", tag = "repositories",
    params(("id" = String, Path)),
    responses((status = 200, body = RepositoryView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn get(
    State(app): State<Arc<App>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<RepositoryView>, ApiError> {
    let (repo, txn) = load(&app, &id)?;
    let webhooks = txn
        .webhooks_of(&id)?
        .iter()
        .map(WebhookView::from)
        .collect();
    let tags = txn.tags_of(&id)?.len();
    Ok(Json(RepositoryView::new(&repo, tags, Some(webhooks))))
}

/// Change a repository's settings.
#[utoipa::path(patch, path = "/api/v1/repositories/{id}", tag = "repositories",
    params(("id" = String, Path)), request_body = RepositoryPatch,
    responses((status = 200, body = RepositoryView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn patch(
    State(app): State<Arc<App>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(patch): ApiJson<RepositoryPatch>,
) -> Result<Json<RepositoryView>, ApiError> {
    let (mut repo, _) = load(&app, &id)?;
    match repo.kind {
        RepositoryKind::Local => {
            let remote_only = patch.poll_interval_secs.is_some()
                || patch.initial_sync.is_some()
                || patch.insecure.is_some()
                || patch.credentials.is_some()
                || patch.tags.is_some()
                || patch.exclude_tags.is_some()
                || patch.max_tags.is_some();
            if remote_only {
                return Err(ApiError::bad_request(
                    "only `registry` can be changed on a local repository",
                ));
            }
            if let Some(registry) = patch.registry {
                repo.registry = Some(registry.trim().to_owned()).filter(|r| !r.is_empty());
            }
        }
        RepositoryKind::Remote => {
            if patch.registry.is_some() {
                return Err(ApiError::bad_request(
                    "the registry of a remote repository cannot change; create another repository",
                ));
            }
            let current = repo
                .remote
                .clone()
                .expect("remote repositories have settings");
            repo.remote = Some(remote_settings(&app.sealer, current, patch)?);
        }
    }
    repo.updated_at = Timestamp::now();
    let stored = repo.clone();
    app.store
        .write(move |txn| {
            if txn.repository(&stored.id)?.is_none() {
                return Err(StoreError::not_found("repository", &stored.id));
            }
            // Keep what the poller wrote meanwhile.
            let mut fresh = stored;
            if let Some(current) = txn.repository(&fresh.id)? {
                fresh.poll = current.poll;
            }
            store::repos::put_repository(txn, &fresh)
        })
        .await?;
    if repo.kind == RepositoryKind::Remote {
        app.poller.schedule(&repo.id);
    }
    let txn = app.store.read()?;
    let repo = txn
        .repository(&id)?
        .ok_or_else(|| ApiError::not_found("repository", &id))?;
    let webhooks = txn
        .webhooks_of(&id)?
        .iter()
        .map(WebhookView::from)
        .collect();
    Ok(Json(RepositoryView::new(
        &repo,
        txn.tags_of(&id)?.len(),
        Some(webhooks),
    )))
}

/// Delete a repository and its webhooks (their pending deliveries end). Its
/// events stay in the log.
#[utoipa::path(delete, path = "/api/v1/repositories/{id}", tag = "repositories",
    params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn delete(
    State(app): State<Arc<App>>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let key = id.clone();
    app.store
        .write(move |txn| store::repos::delete_repository(txn, &key))
        .await?;
    app.poller.forget(&id);
    Ok(StatusCode::NO_CONTENT)
}

/// The tags known for a repository and their digests.
#[utoipa::path(get, path = "/api/v1/repositories/{id}/tags", tag = "repositories",
    params(("id" = String, Path)),
    responses((status = 200, body = Vec<TagView>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn tags(
    State(app): State<Arc<App>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Vec<TagView>>, ApiError> {
    let (_, txn) = load(&app, &id)?;
    Ok(Json(
        txn.tags_of(&id)?
            .into_iter()
            .map(|(t, k)| TagView::new(t, k))
            .collect(),
    ))
}

/// Poll a remote repository now.
#[utoipa::path(post, path = "/api/v1/repositories/{id}/poll", tag = "repositories",
    params(("id" = String, Path)),
    responses((status = 202, body = RepositoryView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn poll(
    State(app): State<Arc<App>>,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<RepositoryView>), ApiError> {
    let (repo, txn) = load(&app, &id)?;
    if repo.kind != RepositoryKind::Remote {
        return Err(ApiError::conflict(format!(
            "{} is a local repository: its registry notifies Callisto, there is nothing to poll",
            repo.name
        )));
    }
    app.poller.poll_now(&id);
    Ok((
        StatusCode::ACCEPTED,
        Json(RepositoryView::new(&repo, txn.tags_of(&id)?.len(), None)),
    ))
}
