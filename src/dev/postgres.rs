//! A private, throwaway-or-persistent Postgres cluster for `streampay dev` and the tests.
//!
//! `initdb` refuses to run as root, and these machines run everything as root, so when the
//! effective user is root every server command runs as the `postgres` user (`runuser`) in a
//! directory that user owns. The server listens on 127.0.0.1 only, with trust authentication:
//! it is for one developer's machine or one test run, never for production.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

/// A running cluster; [`PgCluster::stop`] (or dropping an ephemeral one) shuts it down.
#[derive(Debug)]
pub struct PgCluster {
    dir: PathBuf,
    port: u16,
    /// Delete the directory when dropped (tests); a dev cluster keeps its data.
    ephemeral: bool,
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Finds a PostgreSQL server binary on PATH or in Debian's versioned directories.
fn pg_bin(name: &str) -> PathBuf {
    let path_dirs = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default();
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    debian.sort();
    debian.reverse(); // newest major version first
    path_dirs
        .into_iter()
        .chain(debian)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Runs a server binary, as `postgres` when we are root.
fn pg_command(name: &str) -> Command {
    let bin = pg_bin(name);
    if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

fn run(mut cmd: Command, what: &str) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("Failed to run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Whether the server found by [`pg_bin`] ships the `pg_stat_statements` module (Debian's
/// `/usr/lib/postgresql/<major>/lib`, next to its `bin`; a `postgres` on PATH may be a link
/// there).
fn pg_stat_statements_available() -> bool {
    let server = pg_bin("postgres");
    let server = std::fs::canonicalize(&server).unwrap_or(server);
    server.parent().and_then(Path::parent).is_some_and(|root| root.join("lib/pg_stat_statements.so").is_file())
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("Failed to find a free port")?;
    Ok(l.local_addr()?.port())
}

impl PgCluster {
    /// Initialises (if needed) and starts a cluster in `dir` on `port`. With `ephemeral`, the
    /// server trades durability for speed (no fsync) and the directory is removed on drop.
    pub fn start(dir: &Path, port: u16, ephemeral: bool) -> anyhow::Result<Self> {
        let data = dir.join("data");
        let sock = dir.join("sock");
        std::fs::create_dir_all(&sock).with_context(|| format!("Failed to create {}", sock.display()))?;
        if running_as_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.args(["-R", "postgres:postgres"]).arg(dir);
                    c
                },
                "chown of the Postgres directory",
            )?;
        }
        if !data.join("PG_VERSION").exists() {
            let mut initdb = pg_command("initdb");
            initdb.arg("-D").arg(&data).args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"]);
            run(initdb, "initdb")?;
        }
        let cluster = Self { dir: dir.to_path_buf(), port, ephemeral };
        if cluster.is_running() {
            return Ok(cluster);
        }
        cluster.launch()?;
        Ok(cluster)
    }

    /// Like [`PgCluster::start`] on a free port, trying another port (up to five) when the one
    /// picked was taken before the server could bind it: between finding a free port and the
    /// server binding it, another process (a parallel test's node or server) may take it.
    pub fn start_on_free_port(dir: &Path, ephemeral: bool) -> anyhow::Result<Self> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port()?;
            match Self::start(dir, port, ephemeral) {
                Err(e) if attempt < 5 && format!("{e:#}").contains("Address already in use") => {
                    tracing::warn!(port, attempt, "Postgres port taken before the server bound it; trying another");
                }
                other => return other,
            }
        }
    }

    fn launch(&self) -> anyhow::Result<()> {
        let sock = self.dir.join("sock");
        let mut options = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, sock.display());
        if self.ephemeral {
            options.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        if pg_stat_statements_available() {
            // Counts every top-level statement (see [`PgCluster::statement_counts`]): what the
            // relay benchmark reads to count round trips. Left out where the server has no such
            // module (a server would refuse to start).
            options.push_str(" -c shared_preload_libraries=pg_stat_statements");
        }
        let mut pg_ctl = pg_command("pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-o")
            .arg(options)
            .arg("-l")
            .arg(self.dir.join("postgres.log"))
            .args(["-w", "-t", "60", "start"]);
        run(pg_ctl, "pg_ctl start").with_context(|| {
            // The log's end, since an ephemeral cluster's directory is removed with it.
            let log = self.dir.join("postgres.log");
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(8).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!("server log {}:\n{}", log.display(), tail.join("\n"))
        })
    }

    /// Stops the server cleanly (fast shutdown: sessions are cut, committed work is kept), for
    /// tests that restart the database under load; [`PgCluster::start_again`] brings it back.
    pub fn stop_clean(&self) -> anyhow::Result<()> {
        let mut c = pg_command("pg_ctl");
        c.arg("-D").arg(self.dir.join("data")).args(["-m", "fast", "-w", "stop"]);
        run(c, "pg_ctl stop")
    }

    /// Starts a stopped cluster again, on the same port with the same options.
    pub fn start_again(&self) -> anyhow::Result<()> {
        self.launch()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connection URL of database `db` (superuser `postgres`, trust auth on 127.0.0.1).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn is_running(&self) -> bool {
        let mut c = pg_command("pg_ctl");
        c.arg("-D").arg(self.dir.join("data")).arg("status");
        c.output().map(|o| o.status.success()).unwrap_or(false)
    }

    /// Stops the server (fast shutdown for kept clusters, immediate for throwaway ones).
    pub fn stop(&self) -> anyhow::Result<()> {
        let mut c = pg_command("pg_ctl");
        c.arg("-D").arg(self.dir.join("data")).args([
            "-m",
            if self.ephemeral { "immediate" } else { "fast" },
            "-w",
            "stop",
        ]);
        run(c, "pg_ctl stop")
    }

    /// Creates database `name` unless it exists.
    pub async fn ensure_database(&self, name: &str) -> anyhow::Result<()> {
        use sqlx::{Connection, Executor, PgConnection};
        anyhow::ensure!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'), "bad database name {name}");
        let mut conn =
            PgConnection::connect(&self.url("postgres")).await.context("Failed to connect to the cluster")?;
        // Checked at compile time like the store's statements (against the migrated database of
        // `with_db`, whose catalog has `pg_database` like any other).
        let exists: Option<i32> =
            sqlx::query_scalar!(r#"SELECT 1 AS "one!" FROM pg_database WHERE datname = $1"#, name)
                .fetch_optional(&mut conn)
                .await
                .context("Failed to list databases")?;
        if exists.is_none() {
            conn.execute(format!("CREATE DATABASE {name}").as_str()).await.context("Failed to create the database")?;
        }
        Ok(())
    }
}

impl PgCluster {
    /// The top-level statements run in database `db` since the last
    /// [`PgCluster::reset_statement_counts`] (or the server's start), as `(calls, query)`, most
    /// called first, from `pg_stat_statements`; `None` when the server runs without it. BEGIN and
    /// COMMIT count as statements; statements run by triggers and functions do not. Each
    /// counted call is one round trip of its client (sqlx sends each execution of a prepared
    /// statement as one exchange; the first preparation of a statement on a connection is
    /// another, not counted). These reads are not counted themselves.
    ///
    /// For the relay benchmark; not checked at compile time like the store's statements (the
    /// migrated database has no `pg_stat_statements` view).
    pub async fn statement_counts(&self, db: &str) -> anyhow::Result<Option<Vec<(i64, String)>>> {
        use sqlx::{Connection, PgConnection};
        let mut conn = PgConnection::connect(&self.url(db)).await.context("Failed to connect to the database")?;
        if !self.ensure_statement_view(&mut conn).await? {
            return Ok(None);
        }
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT s.calls, s.query FROM pg_stat_statements s
             WHERE s.toplevel AND s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND s.query NOT LIKE '%pg_stat_statements%'
             ORDER BY s.calls DESC, s.query",
        )
        .fetch_all(&mut conn)
        .await
        .context("Failed to read pg_stat_statements")?;
        Ok(Some(rows))
    }

    /// Starts [`PgCluster::statement_counts`] of every database from zero; false when the server
    /// runs without `pg_stat_statements`.
    pub async fn reset_statement_counts(&self, db: &str) -> anyhow::Result<bool> {
        use sqlx::{Connection, PgConnection};
        let mut conn = PgConnection::connect(&self.url(db)).await.context("Failed to connect to the database")?;
        if !self.ensure_statement_view(&mut conn).await? {
            return Ok(false);
        }
        sqlx::query("SELECT pg_stat_statements_reset()")
            .execute(&mut conn)
            .await
            .context("Failed to reset pg_stat_statements")?;
        Ok(true)
    }

    /// Creates the `pg_stat_statements` view in `conn`'s database if the module is loaded;
    /// answers whether it is.
    async fn ensure_statement_view(&self, conn: &mut sqlx::PgConnection) -> anyhow::Result<bool> {
        use sqlx::Executor;
        let loaded: String = sqlx::query_scalar("SELECT current_setting('shared_preload_libraries')")
            .fetch_one(&mut *conn)
            .await
            .context("Failed to read shared_preload_libraries")?;
        if !loaded.split(',').any(|l| l.trim() == "pg_stat_statements") {
            return Ok(false);
        }
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .await
            .context("Failed to create the pg_stat_statements extension")?;
        Ok(true)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.ephemeral {
            let _ = self.stop();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A port taken by someone else is reported with the server's own words (the log's end), which
    // `start_on_free_port` recognises to try another port; with a free port it starts.
    #[test]
    fn a_taken_port_is_reported_from_the_server_log_and_another_port_is_tried() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("streampay-pg-port-test-{}", std::process::id()));
        let err = PgCluster::start(&dir, port, true).expect_err("the port is taken");
        assert!(format!("{err:#}").contains("Address already in use"), "{err:#}");
        let cluster = PgCluster::start_on_free_port(&dir, true).expect("a free port");
        assert_ne!(cluster.port(), port);
        assert!(cluster.is_running());
    }

    // The benchmark's round-trip count: every top-level statement of a database, by text.
    #[tokio::test]
    async fn the_cluster_counts_each_statement_a_database_runs() {
        use sqlx::{Connection, Executor};
        if !pg_stat_statements_available() {
            eprintln!("skipped: this server has no pg_stat_statements module");
            return;
        }
        let dir = std::env::temp_dir().join(format!("streampay-pg-stat-test-{}", std::process::id()));
        let cluster = PgCluster::start_on_free_port(&dir, true).expect("a cluster");
        cluster.ensure_database("counted").await.unwrap();
        assert!(cluster.reset_statement_counts("counted").await.unwrap());
        let mut conn = sqlx::PgConnection::connect(&cluster.url("counted")).await.unwrap();
        conn.execute("CREATE TABLE t (x INT)").await.unwrap();
        for x in 0..3 {
            sqlx::query("INSERT INTO t VALUES ($1)").bind(x).execute(&mut conn).await.unwrap();
        }
        let counts = cluster.statement_counts("counted").await.unwrap().expect("loaded");
        assert_eq!(counts.iter().find(|(_, q)| q.starts_with("INSERT INTO t")).map(|(n, _)| *n), Some(3), "{counts:?}");
        assert!(counts.iter().any(|(n, q)| *n == 1 && q.starts_with("CREATE TABLE t")), "{counts:?}");
    }
}
