//! Batches: many subscriptions or payments as one atomic `multicall`, signed once.

use alloy::{
    primitives::{Bytes, U256},
    sol_types::SolCall,
};
use axum::{
    Json,
    extract::{Path, State},
};
use serde::Deserialize;
use serde_json::Value;

use super::ErrorCode;
use super::build::{BuildExtras, BuildResponse, PaymentFigures};
use super::{
    AppError, AppState,
    build::{self, BuildRequest, NonceChoice},
    checksum,
    extract::{ApiJson, ApiKey, parse_address, parse_recipient, required},
    subscriptions::Subscribe,
};
use crate::{
    amount::{self, INTERNAL_DECIMALS, format_units},
    chain::{StreamPay, calls::MAX_BATCH},
};

fn check_size(field: &str, len: usize) -> Result<(), AppError> {
    if len == 0 {
        return Err(AppError::new(ErrorCode::EmptyBatch, format!("{field} must hold at least one item")));
    }
    if len > MAX_BATCH {
        return Err(AppError::new(
            ErrorCode::BatchTooLarge,
            format!("{field} holds {len} items; at most {MAX_BATCH} are allowed"),
        ));
    }
    Ok(())
}

fn multicall(items: Vec<Bytes>) -> Bytes {
    StreamPay::multicallCall { data: items }.abi_encode().into()
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct BatchSubscriptions {
    #[serde(alias = "from")]
    #[schema(value_type = crate::api::schema::Address, required = true)]
    from: Option<String>,
    #[serde(alias = "subscriptions")]
    #[schema(required = true, nullable = false, min_items = 1, max_items = 100)]
    subscriptions: Option<Vec<SubscriptionItem>>,
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct SubscriptionItem {
    #[serde(alias = "author")]
    #[schema(value_type = crate::api::schema::Address, required = true)]
    author: Option<String>,
    #[serde(alias = "subscription_rate")]
    #[schema(value_type = crate::api::schema::Amount, required = true)]
    subscription_rate: Option<String>,
    #[serde(alias = "project_id")]
    #[schema(value_type = Option<crate::api::schema::ProjectId>)]
    project_id: Option<String>,
}

/// `POST /{contract}/batch/subscriptions`.
#[utoipa::path(post, path = "/api/v1/{contract}/batch/subscriptions", tag = "Batch",
    params(("contract" = String, Path, description = "Deployment name from GET /api/v1/contracts (any case)")),
    request_body = BatchSubscriptions,
    responses(
        (status = 200, description = "Built multicall of up to 100 subscribe calls to sign once", body = BuildResponse),
        (status = 400, description = "`invalid_json`, `missing_field`, `invalid_address`, `invalid_amount`, `unknown_contract`, `invalid_project_id`, `empty_batch`, `batch_too_large`, `invalid_nonce_type`, `invalid_nonce`", body = crate::api::error::ErrorBody),
        (status = 401, description = "`missing_api_key`, `invalid_api_key`", body = crate::api::error::ErrorBody),
        (status = 403, description = "`sponsor_not_allowed`", body = crate::api::error::ErrorBody),
        (status = 409, description = "`nonce_already_used`: with NonceType account, a Nonce below the current one", body = crate::api::error::ErrorBody),
        (status = 422, description = "`sponsor_unavailable`, `nonce_out_of_range`", body = crate::api::error::ErrorBody),
        (status = 503, description = "`chain_unavailable`", body = crate::api::error::ErrorBody),
    ),
    security(("api_key" = [])))]
#[tracing::instrument(skip_all, fields(contract = %contract))]
pub async fn subscriptions(
    State(state): State<AppState>,
    key: ApiKey,
    Path(contract): Path<String>,
    ApiJson(body): ApiJson<BatchSubscriptions>,
) -> Result<Json<BuildResponse>, AppError> {
    let contract = state.contract(&contract)?;
    let from = parse_address("From", required("From", &body.from)?)?;
    key.check_signer(from)?;
    let items = body.subscriptions.as_deref().ok_or_else(|| AppError::missing("Subscriptions"))?;
    check_size("Subscriptions", items.len())?;
    let subs = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            Subscribe::parse(
                &format!("Subscriptions[{i}]."),
                from,
                &item.author,
                &item.subscription_rate,
                &item.project_id,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let sponsor = state.sponsor_for(contract.chain, &key, body.sponsor.as_deref())?;
    let extras =
        BuildExtras { subscriptions: Some(subs.iter().map(Subscribe::details).collect()), ..Default::default() };
    build::build(
        &state,
        BuildRequest {
            contract,
            from,
            sponsor,
            data: multicall(subs.iter().map(Subscribe::calldata).collect()),
            permit_value: None,
            summary: format!("Create {} subscriptions from {from} in one transaction", subs.len()),
            extras,
            nonce: NonceChoice::parse(body.nonce_type.as_deref(), &body.nonce)?,
        },
    )
    .await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct BatchPayments {
    #[serde(alias = "from")]
    #[schema(value_type = crate::api::schema::Address, required = true)]
    from: Option<String>,
    #[serde(alias = "payments")]
    #[schema(required = true, nullable = false, min_items = 1, max_items = 100)]
    payments: Option<Vec<PaymentItem>>,
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct PaymentItem {
    #[serde(alias = "to")]
    #[schema(value_type = crate::api::schema::Address, required = true)]
    to: Option<String>,
    #[serde(alias = "amount")]
    #[schema(value_type = crate::api::schema::Amount, required = true)]
    amount: Option<String>,
}

/// `POST /{contract}/batch/payments`.
#[utoipa::path(post, path = "/api/v1/{contract}/batch/payments", tag = "Batch",
    params(("contract" = String, Path, description = "Deployment name from GET /api/v1/contracts (any case)")),
    request_body = BatchPayments,
    responses(
        (status = 200, description = "Built multicall of up to 100 pay calls to sign once", body = BuildResponse),
        (status = 400, description = "`invalid_json`, `missing_field`, `invalid_address`, `invalid_amount`, `unknown_contract`, `empty_batch`, `batch_too_large`, `invalid_nonce_type`, `invalid_nonce`", body = crate::api::error::ErrorBody),
        (status = 401, description = "`missing_api_key`, `invalid_api_key`", body = crate::api::error::ErrorBody),
        (status = 403, description = "`sponsor_not_allowed`", body = crate::api::error::ErrorBody),
        (status = 409, description = "`nonce_already_used`: with NonceType account, a Nonce below the current one", body = crate::api::error::ErrorBody),
        (status = 422, description = "`sponsor_unavailable`, `nonce_out_of_range`", body = crate::api::error::ErrorBody),
        (status = 503, description = "`chain_unavailable`", body = crate::api::error::ErrorBody),
    ),
    security(("api_key" = [])))]
#[tracing::instrument(skip_all, fields(contract = %contract))]
pub async fn payments(
    State(state): State<AppState>,
    key: ApiKey,
    Path(contract): Path<String>,
    ApiJson(body): ApiJson<BatchPayments>,
) -> Result<Json<BuildResponse>, AppError> {
    let contract = state.contract(&contract)?;
    let from = parse_address("From", required("From", &body.from)?)?;
    key.check_signer(from)?;
    let items = body.payments.as_deref().ok_or_else(|| AppError::missing("Payments"))?;
    check_size("Payments", items.len())?;
    let mut calls = Vec::with_capacity(items.len());
    let mut details = Vec::with_capacity(items.len());
    let mut total = U256::ZERO;
    for (i, item) in items.iter().enumerate() {
        let to_field = format!("Payments[{i}].To");
        let amount_field = format!("Payments[{i}].Amount");
        let to = parse_recipient(&to_field, required(&to_field, &item.to)?)?;
        let amount = amount::parse_amount(required(&amount_field, &item.amount)?, INTERNAL_DECIMALS)
            .map_err(|e| AppError::amount(&amount_field, e))?;
        total += amount.base_units;
        calls.push(StreamPay::payCall { receiver: to, amount: amount.base_units }.abi_encode().into());
        details.push(PaymentFigures {
            to: checksum(to),
            amount: amount.units.to_string(),
            amount_raw: amount.base_units.to_string(),
        });
    }
    let sponsor = state.sponsor_for(contract.chain, &key, body.sponsor.as_deref())?;
    let extras = BuildExtras {
        payments: Some(details),
        total: Some(format_units(total, INTERNAL_DECIMALS)),
        total_raw: Some(total.to_string()),
        ..Default::default()
    };
    build::build(
        &state,
        BuildRequest {
            contract,
            from,
            sponsor,
            data: multicall(calls),
            permit_value: None,
            summary: format!(
                "Pay {} in {} payments from {from} in one transaction",
                format_units(total, INTERNAL_DECIMALS),
                items.len()
            ),
            extras,
            nonce: NonceChoice::parse(body.nonce_type.as_deref(), &body.nonce)?,
        },
    )
    .await
}
