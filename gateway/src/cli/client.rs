//! The admin API from the command line: `callisto repo|webhook|events|
//! deliveries|redeliver`. Readable tables by default, the API's JSON with
//! `--json`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

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
    /// Delete a repository and its webhooks (its events stay).
    Rm { id: String },
}

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Add a webhook to a repository.
    Add {
        /// The repository's id.
        repository: String,
        /// Where to send the webhook (http or https).
        #[arg(value_name = "URL")]
        target: String,
        /// A secret, or `generate` for a new one (shown once).
        #[arg(long)]
        secret: Option<String>,
        #[arg(long, default_value = "default")]
        plugin: String,
        /// Plugin configuration, `key=value`, repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// List a repository's webhooks.
    List { repository: String },
    /// Send a test event now: prints `Success (200)` or `Error ...`.
    Test {
        id: String,
        /// Show the request sent and the response.
        #[arg(long)]
        details: bool,
    },
    /// Delete a webhook (its pending deliveries end).
    Rm { id: String },
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only this repository's events (its id).
    #[arg(long)]
    repository: Option<String>,
    /// `image.pushed` or `image.deleted`.
    #[arg(long = "type")]
    kind: Option<String>,
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
    #[arg(long, default_value_t = 20)]
    limit: usize,
}

struct Client {
    conn: Connection,
    token: String,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl Client {
    fn new(conn: Connection) -> anyhow::Result<Self> {
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
            conn,
            token,
            http,
            runtime,
        })
    }

    /// Calls the admin API; an error answer becomes an error naming it.
    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}/api/v1{path}", self.conn.url.trim_end_matches('/'));
        self.runtime.block_on(async {
            let mut request = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(&self.token);
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.send().await.map_err(|e| {
                anyhow::anyhow!(
                    "cannot reach the gateway at {}: {} (is `callisto serve` running?)",
                    self.conn.url,
                    crate::net::describe(&e)
                )
            })?;
            let status = response.status();
            let text = response.text().await?;
            if !status.is_success() {
                let parsed: Option<Value> = serde_json::from_str(&text).ok();
                let message = parsed
                    .as_ref()
                    .and_then(|v| v["error"]["message"].as_str())
                    .unwrap_or(&text);
                bail!("{method} {path}: {message} ({status})");
            }
            Ok(if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text)?
            })
        })
    }

    fn print(&self, value: &Value, table: impl FnOnce(&Value)) {
        if self.conn.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
        } else {
            table(value);
        }
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints rows as aligned columns.
fn table(headers: &[&str], rows: Vec<Vec<String>>) {
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
    let client = Client::new(conn)?;
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
            let mut body = json!({"name": name, "kind": if remote { "remote" } else { "local" }});
            if let Some(r) = registry {
                body["registry"] = json!(r);
            }
            if remote {
                if let Some(p) = poll_interval {
                    body["poll_interval_secs"] = json!(p);
                }
                if silent {
                    body["initial_sync"] = json!("silent");
                }
                if insecure {
                    body["insecure"] = json!(true);
                }
                if let Some(t) = tags {
                    body["tags"] = json!(t);
                }
                if let Some(user) = username {
                    let password = std::env::var("CALLISTO_REGISTRY_PASSWORD")
                        .context("--username needs the password in CALLISTO_REGISTRY_PASSWORD")?;
                    body["credentials"] = json!({"username": user, "password": password});
                }
            }
            let repo = client.call(reqwest::Method::POST, "/repositories", Some(body))?;
            client.print(&repo, |r| {
                println!(
                    "added {} {} ({})",
                    s(&r["kind"]),
                    s(&r["name"]),
                    s(&r["id"])
                )
            });
        }
        RepoCommand::List => {
            let repos = client.call(reqwest::Method::GET, "/repositories", None)?;
            client.print(&repos, |list| {
                let rows = list
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| {
                        let status = match r.get("poll") {
                            Some(p) => match p["last_error"].as_str() {
                                Some(e) => format!("error: {e}"),
                                None => format!(
                                    "{} tags, polled {}",
                                    s(&p["tags_known"]),
                                    s(&p["last_poll_at"])
                                ),
                            },
                            None => "-".to_owned(),
                        };
                        vec![
                            s(&r["id"]),
                            s(&r["kind"]),
                            s(&r["name"]),
                            s(&r["registry"]),
                            status,
                        ]
                    })
                    .collect();
                table(&["ID", "KIND", "NAME", "REGISTRY", "POLL"], rows);
            });
        }
        RepoCommand::Rm { id } => {
            client.call(
                reqwest::Method::DELETE,
                &format!("/repositories/{id}"),
                None,
            )?;
            if !client.conn.json {
                println!("deleted repository {id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn webhook(conn: Connection, command: WebhookCommand) -> anyhow::Result<ExitCode> {
    let client = Client::new(conn)?;
    match command {
        WebhookCommand::Add {
            repository,
            target,
            secret,
            plugin,
            config,
            disabled,
        } => {
            let pairs = super::plugin::parse_config(&config)?;
            let config: serde_json::Map<String, Value> =
                pairs.into_iter().map(|(k, v)| (k, json!(v))).collect();
            let mut body =
                json!({"url": target, "plugin": plugin, "config": config, "enabled": !disabled});
            if let Some(secret) = secret {
                body["secret"] = json!(secret);
            }
            let w = client.call(
                reqwest::Method::POST,
                &format!("/repositories/{repository}/webhooks"),
                Some(body),
            )?;
            client.print(&w, |w| {
                println!("added webhook {} → {}", s(&w["id"]), s(&w["url"]));
                if let Some(secret) = w["secret"].as_str() {
                    println!("secret (shown once): {secret}");
                }
            });
        }
        WebhookCommand::List { repository } => {
            let list = client.call(
                reqwest::Method::GET,
                &format!("/repositories/{repository}/webhooks"),
                None,
            )?;
            client.print(&list, |list| {
                let rows = list
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|w| {
                        vec![
                            s(&w["id"]),
                            if w["enabled"] == true {
                                "yes".into()
                            } else {
                                "no".into()
                            },
                            s(&w["plugin"]),
                            if w["has_secret"] == true {
                                "yes".into()
                            } else {
                                "no".into()
                            },
                            s(&w["url"]),
                        ]
                    })
                    .collect();
                table(&["ID", "ENABLED", "PLUGIN", "SECRET", "URL"], rows);
            });
        }
        WebhookCommand::Test { id, details } => {
            let result =
                client.call(reqwest::Method::POST, &format!("/webhooks/{id}/test"), None)?;
            client.print(&result, |r| {
                println!("{}", s(&r["summary"]));
                if details {
                    print_exchange(r);
                }
            });
            if result["result"] != "success" {
                return Ok(ExitCode::FAILURE);
            }
        }
        WebhookCommand::Rm { id } => {
            client.call(reqwest::Method::DELETE, &format!("/webhooks/{id}"), None)?;
            if !client.conn.json {
                println!("deleted webhook {id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_exchange(r: &Value) {
    if let Some(req) = r.get("request").filter(|v| !v.is_null()) {
        println!("\n> {} {}", s(&req["method"]), s(&req["url"]));
        for h in req["headers"].as_array().into_iter().flatten() {
            println!("> {}: {}", s(&h[0]), s(&h[1]));
        }
        println!(">\n{}", s(&req["body"]["data"]));
    }
    if let Some(resp) = r.get("response").filter(|v| !v.is_null()) {
        println!("\n< {}", s(&resp["status"]));
        for h in resp["headers"].as_array().into_iter().flatten() {
            println!("< {}: {}", s(&h[0]), s(&h[1]));
        }
        println!("<\n{}", s(&resp["body"]["data"]));
    }
}

pub fn events(conn: Connection, args: EventsArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(conn)?;
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("limit", &args.limit.to_string());
    if let Some(r) = &args.repository {
        query.append_pair("repository", r);
    }
    if let Some(t) = &args.kind {
        query.append_pair("type", t);
    }
    let path = format!("/events?{}", query.finish());
    let page = client.call(reqwest::Method::GET, &path, None)?;
    client.print(&page, |p| {
        let rows = p["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let digest = s(&e["digest"]);
                vec![
                    s(&e["id"]),
                    s(&e["occurred_at"]),
                    s(&e["type"]),
                    s(&e["repository"]["name"]),
                    s(&e["tag"]),
                    digest.chars().take(19).collect(),
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
    let client = Client::new(conn)?;
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("limit", &args.limit.to_string());
    if let Some(state) = &args.state {
        query.append_pair("state", state);
    }
    let webhook: String = url::form_urlencoded::byte_serialize(args.webhook.as_bytes()).collect();
    let path = format!("/webhooks/{webhook}/deliveries?{}", query.finish());
    let page = client.call(reqwest::Method::GET, &path, None)?;
    client.print(&page, |p| {
        let rows = p["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                vec![
                    s(&d["id"]),
                    s(&d["kind"]),
                    s(&d["state"]),
                    s(&d["attempts"]),
                    s(&d["last_status"]),
                    s(&d["event_id"]),
                    s(&d["last_error"]),
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
    let client = Client::new(conn)?;
    let d = client.call(
        reqwest::Method::POST,
        &format!("/deliveries/{id}/redeliver"),
        None,
    )?;
    client.print(&d, |d| {
        println!(
            "delivery {} is pending again (webhook {})",
            s(&d["id"]),
            s(&d["webhook_id"])
        )
    });
    Ok(ExitCode::SUCCESS)
}
