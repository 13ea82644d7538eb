//! Discovery: `/api/v1/meta`, `X-Api-Version`, `/openapi.json` (complete against the router,
//! the seed reference and the error-code catalog), `/docs`, `/changelog`.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use streampay_relayer::api::{API_VERSION, ErrorCode};

use crate::harness::{TestApp, spawn_app};

const HTTP_METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// `(METHOD, path)` of every route registered in `api::app`, read from its source so that a route
/// added there without documentation fails this test. Trailing slashes are trimmed (the router
/// answers both spellings).
fn router_routes() -> BTreeSet<(String, String)> {
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/api/mod.rs")).unwrap();
    let start = src.find("pub fn app(").expect("api::app in src/api/mod.rs");
    let body = &src[start..];
    let body = &body[..body.find("\n}\n").expect("end of api::app")];
    let mut routes = BTreeSet::new();
    for stmt in body.split(';') {
        let (prefix, segments): (&str, Vec<&str>) = if stmt.contains("both(v1,") {
            ("/api/v1", stmt.split("both(v1,").skip(1).collect())
        } else {
            ("", stmt.split(".route(").skip(1).collect())
        };
        for seg in segments {
            let path = seg.split('"').nth(1).expect("route path literal");
            let methods = methods_in(seg);
            assert!(!methods.is_empty(), "no method found for route {path} in: {seg}");
            for m in methods {
                routes.insert((m, normalize(&format!("{prefix}{path}"))));
            }
        }
    }
    assert!(routes.len() > 10, "parsed too few routes from api::app: {routes:?}");
    routes
}

/// Method-router constructors (`get(`, `.post(`, …) in a route registration.
fn methods_in(seg: &str) -> Vec<String> {
    let mut found = Vec::new();
    for m in HTTP_METHODS {
        let needle = format!("{m}(");
        let mut from = 0;
        while let Some(i) = seg[from..].find(&needle) {
            let at = from + i;
            let before = seg[..at].chars().last().unwrap_or(' ');
            if !(before.is_alphanumeric() || before == '_' || before == ':') {
                found.push(m.to_uppercase());
            }
            from = at + needle.len();
        }
    }
    found
}

fn normalize(path: &str) -> String {
    match path.trim_end_matches('/') {
        "" => "/".to_string(),
        p => p.to_string(),
    }
}

async fn openapi(app: &TestApp) -> Value {
    let resp = app.http.get(app.url("/openapi.json")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    resp.json().await.unwrap()
}

/// `(METHOD, normalized path) -> operation` of the document.
fn documented(doc: &Value) -> BTreeMap<(String, String), Value> {
    let mut ops = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in HTTP_METHODS {
            if let Some(op) = item.get(m) {
                ops.insert((m.to_uppercase(), normalize(path)), op.clone());
            }
        }
    }
    ops
}

#[tokio::test]
async fn meta_reports_dated_version_capabilities_and_chain_id_without_a_key() {
    let app = spawn_app().await;
    let (status, body) = app.get_with_key("/api/v1/meta", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let version = body["ApiVersion"].as_str().unwrap();
    assert_eq!(version, API_VERSION);
    let parts: Vec<&str> = version.split('-').collect();
    assert!(parts.len() == 3 && parts[0].len() == 4 && parts.iter().all(|p| p.parse::<u32>().is_ok()), "{version}");
    assert_eq!(body["ChainId"], app.chain_id);
    let caps: Vec<&str> = body["Capabilities"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert!(caps.contains(&"meta_transactions") && caps.contains(&"openapi"), "{caps:?}");
    assert_eq!(body["Contracts"], serde_json::json!(["USDC"]));
    // The links it gives resolve.
    for link in ["Changelog", "Openapi", "Docs"] {
        let url = body[link].as_str().unwrap();
        let resp = app.http.get(app.url(url)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{link} -> {url}");
    }
}

#[tokio::test]
async fn every_response_carries_the_dated_api_version_header() {
    let app = spawn_app().await;
    app.sync_index().await;
    let who = crate::harness::wallet().address();
    let cases: Vec<(Method, String, Option<&str>, StatusCode)> = vec![
        (Method::GET, "/".into(), None, StatusCode::OK),
        (Method::GET, "/health".into(), None, StatusCode::OK),
        (Method::GET, "/api/v1/meta".into(), None, StatusCode::OK),
        (Method::GET, "/openapi.json".into(), None, StatusCode::OK),
        (Method::GET, "/docs".into(), None, StatusCode::OK),
        (Method::GET, "/api/v1/contracts".into(), Some(app.api_key.as_str()), StatusCode::OK),
        (Method::GET, format!("/api/v1/USDC/payments/balance/{who}"), Some(app.api_key.as_str()), StatusCode::OK),
        (Method::GET, "/api/v1/contracts".into(), None, StatusCode::UNAUTHORIZED),
        (Method::GET, "/api/v1/USDC/payments/balance/0x12".into(), Some(app.api_key.as_str()), StatusCode::BAD_REQUEST),
        (Method::GET, "/nowhere".into(), None, StatusCode::NOT_FOUND),
        (Method::PUT, "/api/v1/contracts".into(), None, StatusCode::METHOD_NOT_ALLOWED),
    ];
    for (method, path, key, expected) in cases {
        let mut req = app.http.request(method.clone(), app.url(&path));
        if let Some(k) = key {
            req = req.header("X-API-Key", k);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), expected, "{method} {path}");
        assert_eq!(
            resp.headers().get("x-api-version").map(|v| v.to_str().unwrap().to_string()),
            Some(API_VERSION.to_string()),
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn openapi_documents_every_route_in_the_router() {
    let app = spawn_app().await;
    let doc = openapi(&app).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "OpenAPI 3.x");
    assert_eq!(doc["info"]["version"], API_VERSION);
    let ops = documented(&doc);
    let missing: Vec<_> = router_routes().into_iter().filter(|r| !ops.contains_key(r)).collect();
    assert!(
        missing.is_empty(),
        "routes missing from /openapi.json (add #[utoipa::path] and list them in discovery::ApiDoc): {missing:?}"
    );
}

#[tokio::test]
async fn openapi_documents_every_seed_endpoint_with_schemas_and_error_codes() {
    let app = spawn_app().await;
    let doc = openapi(&app).await;
    let ops = documented(&doc);
    // The AzothPay reference, verbatim.
    let seed = [
        ("GET", "/"),
        ("GET", "/api/v1/contracts"),
        ("POST", "/api/v1/{contract}/subscriptions/"),
        ("GET", "/api/v1/{contract}/subscriptions/{address}"),
        ("DELETE", "/api/v1/{contract}/subscriptions/{address}"),
        ("POST", "/api/v1/{contract}/payments/"),
        ("POST", "/api/v1/{contract}/payments/deposit"),
        ("POST", "/api/v1/{contract}/payments/withdraw"),
        ("GET", "/api/v1/{contract}/payments/balance/{address}"),
        ("GET", "/api/v1/{contract}/meta/nonce/{account}"),
        ("POST", "/api/v1/{contract}/meta/execute"),
        ("POST", "/api/v1/{contract}/batch/subscriptions"),
        ("POST", "/api/v1/{contract}/batch/payments"),
    ];
    for (method, path) in seed {
        let op =
            ops.get(&(method.to_string(), normalize(path))).unwrap_or_else(|| panic!("{method} {path} undocumented"));
        let responses = op["responses"].as_object().unwrap();
        let ok = &responses["200"]["content"]["application/json"]["schema"];
        assert!(ok.is_object(), "{method} {path}: 200 without a JSON schema");
        if method == "POST" {
            assert!(
                op["requestBody"]["content"]["application/json"]["schema"].is_object(),
                "{method} {path}: no request body schema"
            );
        }
    }
    // Every keyed operation declares the key, 401 and typed error bodies naming their codes.
    let codes: BTreeSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    for ((method, path), op) in &ops {
        let responses = op["responses"].as_object().unwrap();
        if method == "POST" {
            let params = op["parameters"].as_array().unwrap();
            assert!(params.iter().any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header"), "{method} {path}");
        }
        if op.get("security").is_some() {
            assert!(responses.contains_key("401"), "{method} {path}: keyed but no 401");
        }
        for (status, r) in responses {
            // `/health` answers 503 with its own report, not an error.
            if status.starts_with('4') || (status.starts_with('5') && path != "/health") {
                let schema = &r["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(schema, "#/components/schemas/ErrorBody", "{method} {path} {status}");
                let text = r["description"].as_str().unwrap();
                let named: Vec<&str> = text.split('`').skip(1).step_by(2).collect();
                assert!(!named.is_empty(), "{method} {path} {status}: name the error codes");
                for code in named {
                    assert!(codes.contains(code), "{method} {path} {status}: `{code}` is not an ErrorCode");
                }
            }
        }
    }
    assert!(doc["components"]["securitySchemes"]["api_key"]["name"] == "X-API-Key");
    let enum_codes = doc["components"]["schemas"]["ErrorCode"]["enum"].as_array().unwrap();
    assert_eq!(enum_codes.len(), ErrorCode::ALL.len());
}

#[tokio::test]
async fn documented_operations_are_served() {
    let app = spawn_app().await;
    let doc = openapi(&app).await;
    let who = crate::harness::wallet().address().to_string();
    for ((method, path), _) in documented(&doc) {
        let concrete = path
            .replace("{contract}", "USDC")
            .replace("{id}", "1")
            .replace("{address}", &who)
            .replace("{account}", &who);
        // No key and no body: each answers from its own handler (401, 400, 200), never the 404
        // fallback or a 405.
        let resp = app.http.request(method.parse().unwrap(), app.url(&concrete)).send().await.unwrap();
        let status = resp.status();
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path} is documented but not routed");
        if status == StatusCode::NOT_FOUND {
            let body: Value = resp.json().await.unwrap();
            assert_ne!(body["error"]["code"], "not_found", "{method} {path} is documented but not routed");
        }
    }
}

/// The catalog holds no dead entries: every `ErrorCode` variant is answered somewhere in `src/`
/// (codes can only be built from the enum, so every answered code is in the catalog). Each code
/// is unique, snake_case and a 4xx/5xx.
#[test]
fn every_error_code_in_the_catalog_is_used_and_well_formed() {
    let mut files = vec![std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))];
    let mut src = String::new();
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if p.extension().is_some_and(|e| e == "rs") {
            src.push_str(&std::fs::read_to_string(&p).unwrap());
        }
    }
    let mut seen = BTreeSet::new();
    for code in ErrorCode::ALL {
        let s = code.as_str();
        assert!(seen.insert(s), "`{s}` twice");
        assert!(
            s.starts_with(|c: char| c.is_ascii_lowercase())
                && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "`{s}` is not snake_case"
        );
        let status = code.status().as_u16();
        assert!((400..600).contains(&status), "`{s}`: {status}");
        assert!(!code.description().is_empty(), "`{s}` undescribed");
        assert!(src.contains(&format!("ErrorCode::{code:?}")), "`{s}` ({code:?}) is never answered");
    }
}

#[tokio::test]
async fn docs_page_is_interactive_and_self_contained() {
    let app = spawn_app().await;
    let resp = app.http.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = resp.text().await.unwrap();
    assert!(html.contains("/openapi.json") && html.contains("fetch("), "the page is built from the document");
    for attr in ["src=\"http", "href=\"http", "src='http", "href='http", "@import", "//cdn"] {
        assert!(!html.contains(attr), "the docs page must load nothing from the internet ({attr})");
    }
}

#[tokio::test]
async fn changelog_is_dated_and_marks_required_actions() {
    let app = spawn_app().await;
    let resp = app.http.get(app.url("/changelog")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    assert!(text.contains(&format!("## {API_VERSION}")), "an entry for the current API version");
    assert!(text.contains("Action required"));
}
