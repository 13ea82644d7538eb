//! A JSON-RPC proxy in front of a test's Anvil: counts the methods it forwards, can stall (hold
//! every request without answering) on demand, as an overloaded node does, and can answer
//! requests itself by a rule (a node refusing broadcasts with messages of its own, a lagging
//! backend hiding receipts). Every request no rule answers goes to Anvil unchanged.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, routing::post};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::TestApp;

#[derive(Clone)]
pub struct RpcProxy {
    /// The URL to give the relayer.
    pub url: String,
    upstream: String,
    http: reqwest::Client,
    counts: Arc<Mutex<HashMap<String, u64>>>,
    stall: Arc<AtomicBool>,
    /// Requests held by a stall right now.
    stalled: Arc<AtomicUsize>,
    rule: Arc<Mutex<Option<Rule>>>,
}

/// Given a request, the answer to give instead of Anvil's (`{"result": …}` or `{"error": …}`),
/// or `None` to forward it.
pub type Rule = Arc<dyn Fn(&Value) -> Option<Value> + Send + Sync>;

impl RpcProxy {
    pub async fn start(app: &TestApp) -> Self {
        Self::start_at(&app.rpc_url).await
    }

    /// A proxy in front of the node at `upstream`.
    pub async fn start_at(upstream: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = RpcProxy {
            url: format!("http://{}/", listener.local_addr().unwrap()),
            upstream: upstream.to_string(),
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
            counts: Arc::default(),
            stall: Arc::default(),
            stalled: Arc::default(),
            rule: Arc::default(),
        };
        let router = Router::new().route("/", post(forward)).with_state(proxy.clone());
        tokio::spawn(axum::serve(listener, router).into_future());
        proxy
    }

    /// How many calls of each of `methods` were forwarded since the last [`RpcProxy::reset`].
    pub fn calls_of(&self, methods: &[&str]) -> HashMap<String, u64> {
        let counts = self.counts.lock().unwrap();
        counts.iter().filter(|(m, _)| methods.contains(&m.as_str())).map(|(m, n)| (m.clone(), *n)).collect()
    }

    pub fn reset(&self) {
        self.counts.lock().unwrap().clear();
    }

    /// From now on every request is held (for up to a minute) instead of answered.
    pub fn stall(&self, on: bool) {
        self.stall.store(on, Ordering::SeqCst);
    }

    /// Requests held right now.
    pub fn stalled(&self) -> usize {
        self.stalled.load(Ordering::SeqCst)
    }

    /// Answers requests by `rule` from now on.
    pub fn set(&self, rule: impl Fn(&Value) -> Option<Value> + Send + Sync + 'static) {
        *self.rule.lock().unwrap() = Some(Arc::new(rule));
    }

    /// Forwards everything from now on.
    pub fn clear(&self) {
        *self.rule.lock().unwrap() = None;
    }

    /// A provider reaching the node through this proxy, built as the relayer builds its own.
    pub fn provider(&self) -> alloy::providers::DynProvider {
        streampay_relayer::chain::connect_many(&[&self.url], Duration::from_secs(10)).unwrap()
    }
}

async fn forward(State(p): State<RpcProxy>, body: Bytes) -> (StatusCode, String) {
    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
        let rule = p.rule.lock().unwrap().clone();
        if v.is_object()
            && let Some(answer) = rule.and_then(|r| r(&v))
        {
            let mut body = json!({ "jsonrpc": "2.0", "id": v["id"].clone() });
            for (k, val) in answer.as_object().expect("a rule answers an object") {
                body[k] = val.clone();
            }
            return (StatusCode::OK, body.to_string());
        }
        let calls = match v {
            Value::Array(calls) => calls,
            one => vec![one],
        };
        let mut counts = p.counts.lock().unwrap();
        for c in calls {
            if let Some(m) = c["method"].as_str() {
                *counts.entry(m.to_string()).or_default() += 1;
            }
        }
    }
    if p.stall.load(Ordering::SeqCst) {
        p.stalled.fetch_add(1, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while p.stall.load(Ordering::SeqCst) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        p.stalled.fetch_sub(1, Ordering::SeqCst);
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
