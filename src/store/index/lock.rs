//! The session-level advisory lock that makes one process the writer of a deployment's index
//! ([`Scope::lock_key`]). It belongs to the connection: closing the session frees it.

use sqlx::PgConnection;

use super::Scope;

/// Takes the lock if it is free; answers whether this session now holds it.
pub async fn try_lock(conn: &mut PgConnection, scope: Scope) -> anyhow::Result<bool> {
    let got: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(scope.lock_key()).fetch_one(conn).await?;
    Ok(got)
}

/// Waits for the lock.
pub async fn lock(conn: &mut PgConnection, scope: Scope) -> anyhow::Result<()> {
    sqlx::query("SELECT pg_advisory_lock($1)").bind(scope.lock_key()).execute(conn).await?;
    Ok(())
}

/// Releases the lock held by this session.
pub async fn unlock(conn: &mut PgConnection, scope: Scope) -> anyhow::Result<()> {
    sqlx::query("SELECT pg_advisory_unlock($1)").bind(scope.lock_key()).execute(conn).await?;
    Ok(())
}
