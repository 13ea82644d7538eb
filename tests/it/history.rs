//! References and transaction history: `Reference` on execute, `GET /api/v1/transactions` with
//! filters and keyset pagination, `GET /api/v1/transactions/summary`.

use alloy::{primitives::U256, signers::local::PrivateKeySigner};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{TestApp, assert_error, spawn_app, wallet};

/// Builds a payment of `amount` from `from` to a fresh wallet and executes it with `reference`
/// sent as the `Reference` header.
async fn pay_with_reference(app: &TestApp, from: &PrivateKeySigner, amount: &str, reference: Option<&str>) -> Value {
    let built = app
        .build("/api/v1/USDC/payments/", &json!({"From": from.address(), "To": wallet().address(), "Amount": amount}))
        .await;
    let body = app.signed_execute_body(from, &built).await;
    let mut req = app.http.post(app.url("/api/v1/USDC/meta/execute")).header("X-API-Key", &app.api_key).json(&body);
    if let Some(r) = reference {
        req = req.header("Reference", r);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let out: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{out}");
    out
}

fn ids(page: &Value) -> Vec<i64> {
    page["Transactions"].as_array().unwrap().iter().map(|t| t["Id"].as_i64().unwrap()).collect()
}

#[tokio::test]
async fn history_stores_the_reference_and_filters_by_it_signer_status_contract_and_time() {
    let app = spawn_app().await;
    let (alice, bob) = (wallet(), wallet());
    app.fund(&alice, 100).await;
    app.fund(&bob, 100).await;
    let before = app.get("/api/v1/transactions").await.1["Transactions"][0]["CreatedAt"].as_str().unwrap().to_string();

    let p1 = pay_with_reference(&app, &alice, "1.5", Some("order-1")).await;
    pay_with_reference(&app, &alice, "2.25", Some("order-2")).await;
    // The reference as a body field works too.
    let built = app
        .build(
            "/api/v1/USDC/payments/",
            &json!({"From": bob.address(), "To": wallet().address(), "Amount": "0.000000000000000001"}),
        )
        .await;
    let mut body = app.signed_execute_body(&bob, &built).await;
    body["Reference"] = json!("order-1");
    let (status, _) = app.post("/api/v1/USDC/meta/execute", &body).await;
    assert_eq!(status, StatusCode::OK);

    // All five, newest first, each with its operations and exact amounts.
    let (status, all) = app.get("/api/v1/transactions").await;
    assert_eq!(status, StatusCode::OK, "{all}");
    let list = all["Transactions"].as_array().unwrap();
    assert_eq!(list.len(), 5, "{all}");
    assert!(ids(&all).windows(2).all(|w| w[0] > w[1]), "newest first: {:?}", ids(&all));
    assert_eq!(all["NextCursor"], Value::Null);
    let newest = &list[0];
    assert_eq!(newest["Reference"], "order-1");
    assert_eq!(newest["From"], json!(bob.address().to_checksum(None)));
    assert_eq!(newest["Operations"], json!(["pay"]));
    assert_eq!(newest["Amounts"], json!([{"Operation": "pay", "Amount": "0.000000000000000001", "AmountRaw": "1"}]));
    let deposit = &list[4];
    assert_eq!(deposit["Reference"], Value::Null);
    assert_eq!(deposit["Operations"], json!(["deposit"]));
    assert_eq!(deposit["Amounts"][0]["AmountRaw"], "100000000000000000000", "deposits count in internal units");
    let oldest_p1 = list.iter().find(|t| t["TransactionHash"] == p1["TransactionHash"]).unwrap();
    assert_eq!(oldest_p1["Reference"], "order-1");
    assert_eq!(oldest_p1["Status"], "mined");
    assert!(matches!(oldest_p1["State"].as_str(), Some("mined" | "confirmed")), "{oldest_p1}");
    assert_eq!(oldest_p1["GasUsed"], p1["GasUsed"]);
    assert_eq!(oldest_p1["Amounts"][0]["Amount"], "1.5");
    let (status, one) = app.get(&format!("/api/v1/transactions/{}", p1["TransactionId"])).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["Reference"], "order-1");
    assert_eq!(one["Operations"], json!(["pay"]));

    let count = |q: &str| {
        let q = q.to_string();
        let app = &app;
        async move {
            let (status, page) = app.get(&format!("/api/v1/transactions?{q}")).await;
            assert_eq!(status, StatusCode::OK, "{q}: {page}");
            page["Transactions"].as_array().unwrap().len()
        }
    };
    assert_eq!(count("reference=order-1").await, 2);
    assert_eq!(count("reference=order-2").await, 1);
    assert_eq!(count("reference=nothing").await, 0);
    assert_eq!(count(&format!("signer={}", alice.address())).await, 3);
    assert_eq!(count(&format!("signer={}&reference=order-1", alice.address())).await, 1);
    assert_eq!(count(&format!("sponsor={}", app.sponsor)).await, 5);
    assert_eq!(count(&format!("sponsor={}", app.other_sponsor)).await, 0);
    assert_eq!(count("status=mined,confirmed").await, 5);
    assert_eq!(count("status=failed").await, 0);
    assert_eq!(count("contract=usdc").await, 5);
    assert_eq!(count(&format!("contract={}", app.token)).await, 0);
    // Time range on creation: from is inclusive, to exclusive.
    assert_eq!(count(&format!("from={before}")).await, 4);
    assert_eq!(count(&format!("to={before}")).await, 1);
    assert_eq!(count("from=2100-01-01T00:00:00Z").await, 0);
    assert_eq!(count("to=2100-01-01T00:00:00%2B02:00").await, 5);

    // Keys never see each other's transactions.
    let other = app.store.create_api_key("other", &[app.sponsor], true).await.unwrap();
    let (_, page) = app.get_with_key("/api/v1/transactions", Some(&other.key)).await;
    assert_eq!(page["Transactions"], json!([]));
}

#[tokio::test]
async fn history_pages_are_stable_under_inserts() {
    let app = spawn_app().await;
    let alice = wallet();
    app.fund(&alice, 100).await;
    for _ in 0..4 {
        pay_with_reference(&app, &alice, "1", Some("batch")).await;
    }
    let (_, p1) = app.get("/api/v1/transactions?limit=2").await;
    assert_eq!(p1["Limit"], 2);
    assert_eq!(ids(&p1).len(), 2);
    let cursor = p1["NextCursor"].as_str().expect("a next page").to_string();

    // New transactions arrive between the pages: the next page continues where the first ended.
    pay_with_reference(&app, &alice, "1", Some("batch")).await;
    pay_with_reference(&app, &alice, "1", None).await;
    let (status, p2) = app.get(&format!("/api/v1/transactions?limit=2&cursor={cursor}")).await;
    assert_eq!(status, StatusCode::OK, "{p2}");
    let (_, p3) = app.get(&format!("/api/v1/transactions?limit=2&cursor={}", p2["NextCursor"].as_str().unwrap())).await;
    assert_eq!(p3["NextCursor"], Value::Null, "{p3}");
    let mut seen = [ids(&p1), ids(&p2), ids(&p3)].concat();
    assert_eq!(seen.len(), 5, "the 5 rows that existed at the first page, each once: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "{seen:?}");
    seen.dedup();
    assert_eq!(seen.len(), 5);
    // The newcomers lead a fresh first page.
    let (_, fresh) = app.get("/api/v1/transactions?limit=100").await;
    assert_eq!(ids(&fresh).len(), 7);
    assert!(ids(&fresh)[0] > ids(&p1)[0]);
    // Filters and pagination together.
    let (_, r1) = app.get("/api/v1/transactions?reference=batch&limit=3").await;
    let (_, r2) = app
        .get(&format!("/api/v1/transactions?reference=batch&limit=3&cursor={}", r1["NextCursor"].as_str().unwrap()))
        .await;
    assert_eq!(ids(&r1).len() + ids(&r2).len(), 5);
    assert_eq!(r2["NextCursor"], Value::Null);
}

#[tokio::test]
async fn history_summary_totals_count_gas_and_exact_amounts_of_a_reference() {
    let app = spawn_app().await;
    let alice = wallet();
    app.fund(&alice, 100).await;
    let a = pay_with_reference(&app, &alice, "1.5", Some("invoice 42/ü")).await;
    let b = pay_with_reference(&app, &alice, "0.000000000000000007", Some("invoice 42/ü")).await;
    pay_with_reference(&app, &alice, "9", Some("other")).await;

    app.wait_priced().await;
    let (status, s) = app.get("/api/v1/transactions/summary?reference=invoice%2042%2F%C3%BC").await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(s["Reference"], "invoice 42/ü");
    assert_eq!(s["Count"], 2);
    let by_status = s["ByStatus"].as_object().unwrap();
    assert!(by_status.keys().all(|k| k == "mined" || k == "confirmed"), "{s}");
    assert_eq!(by_status.values().map(|n| n.as_u64().unwrap()).sum::<u64>(), 2);
    let gas = a["GasUsed"].as_u64().unwrap() + b["GasUsed"].as_u64().unwrap();
    assert_eq!(s["GasUsed"], gas);
    assert_eq!(
        s["Amounts"],
        json!([{"Operation": "pay", "Amount": "1.500000000000000007", "AmountRaw": "1500000000000000007"}])
    );
    // Gas cost: Σ gas used × effective gas price, from the receipts.
    let mut cost = U256::ZERO;
    for done in [&a, &b] {
        use alloy::providers::Provider;
        let hash = done["TransactionHash"].as_str().unwrap().parse().unwrap();
        let receipt = app.provider.get_transaction_receipt(hash).await.unwrap().unwrap();
        cost += U256::from(receipt.gas_used) * U256::from(receipt.effective_gas_price);
    }
    assert_eq!(s["GasCostWei"], cost.to_string());

    let (_, empty) = app.get("/api/v1/transactions/summary?reference=unknown").await;
    assert_eq!(empty["Count"], 0);
    assert_eq!(empty["GasCostWei"], "0");
    assert_eq!(empty["Amounts"], json!([]));
    assert_error(&app.get("/api/v1/transactions/summary").await, StatusCode::BAD_REQUEST, "missing_field");
    let long = "x".repeat(256);
    assert_error(
        &app.get(&format!("/api/v1/transactions/summary?reference={long}")).await,
        StatusCode::BAD_REQUEST,
        "invalid_reference",
    );
}

#[tokio::test]
async fn history_rejects_bad_references_limits_cursors_times_and_statuses() {
    let app = spawn_app().await;
    let alice = wallet();
    app.fund(&alice, 10).await;
    let built = app
        .build("/api/v1/USDC/payments/", &json!({"From": alice.address(), "To": wallet().address(), "Amount": "1"}))
        .await;
    let body = app.signed_execute_body(&alice, &built).await;
    let exec = |reference: &'static str, field: Option<&'static str>| {
        let mut body = body.clone();
        if let Some(f) = field {
            body["Reference"] = json!(f);
        }
        let req = app
            .http
            .post(app.url("/api/v1/USDC/meta/execute"))
            .header("X-API-Key", &app.api_key)
            .header("Reference", reference)
            .json(&body);
        async move {
            let resp = req.send().await.unwrap();
            (resp.status(), resp.json::<Value>().await.unwrap())
        }
    };
    let long: &'static str = Box::leak("r".repeat(256).into_boxed_str());
    assert_error(&exec(long, None).await, StatusCode::BAD_REQUEST, "invalid_reference");
    assert_error(&exec("  ", None).await, StatusCode::BAD_REQUEST, "invalid_reference");
    assert_error(&exec("a", Some("b")).await, StatusCode::UNPROCESSABLE_ENTITY, "reference_mismatch");
    let too_long: &'static str = Box::leak("é".repeat(256).into_boxed_str());
    assert_error(&exec("ok", Some(too_long)).await, StatusCode::BAD_REQUEST, "invalid_reference");
    // Build endpoints check the header too.
    let resp = app
        .http
        .post(app.url("/api/v1/USDC/payments/"))
        .header("X-API-Key", &app.api_key)
        .header("Reference", long)
        .json(&json!({"From": alice.address(), "To": wallet().address(), "Amount": "1"}))
        .send()
        .await
        .unwrap();
    assert_error(&(resp.status(), resp.json().await.unwrap()), StatusCode::BAD_REQUEST, "invalid_reference");
    // Nothing was relayed by the refused executes; 255 characters are fine.
    assert_eq!(app.get("/api/v1/transactions").await.1["Transactions"].as_array().unwrap().len(), 1);
    let mut body255 = body.clone();
    body255["Reference"] = json!("é".repeat(255));
    let (status, done) = app.post("/api/v1/USDC/meta/execute", &body255).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let (_, page) = app.get("/api/v1/transactions?limit=1").await;
    assert_eq!(page["Transactions"][0]["Reference"], json!("é".repeat(255)));

    for q in ["limit=0", "limit=101", "limit=abc", "limit=-1"] {
        assert_error(&app.get(&format!("/api/v1/transactions?{q}")).await, StatusCode::BAD_REQUEST, "invalid_limit");
    }
    assert_eq!(app.get("/api/v1/transactions?limit=100").await.0, StatusCode::OK);
    for c in ["zz", "1234", &alloy::hex::encode("id:-5"), &alloy::hex::encode("id:x")] {
        assert_error(
            &app.get(&format!("/api/v1/transactions?cursor={c}")).await,
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
        );
    }
    for t in ["yesterday", "2026-13-01T00:00:00Z", "2026-11-21", "2026-11-21T07:30:00", "now", "2026-02-30T00:00:00Z"] {
        assert_error(
            &app.get(&format!("/api/v1/transactions?from={t}")).await,
            StatusCode::BAD_REQUEST,
            "invalid_time",
        );
        assert_error(&app.get(&format!("/api/v1/transactions?to={t}")).await, StatusCode::BAD_REQUEST, "invalid_time");
    }
    assert_error(&app.get("/api/v1/transactions?status=lost").await, StatusCode::BAD_REQUEST, "invalid_status");
    assert_error(&app.get("/api/v1/transactions?signer=0x12").await, StatusCode::BAD_REQUEST, "invalid_address");
    assert_error(&app.get("/api/v1/transactions?contract=DAI").await, StatusCode::NOT_FOUND, "unknown_contract");
    assert_error(&app.get_with_key("/api/v1/transactions", None).await, StatusCode::UNAUTHORIZED, "missing_api_key");
}

#[tokio::test]
async fn history_reference_is_documented_on_every_mutating_call() {
    let app = spawn_app().await;
    let (_, doc) = app.get("/openapi.json").await;
    let mut seen = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["post", "delete"] {
            let Some(op) = item.get(method) else { continue };
            seen += 1;
            let params = op["parameters"].as_array().unwrap();
            let refs: Vec<_> = params.iter().filter(|p| p["name"] == "Reference").collect();
            assert_eq!(refs.len(), 1, "{method} {path}: {params:?}");
            assert_eq!(refs[0]["in"], "header");
            assert!(
                op["responses"]["400"]["description"].as_str().unwrap().contains("`invalid_reference`"),
                "{method} {path}"
            );
        }
    }
    assert!(seen >= 8, "{seen}");
    // The history endpoints and their schemas are published.
    for path in ["/api/v1/transactions", "/api/v1/transactions/summary"] {
        assert!(doc["paths"][path]["get"].is_object(), "{path}");
    }
    for schema in ["TransactionPage", "TransactionListItem", "ReferenceSummaryView", "AmountView"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
    let codes: Vec<&str> = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for code in ["invalid_reference", "invalid_limit", "invalid_cursor", "invalid_time", "invalid_status"] {
        assert!(codes.contains(&code), "{code}");
    }
}

#[tokio::test]
async fn history_reference_is_part_of_an_idempotent_request() {
    let app = spawn_app().await;
    let alice = wallet();
    app.fund(&alice, 10).await;
    let built = app
        .build("/api/v1/USDC/payments/", &json!({"From": alice.address(), "To": wallet().address(), "Amount": "1"}))
        .await;
    let body = app.signed_execute_body(&alice, &built).await;
    let send = |reference: &'static str| {
        let req = app
            .http
            .post(app.url("/api/v1/USDC/meta/execute"))
            .header("X-API-Key", &app.api_key)
            .header("Idempotency-Key", "pay-once")
            .header("Reference", reference)
            .json(&body);
        async move {
            let resp = req.send().await.unwrap();
            (resp.status(), resp.json::<Value>().await.unwrap())
        }
    };
    let first = send("order-7").await;
    assert_eq!(first.0, StatusCode::OK, "{}", first.1);
    let replay = send("order-7").await;
    assert_eq!(replay, first, "same key, same request: the first answer");
    assert_error(&send("order-8").await, StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused");
    let (_, page) = app.get("/api/v1/transactions?reference=order-7").await;
    assert_eq!(page["Transactions"].as_array().unwrap().len(), 1, "relayed once");
    let (_, page) = app.get("/api/v1/transactions?reference=order-8").await;
    assert_eq!(page["Transactions"], json!([]));
}

#[tokio::test]
async fn history_records_every_amount_of_a_batch_and_sums_them_exactly() {
    let app = spawn_app().await;
    let user = wallet();
    app.fund(&user, 10).await;
    let built = app
        .build(
            "/api/v1/USDC/batch/payments",
            &json!({"From": user.address(), "Payments": [
                {"To": wallet().address(), "Amount": "1"},
                {"To": wallet().address(), "Amount": "2.5"},
                {"To": wallet().address(), "Amount": "0.000000000000000001"},
            ]}),
        )
        .await;
    let mut body = app.signed_execute_body(&user, &built).await;
    body["Reference"] = json!("payroll-2026-11");
    let (status, done) = app.post("/api/v1/USDC/meta/execute", &body).await;
    assert_eq!(status, StatusCode::OK, "{done}");

    let (_, page) = app.get("/api/v1/transactions?reference=payroll-2026-11").await;
    let t = &page["Transactions"][0];
    assert_eq!(t["Operations"], json!(["pay", "pay", "pay"]));
    let raw: Vec<&str> = t["Amounts"].as_array().unwrap().iter().map(|a| a["AmountRaw"].as_str().unwrap()).collect();
    assert_eq!(raw, ["1000000000000000000", "2500000000000000000", "1"]);
    let (_, s) = app.get("/api/v1/transactions/summary?reference=payroll-2026-11").await;
    assert_eq!(s["Count"], 1);
    assert_eq!(
        s["Amounts"],
        json!([{"Operation": "pay", "Amount": "3.500000000000000001", "AmountRaw": "3500000000000000001"}])
    );
    assert_eq!(s["GasUsed"], done["GasUsed"]);
}
