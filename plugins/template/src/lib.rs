//! `template`: the body is the webhook's own template with the event's
//! fields put in, so a user shapes a payload (a chat tool's, a CI's, an
//! in-house service's) without writing a plugin.
//!
//! Placeholders are `{{name}}` (spaces inside the braces allowed). With a
//! JSON content type (the default) each value is written as the inside of a
//! JSON string (quotes and backslashes escaped), so `"tag": "{{tag}}"` is
//! always valid, and `{{event}}` is the whole event as a JSON object; the
//! result must be JSON, or the delivery fails with the parser's reason.
//! With any other content type values go in as they are. A missing value
//! (no tag, no digest) is empty. An unknown placeholder is refused when the
//! webhook is saved.

use callisto_plugin_sdk::{Config, Event, Plugin, PluginInfo, Request, Webhook, export};

pub struct Template;

/// The placeholders, for the error that names an unknown one.
const NAMES: [&str; 15] = [
    "id",
    "type",
    "source",
    "repository",
    "registry",
    "tag",
    "digest",
    "short_digest",
    "previous_digest",
    "media_type",
    "size",
    "actor",
    "occurred_at",
    "image",
    "event",
];

fn value(event: &Event, name: &str) -> Option<String> {
    Some(match name {
        "id" => event.id.clone(),
        "type" => event.kind.as_str().to_owned(),
        "source" => event.source.as_str().to_owned(),
        "repository" => event.repository.name.clone(),
        "registry" => event.repository.registry.clone().unwrap_or_default(),
        "tag" => event.tag.clone().unwrap_or_default(),
        "digest" => event.digest.clone().unwrap_or_default(),
        "short_digest" => event.short_digest().unwrap_or_default().to_owned(),
        "previous_digest" => event.previous_digest.clone().unwrap_or_default(),
        "media_type" => event.media_type.clone().unwrap_or_default(),
        "size" => event.size.map(|s| s.to_string()).unwrap_or_default(),
        "actor" => event.actor.clone().unwrap_or_default(),
        "occurred_at" => event.occurred_at.to_rfc3339(),
        "image" => event.image_ref(),
        "event" => String::from_utf8(event.to_json()).expect("JSON is UTF-8"),
        _ => return None,
    })
}

/// The template with every placeholder replaced by `fill`'s answer, or the
/// first unknown placeholder's name.
fn render(template: &str, mut fill: impl FnMut(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err("a `{{` is never closed with `}}`".into());
        };
        let name = after[..end].trim();
        let filled = fill(name).ok_or_else(|| {
            format!(
                "unknown placeholder `{{{{{name}}}}}` (known: {})",
                NAMES.join(", ")
            )
        })?;
        out.push_str(&filled);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The inside of a JSON string holding `s`.
fn json_inside(s: &str) -> String {
    let quoted = serde_json::to_string(s).expect("a string serializes");
    quoted[1..quoted.len() - 1].to_owned()
}

fn content_type(config: &Config) -> &str {
    config.get("content_type").unwrap_or("application/json")
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json") || essence.ends_with("+json")
}

fn body(event: &Event, config: &Config) -> Result<String, String> {
    let template = config
        .get("template")
        .ok_or("the `template` key is required")?;
    let json = is_json(content_type(config));
    let rendered = render(template, |name| {
        let v = value(event, name)?;
        Some(if json && name != "event" {
            json_inside(&v)
        } else {
            v
        })
    })?;
    if json {
        serde_json::from_str::<serde::de::IgnoredAny>(&rendered).map_err(|e| {
            format!("the template does not make JSON ({e}); set content_type for text")
        })?;
    }
    Ok(rendered)
}

impl Plugin for Template {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "template",
            env!("CARGO_PKG_VERSION"),
            "The webhook's own JSON or text template, with {{placeholders}} for the event's fields",
        )
        .required_key(
            "template",
            "the body, with placeholders such as {{repository}}, {{tag}}, {{digest}}, {{image}}, {{event}}",
        )
        .key(
            "content_type",
            "the body's content type (default application/json; a JSON type escapes values and checks the result)",
        )
    }

    fn validate_config(config: &Config) -> Result<(), String> {
        config
            .validate(&Self::describe().config_keys)
            .map_err(|e| e.to_string())?;
        let ct = content_type(config);
        if ct.trim().is_empty() || ct.contains(['\r', '\n']) {
            return Err("content_type: not a content type".into());
        }
        // A sample event shows an unknown placeholder or a template that
        // cannot make JSON now, not at the first push.
        let sample = Event::new(
            "evt_sample".into(),
            callisto_plugin_sdk::EventType::ImagePushed,
            callisto_plugin_sdk::EventSource::Local,
            callisto_plugin_sdk::RepositoryRef {
                id: "repo_sample".into(),
                name: "sample/app".into(),
                registry: Some("registry.example.com".into()),
            },
            callisto_plugin_sdk::Timestamp::from_unix(0),
        )
        .with_tag(Some("v1".to_owned()))
        .with_digest(Some("sha256:0".to_owned()));
        body(&sample, config)
            .map(|_| ())
            .map_err(|e| format!("template: {e}"))
    }

    fn format(event: &Event, webhook: &Webhook) -> Result<Request, String> {
        let body = body(event, &webhook.config)?;
        Ok(Request::new(
            content_type(&webhook.config),
            body.into_bytes(),
        ))
    }
}

export!(Template);
