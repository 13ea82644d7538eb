//! Runs one command against a throwaway, migrated database, for the compile-time checked queries:
//!
//! ```text
//! cargo run --bin with_db -- cargo sqlx prepare --check   # the offline query data is current
//! cargo run --bin with_db -- cargo sqlx prepare           # regenerate .sqlx/ after changing a query
//! ```
//!
//! Starts an ephemeral Postgres cluster (the one the integration tests use,
//! [`streampay_relayer::dev::postgres::PgCluster`]), creates a database, applies `migrations/`,
//! runs the command with `DATABASE_URL` pointing at it, then stops and deletes the cluster. Exits
//! with the command's status.

use std::process::{Command, ExitCode};

use anyhow::Context;
use streampay_relayer::{dev::postgres::PgCluster, store::Store};

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("with_db: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    let program = args.next().context("usage: with_db <command> [args...]")?;
    let dir = std::env::temp_dir().join(format!("streampay-with-db-{}", std::process::id()));
    let cluster = PgCluster::start_on_free_port(&dir, true)?;
    let url = cluster.url("streampay");
    tokio::runtime::Runtime::new()?.block_on(async {
        cluster.ensure_database("streampay").await?;
        let store = Store::connect(&url, 2).await?;
        store.migrate().await?;
        store.pool().close().await;
        anyhow::Ok(())
    })?;
    eprintln!("with_db: migrated database at {url}");
    let status = Command::new(&program)
        .args(args)
        .env("DATABASE_URL", &url)
        .status()
        .with_context(|| format!("Failed to run {}", program.to_string_lossy()))?;
    drop(cluster);
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}
