//! Transactions the sponsors sent, written when broadcast and updated from the receipt.

use alloy::primitives::{Address, B256, Bytes};
use anyhow::Context;
use sqlx::Row;

use super::Store;

#[derive(Debug, Clone)]
pub struct NewTransaction {
    pub chain_id: u64,
    pub contract: Address,
    pub api_key_id: i64,
    pub signer: Address,
    pub meta_nonce: u64,
    pub sponsor: Address,
    pub sponsor_nonce: u64,
    pub tx_hash: B256,
    pub calldata: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    Mined,
    Reverted,
}

impl Store {
    pub async fn record_transaction(&self, t: &NewTransaction) -> anyhow::Result<i64> {
        let row = sqlx::query(
            "INSERT INTO relay_transactions
                (chain_id, contract, api_key_id, signer, meta_nonce, sponsor, sponsor_nonce, tx_hash, calldata, status)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'submitted') RETURNING id",
        )
        .bind(t.chain_id as i64)
        .bind(t.contract.as_slice())
        .bind(t.api_key_id)
        .bind(t.signer.as_slice())
        .bind(t.meta_nonce as i64)
        .bind(t.sponsor.as_slice())
        .bind(t.sponsor_nonce as i64)
        .bind(t.tx_hash.as_slice())
        .bind(t.calldata.as_ref())
        .fetch_one(&self.pool)
        .await
        .context("Failed to record the transaction")?;
        Ok(row.get(0))
    }

    pub async fn finish_transaction(
        &self,
        id: i64,
        status: TxStatus,
        gas_used: u64,
        block_number: Option<u64>,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE relay_transactions SET status = $2, gas_used = $3, block_number = $4, updated_at = now()
             WHERE id = $1",
        )
        .bind(id)
        .bind(match status {
            TxStatus::Mined => "mined",
            TxStatus::Reverted => "reverted",
        })
        .bind(gas_used as i64)
        .bind(block_number.map(|b| b as i64))
        .execute(&self.pool)
        .await
        .context("Failed to update the transaction")?;
        Ok(())
    }
}

/// A relayed transaction as `GET /api/v1/transactions/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionRecord {
    pub id: i64,
    pub chain_id: u64,
    pub contract: Address,
    pub signer: Address,
    pub meta_nonce: u64,
    pub sponsor: Address,
    pub tx_hash: B256,
    pub status: String,
    pub gas_used: Option<u64>,
    pub block_number: Option<u64>,
}

impl Store {
    /// The transaction `id`, if the key `api_key_id` relayed it (keys never see each other's).
    pub async fn get_transaction(&self, id: i64, api_key_id: i64) -> anyhow::Result<Option<TransactionRecord>> {
        let row = sqlx::query(
            "SELECT id, chain_id, contract, signer, meta_nonce, sponsor, tx_hash, status, gas_used, block_number
             FROM relay_transactions WHERE id = $1 AND api_key_id = $2",
        )
        .bind(id)
        .bind(api_key_id)
        .fetch_optional(&self.pool)
        .await
        .context("Failed to read the transaction")?;
        Ok(row.map(|r| TransactionRecord {
            id: r.get("id"),
            chain_id: r.get::<i64, _>("chain_id") as u64,
            contract: Address::from_slice(&r.get::<Vec<u8>, _>("contract")),
            signer: Address::from_slice(&r.get::<Vec<u8>, _>("signer")),
            meta_nonce: r.get::<i64, _>("meta_nonce") as u64,
            sponsor: Address::from_slice(&r.get::<Vec<u8>, _>("sponsor")),
            tx_hash: B256::from_slice(&r.get::<Vec<u8>, _>("tx_hash")),
            status: r.get("status"),
            gas_used: r.get::<Option<i64>, _>("gas_used").map(|g| g as u64),
            block_number: r.get::<Option<i64>, _>("block_number").map(|b| b as u64),
        }))
    }
}
