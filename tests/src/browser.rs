//! Headless Chromium, driven over WebDriver: Debian's `chromium` and
//! `chromium-driver` (installed by `tests/run`). Each [`Browser`] starts
//! its own `chromedriver` on a free loopback port and stops it when
//! dropped, so tests may run side by side.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// How long a page may take to show what a test waits for.
const PATIENCE: Duration = Duration::from_secs(20);

/// One browser session, with its driver process.
pub struct Browser {
    pub client: Client,
    /// `http://127.0.0.1:PORT` of chromedriver, for the commands fantoccini
    /// lacks (the computed accessible name).
    driver_url: String,
    driver: tokio::process::Child,
    _profile: tempfile::TempDir,
    http: reqwest::Client,
    /// Where [`Browser::screenshot`] saves.
    pub screenshots: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium of `width`×`height`,
    /// saving screenshots in `screenshots` (made if missing).
    pub async fn start(screenshots: PathBuf, width: u32, height: u32) -> Browser {
        std::fs::create_dir_all(&screenshots).expect("create the screenshot directory");
        assert!(
            std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
            "chromium and chromium-driver are not installed: `apt-get install chromium chromium-driver` (./tests/run does it)"
        );
        let http = crate::http();
        let port = free_port();
        let driver = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let driver_url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + PATIENCE;
        loop {
            let ready = http
                .get(format!("{driver_url}/status"))
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success());
            if ready.is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().expect("a browser profile directory");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    // Root in a container: Chromium's sandbox cannot start.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--no-proxy-server",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&driver_url)
            .await
            .expect("a WebDriver session");
        Browser {
            client,
            driver_url,
            driver,
            _profile: profile,
            http,
            screenshots,
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// Waits for an element.
    pub async fn wait(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}` appeared: {e}"))
    }

    /// Waits for the form field whose label is `label` (its accessible
    /// name), the `n`th of them from 0.
    pub async fn field_n(&self, label: &str, n: usize) -> Element {
        let xpath = format!("//label[normalize-space(.)='{label}']");
        let deadline = Instant::now() + PATIENCE;
        loop {
            let labels = self
                .client
                .find_all(Locator::XPath(&xpath))
                .await
                .unwrap_or_default();
            if let Some(label_el) = labels.get(n) {
                let id = label_el
                    .attr("for")
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("label `{label}` names no field"));
                let field = self
                    .client
                    .find(Locator::Id(&id))
                    .await
                    .unwrap_or_else(|e| panic!("label `{label}` points at no #{id}: {e}"));
                return field;
            }
            assert!(Instant::now() < deadline, "no field labelled `{label}`");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn field(&self, label: &str) -> Element {
        self.field_n(label, 0).await
    }

    /// Clears the field labelled `label` and types `text`.
    pub async fn fill(&self, label: &str, text: &str) {
        let f = self.field(label).await;
        f.clear().await.unwrap();
        if !text.is_empty() {
            f.send_keys(text).await.unwrap();
        }
    }

    /// Waits for the button or link named `name` (its text), the first.
    pub async fn button(&self, name: &str) -> Element {
        let xpath = format!(
            "//*[(self::button or self::a) and normalize-space(.)='{name}' and not(ancestor-or-self::*[@hidden])]"
        );
        self.client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::XPath(&xpath))
            .await
            .unwrap_or_else(|e| panic!("no button `{name}`: {e}"))
    }

    pub async fn click(&self, name: &str) {
        self.button(name).await.click().await.unwrap();
    }

    /// The accessible name Chromium computes for an element.
    pub async fn accessible_name(&self, element: &Element) -> String {
        let session = self.client.session_id().await.unwrap().unwrap();
        let url = format!(
            "{}/session/{session}/element/{}/computedlabel",
            self.driver_url,
            element.element_id()
        );
        let body: serde_json::Value = self
            .http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["value"].as_str().unwrap_or_default().to_owned()
    }

    /// Waits until the page's visible text contains `text`; returns it.
    pub async fn wait_text(&self, text: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let body = self.body_text().await;
            if body.contains(text) {
                return body;
            }
            if Instant::now() > deadline {
                panic!("the page never showed `{text}`; it shows:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn body_text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(b) => b.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Runs `script` in the page and returns its value.
    pub async fn eval(&self, script: &str) -> serde_json::Value {
        self.client.execute(script, vec![]).await.expect("script")
    }

    /// Saves the whole window as `<n>-<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        let path = self.screenshots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }

    /// Ends the session and the driver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill().await;
    }
}
