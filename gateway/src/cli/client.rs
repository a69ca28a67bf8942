//! The admin API from the command line: `callisto repo|webhook|events|
//! deliveries|redeliver`. Readable tables by default, the API's JSON with
//! `--json`. Errors say what to do when that is not obvious.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::api::events::EventQuery;
use crate::api::input::{Credentials, RepositoryInput, StringList, WebhookInput, WebhookPatch};
use crate::api::views::{BodyView, RepositoryView};
use crate::api::webhooks::{DeliveryQuery, RotateInput, TestResult};
use crate::client::Client;
use crate::records::{DeliveryOrder, DeliveryState, InitialSync, RepositoryKind};

/// How to reach the gateway.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The gateway's base URL.
    #[arg(
        long,
        global = true,
        env = "CALLISTO_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// The admin token [default: $CALLISTO_ADMIN_TOKEN, else the gateway's
    /// generated `<data dir>/admin.token`].
    #[arg(
        long,
        global = true,
        env = "CALLISTO_ADMIN_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Where to find a generated admin token when none is given.
    #[arg(long, global = true, env = "CALLISTO_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// Add a local repository, or with --remote one Callisto polls.
    Add {
        /// `demo/app`; for remote ones also `alpine`, `ghcr.io/owner/image`.
        name: String,
        /// Poll this repository instead of waiting for its registry's
        /// notifications.
        #[arg(long)]
        remote: bool,
        /// Local: only notifications reported by this registry host match
        /// (when one gateway serves several registries). Remote: the
        /// registry to poll [default: from the name, else Docker Hub].
        #[arg(long)]
        registry: Option<String>,
        /// Seconds between polls (remote).
        #[arg(long)]
        poll_interval: Option<u64>,
        /// Stay silent on the first sync (remote).
        #[arg(long)]
        silent: bool,
        /// Plain HTTP (remote).
        #[arg(long)]
        insecure: bool,
        /// Registry user (remote); the password is read from
        /// $CALLISTO_REGISTRY_PASSWORD.
        #[arg(long)]
        username: Option<String>,
        /// Tag globs to poll (remote), comma-separated.
        #[arg(long)]
        tags: Option<String>,
    },
    /// List repositories.
    List,
    /// Show a repository and its webhooks.
    Show {
        /// The repository's id or name (`demo/app`).
        repository: String,
    },
    /// Delete a repository and its webhooks (its events stay).
    Rm {
        /// The repository's id or name.
        repository: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Add a webhook to a repository.
    Add {
        /// The repository's id or name (`demo/app`).
        repository: String,
        /// Where to send the webhook (http or https).
        #[arg(value_name = "URL")]
        target: String,
        /// A secret, or `generate` for a new one (shown once).
        #[arg(long)]
        secret: Option<String>,
        /// The plugin that filters and formats its events (`callisto
        /// plugin list` shows them).
        #[arg(long, default_value = "default")]
        plugin: String,
        /// Plugin configuration, `key=value`, repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
        /// A header sent with every attempt, `Name: value`, repeatable.
        #[arg(long = "header", value_name = "NAME: VALUE")]
        headers: Vec<String>,
        /// Attempts per second at most, retries included.
        #[arg(long, value_name = "PER_SEC")]
        rate_limit: Option<u32>,
        /// `parallel` (default) or `fifo` (one at a time, oldest first).
        #[arg(long, value_parser = parse_order)]
        ordering: Option<DeliveryOrder>,
        /// Gather a burst of events for this many seconds (1-3600) into
        /// one delivery of the newest.
        #[arg(long, value_name = "SECS")]
        coalesce: Option<u32>,
        /// A PEM client certificate (chain) to present to the receiver
        /// (mTLS); needs --client-key.
        #[arg(long, value_name = "FILE", requires = "client_key")]
        client_cert: Option<PathBuf>,
        /// The PEM private key of --client-cert.
        #[arg(long, value_name = "FILE", requires = "client_cert")]
        client_key: Option<PathBuf>,
    },
    /// Change a webhook: only what is given changes.
    Set(WebhookSetArgs),
    /// Enable a webhook (the gateway may have disabled it): its pending
    /// deliveries resume, and it says what failed while it was failing.
    Enable {
        /// The webhook's id.
        id: String,
        /// Also send again what failed or died since it began failing.
        #[arg(long)]
        redeliver: bool,
    },
    /// Rotate the webhook's secret: attempts carry the old secret's
    /// signature too during the grace period.
    RotateSecret {
        /// The webhook's id.
        id: String,
        /// The new secret [default: a generated one, shown once].
        #[arg(long)]
        secret: Option<String>,
        /// How long the old secret keeps signing: `90m`, `24h`, `7d`, or
        /// seconds; `0` for none.
        #[arg(long, default_value = "24h")]
        grace: String,
    },
    /// Send again every failed or dead delivery made since a time.
    Retry {
        /// The webhook's id.
        id: String,
        /// An RFC 3339 time (`2026-11-29T08:00:00Z`) or an age (`90m`,
        /// `24h`, `7d`).
        #[arg(long)]
        since: String,
        /// Only count them.
        #[arg(long)]
        dry_run: bool,
    },
    /// List a repository's webhooks.
    List {
        /// The repository's id or name (`demo/app`).
        repository: String,
    },
    /// Send a test event now: prints `Success (200)` or `Error ...`.
    Test {
        /// The webhook's id (`callisto webhook list REPOSITORY` shows them).
        id: String,
        /// Show the request sent and the response.
        #[arg(long)]
        details: bool,
    },
    /// The events the webhook's filter declined lately, and which rule
    /// declined each (kept by the gateway since it started).
    Filtered {
        /// The webhook's id.
        id: String,
    },
    /// Delete a webhook (its pending deliveries end).
    Rm {
        /// The webhook's id.
        id: String,
    },
}

/// `callisto webhook set`.
#[derive(Debug, Args)]
pub struct WebhookSetArgs {
    /// The webhook's id.
    id: String,
    /// A new URL to send to (`--url` is the gateway's).
    #[arg(long, value_name = "URL")]
    target: Option<String>,
    /// Enable it (its pending deliveries resume).
    #[arg(long, conflicts_with = "disable")]
    enable: bool,
    /// Disable it (its deliveries wait).
    #[arg(long)]
    disable: bool,
    /// Set a header sent with every attempt, `Name: value`, repeatable.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Stop sending a header, by name, repeatable.
    #[arg(long = "remove-header", value_name = "NAME")]
    remove_headers: Vec<String>,
    /// Stop sending every custom header.
    #[arg(long, conflicts_with_all = ["headers", "remove_headers"])]
    clear_headers: bool,
    /// Attempts per second at most, retries included.
    #[arg(long, value_name = "PER_SEC")]
    rate_limit: Option<u32>,
    /// Remove the rate limit.
    #[arg(long, conflicts_with = "rate_limit")]
    no_rate_limit: bool,
    /// `parallel` or `fifo` (one at a time, oldest first).
    #[arg(long, value_parser = parse_order)]
    ordering: Option<DeliveryOrder>,
    /// Days its finished deliveries are kept, instead of the gateway's.
    #[arg(long, value_name = "DAYS")]
    retention_days: Option<u32>,
    /// Gather a burst of events for this many seconds (1-3600) into one
    /// delivery of the newest.
    #[arg(long, value_name = "SECS")]
    coalesce: Option<u32>,
    /// Send every event at once again.
    #[arg(long, conflicts_with = "coalesce")]
    no_coalesce: bool,
    /// Keep its deliveries as long as the gateway's retention says.
    #[arg(long, conflicts_with = "retention_days")]
    default_retention: bool,
    /// Also send it Callisto's operational events (`webhook.disabled`,
    /// `delivery.dead`, `poll.failing`, `plugin.failing`).
    #[arg(long)]
    operational_events: bool,
    /// Stop sending it operational events.
    #[arg(long, conflicts_with = "operational_events")]
    no_operational_events: bool,
    /// A PEM client certificate (chain) to present (mTLS); needs
    /// --client-key.
    #[arg(long, value_name = "FILE", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// The PEM private key of --client-cert.
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Present no client certificate any more.
    #[arg(long, conflicts_with = "client_cert")]
    no_client_cert: bool,
}

/// Reads `--client-cert` and `--client-key`.
fn read_identity(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> anyhow::Result<Option<crate::api::input::ClientCertificateInput>> {
    let (Some(cert), Some(key)) = (cert, key) else {
        return Ok(None);
    };
    let read = |path: &PathBuf| {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    };
    Ok(Some(crate::api::input::ClientCertificateInput {
        certificate: read(&cert)?,
        private_key: read(&key)?,
    }))
}

fn parse_order(s: &str) -> Result<DeliveryOrder, String> {
    match s {
        "parallel" => Ok(DeliveryOrder::Parallel),
        "fifo" => Ok(DeliveryOrder::Fifo),
        other => Err(format!("`{other}` is not `parallel` or `fifo`")),
    }
}

/// `--since`: an RFC 3339 time as it is, or an age (`90m`, `24h`, `7d`)
/// turned into one.
fn parse_since(since: &str) -> anyhow::Result<String> {
    let units = [('s', 1i64), ('m', 60), ('h', 3600), ('d', 86_400)];
    if let Some((_, secs)) = units.iter().find(|(u, _)| since.ends_with(*u))
        && let Ok(n) = since[..since.len() - 1].parse::<i64>()
    {
        let at = crate::event::Timestamp::from_unix_millis(
            crate::event::Timestamp::now().unix_millis() - n.saturating_mul(secs * 1000),
        );
        return Ok(at.to_rfc3339());
    }
    if crate::event::Timestamp::parse_rfc3339(since).is_err() {
        anyhow::bail!(
            "--since `{since}` is neither an RFC 3339 time (2026-11-29T08:00:00Z) nor an age (90m, 24h, 7d)"
        );
    }
    Ok(since.to_owned())
}

/// A duration: `90m`, `24h`, `7d`, or seconds.
fn parse_secs(text: &str) -> anyhow::Result<u64> {
    let units = [('s', 1u64), ('m', 60), ('h', 3600), ('d', 86_400)];
    let (digits, unit) = match units.iter().find(|(u, _)| text.ends_with(*u)) {
        Some((_, secs)) => (&text[..text.len() - 1], *secs),
        None => (text, 1),
    };
    digits
        .parse::<u64>()
        .map(|n| n.saturating_mul(unit))
        .map_err(|_| anyhow::anyhow!("`{text}` is not a duration (90m, 24h, 7d, or seconds)"))
}

/// Parses `--header "Name: value"`.
fn parse_headers(headers: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    headers
        .iter()
        .map(|h| match h.split_once(':') {
            Some((name, value)) if !name.trim().is_empty() => {
                Ok((name.trim().to_owned(), value.trim().to_owned()))
            }
            _ => anyhow::bail!(
                "header `{h}` is not `Name: value`: write it as `--header 'X-Team: core'`"
            ),
        })
        .collect()
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only this repository's events (its id or name).
    #[arg(long)]
    repository: Option<String>,
    /// `image.pushed` or `image.deleted`.
    #[arg(long = "type")]
    kind: Option<String>,
    /// How many to show, newest first (at most 500).
    #[arg(long, default_value_t = 20)]
    limit: usize,
}

#[derive(Debug, Args)]
pub struct DeliveriesArgs {
    /// The webhook's id.
    webhook: String,
    /// `pending`, `succeeded`, `failed` or `dead`.
    #[arg(long)]
    state: Option<String>,
    /// How many to show, newest first (at most 500).
    #[arg(long, default_value_t = 20)]
    limit: usize,
}

impl Connection {
    /// A connection to `url` with `token`, else the generated token in
    /// `$CALLISTO_DATA_DIR` (or `./data`), as the other commands find it.
    pub(super) fn new(url: String, token: Option<String>) -> Self {
        Self {
            url,
            token,
            data_dir: std::env::var_os("CALLISTO_DATA_DIR")
                .map_or_else(|| PathBuf::from("data"), PathBuf::from),
            json: false,
        }
    }
}

/// The admin API from the command line: a typed client and a runtime to
/// run it on.
pub(super) struct Cli {
    json: bool,
    pub(super) client: Client,
    runtime: tokio::runtime::Runtime,
}

impl Cli {
    pub(super) fn new(conn: Connection) -> anyhow::Result<Self> {
        let token = match &conn.token {
            Some(t) => t.clone(),
            None => {
                let path = conn.data_dir.join("admin.token");
                std::fs::read_to_string(&path)
                    .map(|t| t.trim().to_owned())
                    .with_context(|| {
                        format!(
                            "no admin token: set CALLISTO_ADMIN_TOKEN or --token (or run next to the gateway's {})",
                            path.display()
                        )
                    })?
            }
        };
        crate::net::client::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .context("building the HTTP client")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Self {
            json: conn.json,
            client: Client::new(&conn.url, &token, http),
            runtime,
        })
    }

    pub(super) fn run<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, crate::client::ClientError>>,
    ) -> anyhow::Result<T> {
        self.runtime.block_on(call).map_err(with_hint)
    }

    /// The API's JSON with `--json`, else what `table` prints.
    fn print<T: Serialize>(&self, value: &T, table: impl FnOnce(&T)) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
        } else {
            table(value);
        }
    }
}

/// The API's error, with what to do about it when that is not obvious.
fn with_hint(e: crate::client::ClientError) -> anyhow::Error {
    use crate::client::ClientError;
    let hint = match &e {
        ClientError::Api { status: 401, .. } => Some(
            "pass the gateway's admin token with --token or CALLISTO_ADMIN_TOKEN \
             (a generated one is in the gateway's <data dir>/admin.token)",
        ),
        ClientError::Api {
            status: 404, path, ..
        } if path.starts_with("/repositories") => {
            Some("`callisto repo list` shows the repositories")
        }
        ClientError::Api {
            status: 404, path, ..
        } if path.starts_with("/webhooks") => {
            Some("`callisto repo show REPOSITORY` shows a repository's webhooks")
        }
        ClientError::Api {
            status: 404, path, ..
        } if path.starts_with("/deliveries") => {
            Some("`callisto deliveries WEBHOOK` shows a webhook's deliveries")
        }
        _ => None,
    };
    match hint {
        Some(hint) => anyhow::anyhow!("{e}; {hint}"),
        None => e.into(),
    }
}

fn or_dash(v: Option<impl ToString>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

/// Prints rows as aligned columns.
pub(super) fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}

pub fn repo(conn: Connection, command: RepoCommand) -> anyhow::Result<ExitCode> {
    let cli = Cli::new(conn)?;
    match command {
        RepoCommand::Add {
            name,
            remote,
            registry,
            poll_interval,
            silent,
            insecure,
            username,
            tags,
        } => {
            let credentials = match username {
                Some(username) if remote => Some(Credentials {
                    username,
                    password: std::env::var("CALLISTO_REGISTRY_PASSWORD")
                        .context("--username needs the password in CALLISTO_REGISTRY_PASSWORD")?,
                }),
                _ => None,
            };
            let input = RepositoryInput {
                name,
                kind: Some(if remote {
                    RepositoryKind::Remote
                } else {
                    RepositoryKind::Local
                }),
                registry,
                poll_interval_secs: poll_interval.filter(|_| remote),
                initial_sync: (remote && silent).then_some(InitialSync::Silent),
                insecure: (remote && insecure).then_some(true),
                credentials,
                tags: tags.filter(|_| remote).map(StringList::Text),
                exclude_tags: None,
                max_tags: None,
                webhooks: Vec::new(),
            };
            let repo = cli.run(cli.client.create_repository(&input))?;
            cli.print(&repo, |r| {
                println!("added {} {} ({})", r.kind.as_str(), r.name, r.id)
            });
        }
        RepoCommand::List => {
            let repos = cli.run(cli.client.repositories())?;
            cli.print(&repos, |list| {
                let rows = list
                    .iter()
                    .map(|r| {
                        let status = match &r.poll {
                            Some(p) => match &p.last_error {
                                Some(e) => format!("error: {e}"),
                                None => format!(
                                    "{} tags, polled {}",
                                    p.tags_known,
                                    or_dash(p.last_poll_at)
                                ),
                            },
                            None => "-".to_owned(),
                        };
                        vec![
                            r.id.clone(),
                            r.kind.as_str().to_owned(),
                            r.name.clone(),
                            or_dash(r.registry.as_ref()),
                            status,
                        ]
                    })
                    .collect();
                table(&["ID", "KIND", "NAME", "REGISTRY", "POLL"], rows);
            });
        }
        RepoCommand::Show { repository } => {
            let repo = cli.run(cli.client.find_repository(&repository))?;
            cli.print(&repo, print_repository);
        }
        RepoCommand::Rm { repository } => {
            let repo = cli.run(cli.client.find_repository(&repository))?;
            cli.run(cli.client.delete_repository(&repo.id))?;
            if !cli.json {
                println!("deleted repository {} ({})", repo.name, repo.id);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A repository as `repo show` prints it: its settings, then its webhooks.
fn print_repository(r: &RepositoryView) {
    let mut rows = vec![
        ("repository", format!("{} ({})", r.name, r.id)),
        ("kind", r.kind.as_str().to_owned()),
        ("registry", or_dash(r.registry.as_ref())),
        ("created", r.created_at.to_rfc3339()),
    ];
    if r.poll_interval_secs.is_some() || r.poll.is_some() {
        rows.push((
            "poll interval",
            or_dash(r.poll_interval_secs.map(|s| format!("{s} s"))),
        ));
        rows.push((
            "initial sync",
            or_dash(r.initial_sync.map(|s| format!("{s:?}").to_lowercase())),
        ));
        rows.push(("insecure", yes_no(r.insecure.unwrap_or(false))));
        rows.push(("username", or_dash(r.username.as_ref())));
        rows.push(("password", yes_no(r.has_credentials.unwrap_or(false))));
        let list = |l: &Option<Vec<String>>| {
            or_dash(l.as_ref().filter(|l| !l.is_empty()).map(|l| l.join(", ")))
        };
        rows.push(("tags", list(&r.tags)));
        rows.push(("exclude tags", list(&r.exclude_tags)));
        rows.push(("max tags", or_dash(r.max_tags)));
        if let Some(p) = &r.poll {
            rows.push(("tags known", p.tags_known.to_string()));
            rows.push(("last poll", or_dash(p.last_poll_at)));
            rows.push(("last error", or_dash(p.last_error.as_ref())));
            rows.push(("next poll", or_dash(p.next_poll_at)));
        }
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in rows {
        println!("{key:<width$}  {value}");
    }
    let webhooks = r.webhooks.as_deref().unwrap_or_default();
    println!();
    if webhooks.is_empty() {
        println!(
            "no webhooks: add one with `callisto webhook add {} URL`",
            r.name
        );
        return;
    }
    webhook_table(webhooks);
}

pub fn webhook(conn: Connection, command: WebhookCommand) -> anyhow::Result<ExitCode> {
    let cli = Cli::new(conn)?;
    match command {
        WebhookCommand::Add {
            repository,
            target,
            secret,
            plugin,
            config,
            disabled,
            headers,
            rate_limit,
            ordering,
            coalesce,
            client_cert,
            client_key,
        } => {
            let headers = parse_headers(&headers)?;
            let repo = cli.run(cli.client.find_repository(&repository))?;
            let pairs = super::plugin::parse_config(&config)?;
            let input = WebhookInput {
                url: target,
                secret,
                plugin: Some(plugin),
                config: Some(
                    pairs
                        .into_iter()
                        .map(|(k, v)| (k, serde_json::Value::String(v)))
                        .collect(),
                ),
                enabled: Some(!disabled),
                retry_schedule_secs: None,
                headers: (!headers.is_empty()).then_some(headers),
                rate_limit_per_sec: rate_limit,
                ordering,
                retention_days: None,
                coalesce_secs: coalesce,
                operational_events: None,
                client_certificate: read_identity(client_cert, client_key)?,
            };
            let w = cli.run(cli.client.create_webhook(&repo.id, &input))?;
            cli.print(&w, |w| {
                println!("added webhook {} → {}", w.id, w.url);
                if let Some(secret) = &w.secret {
                    println!("secret (shown once): {secret}");
                }
            });
        }
        WebhookCommand::Set(args) => {
            let mut patch = WebhookPatch {
                url: args.target,
                enabled: (args.enable || args.disable).then_some(args.enable),
                rate_limit_per_sec: if args.no_rate_limit {
                    Some(None)
                } else {
                    args.rate_limit.map(Some)
                },
                ordering: args.ordering,
                retention_days: if args.default_retention {
                    Some(None)
                } else {
                    args.retention_days.map(Some)
                },
                coalesce_secs: if args.no_coalesce {
                    Some(None)
                } else {
                    args.coalesce.map(Some)
                },
                operational_events: (args.operational_events || args.no_operational_events)
                    .then_some(args.operational_events),
                client_certificate: if args.no_client_cert {
                    Some(None)
                } else {
                    read_identity(args.client_cert, args.client_key)?.map(Some)
                },
                ..WebhookPatch::default()
            };
            if args.clear_headers {
                patch.headers = Some(None);
            } else if !args.headers.is_empty() || !args.remove_headers.is_empty() {
                let mut changes: BTreeMap<String, Option<String>> = parse_headers(&args.headers)?
                    .into_iter()
                    .map(|(k, v)| (k, Some(v)))
                    .collect();
                for name in args.remove_headers {
                    changes.insert(name, None);
                }
                patch.headers = Some(Some(changes));
            }
            let w = cli.run(cli.client.update_webhook(&args.id, &patch))?;
            cli.print(&w, |w| {
                println!("updated webhook {} → {}", w.id, w.url);
                let rate = w
                    .rate_limit_per_sec
                    .map_or("no rate limit".to_owned(), |r| format!("at most {r}/s"));
                let order = format!("{:?}", w.ordering).to_lowercase();
                let kept = w
                    .retention_days
                    .map_or("the gateway's retention".to_owned(), |d| {
                        format!("kept {d} days")
                    });
                println!("  ordering {order}, {rate}, {kept}");
                if let Some(secs) = w.coalesce_secs {
                    println!("  bursts gathered for {secs} s into one delivery");
                }
                if w.operational_events {
                    println!("  receives operational events");
                }
                if let Some(sha256) = &w.client_certificate_sha256 {
                    println!("  client certificate sha256 {sha256}");
                }
                for (name, value) in &w.headers {
                    println!("  {name}: {value}");
                }
            });
        }
        WebhookCommand::Enable { id, redeliver } => {
            let r = cli.run(cli.client.enable_webhook(&id, redeliver))?;
            cli.print(&r, |r| {
                println!("enabled webhook {} → {}", r.webhook.id, r.webhook.url);
                match (r.failing_since, r.redelivered) {
                    (Some(since), true) => println!(
                        "{} deliveries that failed or died since {} are sent again",
                        r.piled_up,
                        since.to_rfc3339()
                    ),
                    (Some(since), false) if r.piled_up > 0 => println!(
                        "{} deliveries failed or died since {}: send them again with \
                         `callisto webhook enable {} --redeliver` or `callisto webhook retry {} --since {}`",
                        r.piled_up,
                        since.to_rfc3339(),
                        r.webhook.id,
                        r.webhook.id,
                        since.to_rfc3339()
                    ),
                    _ => {}
                }
            });
        }
        WebhookCommand::RotateSecret { id, secret, grace } => {
            let input = RotateInput {
                secret,
                grace_secs: Some(parse_secs(&grace)?),
            };
            let w = cli.run(cli.client.rotate_secret(&id, &input))?;
            cli.print(&w, |w| {
                println!("rotated the secret of webhook {}", w.id);
                if let Some(secret) = &w.secret {
                    println!("secret (shown once): {secret}");
                }
                match w.previous_secret_until {
                    Some(until) => {
                        println!("the old secret signs too until {}", until.to_rfc3339())
                    }
                    None => println!("the old secret no longer signs"),
                }
            });
        }
        WebhookCommand::Retry { id, since, dry_run } => {
            let since = parse_since(&since)?;
            let r = cli.run(cli.client.retry_failed(&id, &since, dry_run))?;
            cli.print(&r, |r| {
                if r.dry_run {
                    println!(
                        "{} failed or dead deliveries since {since} would be sent again",
                        r.redelivered
                    );
                } else {
                    println!(
                        "{} failed or dead deliveries since {since} are pending again",
                        r.redelivered
                    );
                }
            });
        }
        WebhookCommand::List { repository } => {
            let repo = cli.run(cli.client.find_repository(&repository))?;
            let list = cli.run(cli.client.webhooks(&repo.id))?;
            cli.print(&list, |list| webhook_table(list));
        }
        WebhookCommand::Test { id, details } => {
            let result = cli.run(cli.client.test_webhook(&id))?;
            cli.print(&result, |r| {
                println!("{}", r.summary);
                if let Some(why) = &r.filtered {
                    println!(
                        "note: the webhook's filter declines this event ({why}): sent as a test, \
                         but a real event like it would not be"
                    );
                }
                if details {
                    print_exchange(r);
                }
            });
            if result.result != "success" {
                return Ok(ExitCode::FAILURE);
            }
        }
        WebhookCommand::Filtered { id } => {
            let filtered = cli.run(cli.client.filtered(&id))?;
            cli.print(&filtered, |f| {
                println!(
                    "{} event{} filtered out since the gateway started{}",
                    f.count,
                    if f.count == 1 { "" } else { "s" },
                    if f.recent.is_empty() {
                        ""
                    } else {
                        "; the latest:"
                    }
                );
                if f.recent.is_empty() {
                    return;
                }
                let rows = f
                    .recent
                    .iter()
                    .map(|e| {
                        vec![
                            e.filtered_at.to_rfc3339(),
                            e.event_id.clone(),
                            e.kind.as_str().to_owned(),
                            or_dash(e.tag.as_ref()),
                            e.rule.clone(),
                            or_dash(e.reason.as_ref()),
                        ]
                    })
                    .collect();
                table(
                    &["FILTERED", "EVENT", "TYPE", "TAG", "RULE", "REASON"],
                    rows,
                );
            });
        }
        WebhookCommand::Rm { id } => {
            cli.run(cli.client.delete_webhook(&id))?;
            if !cli.json {
                println!("deleted webhook {id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A repository's webhooks, one row each; why the gateway disabled one,
/// where it did.
fn webhook_table(webhooks: &[crate::api::views::WebhookView]) {
    let rows = webhooks
        .iter()
        .map(|w| {
            vec![
                w.id.clone(),
                yes_no(w.enabled),
                w.plugin.clone(),
                yes_no(w.has_secret),
                w.url.clone(),
                w.disabled_reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "ENABLED",
            "PLUGIN",
            "SECRET",
            "URL",
            "DISABLED BECAUSE",
        ],
        rows,
    );
}

fn print_exchange(r: &TestResult) {
    if let Some(req) = &r.request {
        println!("\n> {} {}", req.method, req.url);
        print_headers('>', &req.headers, &req.body);
    }
    if let Some(resp) = &r.response {
        println!("\n< {}", resp.status);
        print_headers('<', &resp.headers, &resp.body);
    }
}

fn print_headers(mark: char, headers: &[(String, String)], body: &BodyView) {
    for (name, value) in headers {
        println!("{mark} {name}: {value}");
    }
    println!("{mark}\n{}", body.data);
}

pub fn events(conn: Connection, args: EventsArgs) -> anyhow::Result<ExitCode> {
    let cli = Cli::new(conn)?;
    let repository = match &args.repository {
        Some(r) => Some(cli.run(cli.client.find_repository(r))?.id),
        None => None,
    };
    let query = EventQuery {
        repository,
        kind: args.kind,
        limit: Some(args.limit),
        ..EventQuery::default()
    };
    let page = cli.run(cli.client.events(&query))?;
    cli.print(&page, |p| {
        let rows = p
            .items
            .iter()
            .map(|e| {
                vec![
                    e.id.clone(),
                    e.occurred_at.to_rfc3339(),
                    e.kind.as_str().to_owned(),
                    e.repository.name.clone(),
                    or_dash(e.tag.as_ref()),
                    e.digest
                        .as_deref()
                        .map_or("-".to_owned(), |d| d.chars().take(19).collect()),
                ]
            })
            .collect();
        table(
            &["ID", "OCCURRED", "TYPE", "REPOSITORY", "TAG", "DIGEST"],
            rows,
        );
    });
    Ok(ExitCode::SUCCESS)
}

pub fn deliveries(conn: Connection, args: DeliveriesArgs) -> anyhow::Result<ExitCode> {
    let cli = Cli::new(conn)?;
    let state = args
        .state
        .as_deref()
        .map(|s| {
            serde_json::from_value::<DeliveryState>(serde_json::Value::String(s.to_owned()))
                .map_err(|_| {
                    anyhow::anyhow!("--state `{s}` is not one of pending, succeeded, failed, dead")
                })
        })
        .transpose()?;
    let query = DeliveryQuery {
        state,
        limit: Some(args.limit),
        before: None,
    };
    let page = cli.run(cli.client.deliveries(&args.webhook, &query))?;
    cli.print(&page, |p| {
        let rows = p
            .items
            .iter()
            .map(|d| {
                vec![
                    d.id.clone(),
                    format!("{:?}", d.kind).to_lowercase(),
                    d.state.as_str().to_owned(),
                    d.attempts.to_string(),
                    or_dash(d.last_status),
                    if d.event_id.is_empty() {
                        "-".to_owned()
                    } else {
                        d.event_id.clone()
                    },
                    or_dash(d.last_error.as_ref()),
                ]
            })
            .collect();
        table(
            &[
                "ID", "KIND", "STATE", "ATTEMPTS", "STATUS", "EVENT", "ERROR",
            ],
            rows,
        );
    });
    Ok(ExitCode::SUCCESS)
}

pub fn redeliver(conn: Connection, id: &str) -> anyhow::Result<ExitCode> {
    let cli = Cli::new(conn)?;
    let d = cli.run(cli.client.redeliver(id))?;
    cli.print(&d, |d| {
        println!(
            "delivery {} is pending again (webhook {})",
            d.id, d.webhook_id
        )
    });
    Ok(ExitCode::SUCCESS)
}
