//! The RPC URL is a secret (providers put their API key in it): it never reaches an answer
//! (`/health`, API errors, `LastError`, `/metrics`) or a log line of `streampay serve`, even
//! when the node fails in the ways whose error text names the URL.
//!
//! The relayer reaches Anvil through a proxy in this test that serves the key-bearing path; the
//! proxy can then "die" (every connection reset), on demand or at the moment the relayer
//! broadcasts, as a provider's endpoint does.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, routing::post};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};

use crate::harness::{ServeProcess, TestApp, spawn_app, tokens, wallet};

/// The pieces of the URL that must never be seen (key in the path, in the query, a password).
const SECRETS: [&str; 3] = ["PATHKEY-5ecr3t", "QUERYKEY-5ecr3t", "PASSWORD-5ecr3t"];

/// A connection of the proxy that fails every read and write once the proxy is killed.
struct Killable {
    inner: TcpStream,
    killed: Arc<AtomicBool>,
}

fn reset() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "proxy killed")
}

impl AsyncRead for Killable {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.killed.load(Ordering::SeqCst) {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Killable {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.killed.load(Ordering::SeqCst) {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

struct KillableListener {
    inner: TcpListener,
    killed: Arc<AtomicBool>,
}

impl axum::serve::Listener for KillableListener {
    type Io = Killable;
    type Addr = std::net::SocketAddr;
    async fn accept(&mut self) -> (Killable, std::net::SocketAddr) {
        loop {
            if let Ok((inner, addr)) = self.inner.accept().await {
                return (Killable { inner, killed: self.killed.clone() }, addr);
            }
        }
    }
    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.inner.local_addr()
    }
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    http: reqwest::Client,
    killed: Arc<AtomicBool>,
    /// Kill the proxy when the relayer broadcasts a transaction (before answering it).
    kill_on_send: Arc<AtomicBool>,
}

async fn forward(State(p): State<Proxy>, body: Bytes) -> (StatusCode, String) {
    if p.kill_on_send.load(Ordering::SeqCst) && String::from_utf8_lossy(&body).contains("eth_sendRawTransaction") {
        p.killed.store(true, Ordering::SeqCst); // the answer below is never written
    }
    let resp = p
        .http
        .post(&p.upstream)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("anvil answers the proxy");
    (resp.status(), resp.text().await.unwrap_or_default())
}

/// Serves `POST /v2/{key}` by forwarding to Anvil; answers the URL to configure.
async fn start_proxy(app: &TestApp) -> Proxy {
    let proxy = Proxy {
        upstream: app.rpc_url.clone(),
        http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
        killed: Arc::new(AtomicBool::new(false)),
        kill_on_send: Arc::new(AtomicBool::new(false)),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let router = Router::new().route("/v2/{key}", post(forward)).with_state(proxy.clone());
    tokio::spawn(axum::serve(KillableListener { inner: listener, killed: proxy.killed.clone() }, router).into_future());
    Proxy {
        upstream: format!("http://rpcuser:{}@127.0.0.1:{port}/v2/{}?apikey={}", SECRETS[2], SECRETS[0], SECRETS[1]),
        ..proxy
    }
}

/// Every answer the test saw, to be searched for the secret at the end.
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    async fn request(&mut self, app: &TestApp, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req.header("X-API-Key", &app.api_key).send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        self.0.push(text.clone());
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}

fn assert_no_secret(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} carries a piece of the RPC URL ({s}): {text}");
    }
}

#[tokio::test]
async fn the_rpc_url_never_reaches_an_answer_or_a_log_line() {
    let app = spawn_app().await;
    let proxy = start_proxy(&app).await;
    let dir = std::env::temp_dir().join(format!("streampay-secrets-{}", wallet().address()));
    // As chatty as an operator debugging a node outage would make it.
    let log = "debug,sqlx=info,hyper=info,hyper_util=info,reqwest=debug,h2=info";
    let serve = ServeProcess::start(
        &app,
        &dir,
        &[("STREAMPAY_RPC_URL", &proxy.upstream), ("STREAMPAY_INDEXER_POLL_MS", "50"), ("RUST_LOG", log)],
    )
    .await;
    let http = &app.http;
    let url = |p: &str| format!("{}{p}", serve.base);
    let mut seen = Seen::default();

    // Through the key-bearing URL, a gasless deposit goes through.
    let user = wallet();
    app.mint(user.address(), tokens(10)).await;
    let deposit = |n: &str| json!({"From": user.address(), "Amount": n});
    let (status, built) = seen.request(&app, http.post(url("/api/v1/USDC/payments/deposit")).json(&deposit("3"))).await;
    assert_eq!(status, StatusCode::OK, "{built}");
    let body = app.signed_execute_body(&user, &built).await;
    let (status, done) = seen.request(&app, http.post(url("/api/v1/USDC/meta/execute")).json(&body)).await;
    assert_eq!(status, StatusCode::OK, "{done}");

    // The node dies the moment the relayer broadcasts the next call: the send fails with a
    // transport error (reqwest's names the URL), which the queue records as the row's LastError.
    let (_, built) = seen.request(&app, http.post(url("/api/v1/USDC/payments/deposit")).json(&deposit("2"))).await;
    let body = app.signed_execute_body(&user, &built).await;
    let (_, later) = seen.request(&app, http.post(url("/api/v1/USDC/payments/deposit")).json(&deposit("1"))).await;
    let later = app.signed_execute_body(&user, &later).await;
    proxy.kill_on_send.store(true, Ordering::SeqCst);
    let (status, accepted) = seen
        .request(&app, http.post(url("/api/v1/USDC/meta/execute")).header("Prefer", "respond-async").json(&body))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let path = format!("/api/v1/transactions/{}", accepted["TransactionId"]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let last_error = loop {
        let (_, t) = seen.request(&app, http.get(url(&path))).await;
        if let Some(e) = t["LastError"].as_str() {
            break e.to_string();
        }
        assert!(tokio::time::Instant::now() < deadline, "the failed send was never recorded: {t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(proxy.killed.load(Ordering::SeqCst));
    assert!(last_error.contains(streampay_relayer::chain::REDACTED_RPC_URL), "{last_error}");

    // Everything else that can show a node error, with the node gone.
    // `/health` may answer from its one-second cache first: ask until it has probed the dead node.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let health = loop {
        let (status, health) = seen.request(&app, http.get(url("/health"))).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            break health;
        }
        assert!(tokio::time::Instant::now() < deadline, "/health never saw the node gone: {health}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(health["Checks"]["Rpc"]["Ok"], false, "{health}");
    let (status, refused) = seen.request(&app, http.post(url("/api/v1/USDC/meta/execute")).json(&later)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{refused}");
    let (status, _) = seen
        .request(
            &app,
            http.post(url("/api/v1/USDC/payments/"))
                .json(&json!({"From": user.address(), "To": wallet().address(), "Amount": "1"})),
        )
        .await;
    assert!(status.is_client_error() || status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::OK);
    seen.request(&app, http.get(url("/metrics"))).await;
    seen.request(&app, http.get(url("/"))).await;
    seen.request(&app, http.get(url("/api/v1/transactions?limit=100"))).await;

    // The node's failure did reach the logs, with the URL redacted.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !serve.lines().iter().any(|l| l.contains(streampay_relayer::chain::REDACTED_RPC_URL)) {
        assert!(tokio::time::Instant::now() < deadline, "no log line reports the node's failure");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for answer in &seen.0 {
        assert_no_secret("an answer", answer);
    }
    let lines = serve.lines();
    assert!(lines.len() > 20, "the relayer logged: {lines:?}");
    for line in &lines {
        assert_no_secret("a log line", line);
    }
    std::fs::remove_dir_all(&dir).ok();
}
