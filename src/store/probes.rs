//! What `/health` and the metrics gauges ask the database (compile-time checked).

use alloy::primitives::Address;

use super::{Store, TxStatus, index::address};

/// Rows of one sponsor in one queue state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDepth {
    pub sponsor: Address,
    pub status: TxStatus,
    pub count: i64,
}

impl Store {
    /// One round trip; the error is the driver's, as `/health` reports it.
    pub async fn check(&self) -> sqlx::Result<()> {
        sqlx::query_scalar!(r#"SELECT 1 AS "one!""#).fetch_one(&self.pool).await.map(|_| ())
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        self.check().await.is_ok()
    }

    /// Rows per sponsor and state among the unfinished ones (`pending`, `submitted`, `mined`) of
    /// `chain_id`; a sponsor and state without rows is absent.
    pub async fn queue_depth(&self, chain_id: u64) -> anyhow::Result<Vec<QueueDepth>> {
        let rows = sqlx::query!(
            r#"SELECT sponsor, status, count(*) AS "count!" FROM relay_transactions
               WHERE chain_id = $1 AND status IN ('pending', 'submitted', 'mined') GROUP BY sponsor, status"#,
            i64::try_from(chain_id)?,
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(QueueDepth { sponsor: address(&r.sponsor)?, status: TxStatus::parse(&r.status)?, count: r.count })
            })
            .collect()
    }
}
