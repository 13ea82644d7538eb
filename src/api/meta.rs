//! Meta-transactions: the nonce a signer should use next, and `execute`, which checks a signed
//! call, simulates it and has a sponsor submit it.
//!
//! `execute` checks everything that would make the sponsor pay for a failure before sending:
//! the call is a StreamPay user operation, the deadline has not passed, the nonce is the next
//! one, the signature is the signer's (ECDSA or ERC-1271), the optional permit is the signer's,
//! and one EVM run of the exact transaction at `latest` succeeds. The chain's reads behind
//! those checks (the bySig nonce, the permit's token nonce) run in that same simulation
//! (`eth_simulateV1`, [`chain::simulate`]): with the head's time cached ([`chain::HeadClock`]),
//! accepting a call costs the node one request, and the checks answer in the same order as
//! before. Only then is a nonce claimed (so two concurrent executes of one call cannot both
//! send) and the transaction queued: its sponsor nonce allocated and the transaction signed in
//! one database transaction (see [`crate::pipeline`]).
//! The answer waits for the sponsor's worker to see it mined, or is a 202 with the queued
//! transaction's id (`Prefer: respond-async`, or no receipt within the timeout).

use std::sync::Arc;

use alloy::{
    network::TransactionBuilder,
    primitives::{Address, B256, Bytes, U256},
    rpc::types::TransactionRequest,
    sol_types::{SolCall, SolError, SolValue},
};
use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, HeaderName, StatusCode},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::ErrorCode;
use super::{
    AppError, AppState, Contract, admission,
    build::{self, permit_domain_and_nonce},
    checksum,
    extract::{ApiJson, ApiKey, parse_address, parse_hex, parse_u64, required},
};
use crate::{
    chain::{
        self, IPermit2, IPermitToken, PERMIT2, StreamPay,
        bindings::IStreamPay,
        calls::{self, CallError},
        eip712::{self, Domain, PermitValues},
        revert::decode_revert,
        signature::{self, SignatureError},
        simulate::CallOutcome,
        traits::{MAX_DEADLINE, NonceType, Traits},
    },
    chains::Chain,
    pipeline::Sponsor,
    store::{Claim, NewTransaction, NonceScope, TxStatus, operation_of},
};

/// The nonce to sign next for `account`.
///
/// `GET /{contract}/meta/nonce/{account}`: the account's bySig account nonce (the seed's
/// meaning): the next ordered nonce to sign with `NonceType: "account"`. Built calls reserve
/// nothing and never count; unique-nonce calls (the default) do not use it at all.
///
/// Served from the Postgres index (SPEC §3): `bySigAccountNonces` as of the indexed head, raised
/// past every account nonce this relayer has already seen mined (the index may trail a receipt
/// executed elsewhere) and past account nonces in flight. 503 `index_not_ready` before the
/// deployment's first checkpoint. `execute` always checks against the chain itself.
#[utoipa::path(get, path = "/api/v1/{contract}/meta/nonce/{account}", tag = "Meta-transactions",
    params(("contract" = String, Path, description = "Deployment name"), ("account" = crate::api::schema::Address, Path, description = "Signer address")),
    responses(
        (status = 200, description = "Next nonce", body = NonceView),
        (status = 400, description = "`unknown_contract`, `invalid_address`", body = crate::api::error::ErrorBody),
        (status = 401, description = "`missing_api_key`, `invalid_api_key`", body = crate::api::error::ErrorBody),
        (status = 422, description = "`nonce_out_of_range`", body = crate::api::error::ErrorBody),
        (status = 503, description = "`index_not_ready`", body = crate::api::error::ErrorBody),
    ),
    security(("api_key" = [])))]
#[tracing::instrument(skip_all, fields(contract = %contract))]
pub async fn nonce(
    State(state): State<AppState>,
    _key: ApiKey,
    Path((contract, account)): Path<(String, String)>,
) -> Result<Json<NonceView>, AppError> {
    let contract = state.contract(&contract)?;
    let account = parse_address("account", &account)?;
    let scope = NonceScope {
        chain_id: contract.chain.chain_id,
        contract: contract.address,
        signer: account,
        nonce_type: NonceType::Account,
    };
    let reader = &contract.chain.index;
    let Some(head) = reader.head(contract.address).await? else {
        return Err(super::subscriptions::index_not_ready());
    };
    let indexed = u64::try_from(reader.nonce(contract.address, account).await?)
        .map_err(|_| AppError::new(ErrorCode::NonceOutOfRange, "the account nonce exceeds 2^64"))?;
    let mined = state.store.highest_mined_nonce(scope).await?;
    let base = mined.map_or(indexed, |m| indexed.max(m.saturating_add(1)));
    let next = state.store.next_account_nonce(scope, base).await?;
    Ok(Json(NonceView { account: checksum(account), nonce: next, chain_nonce: base, block: head.block_number }))
}

/// `GET /{contract}/meta/nonce/{account}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct NonceView {
    pub account: String,
    /// The account's bySig account nonce: the next ordered nonce to sign with
    /// `NonceType: "account"`, past account nonces in flight. Built calls reserve nothing and
    /// never count; unique-nonce calls (the default) do not use it.
    pub nonce: u64,
    /// `bySigAccountNonces(account)` as of the indexed head (`Block`), or past it when this
    /// relayer has already seen a later nonce mined.
    pub chain_nonce: u64,
    /// The indexed block the answer is computed at.
    pub block: u64,
}

/// `POST /{contract}/meta/execute`: mined.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ExecuteResponse {
    pub message: String,
    pub from: String,
    pub transaction_hash: String,
    pub gas_used: Option<u64>,
    pub block_number: Option<u64>,
    pub sponsor: String,
    pub transaction_id: i64,
}

/// `POST /{contract}/meta/execute` with `Prefer: respond-async` (or a receipt timeout): sent,
/// not yet mined; poll `Status`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ExecuteAccepted {
    pub message: String,
    pub from: String,
    pub transaction_hash: String,
    /// Always null here.
    pub gas_used: Option<u64>,
    pub transaction_id: i64,
    /// `/api/v1/transactions/{id}`.
    pub status: String,
}

/// `POST /{contract}/meta/execute` request. Every field is optional to the parser so that a
/// missing one is a `missing_field` naming it; the document marks the required ones.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ExecuteRequest {
    #[serde(alias = "from")]
    #[schema(value_type = crate::api::schema::Address, required = true)]
    from: Option<String>,
    /// 65-byte ECDSA signature (or ERC-1271 bytes) over `Transaction.TypedData`.
    #[serde(alias = "signature")]
    #[schema(value_type = crate::api::schema::Signature, required = true)]
    signature: Option<String>,
    /// `Transaction.Data`.
    #[serde(alias = "data")]
    #[schema(value_type = crate::api::schema::HexBytes, required = true)]
    data: Option<String>,
    /// `Transaction.Nonce` (number or decimal string).
    #[serde(alias = "nonce")]
    #[schema(value_type = crate::api::schema::Uint64, required = true)]
    nonce: Option<Value>,
    #[serde(alias = "sponsor")]
    #[schema(value_type = Option<crate::api::schema::OptionalAddress>)]
    sponsor: Option<String>,
    /// `Transaction.Deadline` (number or decimal string).
    #[serde(alias = "deadline")]
    #[schema(value_type = crate::api::schema::Deadline, required = true)]
    deadline: Option<Value>,
    /// Optional: the exact `Transaction.Traits`. Without it the traits are rebuilt from Nonce,
    /// Deadline and the sponsor (or "any relayer").
    #[serde(alias = "traits")]
    #[schema(value_type = Option<crate::api::schema::Traits>)]
    traits: Option<String>,
    /// Optional: `Transaction.NonceType` (`unique` or `account`); without it (and without
    /// Traits) both are tried against the signature.
    #[serde(alias = "nonceType", alias = "nonce_type")]
    #[schema(value_type = Option<crate::api::schema::NonceType>)]
    nonce_type: Option<String>,
    /// Deposits: the signed EIP-2612 permit, applied in the same transaction.
    #[serde(alias = "permit")]
    permit: Option<PermitRequest>,
    /// Optional label (1 to 255 characters) stored with the transaction; or the `Reference`
    /// header (both must agree when both are sent).
    #[serde(alias = "reference")]
    #[schema(value_type = Option<crate::api::schema::Reference>)]
    reference: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct PermitRequest {
    /// Token base units, as in `PermitTypedData.message.value`.
    #[serde(alias = "value")]
    #[schema(value_type = crate::api::schema::Uint256Value, required = true)]
    value: Option<Value>,
    #[serde(alias = "deadline")]
    #[schema(value_type = crate::api::schema::Uint64, required = true)]
    deadline: Option<Value>,
    #[serde(alias = "signature")]
    #[schema(value_type = crate::api::schema::EcdsaSignature, required = true)]
    signature: Option<String>,
}

/// Verifies a signed call, simulates it and has the sponsor submit it; answers once mined, or
/// 202 with `Prefer: respond-async`.
#[utoipa::path(post, path = "/api/v1/{contract}/meta/execute", tag = "Meta-transactions",
    params(("contract" = String, Path, description = "Deployment name"),
           ("Prefer" = Option<String>, Header, description = "`respond-async`: answer 202 once sent, not once mined (any other preference is ignored)"),
           ("Reference" = Option<crate::api::schema::Reference>, Header, description = "Label stored with the transaction (or the body's `Reference`; both must agree); see GET /api/v1/transactions?Reference=")),
    request_body = ExecuteRequest,
    responses(
        (status = 200, description = "Mined", body = ExecuteResponse),
        (status = 202, description = "Sent, not yet mined", body = ExecuteAccepted),
        (status = 400, description = "`invalid_json`, `missing_field`, `invalid_address`, `invalid_signature`, `invalid_data`, `invalid_number`, `invalid_deadline`, `invalid_traits`, `invalid_nonce_type`, `invalid_amount`, `call_not_allowed`, `non_canonical_calldata`, `calldata_too_large`, `empty_batch`, `batch_too_large`, `unknown_contract`, `invalid_reference`", body = crate::api::error::ErrorBody),
        (status = 401, description = "`missing_api_key`, `invalid_api_key`", body = crate::api::error::ErrorBody),
        (status = 403, description = "`sponsor_not_allowed`, `signer_banned`, `key_banned`", body = crate::api::error::ErrorBody),
        (status = 409, description = "`nonce_already_used`, `nonce_gap`, `nonce_in_flight`", body = crate::api::error::ErrorBody),
        (status = 422, description = "`deadline_expired`, `signature_mismatch`, `signature_check_gas_exceeded`, `permit_signature_mismatch`, `sponsor_mismatch`, `sponsor_unavailable`, `simulation_reverted`, `transaction_reverted`, `transaction_failed`, `nonce_out_of_range`, `sponsor_fee_cap_exceeded`, `gas_cap_exceeded`", body = crate::api::error::ErrorBody),
        (status = 429, description = "`sponsor_daily_budget_exceeded`, `key_budget_exceeded`, `key_daily_budget_exceeded`, `signer_daily_budget_exceeded`, `call_cooling_down`, `signer_throttled`, `key_throttled`", body = crate::api::error::ErrorBody),
        (status = 503, description = "`chain_unavailable`", body = crate::api::error::ErrorBody),
    ),
    security(("api_key" = [])))]
#[tracing::instrument(skip_all, fields(contract = %contract))]
pub async fn execute(
    State(state): State<AppState>,
    key: ApiKey,
    Path(contract): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ExecuteRequest>,
) -> Result<Response, AppError> {
    let contract = state.contract(&contract)?;
    let respond_async = wants_async(&headers);
    let provider = &contract.chain.provider;

    // --- shape of the request
    let from = parse_address("From", required("From", &body.from)?)?;
    key.check_signer(from)?;
    let signature = parse_hex("Signature", required("Signature", &body.signature)?, ErrorCode::InvalidSignature)?;
    let data = parse_hex("Data", required("Data", &body.data)?, ErrorCode::InvalidData)?;
    let nonce = parse_u64("Nonce", &body.nonce)?;
    let deadline = parse_u64("Deadline", &body.deadline)?;
    if deadline > MAX_DEADLINE {
        return Err(AppError::new(ErrorCode::InvalidDeadline, "Deadline does not fit the 40-bit traits field"));
    }
    // The sponsor named, else the key's sponsors least busy first: the signature decides which
    // of them the call may use.
    let named = body.sponsor.as_deref().filter(|s| !s.is_empty());
    let pool: Vec<Arc<Sponsor>> = match named {
        None if key.0.sponsors.len() > 1 => match contract.chain.sponsors.by_load(&key.0.sponsors) {
            pool if pool.is_empty() => vec![state.sponsor_for(contract.chain, &key, None)?],
            pool => pool,
        },
        _ => vec![state.sponsor_for(contract.chain, &key, named)?],
    };
    let reference = super::history::execute_reference(&headers, body.reference.as_deref())?;
    state.settings.admission.check_size(&data)?;
    let checked = calls::check_user_call(&data).map_err(|e| match e {
        CallError::NonCanonical => AppError::new(ErrorCode::NonCanonicalCalldata, e.to_string()),
        CallError::BatchTooLarge(_) => AppError::new(ErrorCode::BatchTooLarge, e.to_string()),
        CallError::EmptyBatch => AppError::new(ErrorCode::EmptyBatch, e.to_string()),
        CallError::Malformed | CallError::NotAllowed(_) => AppError::new(ErrorCode::CallNotAllowed, e.to_string()),
    })?;
    if key.0.restricted()
        && let Some(op) = checked.operations.iter().map(|f| operation_of(f)).find(|op| !key.0.allows_operation(op))
    {
        return Err(AppError::new(
            ErrorCode::OperationNotAllowed,
            format!("this credential may not relay `{op}` (the call does {})", checked.operations.join(", ")),
        ));
    }
    let candidates = traits_candidates(&body, nonce, deadline, &pool)?;

    // --- time, against the chain's head (cached for a moment; the simulation checks the
    // deadline on chain again and answers the same)
    let now = contract.chain.head.now(provider).await.map_err(AppError::chain)?;
    if deadline < now {
        return Err(AppError::new(
            ErrorCode::DeadlineExpired,
            format!("the call's deadline {deadline} has passed (chain time {now}); build it again"),
        ));
    }

    // --- signature, permit and the transaction the sponsor will send. A refusal here changes
    // nothing stored: no request can free, cancel or re-target a call someone else built.
    let signed = signed_transaction(contract, from, &candidates, &data, &signature, &body, now).await?;
    let (outer, sponsor, nonce_type, digest) = (signed.outer, signed.sponsor, signed.nonce_type, signed.digest);
    // On its way to the sponsor's queue from here: a batch being written waits for it (briefly).
    let arriving = contract.chain.pipeline.arriving(sponsor.address());
    let scope = NonceScope { chain_id: contract.chain.chain_id, contract: contract.address, signer: from, nonce_type };
    // A signer's own budget of calls under this key, counted once the signature shows the call
    // is the signer's (a stranger naming the signer in `From` cannot spend it) and its permit
    // too: with a permit left to check after the simulation, the budget is counted after it.
    let throttled = || -> Option<Response> {
        let per_minute = key.0.bounds.signer_rate_limit_per_minute?;
        let wait = state.settings.auth.signer_limiters.check((key.0.id, from), per_minute).err()?;
        Some(
            super::auth::Rejection::retry(
                AppError::new(
                    ErrorCode::SignerRateLimited,
                    format!(
                        "{from} may relay {per_minute} calls per minute with this key; retry after the Retry-After delay"
                    ),
                ),
                wait,
            )
            .into_response(),
        )
    };
    if signed.permit.is_none()
        && let Some(refused) = throttled()
    {
        return Ok(refused);
    }

    // --- one simulation at `latest`: the reads that word a refusal (the permit's token nonce,
    // the bySig nonce), then the exact transaction, all on the same state in one request.
    let mut reads = Vec::with_capacity(2);
    if signed.permit.is_some() {
        reads.push(read(sponsor.address(), contract.token, IPermitToken::noncesCall { owner: from }.abi_encode()));
    }
    reads.push(read(sponsor.address(), contract.address, nonce_read(scope, nonce)));
    let request =
        TransactionRequest::default().with_from(sponsor.address()).with_to(contract.address).with_input(outer.clone());
    let (reads, simulated) = chain::simulate::simulate(provider, reads, request).await.map_err(AppError::chain)?;
    let mut reads = reads.into_iter();
    // The deadline, on chain: answered as the pre-check above would have (nothing is stored).
    if let CallOutcome::Failed { data, message } = &simulated
        && StreamPay::StreamPayDeadlineExceeded::abi_decode(data).is_ok()
    {
        return Err(reverted(data, message));
    }
    if let Some(permit) = &signed.permit {
        permit.check(permit_nonce(reads.next())?)?;
        if let Some(refused) = throttled() {
            return Ok(refused);
        }
    }
    if pool.len() > 1 {
        contract.chain.sponsors.note_pick(sponsor.address());
    }

    // --- the nonce, against the chain (as simulated), in the space of its type
    check_nonce_on_chain(&state, scope, nonce, reads.next()).await?;

    // --- claim the nonce, so a concurrent execute of the same call gets a clean 409
    // instead of both being sent.
    if state.store.claim_nonce(scope, nonce, deadline).await? == Claim::Busy {
        return Err(AppError::new(
            ErrorCode::NonceInFlight,
            format!("nonce {nonce} of {from} is already being executed"),
        ));
    }
    let pipeline = &contract.chain.pipeline;
    let applicant = admission::Applicant {
        chain_id: contract.chain.chain_id,
        api_key_id: key.0.id,
        signer: from,
        sponsor: sponsor.address(),
        digest,
    };
    let simulated = match simulated {
        // Admission and sponsor policies apply to new calls only, never to the pipeline's
        // bumps/cancellations.
        CallOutcome::Success { gas_used, .. } => {
            admit(&state, contract.chain, &key, &sponsor, &checked.operations, gas_used, applicant).await
        }
        CallOutcome::Failed { data, message } => Err(reverted(&data, &message)),
    };
    // The admission reservation goes with the call: the statement that queues it deletes it (the
    // row counts from then on). The policy's budget guard is held until the call is queued.
    let queued = match simulated {
        Ok((gas_limit, reservation, _budget_guard)) => {
            let queued = pipeline
                .enqueue_arriving(
                    NewTransaction {
                        chain_id: contract.chain.chain_id,
                        contract: contract.address,
                        api_key_id: key.0.id,
                        signer: from,
                        meta_nonce: nonce,
                        meta_nonce_type: nonce_type,
                        call_digest: Some(digest),
                        deadline,
                        sponsor: sponsor.address(),
                        calldata: outer,
                        gas_limit,
                        history: Some(crate::store::TxMeta {
                            reference,
                            operations: checked.operations.iter().map(|o| o.to_string()).collect(),
                            amounts: super::history::call_amounts(&data, contract.token_decimals),
                        }),
                        reservation,
                    },
                    arriving,
                    !respond_async,
                )
                .await
                // A database that is down is a 503 of its own; anything else failing here is the node.
                .map_err(|e| match AppError::from(e) {
                    AppError::Internal(e) => AppError::chain(e),
                    unavailable => unavailable,
                });
            if queued.is_err() {
                // Not queued (or not known to be: a reservation left behind only counts until it
                // expires).
                state.store.release_reservation(reservation).await;
            }
            queued
        }
        Err(e) => Err(e),
    };
    let queued = match queued {
        Ok(q) => q,
        Err(e) => {
            // Nothing was queued. A call that would revert is refused (its nonce freed for the
            // next build); after a node failure the same signed call may be retried.
            if rejects_the_call(&e) {
                state.store.finish_nonce(scope, nonce, crate::store::NonceStatus::Failed).await?;
            } else {
                release_nonce(&state, scope, nonce).await;
            }
            return Err(e);
        }
    };
    let tx_id = queued.id;
    tracing::info!(%from, nonce, sponsor = %sponsor.address(), sponsor_nonce = queued.sponsor_nonce, tx = %queued.hash, id = tx_id, ops = ?checked.operations, "queued");

    let accepted = |message: &str, hash: B256| {
        let body = ExecuteAccepted {
            message: message.to_string(),
            from: checksum(from),
            transaction_hash: hash.to_string(),
            gas_used: None,
            transaction_id: tx_id,
            status: format!("/api/v1/transactions/{tx_id}"),
        };
        (StatusCode::ACCEPTED, [(PREFERENCE_APPLIED, "respond-async")], Json(body)).into_response()
    };
    if respond_async {
        return Ok(accepted("Submitted. Poll Status (or the transaction hash) for the outcome.", queued.hash));
    }
    // The call is queued and will be sent whatever happens next: if the database cannot be read
    // right now, the answer is the 202 of an accepted call, never an error.
    pipeline.wait_settled(tx_id, state.settings.receipt_timeout).await;
    let record = match state.store.transaction_outcome(tx_id, key.0.id).await {
        Ok(Some(record)) => record,
        Ok(None) => return Err(AppError::Internal(anyhow::anyhow!("queued transaction {tx_id} vanished"))),
        Err(e) => {
            tracing::warn!(id = tx_id, error = format!("{e:#}"), "queued, but its status could not be read");
            return Ok(accepted("Submitted. Poll Status (or the transaction hash) for the outcome.", queued.hash));
        }
    };
    let status = TxStatus::parse(&record.status).ok();
    if matches!(status, Some(TxStatus::Mined | TxStatus::Confirmed)) {
        // The fee estimate follows the new block now rather than next tick (the row's own price
        // was recorded with its outcome).
        contract.chain.pricing.wake();
    }
    // Read-your-writes: a 200 means every read endpoint already reflects the call.
    if matches!(status, Some(TxStatus::Mined | TxStatus::Confirmed))
        && !state.await_indexed(contract, record.block_number.unwrap_or_default()).await
    {
        return Ok(accepted(
            "Mined; the relayer's index has not caught up with its block yet. Poll Status: it says mined once every read reflects the call.",
            record.tx_hash,
        ));
    }
    match status {
        Some(TxStatus::Mined | TxStatus::Confirmed) => Ok(Json(ExecuteResponse {
            message: format!(
                "Executed {} in block {}",
                checked.operations.join(", "),
                record.block_number.unwrap_or_default()
            ),
            from: checksum(from),
            transaction_hash: record.tx_hash.to_string(),
            gas_used: record.gas_used,
            block_number: record.block_number,
            sponsor: checksum(sponsor.address()),
            transaction_id: tx_id,
        })
        .into_response()),
        Some(TxStatus::Failed) if record.failure.as_deref() == Some("reverted") => Err(AppError::new(
            ErrorCode::TransactionReverted,
            format!(
                "transaction {} reverted on-chain after a successful simulation ({}); nothing was executed",
                record.tx_hash,
                record.revert_reason.as_deref().unwrap_or("no reason")
            ),
        )),
        Some(TxStatus::Failed) => Err(AppError::new(
            ErrorCode::TransactionFailed,
            format!(
                "the node refused the transaction ({}); nothing was executed",
                record.revert_reason.as_deref().or(record.last_error.as_deref()).unwrap_or("no reason")
            ),
        )),
        Some(TxStatus::Expired) => Err(AppError::new(
            ErrorCode::DeadlineExpired,
            "the call's deadline passed before it could be mined; nothing was executed; build it again",
        )),
        Some(TxStatus::Replaced) => Err(AppError::new(
            ErrorCode::NonceAlreadyUsed,
            format!("nonce {nonce} of {from} was used by another transaction"),
        )),
        _ => Ok(accepted(
            "Submitted; not mined yet. Poll Status (or the transaction hash) for the outcome.",
            record.tx_hash,
        )),
    }
}

/// A verified signed call and the transaction that relays it.
struct SignedCall {
    /// `bySig`, wrapped in `permitAndCall` with a permit.
    outer: Bytes,
    sponsor: Arc<Sponsor>,
    nonce_type: NonceType,
    /// The EIP-712 digest the signer signed: identifies the signed call.
    digest: B256,
    /// An EIP-2612 permit whose signature is checked against the token nonce read in the
    /// simulation (the token's domain was known); `None` without a permit, or once checked.
    permit: Option<PermitCheck>,
}

/// Verifies the signature (and the optional permit) and encodes the transaction the sponsor
/// sends: `bySig`, wrapped in `permitAndCall` with a permit.
#[allow(clippy::too_many_arguments)]
async fn signed_transaction(
    contract: Contract<'_>,
    from: Address,
    candidates: &[(U256, Arc<Sponsor>)],
    data: &Bytes,
    signature: &Bytes,
    body: &ExecuteRequest,
    now: u64,
) -> Result<SignedCall, AppError> {
    let provider = &contract.chain.provider;
    let domain = Domain::streampay(contract.chain.chain_id, contract.address);
    let mut verified = None;
    let mut mismatch = None;
    for (traits, sponsor) in candidates {
        let digest = eip712::signed_call_digest(&domain, from, *traits, data);
        match signature::verify(provider, from, digest, signature).await {
            Ok(sig) => {
                verified = Some((*traits, sig, sponsor.clone(), digest));
                break;
            }
            Err(SignatureError::Malformed(m)) => return Err(AppError::new(ErrorCode::InvalidSignature, m)),
            // Report the first candidate's signer: it is the traits the build endpoints hand out.
            Err(e @ SignatureError::Mismatch { .. }) => {
                mismatch.get_or_insert(e);
            }
            // Not tried again with the next candidate: each try would burn the cap again.
            Err(e @ SignatureError::GasCapExceeded { .. }) => {
                return Err(AppError::new(ErrorCode::SignatureCheckGasExceeded, e.to_string()));
            }
            Err(SignatureError::Rpc(e)) => return Err(AppError::chain(e)),
        }
    }
    let Some((traits, on_chain_signature, sponsor, digest)) = verified else {
        let why = mismatch.map(|e| e.to_string()).unwrap_or_default();
        return Err(AppError::new(
            ErrorCode::SignatureMismatch,
            format!("{why}: check From, Data, Nonce, Deadline and Sponsor against what was signed"),
        ));
    };

    // --- optional EIP-2612 permit, applied in the same transaction
    let (permit, check) = match &body.permit {
        Some(p) if pulls_through_permit2(data) => (Some(permit2_bytes(contract, from, p, now).await?), None),
        Some(p) => {
            let (bytes, check) = permit_bytes(contract, from, p, now).await?;
            (Some(bytes), check)
        }
        None => (None, None),
    };

    // --- the transaction the sponsor will send
    let by_sig: Bytes = StreamPay::bySigCall {
        signer: from,
        sig: IStreamPay::SignedCall { traits, data: data.clone() },
        signature: on_chain_signature,
    }
    .abi_encode()
    .into();
    let outer: Bytes = match permit {
        Some(permit) => StreamPay::permitAndCallCall { permit, action: by_sig }.abi_encode().into(),
        None => by_sig,
    };
    let nonce_type = Traits::decode(traits).map_or(NonceType::Account, |t| t.nonce_type);
    Ok(SignedCall { outer, sponsor, nonce_type, digest, permit: check })
}

/// The bySig nonce read for `scope`: `bySigUniqueNonces(signer, nonce)` or
/// `bySigAccountNonces(signer)`.
fn nonce_read(scope: NonceScope, nonce: u64) -> Vec<u8> {
    if scope.nonce_type == NonceType::Unique {
        StreamPay::bySigUniqueNoncesCall::new((scope.signer, U256::from(nonce))).abi_encode()
    } else {
        StreamPay::bySigAccountNoncesCall::new((scope.signer,)).abi_encode()
    }
}

/// A `view` call to simulate before the transaction.
fn read(from: Address, to: Address, input: Vec<u8>) -> TransactionRequest {
    TransactionRequest::default().with_from(from).with_to(to).with_input(Bytes::from(input))
}

/// The output of a simulated read the contract always answers; a failure is the node's.
fn read_output(outcome: Option<CallOutcome>, what: &str) -> Result<Bytes, AppError> {
    match outcome {
        Some(CallOutcome::Success { output, .. }) => Ok(output),
        Some(CallOutcome::Failed { message, .. }) => {
            Err(AppError::chain(anyhow::anyhow!("reading {what} failed in the simulation: {message}")))
        }
        None => Err(AppError::chain(anyhow::anyhow!("the simulation did not answer {what}"))),
    }
}

/// Checks `nonce` against the chain (`read`: [`nonce_read`] as simulated) for its type: an
/// account nonce must be the signer's current one (409 `nonce_already_used` below it,
/// `nonce_gap` above it); a unique nonce must be unused (409 `nonce_already_used`).
async fn check_nonce_on_chain(
    state: &AppState,
    scope: NonceScope,
    nonce: u64,
    read: Option<CallOutcome>,
) -> Result<(), AppError> {
    let from = scope.signer;
    let output = read_output(read, "the bySig nonce")?;
    if scope.nonce_type == NonceType::Unique {
        let used = StreamPay::bySigUniqueNoncesCall::abi_decode_returns(&output).map_err(AppError::chain)?;
        if used {
            return Err(AppError::new(
                ErrorCode::NonceAlreadyUsed,
                format!("unique nonce {nonce} of {from} is already used; build the call again"),
            ));
        }
        return Ok(());
    }
    let expected = StreamPay::bySigAccountNoncesCall::abi_decode_returns(&output).map_err(AppError::chain)?;
    let expected = u64::try_from(expected)
        .map_err(|_| AppError::new(ErrorCode::NonceOutOfRange, "the account nonce exceeds 2^64"))?;
    if nonce < expected {
        return Err(AppError::new(
            ErrorCode::NonceAlreadyUsed,
            format!("nonce {nonce} of {from} is already used; the next is {expected}"),
        ));
    }
    if nonce > expected {
        let in_flight = state.store.in_flight_nonces(scope, expected, nonce).await?;
        let detail = if in_flight.is_empty() {
            format!("account nonce {expected} must be executed first")
        } else {
            format!("account nonces {in_flight:?} are still in flight; retry once they are mined")
        };
        return Err(AppError::new(ErrorCode::NonceGap, format!("nonce {nonce} is not next for {from}: {detail}")));
    }
    Ok(())
}

/// The permit's token nonce as simulated: a token that does not answer `nonces(owner)` does not
/// support EIP-2612 (as [`build::permit_domain_and_nonce`] answers).
fn permit_nonce(read: Option<CallOutcome>) -> Result<U256, AppError> {
    let unsupported = |why: String| {
        AppError::new(ErrorCode::PermitUnsupported, format!("the token does not support EIP-2612 permits: {why}"))
    };
    match read {
        Some(CallOutcome::Success { output, .. }) => {
            IPermitToken::noncesCall::abi_decode_returns(&output).map_err(|e| unsupported(e.to_string()))
        }
        Some(CallOutcome::Failed { message, .. }) => Err(unsupported(message)),
        None => Err(AppError::chain(anyhow::anyhow!("the simulation did not answer the token nonce"))),
    }
}

/// Gives the claim on `nonce` back after a failure that left nothing queued. If the database is
/// what failed, it is retried in the background for a while, so the client's retry is not
/// answered `nonce_in_flight` until the claim counts as orphaned.
async fn release_nonce(state: &AppState, scope: NonceScope, nonce: u64) {
    if state.store.release_nonce(scope, nonce).await.is_ok() {
        return;
    }
    let store = state.store.clone();
    tokio::spawn(async move {
        for _ in 0..120 {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            match store.release_nonce(scope, nonce).await {
                Ok(()) => return,
                Err(e) => tracing::debug!(error = format!("{e:#}"), "releasing a claimed nonce failed; retrying"),
            }
        }
        tracing::warn!(signer = %scope.signer, nonce, "a claimed nonce could not be released; it frees itself once orphaned");
    });
}

/// Whether `e` says the signed call itself is refused (not that it is busy or the node failed).
fn rejects_the_call(e: &AppError) -> bool {
    let status = e.status();
    status.is_client_error() && status != StatusCode::CONFLICT
}

const PREFERENCE_APPLIED: HeaderName = HeaderName::from_static("preference-applied");

/// Whether the client asked for `Prefer: respond-async` (RFC 7240).
fn wants_async(headers: &HeaderMap) -> bool {
    headers.get_all("prefer").iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',').any(|p| p.trim().split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("respond-async")))
    })
}

/// Admission of a call whose simulated run used `gas`: the gas cap of its operations, then (under the
/// key's and signer's admission locks) cool-down, reputation and daily budgets at the current
/// max fee, then the sponsor's policy. Returns the gas limit and the locks to hold until queued.
async fn admit(
    state: &AppState,
    chain: &Chain,
    key: &ApiKey,
    sponsor: &Sponsor,
    operations: &[&str],
    gas: u64,
    applicant: admission::Applicant,
) -> Result<(u64, crate::store::Reservation, super::sponsors::BudgetGuard), AppError> {
    let settings = &state.settings.admission.for_key(&key.0.bounds);
    settings.check_gas(operations, gas)?;
    let gas_limit = crate::chain::gas_limit_for_used(gas, crate::chain::RELAY_GAS_MARGIN);
    let fees = super::sponsors::current_fees(chain).await?;
    let cost = U256::from(gas_limit) * U256::from(fees.max_fee_per_gas);
    let (reservation, policy) = admission::admit(&state.store, settings, applicant, cost).await?;
    match super::sponsors::enforce_policy(state, chain, key, sponsor, gas_limit, policy).await {
        Ok(guard) => Ok((gas_limit, reservation, guard)),
        Err(e) => {
            state.store.release_reservation(reservation).await;
            Err(e)
        }
    }
}

/// The traits the signature may cover. Build responses bind the sponsor; a client that built
/// its own call may have allowed any relayer instead. The nonce type is the request's
/// `NonceType`, else both unique and account are tried. All are tried against the signature.
fn traits_candidates(
    body: &ExecuteRequest,
    nonce: u64,
    deadline: u64,
    pool: &[Arc<Sponsor>],
) -> Result<Vec<(U256, Arc<Sponsor>)>, AppError> {
    if let Some(raw) = body.traits.as_deref().filter(|s| !s.is_empty()) {
        let word = crate::amount::parse_uint(raw)
            .or_else(|| raw.strip_prefix("0x").and_then(|h| U256::from_str_radix(h, 16).ok()))
            .ok_or_else(|| AppError::new(ErrorCode::InvalidTraits, "Traits: expected a uint256"))?;
        let t = Traits::decode(word)
            .ok_or_else(|| AppError::new(ErrorCode::InvalidTraits, "Traits: unknown nonce type"))?;
        if t.nonce_type == NonceType::Selector || t.nonce != u128::from(nonce) || t.deadline != deadline {
            return Err(AppError::new(
                ErrorCode::InvalidTraits,
                "Traits must be an account- or unique-nonce traits word matching Nonce and Deadline",
            ));
        }
        let Some(sponsor) = pool.iter().find(|s| t.allows_relayer(s.address())) else {
            let sponsor = pool[0].address();
            return Err(AppError::new(
                ErrorCode::SponsorMismatch,
                format!("the signed call may only be relayed by another relayer, not sponsor {sponsor}"),
            ));
        };
        return Ok(vec![(word, sponsor.clone())]);
    }
    let types = match body.nonce_type.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => vec![NonceType::Unique, NonceType::Account],
        Some(t) if t.eq_ignore_ascii_case("unique") => vec![NonceType::Unique],
        Some(t) if t.eq_ignore_ascii_case("account") => vec![NonceType::Account],
        Some(_) => {
            return Err(AppError::new(ErrorCode::InvalidNonceType, "NonceType must be \"unique\" or \"account\""));
        }
    };
    // Bound to one of the sponsors (build responses bind the one they chose), or to any relayer
    // (then the least busy sponsor sends it).
    let mut candidates: Vec<(U256, Arc<Sponsor>)> = Vec::new();
    for t in types {
        candidates
            .extend(pool.iter().map(|s| (Traits::of_type(t, nonce, deadline, Some(s.address())).encode(), s.clone())));
        candidates.push((Traits::of_type(t, nonce, deadline, None).encode(), pool[0].clone()));
    }
    Ok(candidates)
}

/// Whether the signed call deposits through Permit2 (`deposit`/`depositFor` with `isPermit2`,
/// alone or in a multicall): its permit is then Permit2's `PermitSingle`.
fn pulls_through_permit2(data: &[u8]) -> bool {
    if let Ok(c) = StreamPay::depositCall::abi_decode(data) {
        return c.isPermit2;
    }
    if let Ok(c) = StreamPay::depositForCall::abi_decode(data) {
        return c.isPermit2;
    }
    if let Ok(c) = StreamPay::multicallCall::abi_decode(data) {
        return c.data.iter().any(|d| pulls_through_permit2(d));
    }
    false
}

/// The permit's value, deadline and ECDSA signature, checked for shape.
fn permit_fields(p: &PermitRequest, now: u64) -> Result<(U256, u64, alloy::signers::Signature), AppError> {
    let value = match &p.value {
        Some(Value::String(s)) => crate::amount::parse_uint(s),
        Some(v @ Value::Number(_)) => parse_u64("Permit.Value", &Some(v.clone())).ok().map(U256::from),
        _ => None,
    }
    .ok_or_else(|| {
        AppError::new(ErrorCode::InvalidAmount, "Permit.Value: expected token base units as an integer string")
    })?;
    let deadline = parse_u64("Permit.Deadline", &p.deadline)?;
    if deadline < now {
        return Err(AppError::new(ErrorCode::DeadlineExpired, format!("the permit's deadline {deadline} has passed")));
    }
    let sig_hex = required("Permit.Signature", &p.signature)?;
    let raw = parse_hex("Permit.Signature", sig_hex, ErrorCode::InvalidSignature)?;
    let sig = signature::parse_ecdsa(&raw)
        .map_err(|e| AppError::new(ErrorCode::InvalidSignature, format!("Permit.Signature: {e}")))?;
    Ok((value, deadline, sig))
}

/// Checks a Permit2 permit and encodes it for `permitAndCall`: Permit2's address followed by the
/// ABI-encoded `permit(owner, PermitSingle, signature)` arguments. `Permit.Value` is the
/// PermitSingle's `details.amount`, `Permit.Deadline` its `sigDeadline` and `details.expiration`
/// (as the deposit endpoint builds it); the nonce is the one Permit2 expects now.
async fn permit2_bytes(contract: Contract<'_>, owner: Address, p: &PermitRequest, now: u64) -> Result<Bytes, AppError> {
    let (value, deadline, sig) = permit_fields(p, now)?;
    let values = build::permit2_values(contract, owner, value, deadline).await?;
    let digest = eip712::permit2_digest(contract.chain.chain_id, &values);
    check_permit_signer(digest, &sig, owner, || {
        format!("Permit2 PermitSingle(amount {value}, nonce {}, deadline {deadline})", values.nonce)
    })?;
    let call =
        IPermit2::permitCall { owner, permitSingle: values.permit_single(), signature: sig.as_bytes().to_vec().into() }
            .abi_encode();
    let mut out = PERMIT2.to_vec();
    out.extend_from_slice(&call[4..]);
    Ok(out.into())
}

/// 422 `permit_signature_mismatch` unless `sig` over `digest` recovers to `owner`; `what` names
/// the signed message for the error.
fn check_permit_signer(
    digest: B256,
    sig: &alloy::signers::Signature,
    owner: Address,
    what: impl FnOnce() -> String,
) -> Result<(), AppError> {
    let recovered =
        signature::recover(digest, sig).map_err(|e| AppError::new(ErrorCode::InvalidSignature, e.to_string()))?;
    if recovered != owner {
        return Err(AppError::new(
            ErrorCode::PermitSignatureMismatch,
            format!("the permit is not {owner}'s signature of {}", what()),
        ));
    }
    Ok(())
}

/// An EIP-2612 permit to check once its token nonce is known (read in the simulation).
struct PermitCheck {
    owner: Address,
    spender: Address,
    value: U256,
    deadline: u64,
    sig: alloy::signers::Signature,
    domain: Domain,
}

impl PermitCheck {
    /// 422 `permit_signature_mismatch` unless the permit is the owner's signature at `nonce`.
    fn check(&self, nonce: U256) -> Result<(), AppError> {
        let (owner, value, deadline) = (self.owner, self.value, self.deadline);
        let values = PermitValues { owner, spender: self.spender, value, nonce, deadline: U256::from(deadline) };
        let digest = eip712::permit_digest(&self.domain, &values);
        check_permit_signer(digest, &self.sig, owner, || {
            format!("Permit(value {value}, nonce {nonce}, deadline {deadline})")
        })
    }
}

/// Encodes the permit for `permitAndCall`: the token's address followed by the ABI-encoded
/// EIP-2612 `permit(owner, spender, value, deadline, v, r, s)` arguments. Its signature is checked
/// here when the token's EIP-712 domain is not known yet (read with the token nonce, then kept);
/// else the check is returned, to run against the token nonce read in the simulation.
async fn permit_bytes(
    contract: Contract<'_>,
    owner: Address,
    p: &PermitRequest,
    now: u64,
) -> Result<(Bytes, Option<PermitCheck>), AppError> {
    let (value, deadline, sig) = permit_fields(p, now)?;
    let v = U256::from(if sig.v() { 28u8 } else { 27u8 });
    let args = (owner, contract.address, value, U256::from(deadline), v, B256::from(sig.r()), B256::from(sig.s()))
        .abi_encode_params();
    let mut out = contract.token.to_vec();
    out.extend_from_slice(&args);
    let (domain, token_nonce) = match contract.chain.sponsors.cached_permit_domain(contract.token) {
        Some(domain) => (domain, None),
        None => {
            let (domain, nonce) = permit_domain_and_nonce(contract, owner).await?;
            (domain, Some(nonce))
        }
    };
    let check = PermitCheck { owner, spender: contract.address, value, deadline, sig, domain };
    match token_nonce {
        Some(nonce) => {
            check.check(nonce)?;
            Ok((out.into(), None))
        }
        None => Ok((out.into(), Some(check))),
    }
}

/// A simulated call that failed: the client's call is refused (422), its revert data decoded into
/// the contract's custom error. The deadline passing is `deadline_expired`, as when it is seen
/// before simulating (against a head cached for a moment, [`crate::chain::HeadClock`]). A call that fails without revert data (a revert without a reason,
/// or a halt such as running out of the block's gas) is refused the same way.
fn reverted(data: &[u8], message: &str) -> AppError {
    if data.is_empty() {
        return AppError::new(ErrorCode::SimulationReverted, format!("the call would revert: {message}"));
    }
    if let Ok(e) = StreamPay::StreamPayDeadlineExceeded::abi_decode(data) {
        return AppError::new(
            ErrorCode::DeadlineExpired,
            format!("the call's deadline {} has passed (chain time {}); build it again", e.deadline, e.timestamp),
        );
    }
    let decoded = decode_revert(data);
    AppError::new(ErrorCode::SimulationReverted, format!("the call would revert with {}", decoded.display))
}
