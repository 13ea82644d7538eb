//! `GET /api/v1/transactions/{id}`: the outcome of an execute, e.g. after a 202.

use axum::{
    Json,
    extract::{Path, State},
};
use serde_json::{Value, json};

use super::ErrorCode;
use super::{AppError, AppState, checksum, extract::ApiKey};

#[utoipa::path(get, path = "/api/v1/transactions/{id}", tag = "Transactions",
    params(("id" = String, Path, description = "TransactionId from an execute answer")),
    responses(
        (status = 200, description = "Status, hash, gas and block of a relayed transaction", body = crate::api::discovery::TransactionView),
        (status = 401, description = "`missing_api_key`, `invalid_api_key`", body = crate::api::error::ErrorBody),
        (status = 404, description = "`transaction_not_found`", body = crate::api::error::ErrorBody),
    ),
    security(("api_key" = [])))]
#[tracing::instrument(skip_all)]
pub async fn get(State(state): State<AppState>, key: ApiKey, Path(id): Path<String>) -> Result<Json<Value>, AppError> {
    let not_found = || AppError::new(ErrorCode::TransactionNotFound, format!("no transaction {id:?} for this API key"));
    let numeric: i64 = id.parse().map_err(|_| not_found())?;
    let t = state.store.get_transaction(numeric, key.0.id).await?.ok_or_else(not_found)?;
    let contract = state.contracts.iter().find(|c| c.address == t.contract).map(|c| c.name.clone());
    let (reference, operations) = state.store.transaction_reference(numeric, key.0.id).await?.unwrap_or_default();
    // Read-your-writes: "mined" only once the index (every read endpoint) has reached its block.
    // A mined call the index lacks: wake (or run) the indexer briefly, as execute does.
    let deployment = state.contracts.iter().find(|c| c.address == t.contract);
    let indexed = match (t.block_number, deployment) {
        (Some(block), Some(c)) if matches!(t.legacy_status(), "mined") => {
            state.await_indexed_for(c, block, std::time::Duration::from_secs(2)).await
        }
        (Some(block), _) => state.index().head(t.contract).await?.is_some_and(|h| h.block_number >= block),
        (None, _) => false,
    };
    let status = match t.legacy_status() {
        "mined" if !indexed => "submitted",
        s => s,
    };
    Ok(Json(json!({
        "Id": t.id,
        "Status": status,
        "Indexed": indexed,
        "State": t.status,
        "Contract": contract,
        "ChainId": t.chain_id,
        "From": checksum(t.signer),
        "Nonce": t.meta_nonce,
        "Sponsor": checksum(t.sponsor),
        "TransactionHash": t.tx_hash,
        "GasUsed": t.gas_used,
        "BlockNumber": t.block_number,
        "SponsorNonce": t.sponsor_nonce,
        "Hashes": t.hashes,
        "Failure": t.failure,
        "RevertReason": t.revert_reason,
        "LastError": t.last_error,
        "Reference": reference,
        "Operations": operations,
    })))
}
