//! A JSON-RPC proxy in front of a test's Anvil: counts the methods it forwards and can stall
//! (hold every request without answering) on demand, as an overloaded node does.

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
use serde_json::Value;

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
}

impl RpcProxy {
    pub async fn start(app: &TestApp) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = RpcProxy {
            url: format!("http://{}/", listener.local_addr().unwrap()),
            upstream: app.rpc_url.clone(),
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
            counts: Arc::default(),
            stall: Arc::default(),
            stalled: Arc::default(),
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
}

async fn forward(State(p): State<RpcProxy>, body: Bytes) -> (StatusCode, String) {
    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
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
