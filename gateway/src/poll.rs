//! Remote repositories: Callisto polls registries it does not control and
//! turns what changed into the same events as a registry's notifications.
//!
//! Each remote repository is polled every `poll_interval_secs` (with a
//! little jitter), a few at a time. A poll lists the tags, asks the digest
//! of each selected one, and compares with the known tags. The events and
//! the known tags are written in one transaction: a poll that dies half-way
//! wrote nothing and is simply done again, so no change is lost or doubled.
//! Errors are recorded on the repository and back off exponentially.

pub mod diff;
pub mod reference;
pub mod registry;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::config::PollConfig;
use crate::event::Timestamp;
use crate::metrics::Metrics;
use crate::net::Policy;
use crate::operational::{self, OperationalEvent};
use crate::records::{RemoteSettings, Repository, RepositoryKind};
use crate::store::{PollClaim, Store};
use registry::{Budget, PollError, RegistryClient};

/// What the API asks of the poller.
#[derive(Debug)]
pub enum Command {
    /// A remote repository was created or changed: (re)schedule it.
    Schedule(String),
    /// Poll it now.
    Now(String),
    /// It was deleted.
    Forget(String),
}

/// A handle to the poller. Cheap to clone.
#[derive(Clone)]
pub struct Poller {
    inbox: mpsc::UnboundedSender<Command>,
}

impl Poller {
    pub fn schedule(&self, repository_id: &str) {
        let _ = self.inbox.send(Command::Schedule(repository_id.to_owned()));
    }

    pub fn poll_now(&self, repository_id: &str) {
        let _ = self.inbox.send(Command::Now(repository_id.to_owned()));
    }

    pub fn forget(&self, repository_id: &str) {
        let _ = self.inbox.send(Command::Forget(repository_id.to_owned()));
    }
}

pub struct Context {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub policy: Arc<Policy>,
    /// The guarded client for registries (`net::client::build_for_registries`).
    pub http: reqwest::Client,
    pub config: PollConfig,
    pub sealer: crate::seal::Sealer,
}

/// What one poll did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub events: usize,
    pub tags: usize,
}

pub fn spawn(
    ctx: Context,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> (Poller, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(run(Arc::new(ctx), rx, shutdown));
    (Poller { inbox: tx }, task)
}

async fn run(
    ctx: Arc<Context>,
    mut inbox: mpsc::UnboundedReceiver<Command>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let budget = Budget::new(ctx.config.requests_per_minute);
    // Repository id → when it is due.
    let mut due: HashMap<String, Instant> = HashMap::new();
    match ctx.store.repositories().await {
        Ok(repos) => {
            for r in repos.iter().filter(|r| r.kind == RepositoryKind::Remote) {
                // After a restart, respect the schedule the last run left.
                let wait = r
                    .poll
                    .next_poll_at
                    .map(|at| {
                        Duration::from_millis(
                            (at.unix_millis() - Timestamp::now().unix_millis()).max(0) as u64,
                        )
                    })
                    .unwrap_or_default();
                let interval =
                    Duration::from_secs(r.remote.as_ref().map_or(60, |s| s.poll_interval_secs));
                due.insert(
                    r.id.clone(),
                    Instant::now() + wait.min(interval).min(MAX_WAIT),
                );
            }
        }
        Err(e) => tracing::error!("cannot list remote repositories: {e}"),
    }
    let running_now = Arc::new(Semaphore::new(ctx.config.concurrency.max(1)));
    let mut polls: JoinSet<(String, Instant)> = JoinSet::new();
    let mut in_progress: HashSet<String> = HashSet::new();
    // Polls asked for (`Now`): polled even if the next is not due yet.
    let mut asked: HashSet<String> = HashSet::new();
    tokio::pin!(shutdown);

    loop {
        let now = Instant::now();
        let ready: Vec<String> = due
            .iter()
            .filter(|(id, at)| **at <= now && !in_progress.contains(*id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ready {
            let Ok(permit) = running_now.clone().try_acquire_owned() else {
                break;
            };
            due.remove(&id);
            in_progress.insert(id.clone());
            let now = asked.remove(&id);
            let (ctx, budget) = (ctx.clone(), budget.clone());
            polls.spawn(async move {
                let next = poll_and_record(&ctx, &budget, &id, now).await;
                drop(permit);
                (id, next)
            });
        }
        let sleep = due
            .iter()
            .filter(|(id, _)| !in_progress.contains(*id))
            .map(|(_, at)| at.saturating_duration_since(Instant::now()))
            .min()
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(sleep) => {}
            Some(done) = polls.join_next(), if !polls.is_empty() => {
                if let Ok((id, next)) = done {
                    in_progress.remove(&id);
                    // A repository deleted meanwhile is not scheduled again.
                    if ctx.store.repository(&id).await.ok().flatten().is_some() {
                        due.entry(id).or_insert(next);
                    }
                }
            }
            command = inbox.recv() => match command {
                Some(Command::Schedule(id)) => {
                    due.insert(id, Instant::now());
                }
                Some(Command::Now(id)) => {
                    asked.insert(id.clone());
                    due.insert(id, Instant::now());
                }
                Some(Command::Forget(id)) => {
                    asked.remove(&id);
                    due.remove(&id);
                }
                None => break,
            },
        }
    }
    // Polls in flight are abandoned: they wrote nothing yet, and run again
    // after the restart.
    polls.abort_all();
}

/// How long a claim on a poll lasts. The polling gateway renews it every
/// [`POLL_LEASE_RENEWAL`] while the poll runs, so only a gateway that died
/// mid-poll loses it to another, within this time. (Were a renewal to fail,
/// the repository is merely polled twice: each poll's events are written
/// against the known tags in one transaction, so none is doubled.)
const POLL_LEASE: Duration = Duration::from_secs(45);
const POLL_LEASE_RENEWAL: Duration = Duration::from_secs(15);

/// Polls a repository (`now`: asked for, even if not due yet), records the
/// outcome, and says when to poll it next. Of several gateways on one
/// database, one at a time polls it; the others try again when it is due.
async fn poll_and_record(ctx: &Context, budget: &Budget, id: &str, now: bool) -> Instant {
    let started = Instant::now();
    let repo = match ctx.store.repository(id).await {
        Ok(Some(repo)) if repo.kind == RepositoryKind::Remote => repo,
        Ok(_) => return Instant::now() + Duration::from_secs(86_400),
        Err(e) => {
            tracing::error!(repository = id, "cannot load: {e}");
            return Instant::now() + Duration::from_secs(30);
        }
    };
    match ctx.store.claim_poll(id, POLL_LEASE, now).await {
        Ok(PollClaim::Claimed) => {}
        Ok(PollClaim::NotYet { until }) => {
            let wait = (until.unix_millis() - Timestamp::now().unix_millis()).max(100) as u64;
            return Instant::now() + Duration::from_millis(wait).min(MAX_WAIT);
        }
        Ok(PollClaim::Gone) => return Instant::now() + Duration::from_secs(86_400),
        Err(e) => {
            tracing::error!(repository = id, "cannot claim a poll: {e}");
            return Instant::now() + Duration::from_secs(30);
        }
    }
    let settings = repo
        .remote
        .clone()
        .expect("remote repositories have settings");
    let result = {
        let renew = async {
            loop {
                tokio::time::sleep(POLL_LEASE_RENEWAL).await;
                if let Err(e) = ctx.store.renew_poll_lease(id, POLL_LEASE).await {
                    tracing::warn!(repository = id, "cannot renew a poll lease: {e}");
                }
            }
        };
        tokio::select! {
            result = poll(ctx, budget, &repo) => result,
            never = renew => never,
        }
    };
    let elapsed = started.elapsed();
    let (next_in, error) = match &result {
        Ok(_) => (
            jittered(
                Duration::from_secs(settings.poll_interval_secs),
                ctx.config.jitter,
            ),
            None,
        ),
        Err(e) => {
            let backoff = backoff(&ctx.config, &settings, repo.poll.consecutive_errors + 1, e);
            (backoff, Some(e.to_string()))
        }
    };
    let outcome = match &result {
        Ok(_) => "ok",
        Err(_) => "error",
    };
    Metrics::count(&ctx.metrics.poll_cycles, "result", outcome);
    match &result {
        Ok(o) => tracing::debug!(
            repository = repo.name,
            events = o.events,
            tags = o.tags,
            ms = elapsed.as_millis() as u64,
            "polled"
        ),
        Err(e) => {
            ctx.metrics.poll_errors.inc();
            tracing::warn!(
                repository = repo.name,
                registry = repo.registry.as_deref().unwrap_or(""),
                "poll failed: {e}"
            );
        }
    }
    if let Some(error) = &error
        && repo.poll.consecutive_errors + 1 == POLL_FAILING_AFTER
    {
        let mut event = OperationalEvent::new(
            operational::Kind::PollFailing,
            format!("{POLL_FAILING_AFTER} polls in a row failed; the last: {error}"),
        );
        event.repository_id = Some(repo.id.clone());
        operational::spawn_emit(&ctx.store, event);
    }
    if let Some(error) = error {
        // A successful poll recorded its status with its events.
        let next_at = Timestamp::from_unix_millis(
            Timestamp::now().unix_millis() + next_in.as_millis() as i64,
        );
        let recorded = ctx
            .store
            .record_poll_failure(id, error, elapsed.as_millis() as u64, next_at)
            .await;
        if let Err(e) = recorded {
            tracing::error!(repository = repo.name, "cannot record a failed poll: {e}");
        }
    }
    Instant::now() + next_in
}

/// Failed polls in a row that make a `poll.failing` operational event (once
/// per run of failures).
const POLL_FAILING_AFTER: u32 = 3;

/// Exponential backoff after `errors` failures in a row, from the poll
/// interval up to the configured ceiling; a registry that asked to slow down
/// waits at least a minute.
fn backoff(
    config: &PollConfig,
    settings: &RemoteSettings,
    errors: u32,
    error: &PollError,
) -> Duration {
    let base = Duration::from_secs(settings.poll_interval_secs.clamp(1, 60));
    let exp = base.saturating_mul(1u32 << errors.saturating_sub(1).min(16));
    let floor = if matches!(error, PollError::RateLimited) {
        Duration::from_secs(60)
    } else {
        Duration::ZERO
    };
    jittered(
        exp.max(floor)
            .min(Duration::from_secs(config.max_backoff_secs)),
        config.jitter,
    )
}

/// The longest wait the poller schedules: what a setting or a backoff asks
/// beyond it is clamped, so that no arithmetic on instants can overflow.
const MAX_WAIT: Duration = Duration::from_secs(30 * 86_400);

fn jittered(d: Duration, jitter: f64) -> Duration {
    d.min(MAX_WAIT)
        .mul_f64((1.0 + jitter * (fastrand::f64() * 2.0 - 1.0)).max(0.0))
}

/// The digest `tag` of `repository` points to now, as the registry at
/// `registry_url` (`https://host[:port]`) answers a manifest `HEAD`; `None`
/// when it has no such tag. How a webhook that is neither signed nor
/// carries a digest (Docker Hub, Quay) is confirmed before it is believed.
pub async fn confirm_tag(
    manners: registry::Manners,
    registry_url: &str,
    repository: &str,
    tag: &str,
) -> Result<Option<String>, PollError> {
    let url = url::Url::parse(registry_url)
        .map_err(|e| PollError::Registry(format!("{registry_url} is not a URL: {e}")))?;
    let host = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        (None, _) => return Err(PollError::Registry(format!("{registry_url} has no host"))),
    };
    let settings = RemoteSettings {
        poll_interval_secs: 60,
        initial_sync: Default::default(),
        insecure: url.scheme() == "http",
        username: None,
        password: None,
        tags: Vec::new(),
        exclude_tags: Vec::new(),
        max_tags: None,
    };
    RegistryClient::new(&host, repository, &settings, None, manners)
        .digest(tag)
        .await
}

/// One poll: list, select, ask digests, and record what changed.
pub async fn poll(ctx: &Context, budget: &Budget, repo: &Repository) -> Result<Outcome, PollError> {
    let started = Instant::now();
    let settings = repo
        .remote
        .as_ref()
        .expect("remote repositories have settings");
    let registry = repo
        .registry
        .clone()
        .unwrap_or_else(|| reference::DOCKER_HUB.to_owned());
    check_address(&ctx.policy, &registry).await?;
    let password = settings
        .password
        .as_ref()
        .map(|p| ctx.sealer.open(p))
        .transpose()
        .map_err(|e| PollError::Refused(format!("registry password: {e}")))?;
    let client = RegistryClient::new(
        &registry,
        &repo.name,
        settings,
        password.as_deref(),
        registry::Manners {
            http: ctx.http.clone(),
            policy: ctx.policy.clone(),
            budget: budget.clone(),
            metrics: ctx.metrics.clone(),
            page_size: ctx.config.page_size,
        },
    );
    let listed = client.tags().await?;
    let selected = diff::select(&listed, settings);

    // Digests, a few at a time.
    let client = Arc::new(client);
    let limit = Arc::new(Semaphore::new(ctx.config.head_concurrency.max(1)));
    let mut heads = JoinSet::new();
    for tag in selected {
        let (client, limit) = (client.clone(), limit.clone());
        heads.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let digest = client.digest(&tag).await;
            (tag, digest)
        });
    }
    let mut observed = BTreeMap::new();
    let mut vanished = HashSet::new();
    while let Some(joined) = heads.join_next().await {
        let Ok((tag, digest)) = joined else { continue };
        match digest? {
            Some(d) => {
                observed.insert(tag, d);
            }
            // Deleted between the list and the HEAD: as if not listed.
            None => {
                vanished.insert(tag);
            }
        }
    }
    let listed: HashSet<String> = listed
        .into_iter()
        .filter(|t| !vanished.contains(t))
        .collect();
    let tags = observed.len();
    let events = ctx
        .store
        .apply_poll(
            &repo.id,
            listed,
            observed,
            started.elapsed().as_millis() as u64,
        )
        .await
        .map_err(|e| PollError::Registry(format!("recording the poll: {e}")))?;
    if events > 0 {
        ctx.metrics
            .events
            .get_or_create(&vec![("source", "remote".to_owned())])
            .inc_by(events as u64);
    }
    Ok(Outcome { events, tags })
}

/// Refuses a registry on non-public addresses only, early and in words
/// that name the setting. The guard itself is the client's resolver, which
/// every connection (token service and redirects included) goes through.
async fn check_address(policy: &Policy, registry: &str) -> Result<(), PollError> {
    let host_port = if registry.contains(':') {
        registry.to_owned()
    } else {
        format!("{registry}:443")
    };
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host(host_port)
        .await
        .map_err(|e| PollError::Unreachable(format!("{registry}: {e}")))?
        .collect();
    if addrs.iter().any(|a| policy.permits(a.ip())) {
        Ok(())
    } else {
        Err(PollError::Refused(format!(
            "refused to poll {registry}: it resolves to non-public addresses only (set allow_private_targets or allowed_networks to permit it)"
        )))
    }
}
