//! Service information: `GET /`, `GET /api/v1/contracts`, and the JSON 404 (`GET /health` is
//! in [`super::health`]).

use alloy::providers::Provider;
use axum::{Json, extract::State, http::Uri};
use serde_json::{Map, Value, json};

use super::ErrorCode;
use super::{API_VERSION, AppError, AppState, checksum, extract::ApiKey};

/// `GET /`: what this is and whether each contract is reachable and deployed.
#[utoipa::path(get, path = "/", tag = "Status",
    responses((status = 200, description = "Service information and per-contract status", body = crate::api::discovery::ApiInfo)))]
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

/// `GET /api/v1/contracts`.
#[utoipa::path(get, path = "/api/v1/contracts", tag = "Contracts",
    responses(
        (status = 200, description = "Every deployment by name", body = Vec<crate::api::discovery::ContractSummary>),
        (status = 401, description = "`missing_api_key`, `invalid_api_key`", body = crate::api::error::ErrorBody),
    ),
    security(("api_key" = [])))]
pub async fn contracts(State(state): State<AppState>, _key: ApiKey) -> Json<Value> {
    Json(Value::Array(
        state.contracts.iter().map(|c| json!({"Name": c.name, "Address": checksum(c.address)})).collect(),
    ))
}

pub async fn not_found(uri: Uri) -> AppError {
    AppError::new(ErrorCode::NotFound, format!("no endpoint at {}", uri.path()))
}
