//! What the process tells its operators: log lines on stderr (text or
//! JSON, colour only on a terminal) and, when an OTLP endpoint is set,
//! traces exported over OTLP/HTTP: one span per ingest request, fan-out
//! batch, plugin call and delivery attempt, carrying the event, webhook and
//! delivery ids that tie them together.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{Config, LogFormat};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("log filter `{filter}`: {reason}")]
    Filter { filter: String, reason: String },
    #[error("the OTLP exporter for {endpoint}: {reason}")]
    Exporter { endpoint: String, reason: String },
    #[error("a global subscriber is already set: {0}")]
    Init(String),
}

/// Keeps the trace exporter alive; dropping it flushes what is buffered.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("flushing traces: {e}");
        }
    }
}

/// Installs the process's subscriber: the log filter, the log format, and
/// the OTLP exporter when `config.otlp_endpoint` is set.
pub fn init(config: &Config) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_new(&config.log).map_err(|e| TelemetryError::Filter {
        filter: config.log.clone(),
        reason: e.to_string(),
    })?;
    // Colour only on a terminal: a log file, a pipe or journald gets plain
    // text. NO_COLOR (https://no-color.org) turns it off there too.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let logs = tracing_subscriber::fmt::layer()
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let logs = match config.log_format {
        LogFormat::Text => logs.boxed(),
        LogFormat::Json => logs.json().flatten_event(true).boxed(),
    };
    let provider = config
        .otlp_endpoint
        .as_deref()
        .map(|endpoint| exporter(endpoint, &config.otlp_service_name))
        .transpose()?;
    let traces = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("callisto")));
    tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(traces)
        .try_init()
        .map_err(|e| TelemetryError::Init(e.to_string()))?;
    Ok(Telemetry { provider })
}

fn exporter(endpoint: &str, service: &str) -> Result<SdkTracerProvider, TelemetryError> {
    crate::net::client::install_crypto_provider();
    let base = endpoint.trim_end_matches('/');
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{base}/v1/traces"))
        .build()
        .map_err(|e| TelemetryError::Exporter {
            endpoint: endpoint.to_owned(),
            reason: e.to_string(),
        })?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_owned())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}
