//! Postgres state (sqlx, queries checked at runtime).
