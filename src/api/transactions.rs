//! `GET /api/v1/transactions/{id}`: the outcome of an execute, e.g. after a 202. A key sees the
//! transactions of its whole rotation family (the keys it replaced and that replaced it).

use axum::{
    Json,
    extract::{Path, State},
};
use serde::Serialize;
use utoipa::ToSchema;

use super::ErrorCode;
use super::{AppError, AppState, extract::ApiKey};
use crate::views::{TransactionFacts, TransactionView, legacy_status};

#[utoipa::path(get, path = "/api/v1/transactions/{id}", tag = "Transactions",
    params(("id" = String, Path, description = "TransactionId from an execute answer")),
    responses(
        (status = 200, description = "Status, hash, gas and block of a relayed transaction", body = TransactionDetail),
        (status = 401, description = "`missing_api_key`, `invalid_api_key`", body = crate::api::error::ErrorBody),
        (status = 404, description = "`transaction_not_found`", body = crate::api::error::ErrorBody),
    ),
    security(("api_key" = [])))]
#[tracing::instrument(skip_all)]
pub async fn get(
    State(state): State<AppState>,
    key: ApiKey,
    Path(id): Path<String>,
) -> Result<Json<TransactionDetail>, AppError> {
    let not_found = || AppError::new(ErrorCode::TransactionNotFound, format!("no transaction {id:?} for this API key"));
    let numeric: i64 = id.parse().map_err(|_| not_found())?;
    // Any key of the family sees it: a rotated key's successor keeps its history (migration 0016).
    let owner = state.store.transaction_key_in_family(numeric, key.0.id).await?.ok_or_else(not_found)?;
    let t = state.store.get_transaction(numeric, owner).await?.ok_or_else(not_found)?;
    let deployment = state.contract_at(t.chain_id, t.contract);
    let (reference, operations) = state.store.transaction_reference(numeric, key.0.id).await?.unwrap_or_default();
    // Read-your-writes: "mined" only once the index (every read endpoint) has reached its block.
    // A mined call the index lacks: wake (or run) the indexer briefly, as execute does.
    let indexed = match (t.block_number, deployment) {
        (Some(block), Some(c)) if legacy_status(&t.status) == "mined" => {
            state.await_indexed_for(c, block, std::time::Duration::from_secs(2)).await
        }
        (Some(block), Some(c)) => c.chain.index.head(t.contract).await?.is_some_and(|h| h.block_number >= block),
        (Some(_), None) => false,
        (None, _) => false,
    };
    let view = TransactionView::new(
        state.chain(t.chain_id).map_or(&[][..], |c| c.deployments.as_slice()),
        TransactionFacts {
            id: t.id,
            chain_id: t.chain_id,
            contract: t.contract,
            signer: t.signer,
            meta_nonce: t.meta_nonce,
            sponsor: t.sponsor,
            sponsor_nonce: t.sponsor_nonce,
            tx_hash: t.tx_hash,
            state: t.status,
            gas_used: t.gas_used,
            block_number: t.block_number,
            failure: t.failure,
            revert_reason: t.revert_reason,
        },
    );
    let status = match view.status {
        "mined" if !indexed => "submitted",
        s => s,
    };
    // Fields in the order of their keys: the bytes on the wire are those of the map-built
    // answer this replaced.
    Ok(Json(TransactionDetail {
        block_number: view.block_number,
        chain_id: view.chain_id,
        contract: view.contract,
        failure: view.failure,
        from: view.from,
        gas_used: view.gas_used,
        hashes: t.hashes.iter().map(ToString::to_string).collect(),
        id: view.transaction_id,
        indexed,
        last_error: t.last_error,
        nonce: view.nonce,
        operations,
        reference,
        revert_reason: view.revert_reason,
        sponsor: view.sponsor,
        sponsor_nonce: view.sponsor_nonce,
        state: view.state,
        status,
        transaction_hash: view.transaction_hash,
    }))
}

/// `GET /api/v1/transactions/{id}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
#[schema(as = TransactionView)]
pub struct TransactionDetail {
    pub block_number: Option<u64>,
    pub chain_id: u64,
    /// The deployment's name.
    pub contract: Option<String>,
    /// Why it failed, if it did.
    pub failure: Option<String>,
    pub from: String,
    pub gas_used: Option<u64>,
    /// Every hash signed for it (fee bumps replace the transaction), oldest first.
    pub hashes: Vec<String>,
    pub id: i64,
    /// Whether the index (every read endpoint) has reached the transaction's block.
    pub indexed: bool,
    /// The last error the node answered while sending it.
    pub last_error: Option<String>,
    pub nonce: u64,
    /// The user operations run, in order.
    pub operations: Vec<String>,
    /// The `Reference` given to execute.
    pub reference: Option<String>,
    /// The decoded revert, if it reverted.
    pub revert_reason: Option<String>,
    pub sponsor: String,
    pub sponsor_nonce: u64,
    /// The pipeline's own state (`pending`, `submitted`, `mined`, `confirmed`, `failed`, …).
    pub state: String,
    /// `submitted`, `mined` or `reverted` (the first API version's vocabulary). `mined` only
    /// once the relayer's index has reached the transaction's block, so every read endpoint
    /// already reflects it (read-your-writes); `submitted` until then.
    pub status: &'static str,
    pub transaction_hash: String,
}
