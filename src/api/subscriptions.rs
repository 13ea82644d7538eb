//! Subscriptions (payment streams): create, list, cancel.

use alloy::{
    primitives::{Address, Bytes, U256, Uint},
    sol_types::SolCall,
};
use axum::{
    Json,
    extract::{Path, State},
};
use serde::Deserialize;
use serde_json::Value;

use super::ErrorCode;
use super::build::{BuildExtras, BuildResponse, SubscriptionFigures};
use super::{
    AppError, AppState,
    build::{self, BuildRequest, NonceChoice},
    checksum,
    extract::{ApiJson, ApiKey, ApiQuery, parse_address, parse_recipient, required},
};
use crate::{
    amount::{self, MonthlyRate},
    chain::StreamPay,
};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreateSubscription {
    #[serde(alias = "From")]
    #[schema(value_type = crate::api::schema::Address, required = true)]
    from: Option<String>,
    #[serde(alias = "Author")]
    #[schema(value_type = crate::api::schema::Address, required = true)]
    author: Option<String>,
    #[serde(alias = "SubscriptionRate")]
    #[schema(value_type = crate::api::schema::Amount, required = true)]
    subscription_rate: Option<String>,
    #[serde(alias = "ProjectId")]
    #[schema(value_type = Option<crate::api::schema::ProjectId>)]
    project_id: Option<String>,
    #[serde(alias = "Sponsor")]
    #[schema(value_type = Option<crate::api::schema::OptionalAddress>)]
    sponsor: Option<String>,
    /// "unique" (the default: unordered, blocks nothing) or "account" (the signer's ordered nonce).
    #[serde(alias = "NonceType", alias = "nonceType")]
    #[schema(value_type = Option<crate::api::schema::NonceType>)]
    nonce_type: Option<String>,
    /// With `nonce_type` "account" only: the account nonce to sign (default: the current one).
    #[serde(alias = "Nonce")]
    #[schema(value_type = Option<crate::api::schema::Uint64>)]
    nonce: Option<Value>,
}

/// One validated `subscribe` call.
pub struct Subscribe {
    pub author: Address,
    pub rate: MonthlyRate,
    pub project_id: U256,
}

impl Subscribe {
    pub fn parse(
        prefix: &str,
        from: Address,
        author: &Option<String>,
        rate: &Option<String>,
        project_id: &Option<String>,
    ) -> Result<Self, AppError> {
        let author_field = format!("{prefix}author");
        let author = parse_recipient(&author_field, required(&author_field, author)?)?;
        if author == from {
            return Err(AppError::new(
                ErrorCode::AddressRefused,
                format!("{author_field}: cannot subscribe to yourself"),
            ));
        }
        let rate_field = format!("{prefix}subscription_rate");
        let rate =
            amount::parse_monthly_rate(required(&rate_field, rate)?).map_err(|e| AppError::amount(&rate_field, e))?;
        let project_id = match project_id.as_deref() {
            None | Some("") => U256::ZERO,
            Some(p) => amount::parse_uint(p).ok_or_else(|| {
                AppError::new(
                    ErrorCode::InvalidProjectId,
                    format!("{prefix}project_id: {p:?} is not a non-negative integer"),
                )
            })?,
        };
        Ok(Self { author, rate, project_id })
    }

    pub fn calldata(&self) -> Bytes {
        StreamPay::subscribeCall {
            author: self.author,
            subscriptionRate: Uint::<96, 2>::from(self.rate.per_second),
            projectId: self.project_id,
        }
        .abi_encode()
        .into()
    }

    /// Exact figures for the response.
    pub fn details(&self) -> SubscriptionFigures {
        SubscriptionFigures {
            author: Some(checksum(self.author)),
            subscription_rate: Some(self.rate.monthly.to_string()),
            rate_per_second: Some(self.rate.per_second.to_string()),
            effective_monthly_rate: Some(self.rate.effective_monthly.clone()),
            project_id: Some(self.project_id.to_string()),
        }
    }
}

/// `POST /{contract}/subscriptions/`: builds `subscribe(author, ratePerSecond, projectId)`.
#[utoipa::path(post, path = "/api/v1/{contract}/subscriptions/", tag = "Subscriptions",
    params(("contract" = String, Path, description = "Deployment name from GET /api/v1/contracts (any case)")),
    request_body = CreateSubscription,
    responses(
        (status = 200, description = "Built subscribe(author, ratePerSecond, projectId) to sign", body = BuildResponse),
        (status = 400, description = "`invalid_json`, `missing_field`, `invalid_address`, `invalid_amount`, `unknown_contract`, `invalid_project_id`, `invalid_nonce_type`, `invalid_nonce`", body = crate::api::error::ErrorBody),
        (status = 401, description = "`missing_api_key`, `invalid_api_key`", body = crate::api::error::ErrorBody),
        (status = 403, description = "`sponsor_not_allowed`", body = crate::api::error::ErrorBody),
        (status = 409, description = "`nonce_already_used`: with NonceType account, a Nonce below the current one", body = crate::api::error::ErrorBody),
        (status = 422, description = "`sponsor_unavailable`, `nonce_out_of_range`", body = crate::api::error::ErrorBody),
        (status = 503, description = "`chain_unavailable`", body = crate::api::error::ErrorBody),
    ),
    security(("api_key" = [])))]
#[tracing::instrument(skip_all, fields(contract = %contract))]
pub async fn create(
    State(state): State<AppState>,
    key: ApiKey,
    Path(contract): Path<String>,
    ApiJson(body): ApiJson<CreateSubscription>,
) -> Result<Json<BuildResponse>, AppError> {
    let contract = state.contract(&contract)?;
    let from = parse_address("from", required("from", &body.from)?)?;
    key.check_signer(from)?;
    let sub = Subscribe::parse("", from, &body.author, &body.subscription_rate, &body.project_id)?;
    let sponsor = state.sponsor_for(contract.chain, &key, body.sponsor.as_deref())?;
    let extras = BuildExtras { subscription: sub.details(), ..Default::default() };
    build::build(
        &state,
        BuildRequest {
            contract,
            from,
            sponsor,
            data: sub.calldata(),
            permit_value: None,
            summary: format!(
                "Subscribe {from} to {} at {} per month ({} base units per second)",
                sub.author, sub.rate.monthly, sub.rate.per_second
            ),
            extras,
            nonce: NonceChoice::parse(body.nonce_type.as_deref(), &body.nonce)?,
        },
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct CancelQuery {
    #[serde(rename = "From", alias = "from")]
    from: Option<String>,
    #[serde(rename = "Sponsor", alias = "sponsor")]
    sponsor: Option<String>,
    #[serde(rename = "NonceType", alias = "nonce_type")]
    nonce_type: Option<String>,
    #[serde(rename = "Nonce", alias = "nonce")]
    nonce: Option<String>,
}

/// `DELETE /{contract}/subscriptions/{author}?From=&Sponsor=`: builds `unsubscribe(author)`.
#[utoipa::path(delete, path = "/api/v1/{contract}/subscriptions/{address}", tag = "Subscriptions",
    params(("contract" = String, Path, description = "Deployment name from GET /api/v1/contracts (any case)"), ("address" = crate::api::schema::Address, Path, description = "The author to stop paying"), ("From" = crate::api::schema::Address, Query, description = "The subscriber (signer)"), ("Sponsor" = Option<String>, Query, description = "Sponsor to pay the gas (empty or absent: the key's least busy)", pattern = "^(0[xX][0-9a-fA-F]{40})?$"), ("NonceType" = Option<crate::api::schema::NonceType>, Query), ("Nonce" = Option<String>, Query, description = "With NonceType `account` only: the account nonce to sign (default: the current one); a decimal integer below 2^64", pattern = "^[0-9]{1,19}$")),
    responses(
        (status = 200, description = "Built unsubscribe(author) to sign", body = BuildResponse),
        (status = 400, description = "`invalid_query`, `missing_field`, `invalid_address`, `unknown_contract`, `invalid_nonce_type`, `invalid_nonce`", body = crate::api::error::ErrorBody),
        (status = 401, description = "`missing_api_key`, `invalid_api_key`", body = crate::api::error::ErrorBody),
        (status = 403, description = "`sponsor_not_allowed`", body = crate::api::error::ErrorBody),
        (status = 409, description = "`nonce_already_used`: with NonceType account, a Nonce below the current one", body = crate::api::error::ErrorBody),
        (status = 422, description = "`sponsor_unavailable`, `nonce_out_of_range`", body = crate::api::error::ErrorBody),
        (status = 503, description = "`chain_unavailable`", body = crate::api::error::ErrorBody),
    ),
    security(("api_key" = [])))]
#[tracing::instrument(skip_all, fields(contract = %contract))]
pub async fn cancel(
    State(state): State<AppState>,
    key: ApiKey,
    Path((contract, author)): Path<(String, String)>,
    ApiQuery(query): ApiQuery<CancelQuery>,
) -> Result<Json<BuildResponse>, AppError> {
    let contract = state.contract(&contract)?;
    let author = parse_address("author", &author)?;
    let from = parse_address("From", required("From", &query.from)?)?;
    key.check_signer(from)?;
    let sponsor = state.sponsor_for(contract.chain, &key, query.sponsor.as_deref())?;
    let data = StreamPay::unsubscribeCall { author }.abi_encode().into();
    let extras = BuildExtras {
        subscription: SubscriptionFigures { author: Some(checksum(author)), ..Default::default() },
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
            summary: format!("Cancel {from}'s subscription to {author}"),
            extras,
            nonce: NonceChoice::parse(query.nonce_type.as_deref(), &query.nonce.clone().map(Value::String))?,
        },
    )
    .await
}

/// `GET /{contract}/subscriptions/{address}`: the address's outgoing streams.
#[utoipa::path(get, path = "/api/v1/{contract}/subscriptions/{address}", tag = "Subscriptions",
    params(("contract" = String, Path, description = "Deployment name from GET /api/v1/contracts (any case)"), ("address" = crate::api::schema::Address, Path, description = "Subscriber address")),
    responses(
        (status = 200, description = "The address's outgoing streams", body = SubscriptionList),
        (status = 400, description = "`invalid_address`, `unknown_contract`", body = crate::api::error::ErrorBody),
        (status = 401, description = "`missing_api_key`, `invalid_api_key`", body = crate::api::error::ErrorBody),
        (status = 503, description = "`index_not_ready`", body = crate::api::error::ErrorBody),
    ),
    security(("api_key" = [])))]
#[tracing::instrument(skip_all, fields(contract = %contract))]
pub async fn list(
    State(state): State<AppState>,
    _key: ApiKey,
    Path((contract, address)): Path<(String, String)>,
) -> Result<Json<SubscriptionList>, AppError> {
    let contract = state.contract(&contract)?;
    let address = parse_address("address", &address)?;
    // From the Postgres index (SPEC §3), in `allSubscriptions` order.
    let Some(indexed) = contract.chain.index.subscriptions(contract.address, address).await? else {
        return Err(index_not_ready());
    };
    let (authors, rates): (Vec<_>, Vec<_>) = indexed.streams.iter().map(|s| (s.author, s.encoded_rates)).unzip();
    let mask96 = (U256::from(1) << 96usize) - U256::from(1);
    let subscriptions = authors
        .iter()
        .zip(&rates)
        .map(|(to, encoded)| SubscriptionView {
            to: checksum(*to),
            encoded_rates: encoded.to_string(),
            income_rate: (*encoded & mask96).to_string(),
            outgoing_rate: ((*encoded >> 96usize) & mask96).to_string(),
            project_id: (*encoded >> 192usize).to_string(),
        })
        .collect();
    Ok(Json(SubscriptionList { address: checksum(address), subscriptions }))
}

/// `GET /{contract}/subscriptions/{address}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct SubscriptionList {
    pub address: String,
    pub subscriptions: Vec<SubscriptionView>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct SubscriptionView {
    /// The author.
    pub to: String,
    /// bits 0–95 income rate, 96–191 outgoing rate, 192+ projectId.
    pub encoded_rates: String,
    /// What the author receives per second (18-decimal base units).
    pub income_rate: String,
    /// What the subscriber pays per second (income + project fee).
    pub outgoing_rate: String,
    pub project_id: String,
}

/// 503 `index_not_ready`: every read endpoint answers from the Postgres index only, so before the
/// deployment's first checkpoint (the first seconds of a fresh database) there is no answer yet.
pub(crate) fn index_not_ready() -> AppError {
    AppError::new(ErrorCode::IndexNotReady, "the event index has not reached this deployment yet; retry shortly")
}

/// `GET /{contract}/authors/{author}/streams`: the streams an author receives (the creators'
/// view), with per-stream rates and the author's total income rate, from the Postgres index.
#[utoipa::path(get, path = "/api/v1/{contract}/authors/{author}/streams", tag = "Subscriptions",
    params(("contract" = String, Path, description = "Deployment name from GET /api/v1/contracts (any case)"), ("author" = crate::api::schema::Address, Path, description = "Author (creator) address")),
    responses(
        (status = 200, description = "The author's incoming streams", body = IncomingStreamList),
        (status = 400, description = "`invalid_address`, `unknown_contract`", body = crate::api::error::ErrorBody),
        (status = 401, description = "`missing_api_key`, `invalid_api_key`", body = crate::api::error::ErrorBody),
        (status = 503, description = "`index_not_ready`", body = crate::api::error::ErrorBody),
    ),
    security(("api_key" = [])))]
#[tracing::instrument(skip_all, fields(contract = %contract))]
pub async fn incoming(
    State(state): State<AppState>,
    _key: ApiKey,
    Path((contract, author)): Path<(String, String)>,
) -> Result<Json<IncomingStreamList>, AppError> {
    let contract = state.contract(&contract)?;
    let author = parse_address("author", &author)?;
    let Some(view) = contract.chain.index.incoming_streams(contract.address, author).await? else {
        return Err(index_not_ready());
    };
    Ok(Json(incoming_list(author, &view)))
}

/// The answer of `GET …/authors/{author}/streams` (also the body of a creator `snapshot` event).
pub(crate) fn incoming_list(
    author: alloy::primitives::Address,
    view: &crate::indexer::IncomingStreams,
) -> IncomingStreamList {
    let streams = view
        .streams
        .iter()
        .map(|s| IncomingStreamView {
            from: checksum(s.subscriber),
            encoded_rates: s.encoded_rates.to_string(),
            income_rate: s.income_rate.to_string(),
            outgoing_rate: s.outgoing_rate.to_string(),
            project_id: s.project_id.to_string(),
            since_block: s.since_block,
            since_timestamp: s.since_timestamp,
        })
        .collect();
    IncomingStreamList {
        author: checksum(author),
        streams,
        streams_income_rate: view.streams_income_rate.to_string(),
        income_rate: view.income_rate.to_string(),
        indexed_block: view.head.block_number,
    }
}

/// `GET /{contract}/authors/{author}/streams`: what a creator receives.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct IncomingStreamList {
    pub author: String,
    pub streams: Vec<IncomingStreamView>,
    /// Sum of the streams' income rates per second (18-decimal base units).
    pub streams_income_rate: String,
    /// The author's whole income rate per second, project fees it receives as an owner included
    /// (equals the chain's `accountInfo(author).incomeRate`).
    pub income_rate: String,
    /// The block the answer was computed at (the index's head).
    pub indexed_block: u64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct IncomingStreamView {
    /// The subscriber.
    pub from: String,
    /// bits 0–95 income rate, 96–191 outgoing rate, 192+ projectId.
    pub encoded_rates: String,
    /// What the author receives per second (18-decimal base units).
    pub income_rate: String,
    /// What the subscriber pays per second (income + project fee).
    pub outgoing_rate: String,
    pub project_id: String,
    /// Block and chain time at which the stream started.
    pub since_block: u64,
    pub since_timestamp: u64,
}
