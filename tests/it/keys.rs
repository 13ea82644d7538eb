//! API key lifecycle (docs/keys.md): the admin endpoints behind a JWT, scopes, expiry, CIDR
//! allowlists, sponsors, rate limits, rotation, deletion, the CLI, and a matrix of key kind ×
//! endpoint × outcome.

use std::{borrow::Cow, time::Duration};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use streampay_relayer::{
    api::{Settings, auth::AuthSettings, auth::mint_admin_token},
    store::{Environment, KeyLookup, KeySpec, Scope, Store, parse_cidr},
};

use crate::harness::{TestApp, assert_error, spawn_app_with, wallet};

const SECRET: &str = "test-admin-secret-0123456789abcdef";

fn settings(auth: AuthSettings) -> Settings {
    Settings { receipt_timeout: Duration::from_secs(30), auth, ..crate::harness::serve_settings() }
}

async fn spawn() -> TestApp {
    spawn_app_with(settings(AuthSettings::with_admin_secret(SECRET))).await
}

fn token() -> String {
    mint_admin_token(SECRET, Duration::from_secs(600), "tests").unwrap()
}

/// Sends `method path` with optional headers and JSON body; answers status, body, Retry-After.
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> (StatusCode, Value, Option<String>) {
    let mut req = app.http.request(method, app.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let retry_after = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("non-JSON body ({status}): {text}"));
    (status, body, retry_after)
}

async fn admin(app: &TestApp, method: Method, path: &str, body: Option<&Value>) -> (StatusCode, Value) {
    let bearer = format!("Bearer {}", token());
    let (s, b, _) = call(app, method, path, &[("Authorization", &bearer)], body).await;
    (s, b)
}

fn spec(app: &TestApp, scopes: &[Scope]) -> KeySpec {
    KeySpec { scopes: scopes.to_vec(), ..KeySpec::full_access("matrix", &[app.sponsor], Environment::Test) }
}

async fn key(app: &TestApp, spec: KeySpec) -> (i64, String) {
    let k = app.store.create_key(&spec).await.unwrap();
    (k.id, k.key)
}

#[tokio::test]
async fn key_kind_by_endpoint_matrix() {
    let app = spawn().await;
    let rw = [Scope::Read, Scope::Relay];
    let (_, read_only) = key(&app, spec(&app, &[Scope::Read])).await;
    let (_, relay_only) = key(&app, spec(&app, &[Scope::Relay])).await;
    let (_, webhooks_only) = key(&app, spec(&app, &[Scope::Webhooks])).await;
    let (expired_id, expired) = key(&app, spec(&app, &rw)).await;
    sqlx::query("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(expired_id)
        .execute(app.store.pool())
        .await
        .unwrap();
    let (revoked_id, revoked) = key(&app, spec(&app, &rw)).await;
    assert_eq!(
        admin(&app, Method::POST, &format!("/api/v1/admin/keys/{revoked_id}/revoke"), None).await.0,
        StatusCode::OK
    );
    let (old_id, rotated_old) = key(&app, spec(&app, &rw)).await;
    let (status, rotated) = admin(&app, Method::POST, &format!("/api/v1/admin/keys/{old_id}/rotate"), None).await;
    assert_eq!(status, StatusCode::CREATED, "{rotated}");
    let rotated_new = rotated["Key"].as_str().unwrap().to_string();
    let (_, wrong_cidr) =
        key(&app, KeySpec { allowed_cidrs: vec![parse_cidr("10.0.0.0/8").unwrap()], ..spec(&app, &rw) }).await;
    let (_, right_cidr) =
        key(&app, KeySpec { allowed_cidrs: vec![parse_cidr("127.0.0.0/8").unwrap()], ..spec(&app, &rw) }).await;
    let (deleted_id, deleted) = key(&app, spec(&app, &rw)).await;
    assert_eq!(admin(&app, Method::DELETE, &format!("/api/v1/admin/keys/{deleted_id}"), None).await.0, StatusCode::OK);
    let unknown = format!("sk_test_{}", "0".repeat(64));

    let who = wallet().address();
    let deposit = json!({"From": who, "Amount": "1"});
    let other_sponsor = json!({"From": who, "Amount": "1", "Sponsor": app.other_sponsor});
    type Endpoint<'a> = (&'a str, Method, &'a str, Option<&'a Value>);
    let endpoints: [Endpoint; 5] = [
        ("contracts", Method::GET, "/api/v1/contracts", None),
        // Answered by its handler (no such transaction) once the key passes: no index involved.
        ("transaction", Method::GET, "/api/v1/transactions/999999", None),
        ("deposit", Method::POST, "/api/v1/USDC/payments/deposit", Some(&deposit)),
        ("other sponsor", Method::POST, "/api/v1/USDC/payments/deposit", Some(&other_sponsor)),
        ("admin list", Method::GET, "/api/v1/admin/keys", None),
    ];

    const OK: (u16, &str) = (200, "");
    const SCOPE: (u16, &str) = (403, "insufficient_scope");
    const SPONSOR: (u16, &str) = (403, "sponsor_not_allowed");
    const NO_KEY: (u16, &str) = (401, "missing_api_key");
    const TX: (u16, &str) = (404, "transaction_not_found");
    let all = |o: (u16, &'static str)| [o; 5];
    // Columns: contracts, transaction, deposit, deposit with another sponsor, admin list.
    type Row<'a> = (&'a str, Option<&'a str>, [(u16, &'a str); 5]);
    let matrix: Vec<Row> = vec![
        ("full access", Some(&app.api_key), [OK, TX, OK, SPONSOR, OK]),
        ("read only", Some(&read_only), [OK, TX, SCOPE, SCOPE, SCOPE]),
        ("relay only", Some(&relay_only), [SCOPE, SCOPE, OK, SPONSOR, SCOPE]),
        ("webhooks only", Some(&webhooks_only), [SCOPE, SCOPE, SCOPE, SCOPE, SCOPE]),
        ("expired", Some(&expired), all((401, "key_expired"))),
        ("revoked", Some(&revoked), all((401, "key_revoked"))),
        ("rotated, old", Some(&rotated_old), all((401, "key_revoked"))),
        ("rotated, new", Some(&rotated_new), [OK, TX, OK, SPONSOR, SCOPE]),
        ("wrong CIDR", Some(&wrong_cidr), all((403, "ip_not_allowed"))),
        ("right CIDR", Some(&right_cidr), [OK, TX, OK, SPONSOR, SCOPE]),
        ("deleted", Some(&deleted), all((401, "invalid_api_key"))),
        ("unknown", Some(&unknown), all((401, "invalid_api_key"))),
        ("no key", None, [NO_KEY, NO_KEY, NO_KEY, NO_KEY, (401, "missing_admin_token")]),
    ];
    let mut failures = Vec::new();
    for (kind, k, expected) in &matrix {
        for ((name, method, path, body), (status, code)) in endpoints.iter().zip(expected) {
            let headers: Vec<(&str, &str)> = k.iter().map(|k| ("X-API-Key", *k)).collect();
            let (got, resp, _) = call(&app, method.clone(), path, &headers, *body).await;
            let got_code = resp["error"]["code"].as_str().unwrap_or("");
            if got.as_u16() != *status || got_code != *code {
                failures.push(format!("{kind} × {name}: expected {status} {code:?}, got {got} {got_code:?} ({resp})"));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} cells differ:\n{}", failures.len(), matrix.len() * 5, failures.join("\n"));
}

#[tokio::test]
async fn admin_lifecycle_create_list_rotate_revoke_delete() {
    let app = spawn().await;
    let (status, created) = admin(
        &app,
        Method::POST,
        "/api/v1/admin/keys",
        Some(&json!({"name": "checkout", "scopes": ["read"], "expires_in_seconds": 3600,
                     "allowed_cidrs": ["127.0.0.1"], "rate_limit_per_minute": 100})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["Key"].as_str().unwrap().to_string();
    assert!(secret.starts_with("sk_test_") && secret.len() == 8 + 64, "{secret}");
    assert_eq!(created["Prefix"], secret[..16]);
    assert_eq!(created["Scopes"], json!(["read"]));
    assert_eq!(created["Environment"], "test");
    assert_eq!(created["AllowedCidrs"], json!(["127.0.0.1/32"]));
    assert_eq!(created["RateLimitPerMinute"], 100);
    assert_eq!(created["Status"], "active");
    // Omitted sponsors: every sponsor of this relayer.
    assert_eq!(created["Sponsors"].as_array().unwrap().len(), 2);
    assert!(created["ExpiresAt"].as_str().unwrap().ends_with('Z'));
    let id = created["Id"].as_i64().unwrap();
    assert_eq!(app.get_with_key("/api/v1/contracts", Some(&secret)).await.0, StatusCode::OK);

    let (status, live) =
        admin(&app, Method::POST, "/api/v1/admin/keys", Some(&json!({"name": "prod", "environment": "live"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{live}");
    assert!(live["Key"].as_str().unwrap().starts_with("sk_live_"));
    assert_eq!(live["Scopes"], json!(["read", "relay"]), "default scopes");

    // The listing carries metadata, never a secret.
    let (status, list) = admin(&app, Method::GET, "/api/v1/admin/keys", None).await;
    assert_eq!(status, StatusCode::OK);
    let text = list.to_string();
    assert!(!text.contains(&secret[8..]) && !text.contains("\"key\""), "{text}");
    let ids: Vec<i64> = list["Keys"].as_array().unwrap().iter().map(|k| k["Id"].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![app.api_key_id, id, live["Id"].as_i64().unwrap()]);

    // Rotation with a grace period: both work until the old one expires.
    let (status, rotated) =
        admin(&app, Method::POST, &format!("/api/v1/admin/keys/{id}/rotate"), Some(&json!({"grace_seconds": 600})))
            .await;
    assert_eq!(status, StatusCode::CREATED, "{rotated}");
    let new_secret = rotated["Key"].as_str().unwrap();
    assert_ne!(new_secret, secret);
    assert_eq!(rotated["RotatedFrom"], id);
    for field in ["name", "scopes", "environment", "allowed_cidrs", "rate_limit_per_minute", "sponsors", "expires_at"] {
        assert_eq!(rotated[field], created[field], "rotation keeps {field}");
    }
    assert_eq!(app.get_with_key("/api/v1/contracts", Some(&secret)).await.0, StatusCode::OK, "grace period");
    assert_eq!(app.get_with_key("/api/v1/contracts", Some(new_secret)).await.0, StatusCode::OK);
    assert_error(
        &admin(&app, Method::POST, &format!("/api/v1/admin/keys/{id}/rotate"), None).await,
        StatusCode::CONFLICT,
        "key_not_active",
    );

    // Revoke: stops at once, stays listed as revoked; revoking again changes nothing.
    let (status, revoked) = admin(&app, Method::POST, &format!("/api/v1/admin/keys/{id}/revoke"), None).await;
    assert_eq!((status, revoked["Status"].as_str()), (StatusCode::OK, Some("revoked")), "{revoked}");
    let again = admin(&app, Method::POST, &format!("/api/v1/admin/keys/{id}/revoke/"), None).await;
    assert_eq!(again.1["RevokedAt"], revoked["RevokedAt"]);
    assert_error(&app.get_with_key("/api/v1/contracts", Some(&secret)).await, StatusCode::UNAUTHORIZED, "key_revoked");
    assert_error(
        &admin(&app, Method::POST, &format!("/api/v1/admin/keys/{id}/rotate"), None).await,
        StatusCode::CONFLICT,
        "key_not_active",
    );

    // Delete: gone from the API, the row kept.
    let (status, body) = admin(&app, Method::DELETE, &format!("/api/v1/admin/keys/{id}"), None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"Id": id, "Deleted": true})));
    let (_, list) = admin(&app, Method::GET, "/api/v1/admin/keys", None).await;
    assert!(list["Keys"].as_array().unwrap().iter().all(|k| k["Id"] != id));
    assert_error(
        &app.get_with_key("/api/v1/contracts", Some(&secret)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_api_key",
    );
    let rows: (i64,) = sqlx::query_as("SELECT count(*) FROM api_keys WHERE id = $1")
        .bind(id)
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(rows.0, 1, "deleted keys are kept for the transactions that point at them");
    for (method, path) in [
        (Method::DELETE, format!("/api/v1/admin/keys/{id}")),
        (Method::POST, format!("/api/v1/admin/keys/{id}/revoke")),
        (Method::POST, format!("/api/v1/admin/keys/{id}/rotate")),
        (Method::POST, "/api/v1/admin/keys/999999/rotate".into()),
        (Method::DELETE, "/api/v1/admin/keys/abc".into()),
    ] {
        assert_error(&admin(&app, method, &path, None).await, StatusCode::NOT_FOUND, "key_not_found");
    }
}

#[tokio::test]
async fn admin_create_rejects_bad_input_with_typed_400s() {
    let app = spawn().await;
    let cases = [
        (json!({}), "missing_field"),
        (json!({"name": "  "}), "missing_field"),
        (json!({"name": "x".repeat(101)}), "invalid_key_name"),
        (json!({"name": "nul\u{0}byte"}), "invalid_key_name"),
        (json!({"name": "k", "allowed_cidrs": vec!["10.0.0.0/8"; 101]}), "invalid_cidr"),
        (json!({"name": "k", "environment": "prod"}), "invalid_environment"),
        (json!({"name": "k", "scopes": ["read", "write"]}), "invalid_scope"),
        (json!({"name": "k", "scopes": []}), "invalid_scope"),
        (json!({"name": "k", "sponsors": []}), "missing_field"),
        (json!({"name": "k", "sponsors": ["0x12"]}), "invalid_address"),
        (json!({"name": "k", "expires_in_seconds": 0}), "invalid_expiry"),
        (json!({"name": "k", "expires_in_seconds": 400_000_000u64}), "invalid_expiry"),
        (json!({"name": "k", "allowed_cidrs": ["10.0.0.1/8"]}), "invalid_cidr"),
        (json!({"name": "k", "allowed_cidrs": ["localhost"]}), "invalid_cidr"),
        (json!({"name": "k", "rate_limit_per_minute": 0}), "invalid_rate_limit"),
        (json!({"name": "k", "rate_limit_per_minute": 2_000_000}), "invalid_rate_limit"),
        (json!({"name": "k", "scope": ["read"]}), "invalid_json"),
        (json!({"name": "k", "expires_in_seconds": -5}), "invalid_json"),
    ];
    for (body, code) in cases {
        let resp = admin(&app, Method::POST, "/api/v1/admin/keys", Some(&body)).await;
        assert_error(&resp, StatusCode::BAD_REQUEST, code);
    }
    let (id, _) = key(&app, spec(&app, &[Scope::Read])).await;
    let rotate = format!("/api/v1/admin/keys/{id}/rotate");
    for (body, code) in
        [(json!({"grace_seconds": 604_801}), "invalid_grace_period"), (json!({"grace": 5}), "invalid_json")]
    {
        assert_error(&admin(&app, Method::POST, &rotate, Some(&body)).await, StatusCode::BAD_REQUEST, code);
    }
    let (_, list) = admin(&app, Method::GET, "/api/v1/admin/keys", None).await;
    assert_eq!(list["Keys"].as_array().unwrap().len(), 2, "nothing was created or rotated: {list}");
}

#[tokio::test]
async fn admin_tokens_missing_bad_expired_or_too_long_are_401() {
    use jsonwebtoken::{EncodingKey, Header, encode};
    let app = spawn().await;
    let list = "/api/v1/admin/keys";
    assert_eq!(admin(&app, Method::GET, list, None).await.0, StatusCode::OK, "a fresh token works");

    let (s, b, _) = call(&app, Method::GET, list, &[], None).await;
    assert_error(&(s, b), StatusCode::UNAUTHORIZED, "missing_admin_token");

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let sign = |secret: &str, claims: Value| {
        encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    };
    let aud = "streampay-admin";
    let cases = [
        ("not a JWT".to_string(), "garbage"),
        (mint_admin_token("another-secret-another-secret-000", Duration::from_secs(60), "x").unwrap(), "bad signature"),
        (sign(SECRET, json!({"sub": "x", "aud": aud, "iat": now - 700, "exp": now - 100})), "expired"),
        (sign(SECRET, json!({"sub": "x", "aud": aud, "iat": now, "exp": now + 7200})), "longer than 1h"),
        (sign(SECRET, json!({"sub": "x", "aud": "other", "iat": now, "exp": now + 60})), "wrong audience"),
        (sign(SECRET, json!({"sub": "x", "aud": aud, "iat": now})), "no exp"),
    ];
    for (token, why) in cases {
        let bearer = format!("Bearer {token}");
        let (s, b, _) = call(&app, Method::GET, list, &[("Authorization", &bearer)], None).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_admin_token")),
            "{why}: {b}"
        );
    }
    let (s, b, _) = call(&app, Method::GET, list, &[("Authorization", "Basic dXNlcjpwYXNz")], None).await;
    assert_error(&(s, b), StatusCode::UNAUTHORIZED, "invalid_admin_token");
    // An admin token is not an API key.
    let bearer = format!("Bearer {}", token());
    let (s, b, _) = call(&app, Method::GET, "/api/v1/contracts", &[("Authorization", &bearer)], None).await;
    assert_error(&(s, b), StatusCode::UNAUTHORIZED, "missing_api_key");

    // A relayer with no admin secret accepts no token at all.
    let plain = spawn_app_with(settings(AuthSettings::default())).await;
    let (s, b, _) = call(&plain, Method::GET, list, &[("Authorization", &bearer)], None).await;
    assert_error(&(s, b), StatusCode::UNAUTHORIZED, "invalid_admin_token");
}

#[tokio::test]
async fn a_key_over_its_rate_limit_is_429_with_retry_after() {
    let app = spawn().await;
    let (_, limited) = key(&app, KeySpec { rate_limit_per_minute: Some(2), ..spec(&app, &[Scope::Read]) }).await;
    let headers = [("X-API-Key", limited.as_str())];
    for _ in 0..2 {
        assert_eq!(call(&app, Method::GET, "/api/v1/contracts", &headers, None).await.0, StatusCode::OK);
    }
    let (status, body, retry_after) = call(&app, Method::GET, "/api/v1/contracts", &headers, None).await;
    assert_error(&(status, body), StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let secs: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=30).contains(&secs), "2 per minute refills one every 30s: {secs}");
    // Other keys are not affected.
    assert_eq!(app.get("/api/v1/contracts").await.0, StatusCode::OK);
    // A refused POST does not claim its Idempotency-Key: the same key works once allowed.
    let (_, burst) = key(&app, KeySpec { rate_limit_per_minute: Some(1), ..spec(&app, &[Scope::Relay]) }).await;
    let body = json!({"From": wallet().address(), "Amount": "1"});
    let h = [("X-API-Key", burst.as_str()), ("Idempotency-Key", "once")];
    assert_eq!(call(&app, Method::POST, "/api/v1/USDC/payments/deposit", &h, Some(&body)).await.0, StatusCode::OK);
    let (status, _, _) = call(&app, Method::POST, "/api/v1/USDC/payments/deposit", &h, Some(&body)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "the limit applies before replay too");
}

#[tokio::test]
async fn x_forwarded_for_counts_only_from_trusted_proxies() {
    let cidr = parse_cidr("203.0.113.0/24").unwrap();
    let xff = [("X-Forwarded-For", "203.0.113.7")];

    let direct = spawn().await;
    let (_, k) = key(&direct, KeySpec { allowed_cidrs: vec![cidr], ..spec(&direct, &[Scope::Read]) }).await;
    let (s, b, _) = call(&direct, Method::GET, "/api/v1/contracts", &[("X-API-Key", &k), xff[0]], None).await;
    assert_error(&(s, b), StatusCode::FORBIDDEN, "ip_not_allowed");

    let proxied = spawn_app_with(settings(AuthSettings {
        trusted_proxies: vec![parse_cidr("127.0.0.1").unwrap()],
        ..AuthSettings::with_admin_secret(SECRET)
    }))
    .await;
    let (_, k) = key(&proxied, KeySpec { allowed_cidrs: vec![cidr], ..spec(&proxied, &[Scope::Read]) }).await;
    let (s, b, _) = call(&proxied, Method::GET, "/api/v1/contracts", &[("X-API-Key", &k), xff[0]], None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // The client may prepend anything; only the hop the trusted proxy added counts.
    let forged = [("X-API-Key", k.as_str()), ("X-Forwarded-For", "203.0.113.7, 198.51.100.1")];
    let (s, b, _) = call(&proxied, Method::GET, "/api/v1/contracts", &forged, None).await;
    assert_error(&(s, b), StatusCode::FORBIDDEN, "ip_not_allowed");
    let (s, b, _) = call(&proxied, Method::GET, "/api/v1/contracts", &[("X-API-Key", &k)], None).await;
    assert_error(&(s, b), StatusCode::FORBIDDEN, "ip_not_allowed");
}

#[tokio::test]
async fn an_admin_scoped_key_manages_keys_and_an_admin_token_needs_no_key() {
    let app = spawn().await;
    // The harness key has every scope, admin included.
    let (status, created) =
        app.post("/api/v1/admin/keys", &json!({"name": "by-key", "scopes": ["read", "webhooks"]})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["Scopes"], json!(["read", "webhooks"]));
    // Idempotency-Key is ignored here: replaying would mean storing the secret.
    let h = [("X-API-Key", app.api_key.as_str()), ("Idempotency-Key", "same")];
    let body = json!({"name": "twice"});
    let (s1, first, _) = call(&app, Method::POST, "/api/v1/admin/keys", &h, Some(&body)).await;
    let (s2, second, _) = call(&app, Method::POST, "/api/v1/admin/keys", &h, Some(&body)).await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_ne!(first["Key"], second["Key"]);
    let stored: (i64,) =
        sqlx::query_as("SELECT count(*) FROM idempotency_keys").fetch_one(app.store.pool()).await.unwrap();
    assert_eq!(stored.0, 0, "no admin answer (holding a secret) is stored");
    let (_, read_only) = key(&app, spec(&app, &[Scope::Read])).await;
    assert_error(
        &app.post_with_key("/api/v1/admin/keys", Some(&read_only), &json!({"name": "nope"})).await,
        StatusCode::FORBIDDEN,
        "insufficient_scope",
    );
}

#[tokio::test]
async fn keys_made_before_scopes_keep_working_without_admin() {
    // A database at migration 0004 with an old-style key, then migrated.
    let app = spawn().await;
    let db = format!("legacy_{}", alloy::hex::encode(&wallet().address()[..6]));
    sqlx::query(&format!("CREATE DATABASE {db}")).execute(app.store.pool()).await.unwrap();
    let opts = app.store.pool().connect_options().as_ref().clone().database(&db);
    let pool = sqlx::PgPool::connect_with(opts).await.unwrap();
    let mut before = sqlx::migrate!("./migrations");
    before.migrations = Cow::Owned(before.migrations.iter().filter(|m| m.version < 5).cloned().collect());
    before.run(&pool).await.unwrap();
    let legacy = format!("sp_live_{}", "ab".repeat(32));
    let id: (i64,) =
        sqlx::query_as("INSERT INTO api_keys (name, key_hash, key_prefix) VALUES ('old', $1, $2) RETURNING id")
            .bind(&streampay_relayer::store::hash_api_key(&legacy)[..])
            .bind(&legacy[..16])
            .fetch_one(&pool)
            .await
            .unwrap();
    sqlx::query("INSERT INTO api_key_sponsors (api_key_id, sponsor, position) VALUES ($1, $2, 0)")
        .bind(id.0)
        .bind(app.sponsor.as_slice())
        .execute(&pool)
        .await
        .unwrap();
    let store = Store::from_pool(pool);
    store.migrate().await.unwrap();
    let KeyLookup::Active(rec) = store.lookup_api_key(&legacy).await.unwrap() else { panic!("legacy key works") };
    assert_eq!(rec.scopes, vec![Scope::Read, Scope::Relay, Scope::Webhooks]);
    assert_eq!(rec.sponsors, vec![app.sponsor]);
    assert!(rec.allowed_cidrs.is_empty() && rec.rate_limit_per_minute.is_none());
    let info = store.key_info(id.0).await.unwrap().unwrap();
    assert_eq!((info.environment.as_str(), info.status.as_str()), ("live", "active"));
}

/// Runs the `streampay` binary against the test database.
async fn cli(app: &TestApp, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let opts = app.store.pool().connect_options();
    let url = format!("postgres://postgres@127.0.0.1:{}/{}", opts.get_port(), opts.get_database().unwrap());
    let dir = std::env::temp_dir();
    // STREAMPAY_TEST_BIN: a copy of this tree's binary when the target directory is shared with
    // other checkouts that may overwrite target/debug/streampay mid-run.
    let bin = std::env::var("STREAMPAY_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_streampay").to_string());
    let out = tokio::process::Command::new(bin)
        .args(args)
        .current_dir(&dir)
        .env("STREAMPAY_DATABASE_URL", url)
        .env("STREAMPAY_LOG_FORMAT", "text")
        .env("RUST_LOG", "error")
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn secret_in(out: &str, prefix: &str) -> String {
    out.split_whitespace()
        .find(|w| w.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} key in: {out}"))
        .to_string()
}

#[tokio::test]
async fn the_cli_creates_lists_rotates_revokes_deletes_and_mints_admin_tokens() {
    let app = spawn().await;
    let sponsor = app.sponsor.to_string();
    let (ok, out) = cli(
        &app,
        &[
            "keys",
            "create",
            "--name",
            "cli",
            "--sponsor",
            &sponsor,
            "--env",
            "test",
            "--scope",
            "read",
            "--expires-in",
            "1d",
        ],
        &[],
    )
    .await;
    assert!(ok, "{out}");
    let first = secret_in(&out, "sk_test_");
    assert_eq!(app.get_with_key("/api/v1/contracts", Some(&first)).await.0, StatusCode::OK);
    let KeyLookup::Active(rec) = app.store.lookup_api_key(&first).await.unwrap() else { panic!("active") };
    assert_eq!(rec.scopes, vec![Scope::Read]);

    let (ok, out) = cli(&app, &["keys", "list", "--json"], &[]).await;
    assert!(ok, "{out}");
    let listed: Vec<Value> =
        out.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(listed.len(), 2, "{out}");
    assert!(listed[1]["ExpiresAt"].is_string() && !out.contains(&first[8..]));

    let (ok, out) = cli(&app, &["keys", "rotate", &rec.id.to_string()], &[]).await;
    assert!(ok, "{out}");
    let second = secret_in(&out, "sk_test_");
    assert_error(&app.get_with_key("/api/v1/contracts", Some(&first)).await, StatusCode::UNAUTHORIZED, "key_revoked");
    assert_eq!(app.get_with_key("/api/v1/contracts", Some(&second)).await.0, StatusCode::OK);
    let KeyLookup::Active(second_rec) = app.store.lookup_api_key(&second).await.unwrap() else { panic!("active") };

    let (ok, out) = cli(&app, &["keys", "revoke", &second_rec.id.to_string()], &[]).await;
    assert!(ok, "{out}");
    assert_error(&app.get_with_key("/api/v1/contracts", Some(&second)).await, StatusCode::UNAUTHORIZED, "key_revoked");
    let (ok, out) = cli(&app, &["keys", "delete", &second_rec.id.to_string()], &[]).await;
    assert!(ok, "{out}");
    assert_error(
        &app.get_with_key("/api/v1/contracts", Some(&second)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_api_key",
    );
    let (ok, out) = cli(&app, &["keys", "delete", &second_rec.id.to_string()], &[]).await;
    assert!(!ok && out.contains("no API key"), "{out}");
    let (ok, out) = cli(&app, &["keys", "create", "--name", "x", "--sponsor", &sponsor, "--scope", "write"], &[]).await;
    assert!(!ok && out.contains("invalid_scope"), "{out}");

    let (ok, out) = cli(&app, &["admin", "token", "--ttl", "5m"], &[("STREAMPAY_ADMIN_JWT_SECRET", SECRET)]).await;
    assert!(ok, "{out}");
    let bearer = format!("Bearer {}", out.trim());
    let (s, b, _) = call(&app, Method::GET, "/api/v1/admin/keys", &[("Authorization", &bearer)], None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (ok, out) = cli(&app, &["admin", "token", "--ttl", "2h"], &[("STREAMPAY_ADMIN_JWT_SECRET", SECRET)]).await;
    assert!(!ok && out.contains("at most"), "{out}");
}

#[test]
fn every_operation_id_is_unique_and_says_what_it_does() {
    let doc = serde_json::to_value(streampay_relayer::api::discovery::document()).unwrap();
    let mut seen = std::collections::BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(id) = op.get("operationId").and_then(Value::as_str) else { continue };
            if let Some(other) = seen.insert(id.to_string(), format!("{method} {path}")) {
                panic!("operationId {id} names both {other} and {method} {path}");
            }
        }
    }
    assert!(seen.len() > 30, "{seen:?}");
    let id = |method: &str, path: &str| doc["paths"][path][method]["operationId"].clone();
    assert_eq!(id("get", "/api/v1/{contract}/payments/balance/{address}"), "getPaymentsBalanceByAddress");
    assert_eq!(id("get", "/api/v1/webhooks/{id}"), "getWebhooksById");
    assert_eq!(id("post", "/api/v1/auth/token"), "postAuthToken");
    assert_eq!(id("get", "/"), "getRoot");
}

#[test]
fn the_document_states_each_operations_scope_and_the_auth_errors() {
    let doc = serde_json::to_value(streampay_relayer::api::discovery::document()).unwrap();
    let op = |method: &str, path: &str| doc["paths"][path][method].clone();
    assert_eq!(op("get", "/api/v1/contracts")["security"], json!([{"api_key": ["read"]}]));
    // Routes that build or relay a user operation also take a client token.
    assert_eq!(
        op("post", "/api/v1/{contract}/payments/deposit")["security"],
        json!([{"api_key": ["relay"]}, {"client_token": []}])
    );
    assert_eq!(op("post", "/api/v1/auth/token")["security"], json!([{"api_key": ["relay"]}]));
    assert_eq!(op("get", "/api/v1/auth/token/validate")["security"], json!([{"client_token": []}]));
    assert_eq!(op("post", "/api/v1/admin/keys")["security"], json!([{"admin_jwt": []}, {"api_key": ["admin"]}]));
    assert!(op("get", "/api/v1/meta").get("security").is_none(), "public");
    let responses = op("get", "/api/v1/contracts")["responses"].clone();
    assert!(responses["429"]["headers"]["Retry-After"].is_object(), "{responses}");
    let forbidden = responses["403"]["description"].as_str().unwrap();
    assert!(forbidden.contains("`insufficient_scope`") && forbidden.contains("`ip_not_allowed`"), "{forbidden}");
    assert!(responses["401"]["description"].as_str().unwrap().contains("`key_expired`"));
    assert_eq!(doc["components"]["securitySchemes"]["admin_jwt"]["scheme"], "bearer");
    let create = op("post", "/api/v1/admin/keys");
    assert!(!create.to_string().contains("idempotency_key_reused"), "{create}");
    for (method, path) in [
        ("get", "/api/v1/admin/keys"),
        ("post", "/api/v1/admin/keys"),
        ("post", "/api/v1/admin/keys/{id}/revoke"),
        ("post", "/api/v1/admin/keys/{id}/rotate"),
        ("delete", "/api/v1/admin/keys/{id}"),
    ] {
        assert!(op(method, path).is_object(), "{method} {path} documented");
    }
}

#[tokio::test]
async fn keys_stop_at_their_expiry_and_rotated_keys_at_the_end_of_the_grace_period() {
    let app = spawn().await;
    let create = json!({"name": "short", "expires_in_seconds": 2});
    let (status, short) = admin(&app, Method::POST, "/api/v1/admin/keys", Some(&create)).await;
    assert_eq!(status, StatusCode::CREATED, "{short}");
    let short_key = short["Key"].as_str().unwrap().to_string();
    let (status, long) = admin(&app, Method::POST, "/api/v1/admin/keys", Some(&json!({"name": "long"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{long}");
    let old_key = long["Key"].as_str().unwrap().to_string();
    let rotate = format!("/api/v1/admin/keys/{}/rotate", long["Id"]);
    let (status, rotated) = admin(&app, Method::POST, &rotate, Some(&json!({"grace_seconds": 2}))).await;
    assert_eq!(status, StatusCode::CREATED, "{rotated}");
    let new_key = rotated["Key"].as_str().unwrap().to_string();
    for k in [&short_key, &old_key, &new_key] {
        assert_eq!(app.get_with_key("/api/v1/contracts", Some(k)).await.0, StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for k in [&short_key, &old_key] {
        assert_error(&app.get_with_key("/api/v1/contracts", Some(k)).await, StatusCode::UNAUTHORIZED, "key_expired");
    }
    assert_eq!(
        app.get_with_key("/api/v1/contracts", Some(&new_key)).await.0,
        StatusCode::OK,
        "the new key never expires"
    );
    let (_, list) = admin(&app, Method::GET, "/api/v1/admin/keys", None).await;
    let status_of =
        |id: &Value| list["Keys"].as_array().unwrap().iter().find(|k| &k["Id"] == id).unwrap()["Status"].clone();
    assert_eq!(status_of(&short["Id"]), "expired");
    assert_eq!(status_of(&long["Id"]), "expired");
    assert_eq!(status_of(&rotated["Id"]), "active");
}

/// The webhooks routes take the `webhooks` scope over HTTP (the rule table is unit-tested).
#[tokio::test]
async fn webhook_routes_need_the_webhooks_scope() {
    let app = spawn().await;
    let (_, read_relay) = key(&app, spec(&app, &[Scope::Read, Scope::Relay])).await;
    let (_, hooks) = key(&app, spec(&app, &[Scope::Webhooks])).await;
    let list = app.get_with_key("/api/v1/webhooks", Some(&read_relay)).await;
    assert_error(&list, StatusCode::FORBIDDEN, "insufficient_scope");
    let create = app
        .http
        .post(app.url("/api/v1/webhooks"))
        .header("X-API-Key", &read_relay)
        .json(&serde_json::json!({"url": "https://example.com/hook", "events": ["transaction.mined"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), StatusCode::FORBIDDEN);
    let (status, body) = app.get_with_key("/api/v1/webhooks", Some(&hooks)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_error(
        &app.get_with_key("/api/v1/contracts", Some(&hooks)).await,
        StatusCode::FORBIDDEN,
        "insufficient_scope",
    );
}

#[tokio::test]
async fn an_unparsable_or_missing_x_forwarded_for_from_a_trusted_proxy_denies_an_allowlisted_key() {
    // The allowlist covers the proxies' own network: falling back to the proxy's address would
    // let every client in.
    let proxied = spawn_app_with(settings(AuthSettings {
        trusted_proxies: vec![parse_cidr("127.0.0.1").unwrap()],
        ..AuthSettings::with_admin_secret(SECRET)
    }))
    .await;
    let allow = vec![
        parse_cidr("127.0.0.0/8").unwrap(),
        parse_cidr("203.0.113.0/24").unwrap(),
        parse_cidr("2001:db8::/32").unwrap(),
    ];
    let (_, k) = key(&proxied, KeySpec { allowed_cidrs: allow, ..spec(&proxied, &[Scope::Read]) }).await;
    for xff in [None, Some("unknown"), Some("203.0.113.7, garbage"), Some(""), Some("203.0.113.7,")] {
        let mut h = vec![("X-API-Key", k.as_str())];
        if let Some(v) = xff {
            h.push(("X-Forwarded-For", v));
        }
        let (s, b, _) = call(&proxied, Method::GET, "/api/v1/contracts", &h, None).await;
        assert_error(&(s, b), StatusCode::FORBIDDEN, "ip_not_allowed");
    }
    // Hops written with a port, as some load balancers do, are addresses like any other.
    for xff in ["203.0.113.7:4711", "[2001:db8::1]:443", "198.51.100.9, 203.0.113.7:80"] {
        let (s, b, _) = call(
            &proxied,
            Method::GET,
            "/api/v1/contracts",
            &[("X-API-Key", k.as_str()), ("X-Forwarded-For", xff)],
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{xff}: {b}");
    }
}

/// Σ over the calls of keys `ids` since UTC midnight of gas used (gas limit in flight) × the
/// latest attempt's max fee: what admission counts against a key's daily budget.
async fn admission_spend(app: &TestApp, ids: &[i64]) -> alloy::primitives::U256 {
    let text: String = sqlx::query_scalar(
        "SELECT coalesce(sum(coalesce(t.gas_used, t.gas_limit, 0)::numeric * l.max_fee_per_gas::numeric), 0)::text
         FROM relay_transactions t
         JOIN LATERAL (SELECT max_fee_per_gas FROM tx_attempts WHERE transaction_id = t.id
                       ORDER BY id DESC LIMIT 1) l ON true
         WHERE t.api_key_id = ANY($1)",
    )
    .bind(ids)
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    text.parse().unwrap()
}

#[tokio::test]
async fn a_rotated_keys_history_and_budgets_carry_over_to_the_key_that_replaced_it() {
    use alloy::primitives::U256;
    use streampay_relayer::store::SponsorPolicy;
    let app = spawn().await;
    let alice = wallet();
    app.fund(&alice, 10).await;
    let pay = |amount: &'static str| {
        let app = &app;
        let alice = &alice;
        async move {
            let to = wallet().address();
            let built = app
                .build("/api/v1/USDC/payments/", &json!({"From": alice.address(), "To": to, "Amount": amount}))
                .await;
            app.signed_execute_body(alice, &built).await
        }
    };
    let body = pay("1").await;
    let (status, paid, _) = call(
        &app,
        Method::POST,
        "/api/v1/USDC/meta/execute",
        &[("X-API-Key", &app.api_key), ("Reference", "order-7")],
        Some(&body),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    app.wait_priced().await;
    let (_, history) = app.get("/api/v1/transactions").await;
    assert_eq!(history["Transactions"].as_array().unwrap().len(), 2, "{history}");
    let (_, sponsors) = app.get("/api/v1/sponsors").await;
    let key_spend = sponsors["Sponsors"][0]["KeySpendToday"].clone();

    // Rotated with a grace period, so both keys are live at once.
    let (status, rotated) = admin(
        &app,
        Method::POST,
        &format!("/api/v1/admin/keys/{}/rotate", app.api_key_id),
        Some(&json!({"grace_seconds": 600})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{rotated}");
    let new_key = rotated["Key"].as_str().unwrap().to_string();
    let new_id = rotated["Id"].as_i64().unwrap();

    // History: the list, one transaction, a reference's summary.
    let (status, seen) = app.get_with_key("/api/v1/transactions", Some(&new_key)).await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    // The same transactions (their `State` may have moved on to confirmed meanwhile).
    let ids = |page: &Value| -> Vec<(Value, Value)> {
        page["Transactions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["Id"].clone(), t["TransactionHash"].clone()))
            .collect()
    };
    assert_eq!(ids(&seen), ids(&history));
    let id = paid["TransactionId"].as_i64().unwrap();
    let (status, one) = app.get_with_key(&format!("/api/v1/transactions/{id}"), Some(&new_key)).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["Reference"], "order-7");
    let (_, summary) = app.get_with_key("/api/v1/transactions/summary?reference=order-7", Some(&new_key)).await;
    assert_eq!(summary["Count"], 1, "{summary}");
    // A key outside the family still sees none of it.
    let stranger = app.store.create_api_key("stranger", &[app.sponsor], true).await.unwrap();
    let (_, none) = app.get_with_key("/api/v1/transactions", Some(&stranger.key)).await;
    assert_eq!(none["Transactions"], json!([]));
    assert_error(
        &app.get_with_key(&format!("/api/v1/transactions/{id}"), Some(&stranger.key)).await,
        StatusCode::NOT_FOUND,
        "transaction_not_found",
    );

    // The sponsor policy's per-key budget: the new key has already spent what the old one did.
    let (_, sponsors) = app.get_with_key("/api/v1/sponsors", Some(&new_key)).await;
    assert_eq!(sponsors["Sponsors"][0]["KeySpendToday"], key_spend);
    let spent: U256 = key_spend.as_str().unwrap().parse().unwrap();
    let policy = SponsorPolicy { per_key_daily_budget: Some(spent + U256::from(1u64)), ..Default::default() };
    app.store.set_sponsor_policy(app.chain_id, app.sponsor, Some(&policy)).await.unwrap();
    let next = pay("1").await;
    assert_error(
        &app.post_with_key("/api/v1/USDC/meta/execute", Some(&new_key), &next).await,
        StatusCode::TOO_MANY_REQUESTS,
        "key_budget_exceeded",
    );
    app.store.set_sponsor_policy(app.chain_id, app.sponsor, None).await.unwrap();

    // Admission's per-key daily budget: room for half a call beyond what the old key spent.
    let old_spend = admission_spend(&app, &[app.api_key_id]).await;
    let gas = paid["GasUsed"].as_u64().unwrap();
    let (_, quote) = app.get("/api/v1/USDC/fees?operation=pay").await;
    let one_call =
        U256::from(gas + gas / 4 + 10_000) * quote["MaxFeePerGas"].as_str().unwrap().parse::<U256>().unwrap();
    let mut tight = settings(AuthSettings::with_admin_secret(SECRET));
    tight.admission.key_daily_budget_wei = Some(old_spend + one_call / U256::from(2u64));
    let base = app.instance_with(tight).await;
    let resp = app
        .http
        .post(format!("{base}/api/v1/USDC/meta/execute"))
        .header("X-API-Key", &new_key)
        .json(&next)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_error(&(status, body), StatusCode::TOO_MANY_REQUESTS, "key_daily_budget_exceeded");
    assert_eq!(admission_spend(&app, &[new_id]).await, U256::ZERO, "the new key itself has relayed nothing");
}

/// Every object key at every level is PascalCase (the error envelope aside).
fn assert_pascal_case(v: &Value, at: &str) {
    match v {
        Value::Object(map) => {
            for (k, inner) in map {
                assert!(
                    k.starts_with(|c: char| c.is_ascii_uppercase()) && !k.contains('_'),
                    "{at}.{k} is not PascalCase"
                );
                assert_pascal_case(inner, &format!("{at}.{k}"));
            }
        }
        Value::Array(items) => items.iter().for_each(|i| assert_pascal_case(i, &format!("{at}[]"))),
        _ => {}
    }
}

#[tokio::test]
async fn health_meta_and_the_keys_api_answer_pascal_case_and_requests_accept_both_spellings() {
    let app = spawn().await;
    let (status, health) = app.get_with_key("/health", None).await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_pascal_case(&health, "health");
    let (_, meta) = app.get_with_key("/api/v1/meta", None).await;
    assert_pascal_case(&meta, "meta");

    let admin = |method: Method, path: &str, body: Option<Value>| {
        let (app, path) = (&app, path.to_string());
        async move { admin(app, method, &path, body.as_ref()).await }
    };
    // The documented PascalCase body, and the old snake_case one.
    let (status, created) = admin(
        Method::POST,
        "/api/v1/admin/keys",
        Some(json!({"Name": "pascal", "Scopes": ["read"], "RateLimitPerMinute": 60, "AllowedCidrs": ["127.0.0.1"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_pascal_case(&created, "created");
    assert_eq!((created["Name"].as_str(), created["RateLimitPerMinute"].as_i64()), (Some("pascal"), Some(60)));
    let (status, old) = admin(
        Method::POST,
        "/api/v1/admin/keys",
        Some(json!({"name": "snake", "scopes": ["read"], "rate_limit_per_minute": 30})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{old}");
    assert_eq!((old["Name"].as_str(), old["RateLimitPerMinute"].as_i64()), (Some("snake"), Some(30)));
    let (_, list) = admin(Method::GET, "/api/v1/admin/keys", None).await;
    assert_pascal_case(&list, "list");
    let rotate = format!("/api/v1/admin/keys/{}/rotate", created["Id"]);
    let (status, rotated) = admin(Method::POST, &rotate, Some(json!({"GraceSeconds": 60}))).await;
    assert_eq!(status, StatusCode::CREATED, "{rotated}");
    assert_pascal_case(&rotated, "rotated");

    // Query parameters: PascalCase, and the old lowercase names.
    for q in ["Limit=1&Status=mined", "limit=1&status=mined"] {
        let (status, page) = app.get(&format!("/api/v1/transactions?{q}")).await;
        assert_eq!(status, StatusCode::OK, "{q}: {page}");
    }
    let (status, body) = app.get("/api/v1/transactions?Limit=0").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_limit")), "{body}");
}
