//! A real HTTP receiver on loopback that records what it is sent and answers
//! as the test scripts it.
//!
//! Callisto's job ends at someone else's HTTP endpoint, and the interesting
//! cases are the ones where that endpoint misbehaves: it fails a few times,
//! asks to be retried later, is slow, or is gone. A [`Receiver`] plays that
//! endpoint over a real socket, so the gateway's own HTTP client, timeouts
//! and connection handling are exercised too.
//!
//! Requests are recorded when they arrive (before any scripted delay), in
//! order, and survive [`Receiver::stop`] / [`Receiver::restart`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use tokio::sync::watch;

/// How long [`Receiver::stop`] waits for open connections to close before it
/// gives up on them.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// Every header in arrival order; names are lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// When it arrived.
    pub at: Instant,
    /// The sender's address: one per connection, so that a test can see
    /// whether connections are kept alive and reused.
    pub peer: SocketAddr,
}

impl Received {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The body as JSON; panics with the body if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "{} {}: body is not JSON ({error}): {}",
                self.method,
                self.path,
                self.text()
            )
        })
    }

    /// The body as text, lossily.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One scripted answer.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    /// The body, when not the usual `ok` or `scripted <status>`.
    body: Option<String>,
}

/// What the receiver records and how it answers, shared with its handler.
struct Shared {
    requests: Mutex<Vec<Received>>,
    /// The number of recorded requests, for waiting without polling.
    count: watch::Sender<usize>,
    script: Mutex<Script>,
}

struct Script {
    queue: VecDeque<Reply>,
    default: Reply,
    delay: Duration,
}

/// The running server: how to stop it and the task to wait for.
struct Server {
    stopping: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// The handler's state: the receiver's record and script, and whether this
/// run of the server is stopping (which cuts scripted delays short).
#[derive(Clone)]
struct Handler {
    shared: Arc<Shared>,
    stopping: watch::Receiver<bool>,
}

/// An HTTP/1.1 server on 127.0.0.1 that records every request (any method,
/// any path) and answers from its script: first the queued replies, one per
/// request, then the default (200 with body `ok` unless changed).
pub struct Receiver {
    port: u16,
    shared: Arc<Shared>,
    server: Option<Server>,
}

impl Receiver {
    /// Starts on a free port.
    pub async fn start() -> Receiver {
        Receiver::start_on(0).await
    }

    /// Starts on `port` (0 for any free one); panics if it cannot bind.
    pub async fn start_on(port: u16) -> Receiver {
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            count: watch::Sender::new(0),
            script: Mutex::new(Script {
                queue: VecDeque::new(),
                default: Reply {
                    status: 200,
                    headers: Vec::new(),
                    body: None,
                },
                delay: Duration::ZERO,
            }),
        });
        let listener = bind(port).await;
        let port = listener
            .local_addr()
            .expect("a bound listener has an address")
            .port();
        let server = serve(listener, shared.clone());
        Receiver {
            port,
            shared,
            server: Some(server),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT/<path>` (a leading `/` in `path` is optional).
    pub fn url(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }

    /// Everything received so far, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Forgets the requests received so far.
    pub fn clear(&self) {
        self.shared.requests.lock().unwrap().clear();
        self.shared.count.send_replace(0);
    }

    /// Waits until at least `n` requests have arrived and returns them all;
    /// panics after `timeout` saying how many did arrive.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let mut count = self.shared.count.subscribe();
        let arrived = tokio::time::timeout(timeout, count.wait_for(|count| *count >= n)).await;
        if arrived.is_err() {
            let requests = self.requests();
            let summary: Vec<String> = requests
                .iter()
                .map(|r| format!("{} {}", r.method, r.path))
                .collect();
            panic!(
                "receiver on port {}: waited {timeout:?} for {n} requests, {} arrived: {summary:?}",
                self.port,
                requests.len()
            );
        }
        self.requests()
    }

    /// Waits until no request has arrived for `quiet`, and returns all the
    /// requests. It does not return while requests keep coming faster.
    pub async fn wait_quiet(&self, quiet: Duration) -> Vec<Received> {
        let mut count = self.shared.count.subscribe();
        count.mark_unchanged();
        while let Ok(Ok(())) = tokio::time::timeout(quiet, count.changed()).await {}
        self.requests()
    }

    /// Queues one reply per status, used by the next requests in order;
    /// after them the default applies again.
    pub fn respond_with(&self, statuses: impl IntoIterator<Item = u16>) {
        let mut script = self.shared.script.lock().unwrap();
        for status in statuses {
            script.queue.push_back(Reply {
                status,
                headers: Vec::new(),
                body: None,
            });
        }
    }

    /// Queues one reply with extra headers, e.g. `429` with `Retry-After`.
    pub fn respond_with_headers(&self, status: u16, headers: &[(&str, &str)]) {
        let headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.shared.script.lock().unwrap().queue.push_back(Reply {
            status,
            headers,
            body: None,
        });
    }

    /// Queues one reply with this body, e.g. one larger than the gateway
    /// keeps.
    pub fn respond_with_body(&self, status: u16, body: impl Into<String>) {
        self.shared.script.lock().unwrap().queue.push_back(Reply {
            status,
            headers: Vec::new(),
            body: Some(body.into()),
        });
    }

    /// The status of every reply that is not queued.
    pub fn set_default(&self, status: u16) {
        self.shared.script.lock().unwrap().default = Reply {
            status,
            headers: Vec::new(),
            body: None,
        };
    }

    /// Waits this long before answering each request (a slow receiver).
    pub fn set_delay(&self, delay: Duration) {
        self.shared.script.lock().unwrap().delay = delay;
    }

    /// Stops listening, so new connections are refused, and closes open
    /// connections once their current request is answered. A request still
    /// in its scripted delay is answered 503 at once. What was recorded, and
    /// the script, are kept.
    pub async fn stop(&mut self) {
        let Some(server) = self.server.take() else {
            return;
        };
        let _ = server.stopping.send(true);
        let mut task = server.task;
        if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
            task.abort();
        }
    }

    /// Listens again on the same port, keeping the recorded requests and the
    /// script. Panics if the port cannot be bound again.
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = bind(self.port).await;
        self.server = Some(serve(listener, self.shared.clone()));
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // Graceful shutdown goes on in the background; the runtime ends it
        // if the test finishes first.
        if let Some(server) = self.server.take() {
            let _ = server.stopping.send(true);
        }
    }
}

/// Binds 127.0.0.1:`port`, retrying briefly: right after a stop, the
/// previous listener may still be closing.
async fn bind(port: u16) -> tokio::net::TcpListener {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut attempts = 0;
    loop {
        match tokio::net::TcpListener::bind(address).await {
            Ok(listener) => return listener,
            Err(_) if attempts < 50 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("receiver: cannot listen on {address}: {error}"),
        }
    }
}

/// Serves every method and path with [`record_and_answer`] until `stopping`
/// turns true; axum then drops the listener at once and closes each
/// connection after its current request.
fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) -> Server {
    let (stopping, stopping_rx) = watch::channel(false);
    let handler = Handler {
        shared,
        stopping: stopping_rx.clone(),
    };
    let app = axum::Router::new()
        .fallback(record_and_answer)
        .with_state(handler);
    let task = tokio::spawn(async move {
        let mut stopping = stopping_rx;
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stopping.wait_for(|stopping| *stopping).await;
        })
        .await;
    });
    Server { stopping, task }
}

/// The one handler: record, wait as scripted, answer as scripted.
async fn record_and_answer(
    State(handler): State<Handler>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let Handler {
        shared,
        mut stopping,
    } = handler;
    let at = Instant::now();
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let received = Received {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        headers,
        body,
        at,
        peer,
    };

    let (reply, delay) = {
        let mut script = shared.script.lock().unwrap();
        let reply = script
            .queue
            .pop_front()
            .unwrap_or_else(|| script.default.clone());
        (reply, script.delay)
    };
    {
        let mut requests = shared.requests.lock().unwrap();
        requests.push(received);
        shared.count.send_replace(requests.len());
    }

    if !delay.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopping.wait_for(|stopping| *stopping) => {
                return build_response(Reply {
                    status: 503,
                    headers: Vec::new(),
                    body: None,
                });
            }
        }
    }
    build_response(reply)
}

fn build_response(reply: Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = if let Some(body) = reply.body {
        body
    } else if status.is_success() {
        "ok".to_owned()
    } else {
        format!("scripted {}", status.as_u16())
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    for (name, value) in reply.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            response.headers_mut().append(name, value);
        }
    }
    response
}
