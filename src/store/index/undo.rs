//! The undo journal (`idx_undo`): for each key and batch, the value before the batch changed it.
//! Every statement is checked at compile time.

use sqlx::{Postgres, Transaction};

use super::Scope;
use super::model::UndoEntry;

pub(super) async fn write_undo(
    tx: &mut Transaction<'_, Postgres>,
    scope: Scope,
    journal: &[UndoEntry],
    batch_to: u64,
) -> anyhow::Result<()> {
    if journal.is_empty() {
        return Ok(());
    }
    // The journal crosses as JSON text (cast to jsonb in SQL), as sqlx would have encoded it.
    let mut blocks = Vec::with_capacity(journal.len());
    let mut keys = Vec::with_capacity(journal.len());
    let mut prevs = Vec::with_capacity(journal.len());
    for e in journal {
        blocks.push(e.block as i64);
        keys.push(serde_json::to_value(&e.key)?.to_string());
        prevs.push(e.prev.as_ref().map(serde_json::to_value).transpose()?.map(|v| v.to_string()));
    }
    sqlx::query!(
        "INSERT INTO idx_undo (chain_id, contract, block_number, key, prev, batch_to)
         SELECT $1, $2, *, $6 FROM UNNEST($3::int8[], $4::text[]::jsonb[], $5::text[]::jsonb[])",
        scope.chain(),
        scope.addr(),
        &blocks,
        &keys,
        &prevs as &[Option<String>],
        batch_to as i64
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------- derived state
