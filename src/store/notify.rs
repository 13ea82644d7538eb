//! In-memory caches kept exact by Postgres `NOTIFY`: every writer notifies a channel in the
//! transaction that changes the cached rows, and each process's listener clears its cache when
//! the notification arrives. While the listener is not connected (start-up, a lost connection)
//! the cache reports itself unhealthy and callers go to the database, so a missed notification
//! can never leave a stale answer in place.

use std::{sync::Weak, time::Duration};

use sqlx::PgPool;

/// A cache cleared by notifications on one channel.
pub trait Invalidate: Send + Sync + 'static {
    /// Drops every entry (a notification arrived, or notifications may have been missed).
    fn invalidate(&self);
    /// Whether the listener is connected: an unhealthy cache must not answer.
    fn set_healthy(&self, healthy: bool);
}

/// Listens on `channel` for as long as `target` exists, reconnecting after errors.
pub async fn listen<T: Invalidate>(pool: PgPool, channel: &'static str, target: Weak<T>) {
    loop {
        let Some(c) = target.upgrade() else { return };
        c.set_healthy(false);
        c.invalidate();
        drop(c);
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, channel, "cache listener cannot connect; reads bypass the cache");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if listener.listen(channel).await.is_err() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        match target.upgrade() {
            Some(c) => {
                c.invalidate();
                c.set_healthy(true);
            }
            None => return,
        }
        loop {
            let next = tokio::time::timeout(Duration::from_secs(5), listener.try_recv()).await;
            let Some(c) = target.upgrade() else { return };
            match next {
                Err(_) => continue, // quiet; check that the cache still exists
                Ok(Ok(Some(_))) => c.invalidate(),
                // Connection lost: notifications may have been missed.
                Ok(Ok(None)) | Ok(Err(_)) => break,
            }
        }
    }
}
