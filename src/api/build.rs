//! Assembles the meta-transaction object `T` every build endpoint returns:
//! `{To, ChainId, From, Nonce, Deadline, Traits, Data, Digest, TypedData}` (+ `PermitTypedData`
//! for deposits). The nonce is reserved in Postgres so consecutive builds never collide; the
//! deadline counts from the chain's clock; the traits bind the call to the chosen sponsor.

use std::sync::Arc;

use alloy::primitives::{Address, Bytes, U256};
use axum::Json;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::{AppError, AppState, Contract, checksum};
use crate::{
    chain::{
        self, IPermitToken, StreamPay,
        eip712::{self, Domain, PermitValues},
        traits::Traits,
    },
    pipeline::Sponsor,
    store::NonceScope,
};

/// The `Transaction` object of a build response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct MetaTransaction {
    #[serde(serialize_with = "ser_checksum")]
    #[schema(value_type = String)]
    pub to: Address,
    pub chain_id: u64,
    #[serde(serialize_with = "ser_checksum")]
    #[schema(value_type = String)]
    pub from: Address,
    pub nonce: u64,
    pub deadline: u64,
    /// uint256 as a decimal string.
    pub traits: String,
    #[schema(value_type = String)]
    pub data: Bytes,
    pub digest: String,
    /// EIP-712 document for eth_signTypedData_v4 (primaryType "SignedCall").
    #[schema(value_type = Object)]
    pub typed_data: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub permit_typed_data: Option<Value>,
}

fn ser_checksum<S: serde::Serializer>(a: &Address, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&checksum(*a))
}

/// What a build endpoint wants signed.
pub struct BuildRequest<'a> {
    pub contract: &'a Contract,
    pub from: Address,
    pub sponsor: Arc<Sponsor>,
    /// Calldata the signer's call runs (a user operation or a multicall of them).
    pub data: Bytes,
    /// For deposits: the EIP-2612 permit value in token base units.
    pub permit_value: Option<U256>,
    /// Human summary, e.g. "Subscribe 0x… to 0x… at 10 per month".
    pub summary: String,
    /// Endpoint-specific extra response fields (exact amounts and rates).
    pub extras: Map<String, Value>,
}

pub async fn build(state: &AppState, req: BuildRequest<'_>) -> Result<Json<Value>, AppError> {
    let contract = req.contract;
    let provider = &state.provider;
    let now = chain::chain_time(provider).await.map_err(AppError::chain)?;
    let deadline = now + state.settings.meta_deadline_secs;
    let chain_nonce = StreamPay::new(contract.address, provider)
        .bySigAccountNonces(req.from)
        .call()
        .await
        .map_err(AppError::chain)?;
    let chain_nonce = u64::try_from(chain_nonce)
        .map_err(|_| AppError::unprocessable("nonce_out_of_range", "the signer's account nonce exceeds 2^64"))?;
    let scope = NonceScope { chain_id: state.chain_id, contract: contract.address, signer: req.from };
    let nonce = state.store.reserve_nonce(scope, chain_nonce, now, deadline).await?;

    let traits = Traits::account(nonce, deadline, Some(req.sponsor.address())).encode();
    let domain = Domain::streampay(state.chain_id, contract.address);
    let digest = eip712::signed_call_digest(&domain, req.from, traits, &req.data);
    let typed_data = eip712::signed_call_typed_data(&domain, req.from, traits, &req.data);

    let permit_typed_data = match req.permit_value {
        Some(value) => Some(permit_document(state, contract, req.from, value, deadline).await?),
        None => None,
    };
    let transaction = MetaTransaction {
        to: contract.address,
        chain_id: state.chain_id,
        from: req.from,
        nonce,
        deadline,
        traits: traits.to_string(),
        data: req.data,
        digest: digest.to_string(),
        typed_data,
        permit_typed_data,
    };
    let signatures =
        if transaction.permit_typed_data.is_some() { "TypedData and PermitTypedData" } else { "TypedData" };
    let mut body = Map::new();
    body.insert(
        "Message".into(),
        json!(format!(
            "{}. Sign {signatures} with eth_signTypedData_v4 as {} and POST From, Signature, Data, Nonce, \
             Sponsor and Deadline{} to /api/v1/{}/meta/execute before the deadline.",
            req.summary,
            req.from,
            if transaction.permit_typed_data.is_some() { " (and Permit)" } else { "" },
            contract.name
        )),
    );
    body.insert("Transaction".into(), serde_json::to_value(&transaction).map_err(anyhow::Error::from)?);
    body.insert("Sponsor".into(), json!(checksum(req.sponsor.address())));
    body.extend(req.extras);
    Ok(Json(Value::Object(body)))
}

/// The EIP-2612 `Permit` typed data for depositing `value` base units from `owner`.
async fn permit_document(
    state: &AppState,
    contract: &Contract,
    owner: Address,
    value: U256,
    deadline: u64,
) -> Result<Value, AppError> {
    let (domain, nonce) = permit_domain_and_nonce(state, contract, owner).await?;
    let values = PermitValues { owner, spender: contract.address, value, nonce, deadline: U256::from(deadline) };
    Ok(eip712::permit_typed_data(&domain, &values))
}

/// The token's EIP-712 domain and `owner`'s permit nonce. The domain comes from EIP-5267
/// `eip712Domain()` when the token has it (it is authoritative: some tokens use version "2"),
/// else from `name()` with version "1".
pub async fn permit_domain_and_nonce(
    state: &AppState,
    contract: &Contract,
    owner: Address,
) -> Result<(Domain, U256), AppError> {
    let token = IPermitToken::new(contract.token, &state.provider);
    let nonce = token.nonces(owner).call().await.map_err(|e| match e {
        // The node did not answer: not the token's fault.
        alloy::contract::Error::TransportError(e) if !matches!(e, alloy::transports::RpcError::ErrorResp(_)) => {
            AppError::chain(e)
        }
        e => AppError::unprocessable("permit_unsupported", format!("the token does not support EIP-2612 permits: {e}")),
    })?;
    // A token's EIP-712 domain does not change: read once per token, not per request.
    if let Some(domain) = state.sponsors.cached_permit_domain(contract.token) {
        return Ok((domain, nonce));
    }
    let domain = match token.eip712Domain().call().await {
        Ok(d) => Domain {
            name: d.name,
            version: d.version,
            chain_id: d.chainId.try_into().unwrap_or(state.chain_id),
            verifying_contract: d.verifyingContract,
        },
        Err(_) => Domain {
            name: token.name().call().await.map_err(AppError::chain)?,
            version: "1".into(),
            chain_id: state.chain_id,
            verifying_contract: contract.token,
        },
    };
    state.sponsors.cache_permit_domain(contract.token, domain.clone());
    Ok((domain, nonce))
}
