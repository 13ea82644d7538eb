//! Service information: `GET /`, `GET /health`, `GET /api/v1/contracts`, and the JSON 404.

use alloy::providers::Provider;
use axum::{Json, extract::State, http::Uri};
use serde_json::{Map, Value, json};

use super::{API_VERSION, AppError, AppState, checksum, extract::ApiKey};

/// `GET /`: what this is and whether each contract is reachable and deployed.
pub async fn root(State(state): State<AppState>) -> Json<Value> {
    let mut contracts = Map::new();
    for c in &state.contracts {
        let status = match state.provider.get_code_at(c.address).await {
            Ok(code) if !code.is_empty() => "ok",
            Ok(_) => "not_deployed",
            Err(_) => "unreachable",
        };
        contracts.insert(
            c.name.clone(),
            json!({
                "Address": checksum(c.address),
                "Token": checksum(c.token),
                "TokenDecimals": c.token_decimals,
                "ChainId": state.chain_id,
                "Status": status,
            }),
        );
    }
    Json(json!({
        "Message": "StreamPay Relayer: build, sign and relay gasless StreamPay meta-transactions. Keyed endpoints live under /api/v1 (X-API-Key).",
        "ApiVersion": API_VERSION,
        "Contracts": contracts,
    }))
}

/// `GET /health`: always 200 while the process serves; `status` says whether dependencies are.
pub async fn health(State(state): State<AppState>) -> Json<Value> {
    let mut degraded = Vec::new();
    if !state.store.ping().await {
        degraded.push("database");
    }
    match state.provider.get_chain_id().await {
        Ok(id) if id == state.chain_id => {}
        _ => degraded.push("rpc"),
    }
    Json(json!({
        "status": if degraded.is_empty() { "ok" } else { "degraded" },
        "degraded_subsystems": degraded,
        "chain_id": state.chain_id,
        "api_version": API_VERSION,
    }))
}

/// `GET /api/v1/contracts`.
pub async fn contracts(State(state): State<AppState>, _key: ApiKey) -> Json<Value> {
    Json(Value::Array(
        state.contracts.iter().map(|c| json!({"Name": c.name, "Address": checksum(c.address)})).collect(),
    ))
}

pub async fn not_found(uri: Uri) -> AppError {
    AppError::not_found("not_found", format!("no endpoint at {}", uri.path()))
}
