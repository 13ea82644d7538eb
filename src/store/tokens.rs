//! Client tokens (docs/keys.md): short-lived credentials a secret key mints for one end user, so
//! a web page never holds the key. A token is `ct_<64 hex chars>`; only its SHA-256 is stored,
//! with the key that minted it, the one signer it is bound to, its operations and its expiry
//! (at most 600 seconds, held by the table's check). It works only while its key does. Every
//! statement is checked at compile time.

use std::time::Duration;

use alloy::primitives::Address;
use anyhow::Context;
use rand::RngCore;

use super::{KeyLookup, Store, TokenGrant, decode::address, hash_api_key};

/// A freshly minted token: `token` is shown once and never stored.
#[derive(Debug, Clone)]
pub struct NewClientToken {
    pub token: String,
    pub grant: TokenGrant,
}

/// What a presented token is (a short-lived value: its size does not matter).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenLookup {
    /// A live token; `key` is how its key looks now (the token is usable only if `Active`).
    Found {
        key: KeyLookup,
        grant: TokenGrant,
    },
    Unknown,
    Expired,
}

impl Store {
    /// Mints a token of key `api_key_id` for `signer`, valid `ttl` (1 to 600 s).
    pub async fn create_client_token(
        &self,
        api_key_id: i64,
        signer: Address,
        operations: &[&str],
        ttl: Duration,
    ) -> anyhow::Result<NewClientToken> {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let token = format!("ct_{}", alloy::hex::encode(secret));
        let operations: Vec<String> = operations.iter().map(|o| o.to_string()).collect();
        // `expires_at` as RFC 3339, UTC, whole seconds.
        let row = sqlx::query!(
            r#"INSERT INTO client_tokens AS t (token_hash, api_key_id, signer, operations, expires_at)
             VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
             RETURNING id, rfc3339_utc(t.expires_at, 0) AS "expires_at!",
                       ceil(extract(epoch FROM t.expires_at - now()))::bigint AS "secs_left!""#,
            &hash_api_key(&token)[..],
            api_key_id,
            signer.as_slice(),
            &operations,
            ttl.as_secs_f64(),
        )
        .fetch_one(&self.pool)
        .await
        .context("Failed to store the client token")?;
        let grant = TokenGrant {
            token_id: row.id,
            signer,
            operations,
            expires_at: row.expires_at,
            expires_in: row.secs_left.max(0) as u64,
        };
        Ok(NewClientToken { token, grant })
    }

    /// Looks a presented token up by its hash, with its key as it is now.
    pub async fn lookup_client_token(&self, token: &str) -> anyhow::Result<TokenLookup> {
        // `expires_at` as RFC 3339, UTC, whole seconds.
        let row = sqlx::query!(
            r#"SELECT t.id, t.signer, t.operations, k.key_hash, rfc3339_utc(t.expires_at, 0) AS "expires_at!",
                    t.expires_at <= now() AS "expired!",
                    floor(extract(epoch FROM t.expires_at - now()))::bigint AS "secs_left!"
             FROM client_tokens t JOIN api_keys k ON k.id = t.api_key_id WHERE t.token_hash = $1"#,
            &hash_api_key(token)[..],
        )
        .fetch_optional(&self.pool)
        .await
        .context("Failed to look up the client token")?;
        let Some(row) = row else { return Ok(TokenLookup::Unknown) };
        if row.expired {
            return Ok(TokenLookup::Expired);
        }
        let key_hash: [u8; 32] = row.key_hash.try_into().map_err(|_| anyhow::anyhow!("corrupt key hash"))?;
        let key = self.lookup_api_key_hash(&key_hash).await?.0;
        let grant = TokenGrant {
            token_id: row.id,
            signer: address(&row.signer)?,
            operations: row.operations,
            expires_at: row.expires_at,
            expires_in: row.secs_left.max(0) as u64,
        };
        Ok(TokenLookup::Found { key, grant })
    }

    /// Deletes tokens expired for longer than `retention`; the number deleted.
    pub async fn prune_client_tokens(&self, retention: Duration) -> anyhow::Result<u64> {
        let done = sqlx::query!(
            "DELETE FROM client_tokens WHERE expires_at < now() - make_interval(secs => $1)",
            retention.as_secs_f64(),
        )
        .execute(&self.pool)
        .await
        .context("Failed to prune client tokens")?;
        Ok(done.rows_affected())
    }

    /// Every web origin some usable key lists, for answering CORS preflights (which carry no
    /// credentials).
    pub async fn key_origins(&self) -> anyhow::Result<Vec<String>> {
        let origins = sqlx::query_scalar!(
            r#"SELECT DISTINCT o AS "o!" FROM api_keys, unnest(allowed_origins) AS o
             WHERE deleted_at IS NULL AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())"#,
        )
        .fetch_all(&self.pool)
        .await
        .context("Failed to list the keys' web origins")?;
        Ok(origins)
    }
}
