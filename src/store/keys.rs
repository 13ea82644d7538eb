//! API keys. The key is `sp_<env>_<64 hex chars>`; only its SHA-256 is stored, so a database
//! leak does not leak usable keys. SHA-256 (not a slow password hash) is right here: the key
//! has 256 bits of entropy, and every request must look it up.

use alloy::primitives::Address;
use anyhow::Context;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::Store;

/// A freshly created key: `key` is shown once and never stored.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: i64,
    pub key: String,
}

/// A key as the API sees it after authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: i64,
    pub name: String,
    /// Sponsors this key may spend gas from, the default first.
    pub sponsors: Vec<Address>,
}

pub fn hash_api_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl Store {
    /// Creates a key tied to `sponsors` (in order; the first is the default).
    pub async fn create_api_key(&self, name: &str, sponsors: &[Address], test: bool) -> anyhow::Result<NewApiKey> {
        anyhow::ensure!(!sponsors.is_empty(), "an API key needs at least one sponsor");
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let key = format!("sp_{}_{}", if test { "test" } else { "live" }, alloy::hex::encode(secret));
        let prefix: String = key.chars().take(16).collect();

        let mut tx = self.pool.begin().await.context("Failed to begin a transaction")?;
        let id: i64 = sqlx::query("INSERT INTO api_keys (name, key_hash, key_prefix) VALUES ($1, $2, $3) RETURNING id")
            .bind(name)
            .bind(&hash_api_key(&key)[..])
            .bind(&prefix)
            .fetch_one(&mut *tx)
            .await
            .context("Failed to insert the API key")?
            .get(0);
        for (position, sponsor) in sponsors.iter().enumerate() {
            sqlx::query(
                "INSERT INTO api_key_sponsors (api_key_id, sponsor, position) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(sponsor.as_slice())
            .bind(position as i32)
            .execute(&mut *tx)
            .await
            .context("Failed to tie the API key to its sponsors")?;
        }
        tx.commit().await.context("Failed to commit the API key")?;
        Ok(NewApiKey { id, key })
    }

    /// Looks a presented key up by its hash; `None` for unknown or revoked keys.
    pub async fn find_api_key(&self, key: &str) -> anyhow::Result<Option<ApiKeyRecord>> {
        let row = sqlx::query("SELECT id, name FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL")
            .bind(&hash_api_key(key)[..])
            .fetch_optional(&self.pool)
            .await
            .context("Failed to look up the API key")?;
        let Some(row) = row else { return Ok(None) };
        let id: i64 = row.get("id");
        let sponsors = sqlx::query("SELECT sponsor FROM api_key_sponsors WHERE api_key_id = $1 ORDER BY position")
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .context("Failed to load the API key's sponsors")?
            .into_iter()
            .map(|r| Address::from_slice(r.get::<Vec<u8>, _>("sponsor").as_slice()))
            .collect();
        Ok(Some(ApiKeyRecord { id, name: row.get("name"), sponsors }))
    }

    /// Revokes a key by id; returns whether it existed and was active.
    pub async fn revoke_api_key(&self, id: i64) -> anyhow::Result<bool> {
        let done = sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .execute(&self.pool)
            .await
            .context("Failed to revoke the API key")?;
        Ok(done.rows_affected() == 1)
    }
}
