//! The shapes of request values as the OpenAPI document states them: each type here is a named
//! schema (`#/components/schemas/Address`, ...) that request fields and parameters point at with
//! `value_type`. They carry no data; the handlers parse the raw strings (`api::extract`,
//! `crate::amount`) and refuse exactly what these patterns and ranges do not admit with a 400.
//! A value that matches its schema and is still refused (a wrong EIP-55 checksum, an amount of
//! zero, a call the contract does not allow, ...) is a 422: a schema cannot say it.

use utoipa::{
    PartialSchema, ToSchema,
    openapi::{KnownFormat, ObjectBuilder, OneOfBuilder, RefOr, Schema, SchemaFormat, Type},
};

/// A string schema with a pattern, a description and an example.
fn string(pattern: &str, description: &str, example: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .description(Some(description))
        .examples([serde_json::Value::from(example)])
        .into()
}

/// `int` as a JSON integer from 0 to `max`, or the same as a decimal string of at most `digits`
/// digits (the handlers take both).
fn uint(max: u64, digits: usize, description: &str) -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)).maximum(Some(max)))
        .item(ObjectBuilder::new().schema_type(Type::String).pattern(Some(format!("^[0-9]{{1,{digits}}}$"))))
        .description(Some(description))
        .into()
}

macro_rules! named_schema {
    ($($(#[$doc:meta])* $name:ident => $schema:expr;)*) => {
        $(
            $(#[$doc])*
            pub struct $name;
            impl PartialSchema for $name {
                fn schema() -> RefOr<Schema> {
                    $schema
                }
            }
            impl ToSchema for $name {}
        )*
    };
}

/// The JSON-schema pattern of [`Address`]: `0x` (or `0X`) and 40 hex digits.
pub const ADDRESS_PATTERN: &str = "^0[xX][0-9a-fA-F]{40}$";
/// The pattern of [`Amount`]: `crate::amount`'s grammar.
pub const AMOUNT_PATTERN: &str = "^[0-9]+(\\.[0-9]+)?$";
/// The pattern of `Reference` (body and header): 1 to 255 characters, no control character, not
/// only white space.
pub const REFERENCE_PATTERN: &str = "^(?=.*\\S)[^\\x00-\\x1f\\x7f-\\x9f]{1,255}$";
/// The pattern of `Idempotency-Key`: 1 to 255 visible ASCII characters.
pub const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]{1,255}$";

named_schema! {
    /// An account or contract address.
    Address => string(
        ADDRESS_PATTERN,
        "A 20-byte address: `0x` and 40 hex digits, in lower case, upper case or EIP-55 mixed case. \
         Mixed case with a wrong checksum is refused (422 `address_refused`), as is the zero \
         address where money would be sent.",
        "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    );
    /// An optional address field: empty means the default.
    OptionalAddress => string(
        "^(0[xX][0-9a-fA-F]{40})?$",
        "An address as in `Address`, or empty for the default (the API key's least busy sponsor).",
        "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
    );
    /// A decimal amount.
    Amount => string(
        AMOUNT_PATTERN,
        "An exact decimal amount in token units (`12.5`; no sign, exponent or separators). Zero, \
         more decimals than the token has, or a value too large for the contract is refused (422 \
         `amount_out_of_range`).",
        "12.5",
    );
    /// Hex bytes.
    HexBytes => string(
        "^0x([0-9a-fA-F]{2})*$",
        "Bytes as `0x` and an even number of hex digits.",
        "0x",
    );
    /// A signature.
    Signature => string(
        "^0x([0-9a-fA-F]{2})+$",
        "A signature as `0x` and hex: 65 bytes (r, s, v) from an EOA, or the bytes an ERC-1271 \
         wallet checks.",
        "0x1b",
    );
    /// An EIP-2612 or Permit2 permit signature.
    EcdsaSignature => string(
        "^0x[0-9a-fA-F]{130}$",
        "A 65-byte ECDSA signature (r, s, v) as `0x` and 130 hex digits.",
        "0x",
    );
    /// The nonce space of a signed call.
    NonceType => ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["unique", "account"]))
        .description(Some(
            "`unique` (the default: an unordered nonce the relayer draws, blocks nothing) or `account` \
             (the signer's ordered nonce).",
        ))
        .into();
    /// A user operation.
    Operation => ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["deposit", "withdraw", "pay", "subscribe", "unsubscribe"]))
        .description(Some("A user operation the relayer builds."))
        .into();
    /// An unsigned 64-bit integer.
    Uint64 => uint(
        u64::MAX,
        19,
        "A non-negative integer: a JSON number below 2^64, or a decimal string of 1 to 19 digits.",
    );
    /// A signed call's deadline.
    Deadline => uint(
        (1 << 40) - 1,
        12,
        "Unix seconds (JSON number or decimal string) that fit the 40-bit traits field; a deadline in \
         the past is refused (422 `deadline_expired`).",
    );
    /// A token amount in base units, as a permit signs it.
    Uint256Value => OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)).maximum(Some(u64::MAX)))
        .item(ObjectBuilder::new().schema_type(Type::String).pattern(Some("^[0-9]{1,77}$")))
        .description(Some("Token base units: a JSON integer below 2^64, or a decimal string below 2^256."))
        .into();
    /// A bySig traits word.
    Traits => string(
        "^[0-9]{0,77}$",
        "The exact bySig traits word (a uint256) as a decimal string; empty or absent: rebuilt from Nonce, \
         Deadline, NonceType and the sponsor.",
        "0",
    );
    /// A project id.
    ProjectId => string(
        "^[0-9]{0,77}$",
        "A non-negative integer below 2^256 as a decimal string; empty or absent means 0.",
        "0",
    );
    /// A time filter.
    OptionalTime => OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::String).format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))))
        .item(ObjectBuilder::new().schema_type(Type::String).max_length(Some(0)))
        .description(Some(
            "An RFC 3339 time (`2026-11-21T07:30:00Z`, any offset up to ±23:59); empty means no bound.",
        ))
        .into();
    /// A label stored with a transaction.
    Reference => string(
        REFERENCE_PATTERN,
        "A label of 1 to 255 characters without control characters, stored with the transaction.",
        "order-1234",
    );
}
