//! The session-level advisory lock that makes one process the writer of a deployment's index
//! ([`Scope::lock_key`]). It belongs to the connection: closing the session frees it.
//! (Compile-time checked.)

use sqlx::PgConnection;

use super::Scope;

/// Takes the lock if it is free; answers whether this session now holds it.
pub async fn try_lock(conn: &mut PgConnection, scope: Scope) -> anyhow::Result<bool> {
    Ok(sqlx::query_scalar!(r#"SELECT pg_try_advisory_lock($1) AS "locked!""#, scope.lock_key()).fetch_one(conn).await?)
}

/// Waits for the lock.
pub async fn lock(conn: &mut PgConnection, scope: Scope) -> anyhow::Result<()> {
    // pg_advisory_lock returns void, which has no Rust type: called in FROM, it yields one row.
    sqlx::query_scalar!(r#"SELECT true AS "locked!" FROM pg_advisory_lock($1)"#, scope.lock_key())
        .fetch_one(conn)
        .await?;
    Ok(())
}

/// Releases the lock held by this session.
pub async fn unlock(conn: &mut PgConnection, scope: Scope) -> anyhow::Result<()> {
    sqlx::query_scalar!(r#"SELECT pg_advisory_unlock($1) AS "unlocked!""#, scope.lock_key()).fetch_one(conn).await?;
    Ok(())
}
