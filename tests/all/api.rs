//! The admin API: every route's success path and its bad inputs, Test
//! Webhook against real receivers, history, replay, plugins, metrics.

use std::time::Duration;

use callisto::test_util::TestGateway;
use callisto_tests::guests;
use callisto_tests::receiver::Receiver;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::delivery::{eventually, get, ingest, push_envelope, repository};

async fn call(
    gw: &TestGateway,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = gw.api(method, path);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let response = req.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    };
    (status, value)
}

/// Asserts an error answer: status, `error.code`, and a message containing
/// `needle`.
fn assert_error(answer: &(StatusCode, Value), status: StatusCode, code: &str, needle: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error"]["code"], code, "{}", answer.1);
    let message = answer.1["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(needle),
        "`{message}` does not mention `{needle}`"
    );
}

#[tokio::test]
async fn every_listed_route_needs_the_admin_token() {
    let gw = crate::gateway().await;
    let doc: Value = gw
        .http
        .get(format!("{}/api/v1/openapi.json", gw.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let url = format!(
                "{}{}",
                gw.url,
                path.replace("{id}", "x").replace("{name}", "x")
            );
            let response = gw
                .http
                .request(method.to_uppercase().parse().unwrap(), &url)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let open = ["/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"]
                .contains(&path.as_str());
            if open {
                assert_ne!(
                    response.status(),
                    StatusCode::UNAUTHORIZED,
                    "{method} {path}"
                );
            } else {
                assert_eq!(
                    response.status(),
                    StatusCode::UNAUTHORIZED,
                    "{method} {path} answered without a token"
                );
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["error"]["code"], "unauthorized");
                checked += 1;
            }
            // A wrong token is no better than none.
            if !open {
                let wrong = gw
                    .http
                    .request(method.to_uppercase().parse().unwrap(), &url)
                    .bearer_auth("not-the-token-0123456789")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
            }
        }
    }
    assert!(
        checked >= 24,
        "only {checked} guarded routes in the document"
    );
}

#[tokio::test]
async fn unknown_ids_bad_urls_and_refused_configs_get_clear_errors() {
    let gw = crate::gateway().await;
    for path in [
        "/repositories/repo_x",
        "/webhooks/wh_x",
        "/events/evt_x",
        "/deliveries/dlv_x",
        "/repositories/repo_x/tags",
    ] {
        assert_error(
            &call(&gw, Method::GET, path, None).await,
            StatusCode::NOT_FOUND,
            "not_found",
            "not found",
        );
    }
    assert_error(
        &call(&gw, Method::POST, "/deliveries/dlv_x/redeliver", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "dlv_x",
    );
    let repo = repository(&gw, json!([])).await;
    let repo_id = repo.id.as_str();
    let hooks = format!("/repositories/{repo_id}/webhooks");
    for (url, needle) in [
        ("ftp://example.com/x", "http or https"),
        ("not a url", "url `not a url`"),
        ("http://user:pass@example.com/x", "credentials"),
        ("https://", "url"),
    ] {
        assert_error(
            &call(&gw, Method::POST, &hooks, Some(json!({"url": url}))).await,
            StatusCode::BAD_REQUEST,
            "bad_request",
            needle,
        );
    }
    // The plugin's own message comes back.
    assert_error(
        &call(
            &gw,
            Method::POST,
            &hooks,
            Some(json!({"url": "https://example.com", "config": {"tagz": "v*"}})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "unknown config key `tagz`",
    );
    assert_error(
        &call(&gw, Method::POST, &hooks, Some(json!({"url": "https://example.com", "plugin": "slack", "config": {"tag_regex": "("}}))).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "config key `tag_regex`",
    );
    assert_error(
        &call(
            &gw,
            Method::POST,
            &hooks,
            Some(json!({"url": "https://example.com", "plugin": "nope"})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "plugin `nope` is not installed",
    );
    assert_error(
        &call(
            &gw,
            Method::POST,
            &hooks,
            Some(json!({"url": "https://example.com", "colour": "red"})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "unknown field `colour`",
    );
    assert_error(
        &call(
            &gw,
            Method::POST,
            "/repositories",
            Some(json!({"name": "Demo/App"})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "lowercase",
    );
    assert_error(
        &call(
            &gw,
            Method::POST,
            "/repositories",
            Some(json!({"name": "demo/app"})),
        )
        .await,
        StatusCode::CONFLICT,
        "conflict",
        "already exists",
    );
    assert_error(
        &call(
            &gw,
            Method::POST,
            "/repositories",
            Some(json!({"name": "x", "poll_interval_secs": 60})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "remote repositories only",
    );
    assert_error(
        &call(
            &gw,
            Method::POST,
            "/repositories",
            Some(json!({"name": "x", "kind": "remote", "poll_interval_secs": 1})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "between 10 and 604800",
    );
    assert_error(
        &call(&gw, Method::GET, "/events?type=image.pulled", None).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "image.pulled",
    );
    assert_error(
        &call(&gw, Method::GET, "/events?since=yesterday", None).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "RFC 3339",
    );

    let huge = json!({"name": "x".repeat(2 << 20)});
    let response = gw
        .api(Method::POST, "/repositories")
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");
    let response = gw
        .api(Method::POST, "/repositories")
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let response = gw
        .http
        .get(format!("{}/api/v1/nowhere", gw.url))
        .bearer_auth(&gw.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn repositories_and_webhooks_round_trip_with_write_only_secrets() {
    let gw = crate::gateway().await;
    let (status, repo) = call(
        &gw,
        Method::POST,
        "/repositories",
        Some(json!({"name": "demo/app", "registry": "127.0.0.1:5000", "webhooks": [
            {"url": "https://example.com/a", "secret": "generate", "config": {"tags": ["v*", "stable"], "events": "image.pushed"}},
            {"url": "https://example.com/b", "secret": "my-own-secret", "plugin": "slack", "enabled": false, "retry_schedule_secs": [1, 2]},
        ]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let generated = repo["webhooks"][0]["secret"]
        .as_str()
        .expect("a generated secret, once")
        .to_owned();
    assert!(generated.starts_with("whsec_"));
    assert!(
        repo["webhooks"][1].get("secret").is_none(),
        "a given secret is never echoed"
    );
    assert_eq!(repo["webhooks"][0]["config"]["tags"], "v*,stable");
    let repo_id = repo["id"].as_str().unwrap().to_owned();
    let a = repo["webhooks"][0]["id"].as_str().unwrap().to_owned();
    let b = repo["webhooks"][1]["id"].as_str().unwrap().to_owned();

    let read = get(&gw, &format!("/repositories/{repo_id}")).await;
    assert_eq!(read["registry"], "127.0.0.1:5000");
    for w in read["webhooks"].as_array().unwrap() {
        assert_eq!(w["has_secret"], true);
        assert!(w.get("secret").is_none());
    }
    let listed = get(&gw, "/repositories").await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(
        !listed.to_string().contains(&generated) && !listed.to_string().contains("my-own-secret")
    );

    let (status, patched) = call(
        &gw,
        Method::PATCH,
        &format!("/webhooks/{b}"),
        Some(json!({"enabled": true, "secret": null, "config": {"username": "bot"}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["enabled"], true);
    assert_eq!(patched["has_secret"], false);
    assert_eq!(patched["config"]["username"], "bot");
    let (_, rotated) = call(
        &gw,
        Method::PATCH,
        &format!("/webhooks/{a}"),
        Some(json!({"secret": "generate"})),
    )
    .await;
    let rotated = rotated["secret"]
        .as_str()
        .expect("the new secret, once")
        .to_owned();
    assert_ne!(rotated, generated);
    assert!(
        get(&gw, &format!("/webhooks/{a}"))
            .await
            .get("secret")
            .is_none()
    );

    let (status, _) = call(
        &gw,
        Method::PATCH,
        &format!("/repositories/{repo_id}"),
        Some(json!({"registry": "registry.example.com"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        get(&gw, &format!("/repositories/{repo_id}")).await["registry"],
        "registry.example.com"
    );
    assert_error(
        &call(
            &gw,
            Method::POST,
            &format!("/repositories/{repo_id}/poll"),
            None,
        )
        .await,
        StatusCode::CONFLICT,
        "conflict",
        "local repository",
    );

    let (status, _) = call(&gw, Method::DELETE, &format!("/webhooks/{b}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        get(&gw, &format!("/repositories/{repo_id}/webhooks"))
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (status, _) = call(
        &gw,
        Method::DELETE,
        &format!("/repositories/{repo_id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(
        &call(&gw, Method::GET, &format!("/webhooks/{a}"), None).await,
        StatusCode::NOT_FOUND,
        "not_found",
        &a,
    );
}

#[tokio::test]
async fn test_webhook_reports_success_errors_and_what_was_sent() {
    let gw = crate::gateway().await;
    let ok = Receiver::start().await;
    let failing = Receiver::start().await;
    failing.set_default(500);
    let closed = callisto_tests::gateway::free_port();
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let repo = repository(
        &gw,
        json!([
            {"url": ok.url("/ok"), "secret": secret, "config": {"tags": "never-matches"}},
            {"url": failing.url("/fail")},
            {"url": format!("http://127.0.0.1:{closed}/x")},
        ]),
    )
    .await;
    let ids: Vec<String> = repo.webhooks.unwrap().into_iter().map(|w| w.id).collect();

    let (status, result) = call(
        &gw,
        Method::POST,
        &format!("/webhooks/{}/test", ids[0]),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(result["result"], "success");
    assert_eq!(result["status"], 200);
    assert_eq!(result["summary"], "Success (200)");
    assert_eq!(result["response"]["body"]["data"], "ok");
    // A test reaches the receiver whatever the webhook filters.
    let got = ok.wait_for(1, Duration::from_secs(10)).await;
    crate::delivery::verify_standard(&got[0], secret);
    assert_eq!(got[0].json()["type"], "webhook.test");
    // The request shown is the request sent, signature included.
    let shown = &result["request"];
    assert_eq!(shown["method"], "POST");
    assert_eq!(shown["url"], ok.url("/ok"));
    assert_eq!(
        shown["body"]["data"].as_str().unwrap().as_bytes(),
        &got[0].body[..]
    );
    let header = |name: &str| {
        shown["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h[0] == name)
            .map(|h| h[1].as_str().unwrap().to_owned())
    };
    assert_eq!(
        header("webhook-signature").as_deref(),
        got[0].header("webhook-signature")
    );

    let (_, result) = call(
        &gw,
        Method::POST,
        &format!("/webhooks/{}/test", ids[1]),
        None,
    )
    .await;
    assert_eq!(result["result"], "error");
    assert_eq!(result["summary"], "Error (500)");
    assert_eq!(result["status"], 500);
    let (_, result) = call(
        &gw,
        Method::POST,
        &format!("/webhooks/{}/test", ids[2]),
        None,
    )
    .await;
    assert_eq!(result["summary"], "Error: connection refused");
    assert!(result["status"].is_null() && result["response"].is_null());

    // Tests appear in the history as tests, and are never retried.
    let history = get(&gw, &format!("/webhooks/{}/deliveries", ids[1])).await;
    let item = &history["items"][0];
    assert_eq!(item["kind"], "test");
    assert_eq!(item["state"], "failed");
    let delivery = get(
        &gw,
        &format!("/deliveries/{}", item["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(delivery["attempt_log"].as_array().unwrap().len(), 1);
    assert_error(
        &call(
            &gw,
            Method::POST,
            &format!("/deliveries/{}/redeliver", item["id"].as_str().unwrap()),
            None,
        )
        .await,
        StatusCode::CONFLICT,
        "conflict",
        "test",
    );
    failing.wait_quiet(Duration::from_millis(1500)).await;
    assert_eq!(failing.requests().len(), 1);

    // An unsaved webhook: the form before "Add Notification".
    let (status, result) = call(
        &gw,
        Method::POST,
        &format!("/repositories/{}/webhooks/test", repo.id.as_str()),
        Some(json!({"url": ok.url("/draft"), "plugin": "slack"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(result["summary"], "Success (200)");
    assert!(result["delivery_id"].is_null());
    let got = ok.wait_for(2, Duration::from_secs(10)).await;
    assert!(got[1].json()["text"].as_str().unwrap().contains("demo/app"));
    assert_eq!(
        get(&gw, &format!("/repositories/{}/webhooks", repo.id.as_str()))
            .await
            .as_array()
            .unwrap()
            .len(),
        3,
        "nothing was saved"
    );
}

#[tokio::test]
async fn plugins_upload_replace_and_delete_and_a_plugin_error_is_reported() {
    let gw = crate::gateway().await;
    let put = |body: &'static [u8], ct: &'static str| {
        gw.api(Method::PUT, "/plugins/hostile")
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let response = put(guests::HOSTILE, "application/wasm").await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let view: Value = response.json().await.unwrap();
    assert_eq!(view["name"], "hostile");
    assert_eq!(view["source"], "installed");
    assert_eq!(view["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(
        put(guests::HOSTILE, "application/wasm")
            .await
            .unwrap()
            .status(),
        StatusCode::OK,
        "replaced"
    );
    assert_eq!(
        put(guests::HOSTILE, "application/octet-stream")
            .await
            .unwrap()
            .status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let bad = put(guests::WRONG_WORLD, "application/wasm").await.unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let bad: Value = bad.json().await.unwrap();
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing export"),
        "{bad}"
    );
    let list = get(&gw, "/plugins").await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "cloudevents",
            "default",
            "discord",
            "europa",
            "flux",
            "github-dispatch",
            "hostile",
            "slack",
            "teams",
            "template"
        ]
    );

    let receiver = Receiver::start().await;
    let repo = repository(
        &gw,
        json!([{"url": receiver.url("/h"), "plugin": "hostile", "config": {"mode": "error"}}]),
    )
    .await;
    let webhook = repo.webhooks.as_ref().unwrap()[0].id.clone();
    let (_, result) = call(
        &gw,
        Method::POST,
        &format!("/webhooks/{webhook}/test"),
        None,
    )
    .await;
    assert_eq!(result["result"], "error");
    assert_eq!(
        result["summary"],
        "Error: plugin hostile: hostile plugin refuses on purpose"
    );
    assert!(result["request"].is_null(), "nothing was sent");

    // In fan-out the plugin's error fails the delivery, naming the plugin.
    ingest(&gw, &push_envelope("v1")).await;
    let is_event = |d: &&Value| d["kind"] == "event";
    let page = eventually(&gw, &format!("/webhooks/{webhook}/deliveries"), |p| {
        p["items"].as_array().unwrap().iter().any(|d| is_event(&d))
    })
    .await;
    let delivery = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(is_event)
        .unwrap();
    assert_eq!(delivery["state"], "failed");
    assert_eq!(
        delivery["last_error"],
        "plugin hostile: hostile plugin refuses on purpose"
    );
    assert!(
        receiver
            .requests()
            .iter()
            .all(|r| r.path != "/h" || r.json()["type"] == "webhook.test")
    );

    assert_error(
        &call(&gw, Method::DELETE, "/plugins/hostile", None).await,
        StatusCode::CONFLICT,
        "conflict",
        &webhook,
    );
    assert_error(
        &call(&gw, Method::DELETE, "/plugins/default", None).await,
        StatusCode::CONFLICT,
        "conflict",
        "built-in",
    );
    call(&gw, Method::DELETE, &format!("/webhooks/{webhook}"), None).await;
    let (status, _) = call(&gw, Method::DELETE, "/plugins/hostile", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(
        &call(&gw, Method::DELETE, "/plugins/hostile", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "hostile",
    );
}

/// A plugin's panic reaches the delivery with its message and location,
/// not as an anonymous trap.
#[tokio::test]
async fn a_panicking_plugin_names_the_panic_on_the_delivery() {
    let gw = crate::gateway().await;
    let installed = gw
        .api(Method::PUT, "/plugins/hostile")
        .header("content-type", "application/wasm")
        .body(guests::HOSTILE)
        .send()
        .await
        .unwrap();
    assert_eq!(installed.status(), StatusCode::CREATED);
    let repo = repository(
        &gw,
        json!([{"url": "http://127.0.0.1:9/h", "plugin": "hostile", "config": {"mode": "trap"}}]),
    )
    .await;
    let webhook = repo.webhooks.as_ref().unwrap()[0].id.clone();
    ingest(&gw, &push_envelope("v1")).await;
    let page = eventually(&gw, &format!("/webhooks/{webhook}/deliveries"), |p| {
        !p["items"].as_array().unwrap().is_empty()
    })
    .await;
    let delivery = &page["items"][0];
    assert_eq!(delivery["state"], "failed");
    assert_eq!(
        delivery["last_error"],
        "plugin hostile faulted: trapped: panicked at tests/guests/hostile/src/lib.rs:27:25: \
         hostile plugin panics on purpose"
    );
}

/// Test Webhook runs the webhook's filter too: the test is sent whatever it
/// says, and the answer says when it declines the sample event.
#[tokio::test]
async fn test_webhook_says_when_the_filter_declines_the_sample() {
    let gw = crate::gateway().await;
    let installed = gw
        .api(Method::PUT, "/plugins/hostile")
        .header("content-type", "application/wasm")
        .body(guests::HOSTILE)
        .send()
        .await
        .unwrap();
    assert_eq!(installed.status(), StatusCode::CREATED);
    let receiver = Receiver::start().await;
    let repo = repository(
        &gw,
        json!([
            {"url": receiver.url("/declines"), "plugin": "hostile", "config": {"mode": "decline"}},
            {"url": receiver.url("/tags"), "config": {"tags": "v*"}},
        ]),
    )
    .await;
    let hooks = repo.webhooks.as_ref().unwrap();

    let declined = gw.client().test_webhook(&hooks[0].id).await.unwrap();
    assert_eq!(declined.summary, "Success (200)");
    assert_eq!(
        declined.filtered.as_deref(),
        Some("hostile declines every event on purpose")
    );
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].path, "/declines", "sent anyway");

    // The standard filter passes test events whatever it keeps.
    let passed = gw.client().test_webhook(&hooks[1].id).await.unwrap();
    assert_eq!(passed.summary, "Success (200)");
    assert_eq!(passed.filtered, None);

    let (status, unsaved) = call(
        &gw,
        Method::POST,
        &format!("/repositories/{}/webhooks/test", repo.id.as_str()),
        Some(json!({"url": receiver.url("/draft"), "plugin": "hostile", "config": {"mode": "decline"}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{unsaved}");
    assert_eq!(
        unsaved["filtered"],
        "hostile declines every event on purpose"
    );
}

/// Per webhook, the events its filter declined and why, in memory; by
/// plugin and rule in /metrics.
#[tokio::test]
async fn filtered_events_are_shown_per_webhook_and_counted_by_rule() {
    let gw = crate::gateway().await;
    let receiver = Receiver::start().await;
    let repo = repository(
        &gw,
        json!([
            {"url": receiver.url("/v"), "config": {"tags": "v*", "exclude_tags": "*-rc*"}},
            {"url": receiver.url("/all")},
        ]),
    )
    .await;
    let hooks = repo.webhooks.as_ref().unwrap();
    let (tagged, all) = (hooks[0].id.clone(), hooks[1].id.clone());
    for tag in ["v1", "latest", "v2-rc1", "nightly"] {
        ingest(&gw, &push_envelope(tag)).await;
    }
    receiver.wait_for(5, Duration::from_secs(10)).await;
    let filtered = eventually(&gw, &format!("/webhooks/{tagged}/filtered"), |f| {
        f["count"] == 3
    })
    .await;
    assert_eq!(filtered["webhook_id"], tagged.as_str());
    let recent = filtered["recent"].as_array().unwrap();
    let seen: Vec<(&str, &str, &str)> = recent
        .iter()
        .map(|e| {
            (
                e["tag"].as_str().unwrap(),
                e["rule"].as_str().unwrap(),
                e["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                "nightly",
                "tags",
                "tags=v*: tag `nightly` matches none of the globs"
            ),
            (
                "v2-rc1",
                "exclude_tags",
                "exclude_tags: tag `v2-rc1` matches `*-rc*`"
            ),
            (
                "latest",
                "tags",
                "tags=v*: tag `latest` matches none of the globs"
            ),
        ],
        "newest first"
    );
    assert_eq!(recent[0]["type"], "image.pushed");
    assert_eq!(recent[0]["plugin"], "default");
    assert!(recent[0]["event_id"].as_str().unwrap().starts_with("evt_"));
    assert!(recent[0]["filtered_at"].is_string());
    let typed = gw.client().filtered(&tagged).await.unwrap();
    assert_eq!(typed.count, 3);

    let none = get(&gw, &format!("/webhooks/{all}/filtered")).await;
    assert_eq!(none, json!({"webhook_id": all, "count": 0, "recent": []}));

    let metrics = gw.metrics().await;
    for needle in [
        "callisto_events_filtered_total{plugin=\"default\",rule=\"tags\"} 2",
        "callisto_events_filtered_total{plugin=\"default\",rule=\"exclude_tags\"} 1",
    ] {
        assert!(metrics.contains(needle), "no `{needle}` in:\n{metrics}");
    }

    let (status, _) = call(&gw, Method::DELETE, &format!("/webhooks/{tagged}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(
        &call(
            &gw,
            Method::GET,
            &format!("/webhooks/{tagged}/filtered"),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
        &tagged,
    );
}

#[tokio::test]
async fn events_page_newest_first_and_filter() {
    let gw = crate::gateway().await;
    for i in 0..5 {
        ingest(&gw, &push_envelope(&format!("v{i}"))).await;
    }
    let delete = r#"{"events":[{"id":"del-x","timestamp":"2026-11-28T21:00:00Z","action":"delete",
        "target":{"repository":"demo/app","tag":"v0"},"request":{"host":"127.0.0.1:5000"}}]}"#;
    ingest(&gw, delete).await;

    let first = get(&gw, "/events?limit=2").await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    assert_eq!(first["items"][0]["type"], "image.deleted", "newest first");
    let next = first["next"].as_str().unwrap();
    let second = get(&gw, &format!("/events?limit=2&before={next}")).await;
    assert_eq!(second["items"][0]["tag"], "v3");
    let mut all = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let path = match &before {
            Some(b) => format!("/events?limit=4&before={b}"),
            None => "/events?limit=4".to_owned(),
        };
        let page = get(&gw, &path).await;
        all.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_owned()),
        );
        match page["next"].as_str() {
            Some(n) => before = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(all.len(), 6);
    let mut sorted = all.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(all, sorted);

    let pushed = get(&gw, "/events?type=image.pushed").await;
    assert_eq!(pushed["items"].as_array().unwrap().len(), 5);
    let repo = get(&gw, "/repositories").await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        get(&gw, &format!("/events?repository={repo}")).await["items"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    assert_eq!(
        get(&gw, "/events?repository=repo_other").await["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // The fixture's pushes occurred at 20:25:52, the delete at 21:00.
    let late = get(&gw, "/events?since=2026-11-28T20:30:00Z").await;
    assert_eq!(late["items"].as_array().unwrap().len(), 1);
    let early = get(&gw, "/events?until=2026-11-28T20:30:00Z").await;
    assert_eq!(early["items"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn replay_makes_new_deliveries_and_deleting_a_repository_keeps_its_events() {
    let gw = crate::gateway().await;
    let receiver = Receiver::start().await;
    let repo = repository(
        &gw,
        json!([{"url": receiver.url("/h"), "config": {"tags": "v*"}}]),
    )
    .await;
    let webhook = repo.webhooks.as_ref().unwrap()[0].id.clone();
    let first = ingest(&gw, &push_envelope("v1")).await.events[0].clone();
    ingest(&gw, &push_envelope("latest")).await;
    ingest(&gw, &push_envelope("v2")).await;
    receiver.wait_for(2, Duration::from_secs(10)).await;

    let (status, replay) = call(
        &gw,
        Method::POST,
        &format!("/webhooks/{webhook}/replay"),
        Some(json!({"since": first})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{replay}");
    assert_eq!(replay["events"], 3);
    assert_eq!(replay["filtered"], 1, "latest does not match v*");
    assert_eq!(replay["deliveries"].as_array().unwrap().len(), 2);
    let got = receiver.wait_for(4, Duration::from_secs(10)).await;
    let ids: std::collections::HashSet<_> = got
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 4, "a replay makes new deliveries");
    eventually(
        &gw,
        &format!("/webhooks/{webhook}/deliveries?state=succeeded"),
        |p| p["items"].as_array().unwrap().len() == 4,
    )
    .await;
    assert!(
        get(&gw, &format!("/webhooks/{webhook}/deliveries?state=dead")).await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_error(
        &call(
            &gw,
            Method::GET,
            &format!("/webhooks/{webhook}/deliveries?state=lost"),
            None,
        )
        .await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "lost",
    );
    assert_error(
        &call(
            &gw,
            Method::POST,
            &format!("/webhooks/{webhook}/replay"),
            Some(json!({"since": "evt_nope"})),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
        "evt_nope",
    );

    let (status, _) = call(
        &gw,
        Method::DELETE,
        &format!("/repositories/{}", repo.id.as_str()),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        get(&gw, "/events").await["items"].as_array().unwrap().len(),
        3,
        "events stay in the log"
    );
}

#[tokio::test]
async fn metrics_speak_prometheus() {
    let gw = crate::gateway().await;
    let receiver = Receiver::start().await;
    repository(&gw, json!([{"url": receiver.url("/h")}])).await;
    ingest(&gw, &push_envelope("v1")).await;
    receiver.wait_for(1, Duration::from_secs(10)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = gw.metrics().await;
        let ready = text.contains("callisto_deliveries_total{outcome=\"succeeded\"} 1");
        if ready || tokio::time::Instant::now() > deadline {
            for needle in [
                "callisto_events_ingested_total{source=\"local\"} 1",
                "callisto_deliveries_total{outcome=\"succeeded\"} 1",
                "callisto_attempt_duration_seconds_bucket",
                "callisto_deliveries_pending",
                "callisto_plugin_call_duration_seconds_bucket{le=",
                "callisto_poll_errors_total 0",
                "# TYPE callisto_attempt_duration_seconds histogram",
            ] {
                assert!(text.contains(needle), "no `{needle}` in:\n{text}");
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
