//! The derived tables: accounts, stream lists, nonces, unique nonces, projects and per-user fees.
//! Each kind of row is loaded, deleted or inserted by one statement per batch, its values bound
//! as arrays (`UNNEST`). Every statement is checked at compile time.

use std::collections::BTreeSet;

use alloy::primitives::Address;
use anyhow::{Context, bail};
use sqlx::{Postgres, Transaction};

use crate::store::decode::u64_of;

use super::model::{AccountState, Derivation, Key, ProjectState, StreamState, Value};
use super::{Scope, address, i256, u256};

/// Loads the stored value of every key into `cache` (absent rows as `None`).
pub(super) async fn load_keys(
    tx: &mut Transaction<'_, Postgres>,
    scope: Scope,
    keys: &BTreeSet<Key>,
    cache: &mut impl Derivation,
) -> anyhow::Result<()> {
    let mut accounts = Vec::new();
    let mut subscribers = Vec::new();
    let mut nonces: (Vec<Vec<u8>>, Vec<i16>, Vec<Vec<u8>>) = Default::default();
    let mut uniques: (Vec<Vec<u8>>, Vec<String>) = Default::default();
    let mut projects = Vec::new();
    let mut fees: (Vec<i64>, Vec<Vec<u8>>) = Default::default();
    for k in keys {
        cache.insert_loaded(k.clone(), None);
        match k {
            Key::Account(a) => accounts.push(a.to_vec()),
            Key::Streams(u) => subscribers.push(u.to_vec()),
            Key::Nonce { signer, nonce_type, selector } => {
                nonces.0.push(signer.to_vec());
                nonces.1.push(*nonce_type as i16);
                nonces.2.push(selector.to_vec());
            }
            Key::UniqueNonce { signer, nonce } => {
                uniques.0.push(signer.to_vec());
                uniques.1.push(nonce.to_string());
            }
            Key::Project(p) => projects.push(*p as i64),
            Key::UserFee { project_id, author } => {
                fees.0.push(*project_id as i64);
                fees.1.push(author.to_vec());
            }
        }
    }
    let (chain, contract) = (scope.chain(), scope.addr());
    if !accounts.is_empty() {
        let rows = sqlx::query!(
            r#"SELECT account, balance::text AS "balance!", income_rate::text AS "income_rate!",
                      outgoing_rate::text AS "outgoing_rate!", updated
               FROM idx_accounts WHERE chain_id = $1 AND contract = $2 AND account = ANY($3)"#,
            chain,
            contract,
            &accounts
        )
        .fetch_all(&mut **tx)
        .await?;
        for r in rows {
            let state = AccountState {
                balance: i256(&r.balance)?,
                income_rate: u256(&r.income_rate)?,
                outgoing_rate: u256(&r.outgoing_rate)?,
                updated: u64_of(r.updated)?,
            };
            cache.insert_loaded(Key::Account(address(&r.account)?), Some(Value::Account(state)));
        }
    }
    if !subscribers.is_empty() {
        let rows = sqlx::query!(
            r#"SELECT subscriber, author, income_rate::text AS "income_rate!", outgoing_rate::text AS "outgoing_rate!",
                      project_id, since_block, since_timestamp
               FROM idx_streams WHERE chain_id = $1 AND contract = $2 AND subscriber = ANY($3)
               ORDER BY subscriber, position"#,
            chain,
            contract,
            &subscribers
        )
        .fetch_all(&mut **tx)
        .await?;
        let mut lists: std::collections::BTreeMap<Address, Vec<StreamState>> = Default::default();
        for r in rows {
            lists.entry(address(&r.subscriber)?).or_default().push(StreamState {
                author: address(&r.author)?,
                income_rate: u256(&r.income_rate)?,
                outgoing_rate: u256(&r.outgoing_rate)?,
                project_id: u64_of(r.project_id)?,
                since_block: u64_of(r.since_block)?,
                since_timestamp: u64_of(r.since_timestamp)?,
            });
        }
        for (user, list) in lists {
            cache.insert_loaded(Key::Streams(user), Some(Value::Streams(list)));
        }
    }
    if !nonces.0.is_empty() {
        let rows = sqlx::query!(
            r#"SELECT n.signer, n.nonce_type, n.selector, n.next_nonce::text AS "next_nonce!" FROM idx_nonces n
               JOIN UNNEST($3::bytea[], $4::int2[], $5::bytea[]) AS k(signer, nonce_type, selector)
               USING (signer, nonce_type, selector) WHERE n.chain_id = $1 AND n.contract = $2"#,
            chain,
            contract,
            &nonces.0,
            &nonces.1,
            &nonces.2
        )
        .fetch_all(&mut **tx)
        .await?;
        for r in rows {
            let key = Key::Nonce {
                signer: address(&r.signer)?,
                nonce_type: r.nonce_type as u8,
                selector: r.selector.as_slice().try_into().context("bad selector")?,
            };
            cache.insert_loaded(key, Some(Value::Nonce(u256(&r.next_nonce)?)));
        }
    }
    if !uniques.0.is_empty() {
        let rows = sqlx::query!(
            r#"SELECT n.signer, n.nonce::text AS "nonce!" FROM idx_unique_nonces n
               JOIN UNNEST($3::bytea[], $4::text[]::numeric[]) AS k(signer, nonce) USING (signer, nonce)
               WHERE n.chain_id = $1 AND n.contract = $2"#,
            chain,
            contract,
            &uniques.0,
            &uniques.1
        )
        .fetch_all(&mut **tx)
        .await?;
        for r in rows {
            let key = Key::UniqueNonce { signer: address(&r.signer)?, nonce: u256(&r.nonce)? };
            cache.insert_loaded(key, Some(Value::UniqueNonce));
        }
    }
    if !projects.is_empty() {
        let rows = sqlx::query!(
            "SELECT project_id, owner, default_fee, claimed_block FROM idx_projects
             WHERE chain_id = $1 AND contract = $2 AND project_id = ANY($3)",
            chain,
            contract,
            &projects
        )
        .fetch_all(&mut **tx)
        .await?;
        for r in rows {
            let p = ProjectState {
                owner: address(&r.owner)?,
                default_fee: u16::try_from(r.default_fee).context("fee out of range")?,
                claimed_block: u64_of(r.claimed_block)?,
            };
            cache.insert_loaded(Key::Project(u64_of(r.project_id)?), Some(Value::Project(p)));
        }
    }
    if !fees.0.is_empty() {
        let rows = sqlx::query!(
            "SELECT f.project_id, f.author, f.fee FROM idx_project_user_fees f
             JOIN UNNEST($3::int8[], $4::bytea[]) AS k(project_id, author) USING (project_id, author)
             WHERE f.chain_id = $1 AND f.contract = $2",
            chain,
            contract,
            &fees.0,
            &fees.1
        )
        .fetch_all(&mut **tx)
        .await?;
        for r in rows {
            let key = Key::UserFee { project_id: u64_of(r.project_id)?, author: address(&r.author)? };
            cache.insert_loaded(key, Some(Value::UserFee(u16::try_from(r.fee).context("fee out of range")?)));
        }
    }
    Ok(())
}

/// Sets each key's row to the given value: deletes the keys' rows, then inserts the values
/// present. Used both for forward writes and for restoring undo entries.
// One vector per column, bound as arrays for UNNEST.
#[allow(clippy::type_complexity)]
pub(super) async fn write_values(
    tx: &mut Transaction<'_, Postgres>,
    scope: Scope,
    values: &[(Key, Option<Value>)],
) -> anyhow::Result<()> {
    let (chain, contract) = (scope.chain(), scope.addr());

    // accounts: upsert the present ones, delete the absent ones (only after a rollback)
    let mut acc: (Vec<Vec<u8>>, Vec<String>, Vec<String>, Vec<String>, Vec<i64>) = Default::default();
    let mut acc_gone = Vec::new();
    let mut subs = Vec::new();
    let mut streams: (
        Vec<Vec<u8>>,
        Vec<Vec<u8>>,
        Vec<i32>,
        Vec<String>,
        Vec<String>,
        Vec<i64>,
        Vec<String>,
        Vec<i64>,
        Vec<i64>,
    ) = Default::default();
    let mut nonce_keys: (Vec<Vec<u8>>, Vec<i16>, Vec<Vec<u8>>, Vec<Option<String>>) = Default::default();
    let mut unique_keys: (Vec<Vec<u8>>, Vec<String>, Vec<bool>) = Default::default();
    let mut project_keys: (Vec<i64>, Vec<Option<Vec<u8>>>, Vec<i32>, Vec<i64>) = Default::default();
    let mut fee_keys: (Vec<i64>, Vec<Vec<u8>>, Vec<Option<i32>>) = Default::default();

    for (key, value) in values {
        match (key, value) {
            (Key::Account(a), Some(Value::Account(s))) => {
                acc.0.push(a.to_vec());
                acc.1.push(s.balance.to_string());
                acc.2.push(s.income_rate.to_string());
                acc.3.push(s.outgoing_rate.to_string());
                acc.4.push(s.updated as i64);
            }
            (Key::Account(a), None) => acc_gone.push(a.to_vec()),
            (Key::Streams(u), v) => {
                subs.push(u.to_vec());
                if let Some(Value::Streams(list)) = v {
                    for (i, s) in list.iter().enumerate() {
                        streams.0.push(u.to_vec());
                        streams.1.push(s.author.to_vec());
                        streams.2.push(i as i32);
                        streams.3.push(s.income_rate.to_string());
                        streams.4.push(s.outgoing_rate.to_string());
                        streams.5.push(s.project_id as i64);
                        streams.6.push(s.encoded().to_string());
                        streams.7.push(s.since_block as i64);
                        streams.8.push(s.since_timestamp as i64);
                    }
                }
            }
            (Key::Nonce { signer, nonce_type, selector }, v) => {
                nonce_keys.0.push(signer.to_vec());
                nonce_keys.1.push(*nonce_type as i16);
                nonce_keys.2.push(selector.to_vec());
                nonce_keys.3.push(match v {
                    Some(Value::Nonce(n)) => Some(n.to_string()),
                    _ => None,
                });
            }
            (Key::UniqueNonce { signer, nonce }, v) => {
                unique_keys.0.push(signer.to_vec());
                unique_keys.1.push(nonce.to_string());
                unique_keys.2.push(v.is_some());
            }
            (Key::Project(p), v) => {
                project_keys.0.push(*p as i64);
                match v {
                    Some(Value::Project(s)) => {
                        project_keys.1.push(Some(s.owner.to_vec()));
                        project_keys.2.push(s.default_fee as i32);
                        project_keys.3.push(s.claimed_block as i64);
                    }
                    _ => {
                        project_keys.1.push(None);
                        project_keys.2.push(0);
                        project_keys.3.push(0);
                    }
                }
            }
            (Key::UserFee { project_id, author }, v) => {
                fee_keys.0.push(*project_id as i64);
                fee_keys.1.push(author.to_vec());
                fee_keys.2.push(match v {
                    Some(Value::UserFee(f)) => Some(*f as i32),
                    _ => None,
                });
            }
            (k, v) => bail!("value {v:?} does not fit key {k:?}"),
        }
    }

    if !acc.0.is_empty() {
        sqlx::query!(
            "INSERT INTO idx_accounts (chain_id, contract, account, balance, income_rate, outgoing_rate, updated)
             SELECT $1, $2, * FROM UNNEST($3::bytea[], $4::text[]::numeric[], $5::text[]::numeric[],
             $6::text[]::numeric[], $7::int8[])
             ON CONFLICT (chain_id, contract, account) DO UPDATE SET balance = EXCLUDED.balance,
             income_rate = EXCLUDED.income_rate, outgoing_rate = EXCLUDED.outgoing_rate, updated = EXCLUDED.updated",
            chain,
            contract,
            &acc.0,
            &acc.1,
            &acc.2,
            &acc.3,
            &acc.4
        )
        .execute(&mut **tx)
        .await?;
    }
    if !acc_gone.is_empty() {
        sqlx::query!(
            "DELETE FROM idx_accounts WHERE chain_id = $1 AND contract = $2 AND account = ANY($3)",
            chain,
            contract,
            &acc_gone
        )
        .execute(&mut **tx)
        .await?;
    }
    if !subs.is_empty() {
        sqlx::query!(
            "DELETE FROM idx_streams WHERE chain_id = $1 AND contract = $2 AND subscriber = ANY($3)",
            chain,
            contract,
            &subs
        )
        .execute(&mut **tx)
        .await?;
    }
    if !streams.0.is_empty() {
        sqlx::query!(
            "INSERT INTO idx_streams (chain_id, contract, subscriber, author, position, income_rate, outgoing_rate,
             project_id, encoded_rates, since_block, since_timestamp)
             SELECT $1, $2, * FROM UNNEST($3::bytea[], $4::bytea[], $5::int4[], $6::text[]::numeric[],
             $7::text[]::numeric[], $8::int8[], $9::text[]::numeric[], $10::int8[], $11::int8[])",
            chain,
            contract,
            &streams.0,
            &streams.1,
            &streams.2,
            &streams.3,
            &streams.4,
            &streams.5,
            &streams.6,
            &streams.7,
            &streams.8
        )
        .execute(&mut **tx)
        .await?;
    }
    // Nonces and unique nonces: one statement each, the absent keys deleted and the present ones
    // written (the two sets are disjoint, so neither part sees the other's rows).
    if !nonce_keys.0.is_empty() {
        sqlx::query!(
            "WITH k AS MATERIALIZED (
                 SELECT * FROM UNNEST($3::bytea[], $4::int2[], $5::bytea[], $6::text[])
                 AS k(signer, nonce_type, selector, next)),
             gone AS (
                 DELETE FROM idx_nonces n USING k
                 WHERE k.next IS NULL AND n.chain_id = $1 AND n.contract = $2 AND n.signer = k.signer
                   AND n.nonce_type = k.nonce_type AND n.selector = k.selector)
             INSERT INTO idx_nonces (chain_id, contract, signer, nonce_type, selector, next_nonce)
             SELECT $1, $2, k.signer, k.nonce_type, k.selector, k.next::numeric FROM k WHERE k.next IS NOT NULL
             ON CONFLICT (chain_id, contract, signer, nonce_type, selector)
             DO UPDATE SET next_nonce = EXCLUDED.next_nonce",
            chain,
            contract,
            &nonce_keys.0,
            &nonce_keys.1,
            &nonce_keys.2,
            &nonce_keys.3 as &[Option<String>]
        )
        .execute(&mut **tx)
        .await?;
    }
    if !unique_keys.0.is_empty() {
        sqlx::query!(
            "WITH k AS MATERIALIZED (
                 SELECT * FROM UNNEST($3::bytea[], $4::text[]::numeric[], $5::bool[]) AS k(signer, nonce, present)),
             gone AS (
                 DELETE FROM idx_unique_nonces n USING k
                 WHERE NOT k.present AND n.chain_id = $1 AND n.contract = $2 AND n.signer = k.signer
                   AND n.nonce = k.nonce)
             INSERT INTO idx_unique_nonces (chain_id, contract, signer, nonce)
             SELECT $1, $2, k.signer, k.nonce FROM k WHERE k.present
             ON CONFLICT (chain_id, contract, signer, nonce) DO NOTHING",
            chain,
            contract,
            &unique_keys.0,
            &unique_keys.1,
            &unique_keys.2
        )
        .execute(&mut **tx)
        .await?;
    }
    if !project_keys.0.is_empty() {
        sqlx::query!(
            "DELETE FROM idx_projects WHERE chain_id = $1 AND contract = $2 AND project_id = ANY($3)",
            chain,
            contract,
            &project_keys.0
        )
        .execute(&mut **tx)
        .await?;
        sqlx::query!(
            "INSERT INTO idx_projects (chain_id, contract, project_id, owner, default_fee, claimed_block)
             SELECT $1, $2, * FROM UNNEST($3::int8[], $4::bytea[], $5::int4[], $6::int8[]) AS k(p, o, f, b)
             WHERE k.o IS NOT NULL",
            chain,
            contract,
            &project_keys.0,
            &project_keys.1 as &[Option<Vec<u8>>],
            &project_keys.2,
            &project_keys.3
        )
        .execute(&mut **tx)
        .await?;
    }
    if !fee_keys.0.is_empty() {
        sqlx::query!(
            "DELETE FROM idx_project_user_fees f USING UNNEST($3::int8[], $4::bytea[]) AS k(project_id, author)
             WHERE f.chain_id = $1 AND f.contract = $2 AND f.project_id = k.project_id AND f.author = k.author",
            chain,
            contract,
            &fee_keys.0,
            &fee_keys.1
        )
        .execute(&mut **tx)
        .await?;
        sqlx::query!(
            "INSERT INTO idx_project_user_fees (chain_id, contract, project_id, author, fee)
             SELECT $1, $2, * FROM UNNEST($3::int8[], $4::bytea[], $5::int4[]) AS k(p, a, f) WHERE k.f IS NOT NULL",
            chain,
            contract,
            &fee_keys.0,
            &fee_keys.1,
            &fee_keys.2 as &[Option<i32>]
        )
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
