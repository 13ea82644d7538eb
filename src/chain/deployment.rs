//! [`Deployment`]: one StreamPay contract the relayer serves, as the deployments file lists it.

use alloy::primitives::Address;
use serde::Deserialize;

/// One StreamPay deployment; `name` is the `{contract}` path segment of the API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub name: String,
    pub address: Address,
    pub token: Address,
    pub token_decimals: u8,
    /// The block the deployment was created in: its index starts there.
    #[serde(default)]
    pub start_block: u64,
}
