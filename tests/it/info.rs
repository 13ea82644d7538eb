//! Public information endpoints, the contract list, routing errors.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{assert_error, spawn_app};

#[tokio::test]
async fn root_reports_each_contract_and_needs_no_key() {
    let app = spawn_app().await;
    let resp = app.http.get(app.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get("x-api-version").is_some(), "every response carries X-Api-Version");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["Message"].as_str().is_some());
    assert_eq!(body["Contracts"]["USDC"]["Address"], json!(app.contract.to_checksum(None)));
    assert_eq!(body["Contracts"]["USDC"]["Status"], "ok");
}

#[tokio::test]
async fn health_is_ok_when_database_and_rpc_answer() {
    let app = spawn_app().await;
    let (status, body) = app.get_with_key("/health", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["Status"], "ok", "{body}");
    assert_eq!(body["DegradedSubsystems"], json!([]));
}

#[tokio::test]
async fn contracts_lists_every_deployment_by_name_address_and_chain() {
    let app = spawn_app().await;
    let (status, body) = app.get("/api/v1/contracts").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!([{"Name": "USDC", "Address": app.contract.to_checksum(None), "ChainId": app.chain_id}]));
}

#[tokio::test]
async fn contract_names_match_case_insensitively() {
    let app = spawn_app().await;
    let who = crate::harness::wallet().address();
    app.sync_index().await;
    let (status, body) = app.get(&format!("/api/v1/usdc/payments/balance/{who}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["Balance"], "0");
}

#[tokio::test]
async fn unknown_contract_is_404_unknown_contract() {
    let app = spawn_app().await;
    let who = crate::harness::wallet().address();
    assert_error(
        &app.get(&format!("/api/v1/DAI/payments/balance/{who}")).await,
        StatusCode::NOT_FOUND,
        "unknown_contract",
    );
    let body = json!({"From": who, "To": who, "Amount": "1"});
    assert_error(&app.post("/api/v1/DAI/payments/", &body).await, StatusCode::NOT_FOUND, "unknown_contract");
}

#[tokio::test]
async fn unknown_route_is_404_not_found() {
    let app = spawn_app().await;
    assert_error(&app.get("/api/v1/USDC/nothing-here").await, StatusCode::NOT_FOUND, "not_found");
}
