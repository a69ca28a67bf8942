//! `/api/v1/repositories`

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::App;
use super::input::{self, ApiJson, ApiPath, RepositoryInput, RepositoryPatch};
use super::views::{RepositoryView, TagView, WebhookView};
use super::webhooks::{NewWebhook, prepare_webhook};
use super::{ApiError, ErrorBody};
use crate::event::{Timestamp, new_id};
use crate::poll::reference;
use crate::records::{InitialSync, RemoteSettings, Repository, RepositoryKind};

pub const MIN_POLL_INTERVAL: u64 = 10;
/// A week: a longer interval is a mistake, and would overflow timers.
pub const MAX_POLL_INTERVAL: u64 = 7 * 86_400;
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
    ApiJson(mut input): ApiJson<RepositoryInput>,
) -> Result<(StatusCode, Json<RepositoryView>), ApiError> {
    let webhook_inputs = std::mem::take(&mut input.webhooks);
    let repo = new_repository(&app, input)?;
    let _plugin_stays = app.plugin_users.read().await;
    let mut webhooks = Vec::with_capacity(webhook_inputs.len());
    for (i, w) in webhook_inputs.into_iter().enumerate() {
        let prepared = prepare_webhook(&app, &repo.id, w)
            .await
            .map_err(|e| ApiError {
                message: format!("webhooks[{i}]: {}", e.message),
                ..e
            })?;
        webhooks.push(prepared);
    }
    let stored = webhooks.iter().map(|w| w.webhook.clone()).collect();
    app.store.create_repository(repo.clone(), stored).await?;
    if repo.kind == RepositoryKind::Remote {
        app.poller.schedule(&repo.id);
    }
    let views = webhooks.iter().map(NewWebhook::view).collect();
    Ok((
        StatusCode::CREATED,
        Json(RepositoryView::new(&repo, 0, Some(views))),
    ))
}

/// The repository `input` describes, validated; its webhooks aside.
fn new_repository(app: &App, input: RepositoryInput) -> Result<Repository, ApiError> {
    let kind = input.kind.unwrap_or(RepositoryKind::Local);
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
    let now = Timestamp::now();
    Ok(Repository {
        id: new_id("repo"),
        name,
        kind,
        registry,
        remote,
        poll: Default::default(),
        created_at: now,
        updated_at: now,
    })
}

/// Applies a patch to remote settings, validating as it goes.
fn remote_settings(
    sealer: &crate::seal::Sealer,
    mut s: RemoteSettings,
    patch: RepositoryPatch,
) -> Result<RemoteSettings, ApiError> {
    if let Some(interval) = patch.poll_interval_secs {
        if !(MIN_POLL_INTERVAL..=MAX_POLL_INTERVAL).contains(&interval) {
            return Err(ApiError::bad_request(format!(
                "poll_interval_secs must be between {MIN_POLL_INTERVAL} and {MAX_POLL_INTERVAL} (a week)"
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
    let repos = app.store.repositories().await?;
    let mut out = Vec::with_capacity(repos.len());
    for r in &repos {
        let tags = if r.kind == RepositoryKind::Remote {
            app.store.tags(&r.id).await?.len()
        } else {
            0
        };
        out.push(RepositoryView::new(r, tags, None));
    }
    Ok(Json(out))
}

async fn load(app: &App, id: &str) -> Result<Repository, ApiError> {
    app.store
        .repository(id)
        .await?
        .ok_or_else(|| ApiError::not_found("repository", id))
}

/// A repository with its webhooks and how many tags it knows.
async fn full_view(app: &App, repo: &Repository) -> Result<RepositoryView, ApiError> {
    let webhooks = app
        .store
        .webhooks_of(&repo.id)
        .await?
        .iter()
        .map(WebhookView::from)
        .collect();
    let tags = app.store.tags(&repo.id).await?.len();
    Ok(RepositoryView::new(repo, tags, Some(webhooks)))
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
    let repo = load(&app, &id).await?;
    Ok(Json(full_view(&app, &repo).await?))
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
    let mut repo = load(&app, &id).await?;
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
    let repo = app.store.update_repository(repo).await?;
    if repo.kind == RepositoryKind::Remote {
        app.poller.schedule(&repo.id);
    }
    Ok(Json(full_view(&app, &repo).await?))
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
    let webhooks = app.store.webhooks_of(&id).await?;
    app.store.delete_repository(&id).await?;
    app.poller.forget(&id);
    for webhook in webhooks {
        app.filtered.forget(&webhook.id);
    }
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
    load(&app, &id).await?;
    Ok(Json(
        app.store
            .tags(&id)
            .await?
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
    let repo = load(&app, &id).await?;
    if repo.kind != RepositoryKind::Remote {
        return Err(ApiError::conflict(format!(
            "{} is a local repository: its registry notifies Callisto, there is nothing to poll",
            repo.name
        )));
    }
    app.poller.poll_now(&id);
    Ok((
        StatusCode::ACCEPTED,
        Json(RepositoryView::new(
            &repo,
            app.store.tags(&id).await?.len(),
            None,
        )),
    ))
}
