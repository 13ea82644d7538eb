//! Request ids and JSON logs: every response carries `X-Request-Id` (the caller's, or a new
//! UUID), and the JSON log lines written while serving a request carry the same id.

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use reqwest::StatusCode;
use serde_json::Value;
use streampay_relayer::{config::LogFormat, server::log_subscriber};
use tracing_subscriber::EnvFilter;

use crate::harness::spawn_app;

#[tokio::test]
async fn logs_request_ids_are_generated_or_honoured_and_echoed() {
    let app = spawn_app().await;
    let mut seen = Vec::new();
    for path in ["/health", "/api/v1/meta", "/nowhere"] {
        let resp = app.http.get(app.url(path)).send().await.unwrap();
        let id = resp.headers().get("x-request-id").unwrap_or_else(|| panic!("{path}: no X-Request-Id"));
        let id = id.to_str().unwrap().to_string();
        assert_eq!(id.len(), 36, "{path}: a UUID, got {id}");
        assert_eq!(id.matches('-').count(), 4, "{path}: a UUID, got {id}");
        seen.push(id);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 3, "each request gets its own id");
    // A caller's id is kept (a proxy's, or the client's own correlation id).
    let resp =
        app.http.get(app.url("/api/v1/contracts")).header("X-Request-Id", "client-abc-123").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["x-request-id"], "client-abc-123");
}

/// Collects what the subscriber writes.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// Single-threaded runtime: the server task runs on this thread, under the subscriber set here.
#[tokio::test(flavor = "current_thread")]
async fn logs_are_json_lines_carrying_the_request_id() {
    let capture = Capture::default();
    let writer = capture.clone();
    let _guard = tracing::subscriber::set_default(log_subscriber(LogFormat::Json, EnvFilter::new("info"), move || {
        writer.clone()
    }));
    let app = spawn_app().await;
    let resp = app.http.get(app.url("/health")).header("X-Request-Id", "req-json-log-1").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let generated = app.http.get(app.url("/nowhere")).send().await.unwrap();
    let generated = generated.headers()["x-request-id"].to_str().unwrap().to_string();

    let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    assert!(!lines.is_empty(), "nothing logged");
    for (id, path) in [("req-json-log-1", "/health"), (generated.as_str(), "/nowhere")] {
        let line = lines
            .iter()
            .find(|l| l["span"]["request_id"] == id && l["message"] == "finished processing request")
            .unwrap_or_else(|| panic!("no response line with request_id {id} in:\n{text}"));
        assert_eq!(line["span"]["path"], path, "{line}");
        assert_eq!(line["level"], "INFO");
        assert!(line["timestamp"].is_string() && line["status"].is_number(), "{line}");
    }
}
