//! `GET /api/v1/{contract}/recipients/resolve?Identifier=`: what a client should know before
//! sending money to an address: whether it is one, its EIP-55 form, whether StreamPay knows it
//! (an internal balance or streams, from the Postgres index; from the chain's views while the
//! index has no checkpoint) and whether it is a contract (`eth_getCode`).
//!
//! A malformed identifier is not an error: the answer says `Valid: false` and why, so a form can
//! show it. Only a missing identifier is a 400.

use alloy::{primitives::Address, providers::Provider};
use axum::{
    Json,
    extract::{Path, State},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    AppError, AppState, checksum,
    extract::{ApiKey, ApiQuery, parse_address},
};
use crate::{
    amount::{INTERNAL_DECIMALS, format_units},
    chain::StreamPay,
    chains::Chain,
};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResolveQuery {
    #[serde(alias = "identifier")]
    identifier: Option<String>,
}

/// `GET /api/v1/{contract}/recipients/resolve`.
#[utoipa::path(get, path = "/api/v1/{contract}/recipients/resolve", tag = "Payments",
    params(
        ("contract" = String, Path, description = "Deployment name from GET /api/v1/contracts (any case)"),
        ("Identifier" = String, Query, description = "The recipient as typed (surrounding white space ignored): any text; the answer says whether it is a 0x address (any case; mixed case must be a valid EIP-55 checksum) and why not", pattern = "\\S"),
    ),
    responses(
        (status = 200, description = "Whether the identifier is a valid recipient and what StreamPay knows about it", body = RecipientResolution),
        (status = 400, description = "`unknown_contract`, `missing_field`, `invalid_query`", body = crate::api::error::ErrorBody),
        (status = 401, description = "`missing_api_key`, `invalid_api_key`", body = crate::api::error::ErrorBody),
        (status = 503, description = "`chain_unavailable`", body = crate::api::error::ErrorBody),
    ),
    security(("api_key" = [])))]
#[tracing::instrument(skip_all, fields(contract = %contract))]
pub async fn resolve(
    State(state): State<AppState>,
    _key: ApiKey,
    Path(contract): Path<String>,
    ApiQuery(q): ApiQuery<ResolveQuery>,
) -> Result<Json<RecipientResolution>, AppError> {
    let contract = state.contract(&contract)?;
    let identifier = q.identifier.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let identifier = identifier.ok_or_else(|| AppError::missing("identifier"))?;
    let address = match parse_address("identifier", identifier) {
        Ok(a) => a,
        Err(AppError::Client { message, .. }) => {
            return Ok(Json(RecipientResolution {
                address: None,
                balance: None,
                balance_raw: None,
                checksum_matches: None,
                has_balance: None,
                has_streams: None,
                identifier: identifier.to_string(),
                is_contract: None,
                known: None,
                reason: Some(message),
                source: None,
                valid: false,
            }));
        }
        Err(e) => return Err(e),
    };
    let reason = if address.is_zero() {
        Some("the zero address cannot receive funds".to_string())
    } else if address == contract.address {
        Some("this is the StreamPay contract itself".to_string())
    } else {
        None
    };
    let code = contract.chain.provider.get_code_at(address).await.map_err(AppError::chain)?;
    let (source, balance, has_streams) = known(contract.chain, contract.address, address).await?;
    let has_balance = !balance.is_zero();
    Ok(Json(RecipientResolution {
        address: Some(checksum(address)),
        balance: Some(format_units(balance, INTERNAL_DECIMALS)),
        balance_raw: Some(balance.to_string()),
        // The identifier as typed equals the checksummed form (all-lowercase input is valid but
        // carries no checksum).
        checksum_matches: Some(identifier == checksum(address)),
        has_balance: Some(has_balance),
        has_streams: Some(has_streams),
        identifier: identifier.to_string(),
        is_contract: Some(!code.is_empty()),
        known: Some(has_balance || has_streams),
        valid: reason.is_none(),
        reason,
        source: Some(source),
    }))
}

/// `GET /api/v1/{contract}/recipients/resolve`. For an identifier that is not an address, the
/// facts are null and `Balance`, `BalanceRaw` and `Source` are absent. (Fields in the order of
/// their keys.)
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct RecipientResolution {
    /// EIP-55 checksummed form.
    pub address: Option<String>,
    /// Live internal balance in token units (absent when invalid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance_raw: Option<String>,
    /// The identifier was sent exactly in its checksummed form.
    pub checksum_matches: Option<bool>,
    pub has_balance: Option<bool>,
    /// Streams to or from it.
    pub has_streams: Option<bool>,
    /// As sent.
    pub identifier: String,
    /// Has code (`eth_getCode`): a contract or smart wallet.
    pub is_contract: Option<bool>,
    /// Has an internal balance or streams.
    pub known: Option<bool>,
    /// Why not, when not valid.
    pub reason: Option<String>,
    /// `index` (Postgres) or `chain` (views, while the index has no checkpoint).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<&'static str>,
    /// A well-formed address that can receive funds (not zero, not the contract).
    pub valid: bool,
}

/// `(source, live balance, whether it streams or is streamed to)` of `account`: the index when it has this
/// deployment, the chain's views otherwise.
async fn known(
    chain: &Chain,
    contract: Address,
    account: Address,
) -> Result<(&'static str, alloy::primitives::U256, bool), AppError> {
    let reader = &chain.index;
    if let Some(view) = reader.balance(contract, account).await? {
        let outgoing = reader.subscriptions(contract, account).await?.map_or(0, |s| s.streams.len());
        let incoming = reader.incoming_streams(contract, account).await?.map_or(0, |s| s.streams.len());
        return Ok(("index", view.balance, outgoing + incoming > 0));
    }
    let sp = StreamPay::new(contract, &chain.provider);
    let balance = sp.balanceOf(account).call().await.map_err(AppError::chain)?;
    let info = sp.accountInfo(account).call().await.map_err(AppError::chain)?;
    // A positive rate either way means at least one stream.
    Ok(("chain", balance, !info.incomeRate.is_zero() || !info.outgoingRate.is_zero()))
}
