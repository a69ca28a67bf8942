use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;

use callisto_plugin_sdk::testing;

use crate::deliver::signature;
use crate::event::{Event, EventType, new_id};
use crate::plugin::{EventInput, HostDirs, Limits, Plugin, PluginHost, Verdict, WebhookInput};

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Starts a plugin: writes a crate (Cargo.toml with the release profile
    /// for wasm32-wasip2, src/lib.rs with describe, filter and format, a
    /// native test against a golden file) that builds and passes its test
    /// at once.
    New {
        /// The plugin's name, as webhooks and the install will name it:
        /// lowercase letters, digits and `-`.
        name: String,
        /// The crate's directory [default: ./NAME].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The plugin SDK to depend on (`plugin-sdk/` of a checkout of
        /// Callisto) [default: the one this binary was built from].
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Lists the built-in plugins and those installed in the data directory.
    List {
        /// The gateway's data directory (installed plugins are in its
        /// `plugins/` folder).
        #[arg(long, env = "CALLISTO_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Checks that a component fits the plugin world, and describes it.
    Check {
        /// The component, e.g. target/wasm32-wasip2/release/my_plugin.wasm.
        file: PathBuf,
    },
    /// Runs a plugin on an event in the real sandbox and prints the exact
    /// request the gateway would send, signature included, or why the
    /// event was filtered out; the plugin's log lines go to standard error,
    /// whatever CALLISTO_LOG says.
    Run {
        /// A component file, or the name of a built-in plugin.
        plugin: String,
        /// The event as JSON (as `GET /api/v1/events/{id}` shows it), or `-`
        /// for standard input [default: a push of 127.0.0.1:5000/demo/app:v1,
        /// the SDK's `testing::pushed`].
        #[arg(long)]
        event: Option<PathBuf>,
        /// Use this tag instead of the event's.
        #[arg(long)]
        tag: Option<String>,
        /// Use this event type instead of the event's: image.pushed,
        /// image.deleted or webhook.test.
        #[arg(long = "type", value_name = "TYPE")]
        kind: Option<String>,
        /// Use this repository name instead of the event's (`team/api`).
        #[arg(long)]
        repository: Option<String>,
        /// Webhook configuration, `key=value`, repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
        /// The webhook secret to sign with.
        #[arg(long)]
        secret: Option<String>,
        /// The webhook URL the plugin is told about.
        #[arg(long, default_value = "https://example.com/webhook")]
        url: String,
    },
}

/// What `plugin run` changes in the event it runs on.
struct Overrides {
    tag: Option<String>,
    kind: Option<String>,
    repository: Option<String>,
}

impl PluginCommand {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            PluginCommand::New { name, dir, sdk } => {
                let dir = super::scaffold::new_plugin(&name, dir.as_deref(), sdk.as_deref())?;
                println!("created plugin `{name}` in {}", dir.display());
                println!("  cd {} && cargo test", dir.display());
                println!(
                    "  cargo build --release --target wasm32-wasip2   # then: callisto plugin check target/wasm32-wasip2/release/{}.wasm",
                    name.replace('-', "_")
                );
                Ok(ExitCode::SUCCESS)
            }
            PluginCommand::List { data_dir, json } => list(&data_dir, json),
            PluginCommand::Check { file } => check(&file),
            PluginCommand::Run {
                plugin,
                event,
                tag,
                kind,
                repository,
                config,
                secret,
                url,
            } => {
                let overrides = Overrides {
                    tag,
                    kind,
                    repository,
                };
                run(
                    &plugin,
                    event.as_deref(),
                    &overrides,
                    &config,
                    secret.as_deref(),
                    &url,
                )
            }
        }
    }
}

fn list(data_dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    // Read-only: list what is there without creating a data directory.
    let dirs = if data_dir.exists() {
        HostDirs::in_data_dir(data_dir)
    } else {
        HostDirs::default()
    };
    let host = PluginHost::new(Limits::default(), dirs).context("starting the plugin host")?;
    let plugins = host.list();
    if json {
        let rows: Vec<serde_json::Value> = plugins
            .iter()
            .map(|p| {
                serde_json::json!({
                    "name": p.name(),
                    "version": p.info().version,
                    "builtin": p.is_builtin(),
                    "sha256": p.sha256(),
                    "description": p.info().description,
                    "config_keys": p.info().config_keys,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "{:<16} {:<10} {:<10} {:<14} DESCRIPTION",
            "NAME", "VERSION", "SOURCE", "SHA256"
        );
        for p in &plugins {
            println!(
                "{:<16} {:<10} {:<10} {:<14} {}",
                p.name(),
                p.info().version,
                if p.is_builtin() {
                    "built-in"
                } else {
                    "installed"
                },
                &p.sha256()[..12],
                p.info().description
            );
        }
    }
    for (path, err) in host.startup_errors() {
        eprintln!("warning: {} did not load: {err}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn check(file: &Path) -> anyhow::Result<ExitCode> {
    let wasm = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let host = PluginHost::new(Limits::default(), HostDirs::default())
        .context("starting the plugin host")?;
    let plugin = host
        .load(&wasm)
        .with_context(|| format!("{} is not a usable plugin", file.display()))?;
    print_info(&plugin);
    Ok(ExitCode::SUCCESS)
}

fn print_info(plugin: &Plugin) {
    let info = plugin.info();
    println!("{} {} — {}", info.name, info.version, info.description);
    println!("sha256 {}", plugin.sha256());
    println!("fits callisto:plugin/plugin@0.1.0");
    if !info.config_keys.is_empty() {
        println!("config keys:");
        for key in &info.config_keys {
            let required = if key.required { " (required)" } else { "" };
            println!("  {}{required}: {}", key.name, key.description);
        }
    }
}

fn run(
    plugin: &str,
    event: Option<&Path>,
    overrides: &Overrides,
    config: &[String],
    secret: Option<&str>,
    url: &str,
) -> anyhow::Result<ExitCode> {
    let host = PluginHost::new(Limits::default(), HostDirs::default())
        .context("starting the plugin host")?;
    let plugin = match host.get(plugin) {
        Some(builtin) => builtin,
        None => {
            let path = Path::new(plugin);
            if !path.exists() {
                let names: Vec<String> = host.list().iter().map(|p| p.name().to_owned()).collect();
                bail!(
                    "`{plugin}` is neither a file nor a built-in plugin (built-ins: {})",
                    names.join(", ")
                );
            }
            let wasm =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            std::sync::Arc::new(
                host.load(&wasm)
                    .with_context(|| format!("{} is not a usable plugin", path.display()))?,
            )
        }
    };

    let event = load_event(event, overrides)?;
    eprintln!("event: {} of {}", event.kind.as_str(), event.image_ref());
    let config = parse_config(config)?;
    // `callisto plugin run` asks the plugin alone: the host's filters need
    // a repository's tags, which a sample event has not got.
    let (_, config) = crate::host_filter::split(&config).map_err(|e| anyhow::anyhow!(e))?;

    if let Err(e) = plugin.validate_config(&config) {
        bail!("configuration refused: {e}");
    }
    let webhook = WebhookInput::new("wh_cli", url, &config);
    let (verdict, logs) = plugin.run_logged(&EventInput::from(&event), &webhook);
    for line in &logs {
        eprintln!("{:>5} {}: {}", line.level, plugin.name(), line.message);
    }
    let request = match verdict? {
        Verdict::Send(request) => request,
        Verdict::Filtered(filtered) => {
            println!("filtered out (rule {}): {filtered}", filtered.rule());
            return Ok(ExitCode::SUCCESS);
        }
    };

    let message_id = new_id("dlv");
    let timestamp = crate::event::Timestamp::now().unix_seconds();
    println!("POST {url}");
    println!("content-type: {}", request.content_type);
    for (name, value) in &request.headers {
        println!("{name}: {value}");
    }
    for (name, value) in signature::headers(
        request.signature,
        secret,
        None,
        &message_id,
        timestamp,
        &request.body,
    ) {
        println!("{name}: {value}");
    }
    println!();
    println!("{}", String::from_utf8_lossy(&request.body));
    Ok(ExitCode::SUCCESS)
}

/// The event from `path` (`-`: standard input), or the SDK's sample push,
/// with the command line's changes.
fn load_event(path: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Event> {
    let kind = overrides
        .kind
        .as_deref()
        .map(|k| {
            EventType::parse(k).with_context(|| {
                format!("--type `{k}` is not one of image.pushed, image.deleted, webhook.test")
            })
        })
        .transpose()?;
    let mut event = match path {
        None => {
            let name = overrides.repository.as_deref().unwrap_or("demo/app");
            let tag = overrides.tag.as_deref().unwrap_or("v1");
            match kind.unwrap_or(EventType::ImagePushed) {
                EventType::ImagePushed => testing::pushed(name, tag),
                EventType::ImageDeleted => testing::deleted(name, tag),
                EventType::WebhookTest => Event {
                    tag: Some(tag.to_owned()),
                    ..testing::webhook_test(name)
                },
            }
        }
        Some(path) => {
            let json = if path == Path::new("-") {
                std::io::read_to_string(std::io::stdin()).context("reading the event from stdin")?
            } else {
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?
            };
            serde_json::from_str(&json).with_context(|| {
                format!(
                    "{} is not an event (give one as `GET /api/v1/events/{{id}}` answers it)",
                    path.display()
                )
            })?
        }
    };
    if let Some(tag) = &overrides.tag {
        event.tag = Some(tag.clone());
    }
    if let Some(kind) = kind {
        event.kind = kind;
    }
    if let Some(name) = &overrides.repository {
        event.repository.name = name.clone();
    }
    Ok(event)
}

/// `key=value` pairs, in order.
pub(crate) fn parse_config(pairs: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
            _ => bail!("config `{pair}` is not key=value: write it as `--config tags=v*`"),
        })
        .collect()
}
