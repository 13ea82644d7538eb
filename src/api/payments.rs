//! Payments: one-time payment, deposit, withdraw, balance.
//!
//! Units: `deposit` takes token units (converted to the token's base units); `pay` and
//! `withdraw` move internal 18-decimal units. A withdrawal only ever moves whole token base
//! units, so its amount may not have more decimals than the token: the relayer refuses rather
//! than let the contract silently keep a remainder.

use alloy::{primitives::Bytes, sol_types::SolCall};
use axum::{
    Json,
    extract::{Path, State},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::build::{BuildExtras, BuildResponse};

use super::{
    AppError, AppState, ErrorCode,
    build::{self, BuildRequest, NonceChoice, PermitFor},
    checksum,
    extract::{ApiJson, ApiKey, parse_address, parse_recipient, required},
};
use crate::{
    amount::{self, INTERNAL_DECIMALS, format_units},
    chain::StreamPay,
};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct PayRequest {
    #[serde(alias = "from")]
    #[schema(value_type = crate::api::schema::Address, required = true)]
    from: Option<String>,
    #[serde(alias = "to")]
    #[schema(value_type = crate::api::schema::Address, required = true)]
    to: Option<String>,
    #[serde(alias = "amount")]
    #[schema(value_type = crate::api::schema::Amount, required = true)]
    amount: Option<String>,
    #[serde(alias = "sponsor")]
    #[schema(value_type = Option<crate::api::schema::OptionalAddress>)]
    sponsor: Option<String>,
    /// "unique" (the default: unordered, blocks nothing) or "account" (the signer's ordered nonce).
    #[serde(alias = "nonceType", alias = "nonce_type")]
    #[schema(value_type = Option<crate::api::schema::NonceType>)]
    nonce_type: Option<String>,
    /// With `NonceType` "account" only: the account nonce to sign (default: the current one).
    #[serde(alias = "nonce")]
    #[schema(value_type = Option<crate::api::schema::Uint64>)]
    nonce: Option<Value>,
}

/// `POST /{contract}/payments/`: builds `pay(to, amount)`.
#[utoipa::path(post, path = "/api/v1/{contract}/payments/", tag = "Payments",
    params(("contract" = String, Path, description = "Deployment name from GET /api/v1/contracts (any case)")),
    request_body = PayRequest,
    responses(
        (status = 200, description = "Built pay(to, amount) to sign", body = BuildResponse),
        (status = 400, description = "`invalid_json`, `missing_field`, `invalid_address`, `invalid_amount`, `unknown_contract`, `invalid_nonce_type`, `invalid_nonce`", body = crate::api::error::ErrorBody),
        (status = 401, description = "`missing_api_key`, `invalid_api_key`", body = crate::api::error::ErrorBody),
        (status = 403, description = "`sponsor_not_allowed`", body = crate::api::error::ErrorBody),
        (status = 409, description = "`nonce_already_used`: with NonceType account, a Nonce below the current one", body = crate::api::error::ErrorBody),
        (status = 422, description = "`sponsor_unavailable`, `nonce_out_of_range`", body = crate::api::error::ErrorBody),
        (status = 503, description = "`chain_unavailable`", body = crate::api::error::ErrorBody),
    ),
    security(("api_key" = [])))]
#[tracing::instrument(skip_all, fields(contract = %contract))]
pub async fn pay(
    State(state): State<AppState>,
    key: ApiKey,
    Path(contract): Path<String>,
    ApiJson(body): ApiJson<PayRequest>,
) -> Result<Json<BuildResponse>, AppError> {
    let contract = state.contract(&contract)?;
    let from = parse_address("From", required("From", &body.from)?)?;
    key.check_signer(from)?;
    let to = parse_recipient("To", required("To", &body.to)?)?;
    let amount = amount::parse_amount(required("Amount", &body.amount)?, INTERNAL_DECIMALS)
        .map_err(|e| AppError::amount("Amount", e))?;
    let sponsor = state.sponsor_for(contract.chain, &key, body.sponsor.as_deref())?;
    let data: Bytes = StreamPay::payCall { receiver: to, amount: amount.base_units }.abi_encode().into();
    let extras = BuildExtras {
        amount: Some(amount.units.to_string()),
        amount_raw: Some(amount.base_units.to_string()),
        ..Default::default()
    };
    build::build(
        &state,
        BuildRequest {
            contract,
            from,
            sponsor,
            data,
            permit_value: None,
            summary: format!("Pay {} from {from} to {to}", amount.units),
            extras,
            nonce: NonceChoice::parse(body.nonce_type.as_deref(), &body.nonce)?,
        },
    )
    .await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct DepositRequest {
    #[serde(alias = "from")]
    #[schema(value_type = crate::api::schema::Address, required = true)]
    from: Option<String>,
    #[serde(alias = "amount")]
    #[schema(value_type = crate::api::schema::Amount, required = true)]
    amount: Option<String>,
    /// Pull through Uniswap Permit2 (PermitTypedData is then Permit2's PermitSingle). Default:
    /// false where the token has EIP-2612, true where it has not and Permit2 is deployed.
    #[serde(alias = "isPermit2")]
    is_permit2: Option<bool>,
    #[serde(alias = "sponsor")]
    #[schema(value_type = Option<crate::api::schema::OptionalAddress>)]
    sponsor: Option<String>,
    /// "unique" (the default: unordered, blocks nothing) or "account" (the signer's ordered nonce).
    #[serde(alias = "nonceType", alias = "nonce_type")]
    #[schema(value_type = Option<crate::api::schema::NonceType>)]
    nonce_type: Option<String>,
    /// With `NonceType` "account" only: the account nonce to sign (default: the current one).
    #[serde(alias = "nonce")]
    #[schema(value_type = Option<crate::api::schema::Uint64>)]
    nonce: Option<Value>,
}

/// `POST /{contract}/payments/deposit`: builds `deposit(amount, isPermit2)` plus the permit that
/// lets a wallet without native coin approve the pull: the token's EIP-2612 `Permit`, or with
/// `IsPermit2` (the default for a token without EIP-2612 where Permit2 is deployed) Permit2's
/// `PermitSingle`, which needs the owner's one-time ERC-20 approval of Permit2.
#[utoipa::path(post, path = "/api/v1/{contract}/payments/deposit", tag = "Payments",
    params(("contract" = String, Path, description = "Deployment name from GET /api/v1/contracts (any case)")),
    request_body = DepositRequest,
    responses(
        (status = 200, description = "Built deposit(amount, isPermit2) plus PermitTypedData to sign: the token's EIP-2612 Permit, or Permit2's PermitSingle when IsPermit2", body = BuildResponse),
        (status = 400, description = "`invalid_json`, `missing_field`, `invalid_address`, `invalid_amount`, `unknown_contract`, `invalid_nonce_type`, `invalid_nonce`", body = crate::api::error::ErrorBody),
        (status = 401, description = "`missing_api_key`, `invalid_api_key`", body = crate::api::error::ErrorBody),
        (status = 403, description = "`sponsor_not_allowed`", body = crate::api::error::ErrorBody),
        (status = 409, description = "`nonce_already_used`: with NonceType account, a Nonce below the current one", body = crate::api::error::ErrorBody),
        (status = 422, description = "`sponsor_unavailable`, `nonce_out_of_range`, `permit_unsupported` (the token has no EIP-2612 and the chain no Permit2), `permit2_unavailable` (IsPermit2 where Permit2 is not deployed), `permit2_not_approved` (IsPermit2 without the owner's ERC-20 approval of Permit2 for the amount)", body = crate::api::error::ErrorBody),
        (status = 503, description = "`chain_unavailable`", body = crate::api::error::ErrorBody),
    ),
    security(("api_key" = [])))]
#[tracing::instrument(skip_all, fields(contract = %contract))]
pub async fn deposit(
    State(state): State<AppState>,
    key: ApiKey,
    Path(contract): Path<String>,
    ApiJson(body): ApiJson<DepositRequest>,
) -> Result<Json<BuildResponse>, AppError> {
    let contract = state.contract(&contract)?;
    let from = parse_address("From", required("From", &body.from)?)?;
    key.check_signer(from)?;
    let amount = amount::parse_amount(required("Amount", &body.amount)?, contract.token_decimals.into())
        .map_err(|e| AppError::amount("Amount", e))?;
    let sponsor = state.sponsor_for(contract.chain, &key, body.sponsor.as_deref())?;
    // Not said: EIP-2612 where the token has it (its domain and the owner's nonce, read here,
    // go on into the permit), else Permit2 where the chain has it.
    let (is_permit2, known) = match body.is_permit2 {
        Some(asked) => (asked, None),
        None => match build::permit_domain_and_nonce(contract, from).await {
            Ok(known) => (false, Some(known)),
            Err(e @ AppError::Client { code: ErrorCode::PermitUnsupported, .. }) => {
                if contract.chain.has_permit2().await.map_err(AppError::chain)? { (true, None) } else { return Err(e) }
            }
            Err(e) => return Err(e),
        },
    };
    let data: Bytes = StreamPay::depositCall { amount: amount.base_units, isPermit2: is_permit2 }.abi_encode().into();
    let extras = BuildExtras {
        amount: Some(amount.units.to_string()),
        amount_raw: Some(amount.base_units.to_string()),
        is_permit2: Some(is_permit2),
        ..Default::default()
    };
    build::build(
        &state,
        BuildRequest {
            contract,
            from,
            sponsor,
            data,
            // Through Permit2: its PermitSingle for the deployment; else the token's own permit.
            permit_value: Some(if is_permit2 {
                PermitFor::Permit2(amount.base_units)
            } else {
                PermitFor::Eip2612(amount.base_units, known)
            }),
            summary: format!("Deposit {} tokens from {from}", amount.units),
            extras,
            nonce: NonceChoice::parse(body.nonce_type.as_deref(), &body.nonce)?,
        },
    )
    .await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct WithdrawRequest {
    #[serde(alias = "from")]
    #[schema(value_type = crate::api::schema::Address, required = true)]
    from: Option<String>,
    #[serde(alias = "amount")]
    #[schema(value_type = crate::api::schema::Amount, required = true)]
    amount: Option<String>,
    #[serde(alias = "to")]
    #[schema(value_type = Option<crate::api::schema::Address>)]
    to: Option<String>,
    #[serde(alias = "sponsor")]
    #[schema(value_type = Option<crate::api::schema::OptionalAddress>)]
    sponsor: Option<String>,
    /// "unique" (the default: unordered, blocks nothing) or "account" (the signer's ordered nonce).
    #[serde(alias = "nonceType", alias = "nonce_type")]
    #[schema(value_type = Option<crate::api::schema::NonceType>)]
    nonce_type: Option<String>,
    /// With `NonceType` "account" only: the account nonce to sign (default: the current one).
    #[serde(alias = "nonce")]
    #[schema(value_type = Option<crate::api::schema::Uint64>)]
    nonce: Option<Value>,
}

/// `POST /{contract}/payments/withdraw`: builds `withdraw(amount)` or `withdrawTo(to, amount)`.
#[utoipa::path(post, path = "/api/v1/{contract}/payments/withdraw", tag = "Payments",
    params(("contract" = String, Path, description = "Deployment name from GET /api/v1/contracts (any case)")),
    request_body = WithdrawRequest,
    responses(
        (status = 200, description = "Built withdraw(amount) or withdrawTo(to, amount) to sign", body = BuildResponse),
        (status = 400, description = "`invalid_json`, `missing_field`, `invalid_address`, `invalid_amount`, `unknown_contract`, `invalid_nonce_type`, `invalid_nonce`", body = crate::api::error::ErrorBody),
        (status = 401, description = "`missing_api_key`, `invalid_api_key`", body = crate::api::error::ErrorBody),
        (status = 403, description = "`sponsor_not_allowed`", body = crate::api::error::ErrorBody),
        (status = 409, description = "`nonce_already_used`: with NonceType account, a Nonce below the current one", body = crate::api::error::ErrorBody),
        (status = 422, description = "`sponsor_unavailable`, `nonce_out_of_range`", body = crate::api::error::ErrorBody),
        (status = 503, description = "`chain_unavailable`", body = crate::api::error::ErrorBody),
    ),
    security(("api_key" = [])))]
#[tracing::instrument(skip_all, fields(contract = %contract))]
pub async fn withdraw(
    State(state): State<AppState>,
    key: ApiKey,
    Path(contract): Path<String>,
    ApiJson(body): ApiJson<WithdrawRequest>,
) -> Result<Json<BuildResponse>, AppError> {
    let contract = state.contract(&contract)?;
    let from = parse_address("From", required("From", &body.from)?)?;
    key.check_signer(from)?;
    let token_amount = amount::parse_amount(required("Amount", &body.amount)?, contract.token_decimals.into())
        .map_err(|e| AppError::amount("Amount", e))?;
    let internal = amount::parse_amount(&token_amount.units.to_string(), INTERNAL_DECIMALS)
        .map_err(|e| AppError::amount("Amount", e))?;
    let to = match body.to.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(t) => Some(parse_recipient("To", t)?),
    };
    let sponsor = state.sponsor_for(contract.chain, &key, body.sponsor.as_deref())?;
    let data: Bytes = match to {
        Some(to) if to != from => StreamPay::withdrawToCall { to, amount: internal.base_units }.abi_encode().into(),
        _ => StreamPay::withdrawCall { amount: internal.base_units }.abi_encode().into(),
    };
    let receiver = to.unwrap_or(from);
    let extras = BuildExtras {
        amount: Some(internal.units.to_string()),
        amount_raw: Some(internal.base_units.to_string()),
        token_amount_raw: Some(token_amount.base_units.to_string()),
        to: Some(checksum(receiver)),
        ..Default::default()
    };
    build::build(
        &state,
        BuildRequest {
            contract,
            from,
            sponsor,
            data,
            permit_value: None,
            summary: format!("Withdraw {} tokens from {from}'s balance to {receiver}", internal.units),
            extras,
            nonce: NonceChoice::parse(body.nonce_type.as_deref(), &body.nonce)?,
        },
    )
    .await
}

/// `GET /{contract}/payments/balance/{address}`: the live balance (floored at zero).
#[utoipa::path(get, path = "/api/v1/{contract}/payments/balance/{address}", tag = "Payments",
    params(("contract" = String, Path, description = "Deployment name from GET /api/v1/contracts (any case)"), ("address" = crate::api::schema::Address, Path, description = "Account address")),
    responses(
        (status = 200, description = "Live balance", body = BalanceView),
        (status = 400, description = "`invalid_address`, `unknown_contract`", body = crate::api::error::ErrorBody),
        (status = 401, description = "`missing_api_key`, `invalid_api_key`", body = crate::api::error::ErrorBody),
        (status = 503, description = "`index_not_ready`", body = crate::api::error::ErrorBody),
    ),
    security(("api_key" = [])))]
#[tracing::instrument(skip_all, fields(contract = %contract))]
pub async fn balance(
    State(state): State<AppState>,
    _key: ApiKey,
    Path((contract, address)): Path<(String, String)>,
) -> Result<Json<BalanceView>, AppError> {
    let contract = state.contract(&contract)?;
    let address = parse_address("address", &address)?;
    // From the Postgres index at its head's chain time (SPEC §3).
    let Some(view) = contract.chain.index.balance(contract.address, address).await? else {
        return Err(super::subscriptions::index_not_ready());
    };
    let raw = view.balance;
    Ok(Json(BalanceView {
        address: checksum(address),
        balance: format_units(raw, INTERNAL_DECIMALS),
        balance_raw: raw.to_string(),
        decimals: INTERNAL_DECIMALS,
    }))
}

/// `GET /{contract}/payments/balance/{address}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct BalanceView {
    pub address: String,
    /// Live balance in token units, floored at zero.
    #[schema(example = "12.5")]
    pub balance: String,
    /// The same in 18-decimal base units.
    pub balance_raw: String,
    #[schema(example = 18)]
    pub decimals: u32,
}
