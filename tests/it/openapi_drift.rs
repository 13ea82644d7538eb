//! The document and the answers cannot drift apart: real answers of the running app (a build,
//! an execute, the transaction, history, balance, nonce, sponsors, fees, resolve, errors) are
//! checked against the schema `/openapi.json` publishes for their operation and status. Every
//! key of an answer must be a property of its schema, every required property must be present,
//! and every value must have the schema's type (null only where the schema allows it).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{TestApp, spawn_app, wallet};

/// Resolves `{"$ref": "#/components/schemas/X"}` against the document.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("unexpected $ref {r}"));
            let target = &doc["components"]["schemas"][name];
            assert!(target.is_object(), "{r} is not in the document");
            resolve(doc, target)
        }
        None => schema,
    }
}

/// Whether `value` has one of the JSON types `schema` names (an absent type accepts anything).
fn type_matches(schema: &Value, value: &Value) -> bool {
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => return true,
    };
    types.iter().any(|t| match *t {
        "null" => value.is_null(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => false,
    })
}

/// Checks `value` against `schema`; the drift found, as `path: problem` lines.
pub(crate) fn check(doc: &Value, schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    if schema.get("allOf").is_some() {
        // The object's properties are the union of its (possibly nested) parts'; each part
        // checks its own.
        let mut parts = Vec::new();
        leaves(doc, schema, &mut parts);
        let mut known = std::collections::BTreeSet::new();
        for part in parts {
            known.extend(part["properties"].as_object().into_iter().flatten().map(|(k, _)| k.clone()));
            check_object(doc, part, value, path, out, false);
        }
        for k in value.as_object().into_iter().flatten().map(|(k, _)| k) {
            if !known.contains(k) {
                out.push(format!("{path}.{k}: not in the schema"));
            }
        }
        return;
    }
    if let Some(any) = schema.get("oneOf").or_else(|| schema.get("anyOf")).and_then(Value::as_array) {
        let fits = any.iter().any(|alt| {
            let mut errs = Vec::new();
            check(doc, alt, value, path, &mut errs);
            errs.is_empty()
        });
        if !fits {
            out.push(format!("{path}: {value} fits none of {}", Value::Array(any.clone())));
        }
        return;
    }
    if !type_matches(schema, value) {
        out.push(format!("{path}: {value} is not of type {}", schema["type"]));
        return;
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array)
        && !value.is_null()
        && !values.contains(value)
    {
        out.push(format!("{path}: {value} is not one of the enum"));
    }
    match value {
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(doc, item_schema, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        Value::Object(_) => check_object(doc, schema, value, path, out, true),
        _ => {}
    }
}

/// The parts of an `allOf`, nested ones flattened.
fn leaves<'a>(doc: &'a Value, schema: &'a Value, out: &mut Vec<&'a Value>) {
    let schema = resolve(doc, schema);
    match schema.get("allOf").and_then(Value::as_array) {
        Some(all) => all.iter().for_each(|part| leaves(doc, part, out)),
        None => out.push(schema),
    }
}

fn check_object(doc: &Value, schema: &Value, value: &Value, path: &str, out: &mut Vec<String>, closed: bool) {
    let Some(obj) = value.as_object() else { return };
    let props = schema["properties"].as_object();
    for name in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        if !obj.contains_key(name) {
            out.push(format!("{path}.{name}: required by the schema, absent from the answer"));
        }
    }
    match props {
        Some(props) => {
            for (k, v) in obj {
                match props.get(k) {
                    Some(s) => check(doc, s, v, &format!("{path}.{k}"), out),
                    None if closed => out.push(format!("{path}.{k}: not in the schema")),
                    None => {}
                }
            }
        }
        // A map (`additionalProperties`): each value against it.
        None => {
            if let Some(extra) = schema.get("additionalProperties").filter(|s| s.is_object()) {
                for (k, v) in obj {
                    check(doc, extra, v, &format!("{path}.{k}"), out);
                }
            }
        }
    }
}

/// Asserts `body`, answered with `status` by `method path`, matches what the document says.
fn assert_matches(doc: &Value, method: &str, path: &str, status: StatusCode, body: &Value) {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} undocumented");
    let schema = &op["responses"][status.as_str()]["content"]["application/json"]["schema"];
    assert!(schema.is_object(), "{method} {path}: no JSON schema for {status}");
    let mut drift = Vec::new();
    check(doc, schema, body, "$", &mut drift);
    assert!(drift.is_empty(), "{method} {path} {status} drifted from its schema:\n{}\n{body:#}", drift.join("\n"));
}

async fn get(app: &TestApp, doc: &Value, template: &str, concrete: &str) -> Value {
    let (status, body) = app.get(concrete).await;
    assert_matches(doc, "get", template, status, &body);
    body
}

#[tokio::test]
async fn real_answers_match_their_published_schemas() {
    let app = spawn_app().await;
    let (_, doc) = app.get_with_key("/openapi.json", None).await;
    let (alice, bob) = (wallet(), wallet());
    app.fund(&alice, 10).await;

    // A build (flattened extras), an execute, the transaction it made and the history.
    let built = app
        .build("/api/v1/USDC/payments/", &json!({"From": alice.address(), "To": bob.address(), "Amount": "1.5"}))
        .await;
    assert_matches(&doc, "post", "/api/v1/{contract}/payments/", StatusCode::OK, &built);
    let executed = app.execute_ok(&alice, &built).await;
    assert_matches(&doc, "post", "/api/v1/{contract}/meta/execute", StatusCode::OK, &executed);
    let id = executed["TransactionId"].as_i64().unwrap();
    let tx = get(&app, &doc, "/api/v1/transactions/{id}", &format!("/api/v1/transactions/{id}")).await;
    assert_eq!(tx["Status"], "mined");
    let page = get(&app, &doc, "/api/v1/transactions", "/api/v1/transactions").await;
    assert!(!page["Transactions"].as_array().unwrap().is_empty());

    app.sync_index().await;
    let who = bob.address();
    get(&app, &doc, "/api/v1/{contract}/payments/balance/{address}", &format!("/api/v1/USDC/payments/balance/{who}"))
        .await;
    get(&app, &doc, "/api/v1/{contract}/meta/nonce/{account}", &format!("/api/v1/USDC/meta/nonce/{who}")).await;
    get(&app, &doc, "/api/v1/sponsors", "/api/v1/sponsors").await;
    get(&app, &doc, "/api/v1/{contract}/fees", "/api/v1/USDC/fees?operation=pay").await;
    get(&app, &doc, "/api/v1/contracts", "/api/v1/contracts").await;
    get(&app, &doc, "/", "/").await;
    get(&app, &doc, "/api/v1/meta", "/api/v1/meta").await;
    // Both shapes of a resolution: facts, and nulls with fields left out.
    get(
        &app,
        &doc,
        "/api/v1/{contract}/recipients/resolve",
        &format!("/api/v1/USDC/recipients/resolve?identifier={who}"),
    )
    .await;
    get(&app, &doc, "/api/v1/{contract}/recipients/resolve", "/api/v1/USDC/recipients/resolve?identifier=bob").await;

    // Errors: a typed body whose code is in the published enum.
    let bad =
        get(&app, &doc, "/api/v1/{contract}/payments/balance/{address}", "/api/v1/USDC/payments/balance/0x12").await;
    assert_eq!(bad["error"]["code"], "invalid_address");
    get(&app, &doc, "/api/v1/transactions/{id}", "/api/v1/transactions/999999").await;
}

/// The checker itself finds drift: an unknown key, a missing required key and a wrong type.
#[tokio::test]
async fn the_schema_check_catches_drift() {
    let app = spawn_app().await;
    let (_, doc) = app.get_with_key("/openapi.json", None).await;
    let path = "/api/v1/{contract}/payments/balance/{address}";
    let schema = &doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"];
    let good = json!({"Address": "0x", "Balance": "1", "BalanceRaw": "1", "Decimals": 18});
    let mut drift = Vec::new();
    check(&doc, schema, &good, "$", &mut drift);
    assert!(drift.is_empty(), "{drift:?}");
    for bad in [
        json!({"Address": "0x", "Balance": "1", "BalanceRaw": "1", "Decimals": 18, "Extra": 1}),
        json!({"Address": "0x", "Balance": "1", "Decimals": 18}),
        json!({"Address": "0x", "Balance": 1, "BalanceRaw": "1", "Decimals": 18}),
    ] {
        let mut drift = Vec::new();
        check(&doc, schema, &bad, "$", &mut drift);
        assert!(!drift.is_empty(), "{bad} passed");
    }
}
