//! Service information: `GET /`, `GET /api/v1/contracts`, and the JSON 404 (`GET /health` is
//! in [`super::health`]).

use std::collections::BTreeMap;

use alloy::providers::Provider;
use axum::{Json, extract::State, http::Uri};
use serde::Serialize;
use utoipa::ToSchema;

use super::ErrorCode;
use super::{API_VERSION, AppError, AppState, checksum, extract::ApiKey};

/// `GET /`: what this is and whether each contract is reachable and deployed.
#[utoipa::path(get, path = "/", tag = "Status",
    responses((status = 200, description = "Service information and per-contract status", body = ApiInfo)))]
pub async fn root(State(state): State<AppState>) -> Json<ApiInfo> {
    let mut contracts = BTreeMap::new();
    for c in state.contracts() {
        let status = match c.chain.provider.get_code_at(c.address).await {
            Ok(code) if !code.is_empty() => "ok",
            Ok(_) => "not_deployed",
            Err(_) => "unreachable",
        };
        contracts.insert(
            c.name.clone(),
            ContractStatus {
                address: checksum(c.address),
                token: checksum(c.token),
                token_decimals: c.token_decimals,
                chain_id: c.chain.chain_id,
                status,
            },
        );
    }
    Json(ApiInfo {
        message: "StreamPay Relayer: build, sign and relay gasless StreamPay meta-transactions. Keyed endpoints live under /api/v1 (X-API-Key).",
        api_version: API_VERSION,
        contracts,
        chains: state
            .chains
            .iter()
            .map(|c| ChainSummary { name: c.name.clone(), chain_id: c.chain_id, finality_depth: c.finality_depth })
            .collect(),
    })
}

/// `GET /`: service information.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ApiInfo {
    pub message: &'static str,
    #[schema(example = "2026-11-21")]
    pub api_version: &'static str,
    /// By deployment name.
    pub contracts: BTreeMap<String, ContractStatus>,
    /// Every chain this relayer serves.
    pub chains: Vec<ChainSummary>,
}

/// A chain this relayer serves.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ChainSummary {
    /// The configured name (else the chain id).
    pub name: String,
    pub chain_id: u64,
    /// Blocks after which a mined transaction counts as final.
    pub finality_depth: u64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ContractStatus {
    pub address: String,
    pub token: String,
    pub token_decimals: u8,
    pub chain_id: u64,
    /// `ok`, `not_deployed` or `unreachable`.
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// An item of `GET /api/v1/contracts`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ContractSummary {
    #[schema(example = "USDC")]
    pub name: String,
    pub address: String,
    /// The chain the deployment lives on.
    pub chain_id: u64,
}

/// `GET /api/v1/contracts`.
#[utoipa::path(get, path = "/api/v1/contracts", tag = "Contracts",
    responses(
        (status = 200, description = "Every deployment by name", body = Vec<ContractSummary>),
        (status = 401, description = "`missing_api_key`, `invalid_api_key`", body = crate::api::error::ErrorBody),
    ),
    security(("api_key" = [])))]
pub async fn contracts(State(state): State<AppState>, _key: ApiKey) -> Json<Vec<ContractSummary>> {
    Json(
        state
            .contracts()
            .map(|c| ContractSummary { name: c.name.clone(), address: checksum(c.address), chain_id: c.chain.chain_id })
            .collect(),
    )
}

pub async fn not_found(uri: Uri) -> AppError {
    AppError::new(ErrorCode::NotFound, format!("no endpoint at {}", uri.path()))
}
