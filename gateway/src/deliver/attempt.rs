//! One HTTP attempt: sign, send, read the answer, record everything.

use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use super::retry;
use super::signature;
use crate::event::Timestamp;
use crate::net::{Policy, describe};
use crate::plugin::Request;
use crate::records::{Attempt, AttemptResponse};

/// What to send.
pub struct Outbound<'a> {
    pub url: &'a str,
    pub request: &'a Request,
    pub secret: Option<&'a str>,
    /// The secret before a rotation, while its grace period lasts.
    pub previous_secret: Option<&'a str>,
    /// The delivery id: `webhook-id`, the same on every attempt.
    pub message_id: &'a str,
    /// The webhook's own headers (checked when they were set); each
    /// replaces the plugin's header of the same name.
    pub headers: &'a [(String, String)],
    /// The client goes through a proxy: resolve and check the receiver's
    /// addresses here first.
    pub proxied: bool,
}

/// The record of an attempt, and the receiver's `Retry-After` if it gave
/// one.
pub struct Sent {
    pub attempt: Attempt,
    pub retry_after: Option<Duration>,
}

impl Sent {
    pub fn status(&self) -> Option<u16> {
        self.attempt.response.as_ref().map(|r| r.status)
    }
}

/// An attempt that could not be made at all (the secret cannot be read).
pub fn not_sent(url: &str, number: u32, error: String) -> Sent {
    Sent {
        attempt: Attempt {
            number,
            started_at: Timestamp::now(),
            duration_ms: 0,
            url: url.to_owned(),
            request_headers: Vec::new(),
            response: None,
            error: Some(error),
            succeeded: false,
        },
        retry_after: None,
    }
}

/// Sends one attempt. Never fails: a failure is recorded in the attempt.
pub async fn send(
    client: &reqwest::Client,
    policy: &Policy,
    out: Outbound<'_>,
    number: u32,
    body_limit: usize,
) -> Sent {
    let started_at = Timestamp::now();
    let clock = Instant::now();
    let mut headers = HeaderMap::new();
    let mut recorded: Vec<(String, String)> = Vec::new();
    let mut add = |headers: &mut HeaderMap, name: &str, value: &str, shown: &str| {
        // The plugin's and the webhook's headers were checked when they
        // were set; the host's own are always valid.
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(n, v);
            recorded.push((name.to_owned(), shown.to_owned()));
        }
    };
    add(
        &mut headers,
        CONTENT_TYPE.as_str(),
        &out.request.content_type,
        &out.request.content_type,
    );
    for (name, value) in &out.request.headers {
        if out.headers.iter().any(|(own, _)| own == name) {
            continue;
        }
        add(&mut headers, name, value, value);
    }
    for (name, value) in out.headers {
        // A credential is sent, never kept in the attempt's record.
        let shown = if crate::records::is_sensitive_header(name) {
            crate::records::REDACTED
        } else {
            value
        };
        add(&mut headers, name, value, shown);
    }
    for (name, value) in signature::headers(
        out.request.signature,
        out.secret,
        out.previous_secret,
        out.message_id,
        started_at.unix_seconds(),
        &out.request.body,
    ) {
        add(&mut headers, name, &value, &value);
    }

    let mut attempt = Attempt {
        number,
        started_at,
        duration_ms: 0,
        url: out.url.to_owned(),
        request_headers: recorded,
        response: None,
        error: None,
        succeeded: false,
    };
    let result = send_checked(
        client,
        policy,
        out.proxied,
        out.url,
        headers,
        out.request.body.clone(),
        body_limit,
    )
    .await;
    attempt.duration_ms = clock.elapsed().as_millis() as u64;
    let mut retry_after = None;
    match result {
        Ok(response) => {
            attempt.succeeded = (200..300).contains(&response.status);
            if !attempt.succeeded {
                attempt.error = Some(format!("the receiver answered {}", response.status));
            }
            retry_after = response
                .headers
                .iter()
                .find(|(k, _)| k == "retry-after")
                .and_then(|(_, v)| retry::parse_retry_after(v, SystemTime::now()));
            attempt.response = Some(response);
        }
        Err(error) => attempt.error = Some(error),
    }
    Sent {
        attempt,
        retry_after,
    }
}

async fn send_checked(
    client: &reqwest::Client,
    policy: &Policy,
    proxied: bool,
    url: &str,
    headers: HeaderMap,
    body: Vec<u8>,
    body_limit: usize,
) -> Result<AttemptResponse, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
    if proxied {
        policy.check_target(&parsed).await?;
    } else {
        policy.check_url(&parsed)?;
    }
    let mut response = client
        .post(parsed)
        .headers(headers)
        .body(body)
        .send()
        .await
        .map_err(|e| describe(&e))?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut body = Vec::new();
    let mut truncated = false;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = body_limit.saturating_sub(body.len());
                if chunk.len() > room {
                    body.extend_from_slice(&chunk[..room]);
                    truncated = true;
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            // The status came; a body cut short does not undo it.
            Err(_) => {
                truncated = true;
                break;
            }
        }
    }
    Ok(AttemptResponse {
        status,
        headers,
        body,
        truncated,
    })
}
