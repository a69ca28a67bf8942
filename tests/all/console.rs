//! The console in a real browser: headless Chromium (Debian's `chromium`
//! and `chromium-driver`) driven over WebDriver against the real gateway
//! and real receivers on loopback. Fields and buttons are found by their
//! labels and texts, the names a user (and a screen reader) sees.
//! Screenshots of every page are kept under
//! `$CARGO_TARGET_TMPDIR/console-screenshots/<test>/`.

use std::time::Duration;

use callisto_tests::browser::Browser;
use callisto_tests::receiver::Receiver;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// What a receiver answers that would run if the page ever parsed it as
/// markup: it would set `window.__pwned`.
const HOSTILE_BODY: &str =
    "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\"><b>bold</b>";
/// A tag as a hostile registry could report it.
const HOSTILE_TAG: &str = "<img src=x onerror=\"window.__pwned=3\">v1";

/// `$CARGO_TARGET_TMPDIR/console-screenshots/<test>`
fn screenshots(test: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("console-screenshots")
        .join(test)
}

/// Saves a screenshot of the page, scrolled to `css` if given, after
/// checking that no page shows a JavaScript value by mistake (`null`,
/// `undefined`, `[object ...]` as text).
async fn shot(browser: &Browser, name: &str, css: Option<&str>) {
    let stray = browser
        .eval(
            "const w = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT); \
             const bad = []; \
             while (w.nextNode()) { const t = w.currentNode.textContent.trim(); \
               if (w.currentNode.parentElement.closest('pre')) continue; \
               if (t === 'null' || t === 'undefined' || t.startsWith('[object')) bad.push(t); } \
             return bad;",
        )
        .await;
    assert_eq!(stray, json!([]), "{name}: stray values on the page");
    if let Some(css) = css {
        let script = format!("document.querySelector({css:?}).scrollIntoView({{block: 'start'}})");
        browser.eval(&script).await;
    }
    browser.screenshot(name).await;
}

/// Forgets the requests made so far, to count those of the next action.
/// The page's `fetch` is wrapped to record, in one sequence, when each
/// request was made and when its answer came: exact whatever the load on
/// the machine, unlike comparing resource timings.
async fn count_from_here(browser: &Browser) {
    browser
        .eval(
            "window.__calls = []; \
             if (!window.__wrapped) { \
               const original = window.fetch; \
               window.__seq = 0; \
               window.fetch = (...args) => { \
                 const call = { url: String(args[0] && args[0].url || args[0]), start: ++window.__seq, end: null }; \
                 window.__calls.push(call); \
                 const done = () => { call.end = ++window.__seq; }; \
                 return original(...args).then(r => { done(); return r; }, e => { done(); throw e; }); \
               }; \
               window.__wrapped = true; \
             }",
        )
        .await;
}

/// The API requests made since [`count_from_here`] were all sent before the
/// first answer came back: the action took one round trip, however many
/// requests. Returns how many there were.
async fn one_round_trip(browser: &Browser, action: &str) -> u64 {
    let seen = browser
        .eval(
            "const f = window.__calls || []; \
             const ends = f.filter(c => c.end !== null).map(c => c.end); \
             const first = ends.length ? Math.min(...ends) : Infinity; \
             return [f.length, f.filter(c => c.start > first).map(c => c.url)];",
        )
        .await;
    let count = seen[0].as_u64().unwrap();
    assert!(count >= 1, "{action}: no request counted");
    assert_eq!(
        seen[1],
        json!([]),
        "{action}: requests that waited for another's answer"
    );
    println!("{action}: {count} request(s), one round trip");
    count
}

async fn not_pwned(browser: &Browser) {
    let pwned = browser.eval("return window.__pwned === undefined").await;
    assert_eq!(pwned, Value::Bool(true), "text from outside ran as script");
    let injected = browser
        .eval("return document.querySelectorAll('main img, main script, main b').length")
        .await;
    assert_eq!(injected, json!(0), "text from outside became markup");
}

/// The text of the element found by `css`, waiting for it to contain `want`.
async fn wait_in(browser: &Browser, css: &str, want: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let found = browser
            .client
            .find_all(fantoccini::Locator::Css(css))
            .await
            .unwrap();
        for el in found {
            let text = el.text().await.unwrap_or_default();
            if text.contains(want) {
                return text;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no `{css}` shows `{want}`; the page shows:\n{}",
            browser.body_text().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reloads the page until an element found by `css` contains all of
/// `want`: for what the gateway records a moment after a receiver got it.
async fn reload_until(browser: &Browser, css: &str, want: &[&str]) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let found = browser
            .client
            .find_all(fantoccini::Locator::Css(css))
            .await
            .unwrap();
        for el in found {
            let text = el.text().await.unwrap_or_default();
            if want.iter().all(|w| text.contains(w)) {
                return text;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no `{css}` shows {want:?} after reloads; the page shows:\n{}",
            browser.body_text().await
        );
        browser.client.refresh().await.unwrap();
    }
}

async fn sign_in(browser: &Browser, url: &str, token: &str) {
    browser.goto(&format!("{url}/")).await;
    let field = browser.field("Admin token").await;
    field.clear().await.unwrap();
    // Enter submits: the form works from the keyboard alone.
    field.send_keys(&format!("{token}\u{E007}")).await.unwrap();
}

fn push_envelope(repository: &str, tag: &str) -> Value {
    json!({"events": [{
        "id": format!("console-{}", fastrand::u64(..)),
        "timestamp": "2026-11-28T20:25:52Z",
        "action": "push",
        "target": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "size": 401,
            "digest": "sha256:a2293004e1641d49c7d7341229010c763ee4bf9d76adb835fcc8c8ba3af87582",
            "repository": repository,
            "tag": tag,
        },
        "request": {"host": "127.0.0.1:5000", "method": "PUT"},
    }]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_walks_the_webhooks_flow_in_a_browser() {
    let gw = crate::gateway().await;
    let ok = Receiver::start().await;
    let failing = Receiver::start().await;
    failing.set_default(500);
    let mut down = Receiver::start().await;
    let down_url = down.url("/hook");
    down.stop().await;
    let hostile = Receiver::start().await;
    for _ in 0..4 {
        hostile.respond_with_body(200, HOSTILE_BODY);
    }

    let browser = Browser::start(screenshots("walkthrough"), 1280, 1000).await;
    let shots = browser.screenshots.clone();
    println!("console screenshots: {}", shots.display());

    // Sign-in: a wrong token is refused and said so.
    browser.goto(&format!("{}/", gw.url)).await;
    let token_field = browser.field("Admin token").await;
    assert_eq!(browser.accessible_name(&token_field).await, "Admin token");
    assert_eq!(
        token_field.attr("type").await.unwrap().as_deref(),
        Some("password")
    );
    shot(&browser, "01-sign-in", None).await;
    sign_in(&browser, &gw.url, "not-the-admin-token-0123").await;
    browser.wait_text("Wrong admin token.").await;
    shot(&browser, "02-wrong-token", None).await;

    sign_in(&browser, &gw.url, &gw.admin_token).await;
    wait_in(&browser, "h1", "Repositories").await;
    let url = browser.client.current_url().await.unwrap();
    assert!(
        !url.as_str().contains(&gw.admin_token),
        "the token is in the URL {url}"
    );
    // The cookie is out of the page's reach; the page focuses its heading.
    let cookie = browser
        .client
        .get_named_cookie("callisto_session")
        .await
        .unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");
    assert_eq!(browser.eval("return document.cookie").await, json!(""));
    assert_eq!(
        browser.eval("return document.activeElement.id").await,
        json!("page-title")
    );
    shot(&browser, "03-repositories-empty", None).await;
    // The skip link moves focus to the content without leaving the page.
    browser
        .eval("document.querySelector('.skip').click()")
        .await;
    assert_eq!(
        browser.eval("return document.activeElement.id").await,
        json!("main")
    );
    assert_eq!(browser.eval("return location.hash").await, json!(""));

    // Add repository, with a webhook in the same form and a generated secret.
    browser.click("Add repository").await;
    wait_in(&browser, "h1", "Add repository").await;
    browser.fill("Repository name", "demo/app").await;
    browser.click("Add a webhook").await;
    browser.fill("Webhook URL", &ok.url("/hook")).await;
    browser
        .field("Generate a secret")
        .await
        .click()
        .await
        .unwrap();
    shot(&browser, "04-add-repository", None).await;
    // On the form page the link is gone; the submit button has that name.
    browser.click("Add repository").await;
    let secret = browser.wait(".secret-once input").await;
    let secret = secret.prop("value").await.unwrap().unwrap_or_default();
    assert!(
        secret.starts_with("whsec_"),
        "generated secret shown once: {secret}"
    );
    shot(&browser, "05-repository-added", None).await;
    browser.click("Open Repository Settings").await;

    // Repository Settings: the notification made with the repository is
    // listed (the page had it from the form's answer).
    wait_in(&browser, "h1", "Repository Settings").await;
    wait_in(&browser, ".notifications", &ok.url("/hook")).await;
    for name in ["Webhook URL", "Webhook Secret", "Plugin", "tag_regex"] {
        let f = browser.field(name).await;
        assert_eq!(browser.accessible_name(&f).await, name);
    }
    for name in ["Test Webhook", "Add Notification"] {
        let b = browser.button(name).await;
        assert_eq!(browser.accessible_name(&b).await, name);
    }
    shot(&browser, "06-repository-settings", None).await;

    // Test Webhook against a receiver that answers 500.
    browser.fill("Webhook URL", &failing.url("/hook")).await;
    count_from_here(&browser).await;
    browser.click("Test Webhook").await;
    wait_in(&browser, ".test-outcome .test-summary", "Error (500)").await;
    one_round_trip(&browser, "Test Webhook").await;
    browser.click("View Details").await;
    wait_in(&browser, ".test-outcome .details", "Response").await;
    wait_in(&browser, ".test-outcome .details", "500").await;
    shot(&browser, "07-test-error-500", Some(".test-outcome")).await;

    // ... against one that is down.
    browser.fill("Webhook URL", &down_url).await;
    browser.click("Test Webhook").await;
    let summary = wait_in(&browser, ".test-outcome .test-summary", "Error").await;
    assert!(summary.starts_with("Error:"), "{summary}");
    browser.click("View Details").await;
    wait_in(&browser, ".test-outcome .details", "No response").await;
    shot(&browser, "08-test-receiver-down", Some(".test-outcome")).await;

    // ... against one whose answer is markup: shown as text, never run.
    // This time from the keyboard alone: Tab moves from field to field in
    // reading order, Enter presses the focused button.
    browser.fill("Webhook URL", &hostile.url("/hook")).await;
    let active_id = "return document.activeElement.id";
    let secret_id = browser
        .field("Webhook Secret")
        .await
        .attr("id")
        .await
        .unwrap();
    browser
        .field("Webhook URL")
        .await
        .send_keys("\u{E004}")
        .await
        .unwrap();
    assert_eq!(browser.eval(active_id).await, json!(secret_id));
    browser
        .client
        .active_element()
        .await
        .unwrap()
        .send_keys("typed-secret-0123456789")
        .await
        .unwrap();
    browser
        .button("Test Webhook")
        .await
        .send_keys("\u{E007}")
        .await
        .unwrap();
    wait_in(&browser, ".test-outcome .test-summary", "Success (200)").await;
    browser
        .button("View Details")
        .await
        .send_keys("\u{E007}")
        .await
        .unwrap();
    let details = wait_in(&browser, ".test-outcome .details", "<script>").await;
    assert!(details.contains(HOSTILE_BODY), "{details}");
    assert!(
        details.contains("webhook-signature"),
        "the request's headers: {details}"
    );
    not_pwned(&browser).await;
    shot(&browser, "09-view-details-markup", Some(".test-outcome")).await;
    let sent = hostile.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(sent[0].json()["type"], "webhook.test");

    // The plugin refuses a bad configuration in its own words.
    browser.fill("tag_regex", "(unclosed").await;
    browser.click("Add Notification").await;
    let refused = wait_in(&browser, "form [role=alert]", "tag_regex").await;
    shot(
        &browser,
        "10-plugin-refuses-config",
        Some("form [role=alert]"),
    )
    .await;
    assert!(refused.contains("tag_regex"), "{refused}");

    // Another plugin: its own keys become fields.
    browser
        .field("Plugin")
        .await
        .select_by_value("slack")
        .await
        .unwrap();
    let channel = browser.field("channel").await;
    assert_eq!(browser.accessible_name(&channel).await, "channel");
    browser
        .field("Plugin")
        .await
        .select_by_value("default")
        .await
        .unwrap();
    browser.fill("tag_regex", "").await;
    count_from_here(&browser).await;
    browser.click("Add Notification").await;
    wait_in(&browser, "[role=status]", "Notification added.").await;
    one_round_trip(&browser, "Add Notification").await;
    let listed = browser
        .client
        .find_all(fantoccini::Locator::Css(".notifications > li"))
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);
    shot(&browser, "11-notification-added", Some(".notifications")).await;
    let api_view: Value = gw
        .api(reqwest::Method::GET, "/repositories")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let repo_id = api_view[0]["id"].as_str().unwrap().to_owned();
    let webhooks: Value = gw
        .api(
            reqwest::Method::GET,
            &format!("/repositories/{repo_id}/webhooks"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let added = webhooks
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["url"] == hostile.url("/hook"))
        .expect("the console's webhook is in the API");
    assert_eq!(added["has_secret"], true);

    // The list: disable, enable, edit, test.
    let second = ".notifications > li:nth-child(2)";
    browser
        .client
        .find(fantoccini::Locator::Css(&format!(
            "{second} .actions button"
        )))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_in(&browser, "[role=status]", "Notification disabled.").await;
    wait_in(&browser, second, "disabled").await;
    shot(&browser, "12-notification-disabled", Some(".notifications")).await;
    browser
        .client
        .find(fantoccini::Locator::XPath(
            "(//ul[@class='notifications']/li)[2]//button[normalize-space(.)='Enable']",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_in(&browser, "[role=status]", "Notification enabled.").await;
    browser
        .client
        .find(fantoccini::Locator::XPath(
            "(//ul[@class='notifications']/li)[2]//button[normalize-space(.)='Edit']",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_in(&browser, "h2", "Edit Notification").await;
    assert_eq!(
        browser
            .field("Webhook URL")
            .await
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some(hostile.url("/hook").as_str())
    );
    browser.fill("events", "image.pushed").await;
    shot(&browser, "13-edit-notification", Some("#form-title")).await;
    count_from_here(&browser).await;
    browser.click("Save Notification").await;
    wait_in(&browser, "[role=status]", "Notification saved.").await;
    one_round_trip(&browser, "Save Notification").await;
    wait_in(&browser, second, "events=image.pushed").await;
    browser
        .client
        .find(fantoccini::Locator::XPath(
            "(//ul[@class='notifications']/li)[1]//button[normalize-space(.)='Test']",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_in(&browser, ".row-outcome .test-summary", "Success (200)").await;
    shot(&browser, "14-row-test", Some(".row-outcome")).await;

    // Delete asks first, then the notification is gone.
    count_from_here(&browser).await;
    browser
        .client
        .find(fantoccini::Locator::XPath(
            "(//ul[@class='notifications']/li)[2]//button[normalize-space(.)='Delete']",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let question = browser.client.get_alert_text().await.unwrap();
    assert!(question.contains(&hostile.url("/hook")), "{question}");
    browser.client.accept_alert().await.unwrap();
    wait_in(&browser, "[role=status]", "Notification deleted.").await;
    one_round_trip(&browser, "Delete").await;
    let listed = browser
        .client
        .find_all(fantoccini::Locator::Css(".notifications > li"))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);

    // An event whose tag is markup, from the registry.
    let ingest = gw
        .http
        .post(format!("{}/ingest/distribution", gw.url))
        .bearer_auth(&gw.ingest_token)
        .json(&push_envelope("demo/app", HOSTILE_TAG))
        .send()
        .await
        .unwrap();
    assert_eq!(ingest.status(), StatusCode::ACCEPTED);
    // The first notification (the generated secret) gets it: one test, one event.
    let got = ok.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(got[1].json()["tag"], HOSTILE_TAG);

    // Events: the log shows the tag as text.
    count_from_here(&browser).await;
    browser.click("Events").await;
    wait_in(&browser, "h1", "Events").await;
    let events = wait_in(&browser, "table", HOSTILE_TAG).await;
    one_round_trip(&browser, "the Events page").await;
    assert!(events.contains("image.pushed"), "{events}");
    not_pwned(&browser).await;
    shot(&browser, "15-events", None).await;
    browser
        .field("Type")
        .await
        .select_by_value("image.deleted")
        .await
        .unwrap();
    browser.click("Filter").await;
    browser.wait_text("No events match.").await;
    assert!(
        browser
            .client
            .current_url()
            .await
            .unwrap()
            .as_str()
            .contains("type=image.deleted")
    );
    shot(&browser, "16-events-filtered", None).await;
    browser.client.back().await.unwrap();
    wait_in(&browser, "table", HOSTILE_TAG).await;
    count_from_here(&browser).await;
    browser.click("image.pushed").await;
    wait_in(&browser, "h1", "Event").await;
    let tag = wait_in(&browser, ".event-tag", "onerror").await;
    one_round_trip(&browser, "an event's page").await;
    assert_eq!(tag, HOSTILE_TAG);
    not_pwned(&browser).await;
    let event_id = browser
        .eval("return JSON.parse(document.querySelector('pre').textContent).id")
        .await;
    let event_id = event_id.as_str().unwrap().to_owned();
    shot(&browser, "17-event", None).await;

    // Deliveries of the first notification: the event's delivery, its
    // attempt, Redeliver.
    browser
        .goto(&format!("{}/#/repositories/{repo_id}", gw.url))
        .await;
    wait_in(&browser, ".notifications", &ok.url("/hook")).await;
    count_from_here(&browser).await;
    browser.click("Deliveries").await;
    wait_in(&browser, "h1", "Deliveries").await;
    wait_in(&browser, "table", &event_id).await;
    one_round_trip(&browser, "the Deliveries page").await;
    reload_until(&browser, "tbody tr", &[&event_id, "succeeded"]).await;
    shot(&browser, "18-deliveries", None).await;
    let delivery_link = browser
        .client
        .find(fantoccini::Locator::XPath(&format!(
            "//tr[td/a[normalize-space(.)='{event_id}']]/th/a"
        )))
        .await
        .unwrap();
    delivery_link.click().await.unwrap();
    wait_in(&browser, "h1", "Delivery").await;
    wait_in(&browser, ".attempt", "Attempt 1").await;
    wait_in(&browser, ".attempt", "Response").await;
    shot(&browser, "19-delivery", None).await;
    count_from_here(&browser).await;
    browser.click("Redeliver").await;
    wait_in(&browser, "[role=status]", "Redelivery queued").await;
    one_round_trip(&browser, "Redeliver").await;
    ok.wait_for(3, Duration::from_secs(20)).await;
    reload_until(&browser, ".attempt", &["Attempt 2"]).await;
    shot(&browser, "20-redelivered", Some(".attempt")).await;

    // Replay from the event.
    browser.client.back().await.unwrap();
    wait_in(&browser, "h1", "Deliveries").await;
    browser.fill("Replay from event", &event_id).await;
    count_from_here(&browser).await;
    browser.click("Replay").await;
    wait_in(
        &browser,
        "[role=status]",
        "Replayed 1 events: 1 new deliveries",
    )
    .await;
    one_round_trip(&browser, "Replay").await;
    ok.wait_for(4, Duration::from_secs(20)).await;
    shot(&browser, "21-replayed", Some("form")).await;

    // Plugins: list, upload, replace.
    count_from_here(&browser).await;
    browser.click("Plugins").await;
    wait_in(&browser, "h1", "Plugins").await;
    wait_in(&browser, "table", "slack").await;
    one_round_trip(&browser, "the Plugins page").await;
    browser.fill("Plugin name", "my-discord").await;
    browser
        .field("Component (.wasm)")
        .await
        .send_keys(callisto_tests::guests::DISCORD_PATH)
        .await
        .unwrap();
    count_from_here(&browser).await;
    browser.click("Upload plugin").await;
    wait_in(&browser, "[role=status]", "Installed my-discord").await;
    one_round_trip(&browser, "Upload plugin").await;
    wait_in(&browser, "table", "installed").await;
    browser.fill("Plugin name", "my-discord").await;
    browser
        .field("Component (.wasm)")
        .await
        .send_keys(callisto_tests::guests::DISCORD_PATH)
        .await
        .unwrap();
    browser.click("Upload plugin").await;
    wait_in(&browser, "[role=status]", "Replaced my-discord").await;
    shot(&browser, "22-plugins", Some("form")).await;

    // A phone-width window: nothing is wider than the screen.
    browser.client.set_window_size(390, 844).await.unwrap();
    for (page, name) in [
        (format!("#/repositories/{repo_id}"), "23-phone-settings"),
        ("#/repositories".to_owned(), "24-phone-repositories"),
        ("#/events".to_owned(), "25-phone-events"),
    ] {
        browser.goto(&format!("{}/{page}", gw.url)).await;
        browser.wait("#page-title").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let fits = browser
            .eval("return document.documentElement.scrollWidth <= window.innerWidth + 1")
            .await;
        shot(&browser, name, None).await;
        assert_eq!(fits, json!(true), "{page} is wider than a phone");
    }

    // Sign out: the cookie no longer opens the API.
    browser.click("Sign out").await;
    browser.wait_text("Signed out.").await;
    browser.field("Admin token").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_asks_to_sign_in_again() {
    let gw = crate::gateway_with(|c| c.console.session_ttl_secs = 1).await;
    let browser = Browser::start(screenshots("expired-session"), 1280, 900).await;
    sign_in(&browser, &gw.url, &gw.admin_token).await;
    wait_in(&browser, "h1", "Repositories").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The next action finds the session gone and asks for the token again.
    browser.click("Events").await;
    browser.wait_text("session has expired").await;
    browser.field("Admin token").await;
    shot(&browser, "expired", None).await;
    // After a reload the form is there; signing in again goes on where
    // the user was.
    browser.client.refresh().await.unwrap();
    browser
        .field("Admin token")
        .await
        .send_keys(&format!("{}\u{E007}", gw.admin_token))
        .await
        .unwrap();
    wait_in(&browser, "h1", "Events").await;
    browser.close().await;
}

fn cookie_of(response: &reqwest::Response) -> String {
    let set = response.headers()["set-cookie"].to_str().unwrap();
    set.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn console_pages_are_locked_down_and_session_writes_need_csrf() {
    let gw = crate::gateway().await;
    let http = callisto_tests::http();
    let page = http.get(format!("{}/", gw.url)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    for part in [
        "default-src 'self'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    let js = http
        .get(format!("{}/console/app.js", gw.url))
        .send()
        .await
        .unwrap();
    assert!(
        js.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(js.headers().contains_key("content-security-policy"));
    let missing = http
        .get(format!("{}/console/nope.js", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    let sign_in = |token: &str, origin: Option<&str>| {
        let mut r = http
            .post(format!("{}/console/session", gw.url))
            .json(&json!({ "token": token }));
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send()
    };
    assert_eq!(
        sign_in("wrong-token-0123456789", None)
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    // Another site cannot sign a browser in (login CSRF).
    assert_eq!(
        sign_in(&gw.admin_token, Some("http://evil.example"))
            .await
            .unwrap()
            .status(),
        StatusCode::FORBIDDEN
    );
    let ok = sign_in(&gw.admin_token, Some(&gw.url)).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let set = ok.headers()["set-cookie"].to_str().unwrap().to_owned();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set.contains(part), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    let cookie = cookie_of(&ok);
    let csrf = ok.json::<Value>().await.unwrap()["csrf_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // Reads need only the cookie.
    let list = http
        .get(format!("{}/api/v1/repositories", gw.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), StatusCode::OK);
    // A write needs the CSRF token, from this origin.
    let create = |csrf: Option<&str>, extra: Option<(&str, &str)>| {
        let mut r = http
            .post(format!("{}/api/v1/repositories", gw.url))
            .header("cookie", &cookie)
            .json(&json!({"name": format!("demo/x{}", fastrand::u32(..))}));
        if let Some(c) = csrf {
            r = r.header("x-csrf-token", c);
        }
        if let Some((k, v)) = extra {
            r = r.header(k, v);
        }
        r.send()
    };
    for (token, extra) in [
        (None, None),
        (Some("not-the-csrf-token"), None),
        (Some(csrf.as_str()), Some(("sec-fetch-site", "cross-site"))),
        (Some(csrf.as_str()), Some(("origin", "http://evil.example"))),
    ] {
        let refused = create(token, extra).await.unwrap();
        assert_eq!(
            refused.status(),
            StatusCode::FORBIDDEN,
            "{token:?} {extra:?}"
        );
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], "forbidden");
    }
    let origin = gw.url.clone();
    let created = create(Some(&csrf), Some(("origin", origin.as_str())))
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);

    // The session answers the page after a reload; sign-out ends it.
    let current = http
        .get(format!("{}/console/session", gw.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        current.json::<Value>().await.unwrap()["csrf_token"],
        csrf.as_str()
    );
    let out = http
        .delete(format!("{}/console/session", gw.url))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    let after = http
        .get(format!("{}/api/v1/repositories", gw.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);

    // Behind a proxy that terminates TLS, the cookie can be made Secure.
    let proxied = crate::gateway_with(|c| c.console.secure_cookie = true).await;
    let signed_in = http
        .post(format!("{}/console/session", proxied.url))
        .json(&json!({ "token": proxied.admin_token }))
        .send()
        .await
        .unwrap();
    let set = signed_in.headers()["set-cookie"].to_str().unwrap();
    assert!(set.ends_with("; Secure"), "{set}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_repository_is_added_with_its_webhooks_in_one_form() {
    use callisto_tests::oci::{ImageLayout, RegistryClient};
    let registry = callisto_tests::registry::Registry::builder()
        .htpasswd("robot", "s3cret-pass")
        .start()
        .await
        .expect("docker-registry starts");
    let client = RegistryClient::new(&registry.host(), Some(("robot", "s3cret-pass")));
    let image = ImageLayout::new("console").unwrap();
    client.push_image("team/api", "v1", &image).await.unwrap();
    client
        .put_manifest("team/api", "latest", &image)
        .await
        .unwrap();
    let gw = crate::gateway().await;
    let receiver = Receiver::start().await;

    let browser = Browser::start(screenshots("remote"), 1280, 1000).await;
    sign_in(&browser, &gw.url, &gw.admin_token).await;
    wait_in(&browser, "h1", "Repositories").await;
    browser.click("Add repository").await;
    browser.fill("Repository name", "team/api").await;
    browser
        .field("Kind")
        .await
        .select_by_value("remote")
        .await
        .unwrap();
    browser.fill("Registry", &registry.host()).await;
    browser
        .fill("Registry credentials: username", "robot")
        .await;
    browser
        .fill("Registry credentials: password", "s3cret-pass")
        .await;
    browser.fill("Tag globs", "v*").await;
    browser
        .field("Initial sync")
        .await
        .select_by_value("notify")
        .await
        .unwrap();
    browser
        .field("Plain HTTP (insecure registry)")
        .await
        .click()
        .await
        .unwrap();
    browser.click("Add a webhook").await;
    browser.fill("Webhook URL", &receiver.url("/hook")).await;
    shot(&browser, "01-add-remote", Some("form")).await;
    browser.click("Add repository").await;
    wait_in(&browser, "h1", "Repository Settings").await;
    wait_in(&browser, ".notifications", &receiver.url("/hook")).await;

    // The first sync notifies v1 only (the glob), through the webhook made
    // in the same request.
    let got = receiver.wait_for(1, Duration::from_secs(60)).await;
    assert_eq!(got[0].json()["tag"], "v1");
    let repos: Value = gw
        .api(reqwest::Method::GET, "/repositories")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let repo = &repos[0];
    assert_eq!(repo["kind"], "remote");
    assert_eq!(repo["tags"], json!(["v*"]));
    assert_eq!(repo["has_credentials"], true);
    assert_eq!(repo["insecure"], true);

    // Its own settings change in the same page.
    browser.click("Edit repository").await;
    browser.fill("Tag globs", "v*, latest").await;
    shot(&browser, "02-edit-remote", Some("form")).await;
    count_from_here(&browser).await;
    browser.click("Save repository").await;
    wait_in(&browser, "[role=status]", "Repository saved.").await;
    one_round_trip(&browser, "Save repository").await;
    wait_in(&browser, "dl.facts", "v*, latest").await;
    let saved: Value = gw
        .api(
            reqwest::Method::GET,
            &format!("/repositories/{}", repo["id"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(saved["tags"], json!(["v*", "latest"]));
    assert_eq!(
        saved["has_credentials"], true,
        "an empty password keeps the credentials"
    );

    // The list shows the poll status and the last event: the new glob
    // brought `latest` in.
    browser.goto(&format!("{}/#/repositories", gw.url)).await;
    let row = reload_until(
        &browser,
        "tbody tr",
        &["team/api", "remote", "2 tags", "latest"],
    )
    .await;
    assert!(row.contains("image.pushed"), "{row}");
    shot(&browser, "03-remote-listed", None).await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receivers_delivery_shows_its_attempt_and_next_retry() {
    let gw = crate::gateway().await;
    let failing = Receiver::start().await;
    failing.set_default(500);
    let created: Value = gw
        .api(reqwest::Method::POST, "/repositories")
        .json(&json!({"name": "demo/failing", "webhooks": [{"url": failing.url("/hook")}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let webhook_id = created["webhooks"][0]["id"].as_str().unwrap().to_owned();
    let ingest = gw
        .http
        .post(format!("{}/ingest/distribution", gw.url))
        .bearer_auth(&gw.ingest_token)
        .json(&push_envelope("demo/failing", "v2"))
        .send()
        .await
        .unwrap();
    assert_eq!(ingest.status(), StatusCode::ACCEPTED);
    failing.wait_for(1, Duration::from_secs(20)).await;

    let browser = Browser::start(screenshots("retry"), 1280, 1000).await;
    sign_in(&browser, &gw.url, &gw.admin_token).await;
    wait_in(&browser, "h1", "Repositories").await;
    browser
        .goto(&format!("{}/#/webhooks/{webhook_id}/deliveries", gw.url))
        .await;
    // Pending after one failed attempt (500), with the time of the next.
    let row = reload_until(&browser, "tbody tr", &["pending", "500"]).await;
    let next_retry = browser
        .eval("return document.querySelector('tbody tr td:nth-child(7) time')?.getAttribute('datetime') ?? null")
        .await;
    assert!(next_retry.is_string(), "no next retry in {row}");
    shot(&browser, "01-pending-delivery", None).await;
    browser
        .client
        .find(fantoccini::Locator::Css("tbody tr th a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let attempt = wait_in(&browser, ".attempt", "Attempt 1").await;
    assert!(attempt.contains("failed"), "{attempt}");
    assert!(
        attempt.contains("scripted 500"),
        "the receiver's body: {attempt}"
    );
    wait_in(&browser, "dl.facts", "Next retry").await;
    shot(&browser, "02-failed-attempt", None).await;
    browser.close().await;
}
