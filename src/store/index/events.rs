//! `idx_events`: COPY (the fast path) and the deduplicating insert (when a COPY met an
//! already-stored log). Every statement is checked at compile time except the COPYs, which
//! sqlx's macros cannot express (`COPY ... FROM STDIN` is a protocol exchange, not a query).

use std::fmt::Write as _;

use sqlx::{Connection, PgConnection, PgPool, Postgres, Transaction};

use super::Scope;
use super::model::IndexedEvent;

fn hex_bytea(out: &mut String, bytes: &[u8]) {
    out.push_str("\\\\x");
    // Table-driven (SIMD where available) instead of `write!("{:02x}")` per byte: this runs for
    // four columns of every event in a backfill.
    let mut buf = [0u8; 64];
    for chunk in bytes.chunks(32) {
        let n = chunk.len() * 2;
        alloy::hex::encode_to_slice(chunk, &mut buf[..n]).expect("buffer is twice the chunk");
        out.push_str(std::str::from_utf8(&buf[..n]).expect("hex is ASCII"));
    }
}

/// The COPY text of `events`, one line per row of `idx_events`. Public for the benchmark's
/// plain-COPY baseline, which must insert exactly the same rows.
pub fn copy_text(scope: Scope, events: &[IndexedEvent]) -> String {
    let mut out = String::with_capacity(events.len() * 400);
    let mut contract = String::new();
    hex_bytea(&mut contract, scope.addr());
    for e in events {
        let c = e.event.columns();
        let _ = write!(out, "{}\t{}\t{}\t", scope.chain_id, contract, e.block_number);
        hex_bytea(&mut out, e.block_hash.as_slice());
        let _ = write!(out, "\t{}\t", e.block_timestamp);
        hex_bytea(&mut out, e.tx_hash.as_slice());
        let _ = write!(out, "\t{}\t{}\t{}\t", e.tx_index, e.log_index, c.kind);
        for a in [c.a1, c.a2] {
            match a {
                Some(a) => hex_bytea(&mut out, a.as_slice()),
                None => out.push_str("\\N"),
            }
            out.push('\t');
        }
        for v in [c.v1, c.v2] {
            match v {
                Some(v) => {
                    let _ = write!(out, "{v}");
                }
                None => out.push_str("\\N"),
            }
            out.push('\t');
        }
        match c.selector {
            Some(s) => hex_bytea(&mut out, &s),
            None => out.push_str("\\N"),
        }
        out.push('\n');
    }
    out
}

/// The columns of `idx_events` in [`copy_text`]'s order. The COPY statements use it; the
/// deduplicating insert (a checked statement, hence a literal) writes the same list out.
pub const EVENT_COLUMNS: &str = "chain_id, contract, block_number, block_hash, block_timestamp, tx_hash, tx_index, \
                                 log_index, kind, a1, a2, v1, v2, selector";

/// Streams rows into `idx_events` with COPY: the fast path.
pub async fn copy_events(conn: &mut PgConnection, scope: Scope, events: &[IndexedEvent]) -> anyhow::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    copy_raw(conn, copy_text(scope, events).into_bytes()).await
}

pub(super) async fn copy_raw(conn: &mut PgConnection, text: Vec<u8>) -> anyhow::Result<()> {
    if text.is_empty() {
        return Ok(());
    }
    let mut copy = conn.copy_in_raw(&format!("COPY idx_events ({EVENT_COLUMNS}) FROM STDIN")).await?;
    copy.send(text).await?;
    copy.finish().await?;
    Ok(())
}

/// Multi-row insert that skips logs already stored; returns the events actually inserted.
// One vector per column, bound as arrays for UNNEST.
#[allow(clippy::type_complexity)]
pub(super) async fn insert_events_dedup(
    tx: &mut Transaction<'_, Postgres>,
    scope: Scope,
    events: &[IndexedEvent],
) -> anyhow::Result<Vec<IndexedEvent>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut cols: (Vec<i64>, Vec<Vec<u8>>, Vec<i64>, Vec<Vec<u8>>, Vec<i32>, Vec<i32>, Vec<i16>) = Default::default();
    let mut more: (
        Vec<Option<Vec<u8>>>,
        Vec<Option<Vec<u8>>>,
        Vec<Option<String>>,
        Vec<Option<String>>,
        Vec<Option<Vec<u8>>>,
    ) = Default::default();
    for e in events {
        let c = e.event.columns();
        cols.0.push(e.block_number as i64);
        cols.1.push(e.block_hash.to_vec());
        cols.2.push(e.block_timestamp as i64);
        cols.3.push(e.tx_hash.to_vec());
        cols.4.push(e.tx_index as i32);
        cols.5.push(e.log_index as i32);
        cols.6.push(c.kind);
        more.0.push(c.a1.map(|a| a.to_vec()));
        more.1.push(c.a2.map(|a| a.to_vec()));
        more.2.push(c.v1.map(|v| v.to_string()));
        more.3.push(c.v2.map(|v| v.to_string()));
        more.4.push(c.selector.map(|s| s.to_vec()));
    }
    // The column list is EVENT_COLUMNS, written out: a checked statement is a literal.
    let rows = sqlx::query!(
        "INSERT INTO idx_events (chain_id, contract, block_number, block_hash, block_timestamp, tx_hash, tx_index,
                                 log_index, kind, a1, a2, v1, v2, selector)
         SELECT $1, $2, * FROM UNNEST($3::int8[], $4::bytea[], $5::int8[], $6::bytea[], $7::int4[], $8::int4[],
         $9::int2[], $10::bytea[], $11::bytea[], $12::text[]::numeric[], $13::text[]::numeric[], $14::bytea[])
         ON CONFLICT (chain_id, block_hash, log_index) DO NOTHING RETURNING block_hash, log_index",
        scope.chain(),
        scope.addr(),
        &cols.0,
        &cols.1,
        &cols.2,
        &cols.3,
        &cols.4,
        &cols.5,
        &cols.6,
        &more.0 as &[Option<Vec<u8>>],
        &more.1 as &[Option<Vec<u8>>],
        &more.2 as &[Option<String>],
        &more.3 as &[Option<String>],
        &more.4 as &[Option<Vec<u8>>]
    )
    .fetch_all(&mut **tx)
    .await?;
    let inserted: std::collections::HashSet<(Vec<u8>, i32)> =
        rows.into_iter().map(|r| (r.block_hash, r.log_index)).collect();
    Ok(events.iter().filter(|e| inserted.contains(&(e.block_hash.to_vec(), e.log_index as i32))).cloned().collect())
}

/// COPY of ready-made [`copy_text`] in a transaction of its own, committed; answers the rows
/// copied. The benchmark's plain-COPY baseline.
pub async fn copy_committed(pool: &PgPool, text: String) -> anyhow::Result<u64> {
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    let mut copy = tx.copy_in_raw(&format!("COPY idx_events ({EVENT_COLUMNS}) FROM STDIN")).await?;
    copy.send(text.into_bytes()).await?;
    let copied = copy.finish().await?;
    tx.commit().await?;
    Ok(copied)
}

/// Rows in `idx_events`, every deployment together.
pub async fn count_all(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM idx_events"#).fetch_one(pool).await?)
}

#[cfg(test)]
mod tests {
    use super::EVENT_COLUMNS;

    // The deduplicating insert writes EVENT_COLUMNS out (a checked statement is a literal): both
    // must list the same columns in the same order, or the insert and the COPY store different rows.
    #[test]
    fn the_deduplicating_insert_lists_the_copy_columns() {
        let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        let source = words(include_str!("events.rs"));
        let insert = format!("INSERT INTO idx_events ({})", words(EVENT_COLUMNS));
        assert!(source.contains(&insert), "the insert's column list differs from EVENT_COLUMNS");
    }
}
