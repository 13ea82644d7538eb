//! Assembles the meta-transaction object `T` every build endpoint returns:
//! `{To, ChainId, From, Nonce, Deadline, Traits, Data, Digest, TypedData}` (+ `PermitTypedData`
//! for deposits). Building reserves nothing: by default the call gets a fresh random unique
//! (unordered) bySig nonce, so calls built in parallel, in several dapps, or abandoned never
//! block each other. `NonceType: "account"` asks for the signer's ordered account nonce instead
//! (optionally an explicit `Nonce` at or past the current one, to sign a strict sequence). The
//! deadline counts from the chain's clock; the traits bind the call to the chosen sponsor.

use std::sync::Arc;

use alloy::primitives::{Address, Bytes, U160, U256, aliases::U48};
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::ErrorCode;
use super::{AppError, AppState, Contract, checksum};
use crate::{
    chain::{
        self, IErc20Allowance, IPermit2, IPermitToken, StreamPay,
        eip712::{self, Domain, Permit2Values, PermitValues},
        traits::{NonceType, Traits, random_unique_nonce},
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
    /// "unique" (the default: unordered, blocks nothing) or "account" (ordered).
    #[schema(value_type = crate::api::schema::NonceType)]
    pub nonce_type: &'static str,
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

/// Which permit a deposit's `PermitTypedData` is.
#[derive(Debug, Clone)]
pub enum PermitFor {
    /// The token's EIP-2612 `Permit` for the deployment, for this many token base units; with
    /// the token's domain and the owner's permit nonce when the caller has read them already.
    Eip2612(U256, Option<(Domain, U256)>),
    /// A Permit2 `PermitSingle` for the deployment, for this many token base units.
    Permit2(U256),
}

fn ser_checksum<S: serde::Serializer>(a: &Address, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&checksum(*a))
}

/// What a build endpoint wants signed.
pub struct BuildRequest<'a> {
    pub contract: Contract<'a>,
    pub from: Address,
    pub sponsor: Arc<Sponsor>,
    /// Calldata the signer's call runs (a user operation or a multicall of them).
    pub data: Bytes,
    /// For deposits: the permit to sign beside the call, for a value in token base units.
    pub permit_value: Option<PermitFor>,
    /// Human summary, e.g. "Subscribe 0x… to 0x… at 10 per month".
    pub summary: String,
    /// Endpoint-specific extra response fields (exact amounts and rates).
    pub extras: BuildExtras,
    /// Which nonce the call uses (request fields `NonceType` and `Nonce`).
    pub nonce: NonceChoice,
}

/// The nonce a build request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NonceChoice {
    /// A fresh random unique nonce (the default).
    #[default]
    Unique,
    /// The signer's account nonce: the current one (past calls in flight), or the one given.
    Account(Option<u64>),
}

impl NonceChoice {
    /// Parses the optional request fields `NonceType` ("unique" | "account") and `Nonce` (only
    /// with "account"): 400 `invalid_nonce_type` / `invalid_nonce`.
    pub fn parse(nonce_type: Option<&str>, nonce: &Option<Value>) -> Result<Self, AppError> {
        match nonce_type {
            None | Some("unique") => {
                if nonce.as_ref().is_some_and(|v| !v.is_null()) {
                    return Err(AppError::new(
                        ErrorCode::InvalidNonce,
                        "Nonce may only be chosen with NonceType \"account\"; unique nonces are drawn by the relayer",
                    ));
                }
                Ok(Self::Unique)
            }
            Some("account") => match nonce {
                None | Some(Value::Null) => Ok(Self::Account(None)),
                Some(_) => Ok(Self::Account(Some(super::extract::parse_u64("Nonce", nonce)?))),
            },
            Some(_) => Err(AppError::new(
                ErrorCode::InvalidNonceType,
                "NonceType must be \"unique\" (the default) or \"account\"",
            )),
        }
    }
}

pub async fn build(state: &AppState, req: BuildRequest<'_>) -> Result<Json<BuildResponse>, AppError> {
    let contract = req.contract;
    let provider = &contract.chain.provider;
    let now = chain::chain_time(provider).await.map_err(AppError::chain)?;
    let deadline = now + state.settings.meta_deadline_secs;
    let (nonce_type, nonce) = match req.nonce {
        NonceChoice::Unique => (NonceType::Unique, random_unique_nonce()),
        NonceChoice::Account(chosen) => {
            let chain_nonce = StreamPay::new(contract.address, provider)
                .bySigAccountNonces(req.from)
                .call()
                .await
                .map_err(AppError::chain)?;
            let chain_nonce = u64::try_from(chain_nonce)
                .map_err(|_| AppError::new(ErrorCode::NonceOutOfRange, "the signer's account nonce exceeds 2^64"))?;
            let nonce = match chosen {
                Some(n) if n < chain_nonce => {
                    return Err(AppError::new(
                        ErrorCode::NonceAlreadyUsed,
                        format!("account nonce {n} of {} is already used; the next is {chain_nonce}", req.from),
                    ));
                }
                Some(n) => n,
                // Past the calls in flight; built calls reserve nothing.
                None => {
                    let scope = NonceScope {
                        chain_id: contract.chain.chain_id,
                        contract: contract.address,
                        signer: req.from,
                        nonce_type: NonceType::Account,
                    };
                    state.store.next_account_nonce(scope, chain_nonce).await?
                }
            };
            (NonceType::Account, nonce)
        }
    };

    let traits = Traits::of_type(nonce_type, nonce, deadline, Some(req.sponsor.address())).encode();
    let domain = Domain::streampay(contract.chain.chain_id, contract.address);
    let digest = eip712::signed_call_digest(&domain, req.from, traits, &req.data);
    let typed_data = eip712::signed_call_typed_data(&domain, req.from, traits, &req.data);

    let permit_typed_data = match req.permit_value {
        Some(PermitFor::Eip2612(value, known)) => {
            Some(permit_document(contract, req.from, value, deadline, known).await?)
        }
        Some(PermitFor::Permit2(value)) => Some(permit2_document(contract, req.from, value, deadline).await?),
        None => None,
    };
    let transaction = MetaTransaction {
        to: contract.address,
        chain_id: contract.chain.chain_id,
        from: req.from,
        nonce,
        nonce_type: nonce_type.as_str(),
        deadline,
        traits: traits.to_string(),
        data: req.data,
        digest: digest.to_string(),
        typed_data,
        permit_typed_data,
    };
    let signatures =
        if transaction.permit_typed_data.is_some() { "TypedData and PermitTypedData" } else { "TypedData" };
    let message = format!(
        "{}. Sign {signatures} with eth_signTypedData_v4 as {} and POST From, Signature, Data, Nonce, \
             Sponsor, Deadline and NonceType{} to /api/v1/{}/meta/execute before the deadline.",
        req.summary,
        req.from,
        if transaction.permit_typed_data.is_some() { " (and Permit)" } else { "" },
        contract.name
    );
    Ok(Json(BuildResponse { message, transaction, sponsor: checksum(req.sponsor.address()), extras: req.extras }))
}

/// The answer of every build endpoint: sign `Transaction.TypedData` (and `PermitTypedData` for
/// deposits) and POST the signature to `meta/execute`. Besides `Message`, `Transaction` and
/// `Sponsor`, each endpoint adds the exact figures of what it built ([`BuildExtras`]).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct BuildResponse {
    pub message: String,
    pub transaction: MetaTransaction,
    /// The sponsor that will pay the gas (bound into the signed traits).
    pub sponsor: String,
    #[serde(flatten)]
    pub extras: BuildExtras,
}

/// The figures a build endpoint adds to its answer; each is absent (not null) where the endpoint
/// does not give it.
#[derive(Debug, Default, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct BuildExtras {
    /// payments, deposit, withdraw: the amount in token units.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    /// payments, withdraw: 18-decimal internal units; deposit: token base units.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount_raw: Option<String>,
    /// withdraw: token base units that will leave the contract.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_amount_raw: Option<String>,
    /// withdraw: the receiver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// deposit: pulled through Permit2 instead of `transferFrom`.
    #[serde(rename = "IsPermit2", skip_serializing_if = "Option::is_none")]
    pub is_permit2: Option<bool>,
    /// subscriptions (create, cancel): the author.
    #[serde(flatten)]
    pub subscription: SubscriptionFigures,
    /// batch/subscriptions: the details of each subscription.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscriptions: Option<Vec<SubscriptionFigures>>,
    /// batch/payments: each payment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payments: Option<Vec<PaymentFigures>>,
    /// batch/payments: the sum, in token units.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<String>,
    /// batch/payments: the sum in 18-decimal base units.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_raw: Option<String>,
}

/// The figures of a subscription build (create and cancel give `Author` only).
#[derive(Debug, Default, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct SubscriptionFigures {
    /// The author.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Token units per 30-day month, as requested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription_rate: Option<String>,
    /// The on-chain rate, 18-decimal base units per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_per_second: Option<String>,
    /// What the per-second rate amounts to per 30-day month.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effective_monthly_rate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
}

/// One payment of a batch/payments build.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct PaymentFigures {
    pub to: String,
    /// Token units.
    pub amount: String,
    /// 18-decimal base units.
    pub amount_raw: String,
}

/// The EIP-2612 `Permit` typed data for depositing `value` base units from `owner`.
async fn permit_document(
    contract: Contract<'_>,
    owner: Address,
    value: U256,
    deadline: u64,
    known: Option<(Domain, U256)>,
) -> Result<Value, AppError> {
    let (domain, nonce) = match known {
        Some(known) => known,
        None => permit_domain_and_nonce(contract, owner).await?,
    };
    let values = PermitValues { owner, spender: contract.address, value, nonce, deadline: U256::from(deadline) };
    Ok(eip712::permit_typed_data(&domain, &values))
}

/// The Permit2 `PermitSingle` typed data letting the deployment pull `value` base units of its
/// token from `owner` through Permit2, until `deadline`. Checks what the deposit needs besides
/// the signature: Permit2 on the chain (422 `permit2_unavailable`) and the owner's ERC-20
/// approval of Permit2 for at least `value` (422 `permit2_not_approved`).
async fn permit2_document(
    contract: Contract<'_>,
    owner: Address,
    value: U256,
    deadline: u64,
) -> Result<Value, AppError> {
    let values = permit2_values(contract, owner, value, deadline).await?;
    let approved = IErc20Allowance::new(contract.token, &contract.chain.provider)
        .allowance(owner, chain::PERMIT2)
        .call()
        .await
        .map_err(AppError::chain)?;
    if approved < value {
        return Err(AppError::new(
            ErrorCode::Permit2NotApproved,
            format!(
                "{owner} has approved Permit2 ({}) for {approved} base units of the token, less than {value}: \
                 send approve(Permit2, amount) on the token {} once, then build again",
                chain::PERMIT2,
                checksum(contract.token)
            ),
        ));
    }
    Ok(eip712::permit2_typed_data(contract.chain.chain_id, &values))
}

/// The `PermitSingle` for `value` base units from `owner` to the deployment, with the nonce
/// Permit2 expects next for (owner, token, deployment); expiration and signature deadline are
/// both `deadline`. 422 `permit2_unavailable` where Permit2 has no code, `invalid_amount` for a
/// value over uint160 or a deadline over uint48.
pub async fn permit2_values(
    contract: Contract<'_>,
    owner: Address,
    value: U256,
    deadline: u64,
) -> Result<Permit2Values, AppError> {
    if !contract.chain.has_permit2().await.map_err(AppError::chain)? {
        return Err(AppError::new(
            ErrorCode::Permit2Unavailable,
            format!("Permit2 is not deployed at {} on chain {}", chain::PERMIT2, contract.chain.chain_id),
        ));
    }
    if value.bit_len() > 160 {
        return Err(AppError::new(
            ErrorCode::AmountOutOfRange,
            format!("{value} base units do not fit Permit2's uint160"),
        ));
    }
    let amount = U160::from(value);
    if deadline >> 48 != 0 {
        return Err(AppError::new(ErrorCode::InvalidDeadline, format!("deadline {deadline} does not fit uint48")));
    }
    let expiration = U48::from(deadline);
    let current = IPermit2::new(chain::PERMIT2, &contract.chain.provider)
        .allowance(owner, contract.token, contract.address)
        .call()
        .await
        .map_err(AppError::chain)?;
    Ok(Permit2Values {
        owner,
        token: contract.token,
        amount,
        expiration,
        nonce: current.nonce,
        spender: contract.address,
        sig_deadline: U256::from(deadline),
    })
}

/// The token's EIP-712 domain and `owner`'s permit nonce. The domain comes from EIP-5267
/// `eip712Domain()` when the token has it (it is authoritative: some tokens use version "2"),
/// else from `name()` with version "1".
pub async fn permit_domain_and_nonce(contract: Contract<'_>, owner: Address) -> Result<(Domain, U256), AppError> {
    let token = IPermitToken::new(contract.token, &contract.chain.provider);
    let nonce = token.nonces(owner).call().await.map_err(|e| match e {
        // The node did not answer: not the token's fault.
        alloy::contract::Error::TransportError(e) if !matches!(e, alloy::transports::RpcError::ErrorResp(_)) => {
            AppError::chain(e)
        }
        e => AppError::new(ErrorCode::PermitUnsupported, format!("the token does not support EIP-2612 permits: {e}")),
    })?;
    // A token's EIP-712 domain does not change: read once per token, not per request.
    if let Some(domain) = contract.chain.sponsors.cached_permit_domain(contract.token) {
        return Ok((domain, nonce));
    }
    let domain = match token.eip712Domain().call().await {
        Ok(d) => Domain {
            name: d.name,
            version: d.version,
            chain_id: d.chainId.try_into().unwrap_or(contract.chain.chain_id),
            verifying_contract: d.verifyingContract,
        },
        Err(_) => Domain {
            name: token.name().call().await.map_err(AppError::chain)?,
            version: "1".into(),
            chain_id: contract.chain.chain_id,
            verifying_contract: contract.token,
        },
    };
    contract.chain.sponsors.cache_permit_domain(contract.token, domain.clone());
    Ok((domain, nonce))
}
