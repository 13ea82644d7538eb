//! A JSON-RPC proxy in front of Anvil whose answers a test can rewrite: a node that refuses
//! broadcasts with messages of its own, or that hides receipts for a while (a lagging backend
//! behind a load balancer). Every request it does not rewrite goes to Anvil unchanged.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use alloy::providers::DynProvider;
use axum::{Json, Router, extract::State, routing::post};
use serde_json::{Value, json};

/// Given a request, the answer to give instead of Anvil's (`{"result": …}` or `{"error": …}`),
/// or `None` to forward it.
pub type Rule = Arc<dyn Fn(&Value) -> Option<Value> + Send + Sync>;

#[derive(Clone)]
pub struct RpcProxy {
    pub url: String,
    rule: Arc<Mutex<Option<Rule>>>,
}

#[derive(Clone)]
struct Inner {
    upstream: String,
    http: reqwest::Client,
    rule: Arc<Mutex<Option<Rule>>>,
}

async fn forward(State(p): State<Inner>, Json(request): Json<Value>) -> Json<Value> {
    if request.is_object() {
        let rule = p.rule.lock().unwrap().clone();
        if let Some(answer) = rule.and_then(|r| r(&request)) {
            let mut body = json!({ "jsonrpc": "2.0", "id": request["id"].clone() });
            for (k, v) in answer.as_object().expect("a rule answers an object") {
                body[k] = v.clone();
            }
            return Json(body);
        }
    }
    let answer = p
        .http
        .post(&p.upstream)
        .json(&request)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("anvil answers the proxy")
        .json()
        .await
        .expect("anvil answers JSON");
    Json(answer)
}

impl RpcProxy {
    pub async fn start(upstream: &str) -> Self {
        let rule: Arc<Mutex<Option<Rule>>> = Arc::default();
        let inner = Inner { upstream: upstream.to_string(), http: reqwest::Client::new(), rule: rule.clone() };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let router = Router::new().route("/", post(forward)).with_state(inner);
        tokio::spawn(axum::serve(listener, router).into_future());
        Self { url, rule }
    }

    /// Rewrites answers with `rule` from now on.
    pub fn set(&self, rule: impl Fn(&Value) -> Option<Value> + Send + Sync + 'static) {
        *self.rule.lock().unwrap() = Some(Arc::new(rule));
    }

    /// Forwards everything from now on.
    pub fn clear(&self) {
        *self.rule.lock().unwrap() = None;
    }

    /// A provider reaching Anvil through this proxy, built as the relayer builds its own.
    pub fn provider(&self) -> DynProvider {
        streampay_relayer::chain::connect_many(&[&self.url], Duration::from_secs(10)).unwrap()
    }
}
