//! The `streampay` command line.

use std::{path::PathBuf, process::ExitCode};

use alloy::{
    dyn_abi::TypedData,
    signers::{Signer, local::PrivateKeySigner},
};
use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::{
    api::{CreateKeyRequest, KeyView, auth, key_spec},
    config::Config,
    dev, server,
    store::{KeyChange, Store},
};

#[derive(Debug, Parser)]
#[command(name = "streampay", version, about = "StreamPay relayer: gasless meta-transactions for StreamPay")]
struct Cli {
    /// Config file (TOML); defaults to ./streampay.toml when present. STREAMPAY_* env vars override it.
    #[arg(long, global = true, env = "STREAMPAY_CONFIG")]
    config: Option<PathBuf>,
    /// Log format: json (one JSON object per line, the default) or text. Overrides log.format /
    /// STREAMPAY_LOG_FORMAT.
    #[arg(long, global = true, value_enum)]
    log_format: Option<crate::config::LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage API keys, directly in Postgres (the admin API does the same over HTTP).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Admin credentials.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Run the whole local stack: Anvil with the contracts, Postgres, an API key, the API.
    Dev(dev::DevArgs),
    /// Sign an EIP-712 document (a build response's TypedData or PermitTypedData) with a local
    /// key, the way eth_signTypedData_v4 would. For local testing only.
    Sign {
        /// Private key (hex). Prefer the STREAMPAY_SIGNER_KEY env var over the command line.
        #[arg(long, env = "STREAMPAY_SIGNER_KEY", hide_env_values = true)]
        private_key: String,
        /// File holding the typed data, or a whole build response (its Transaction.TypedData is
        /// signed; with --permit, its Transaction.PermitTypedData). `-` reads stdin.
        file: PathBuf,
        #[arg(long)]
        permit: bool,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create an API key and print it (once: only its hash is stored).
    Create {
        /// Sponsor address the key may use; repeat for several (the first is the default).
        #[arg(long = "sponsor", required = true)]
        sponsors: Vec<String>,
        /// A name to recognise the key by.
        #[arg(long)]
        name: String,
        /// Make an `sk_test_` key instead of `sk_live_` (same as --env test).
        #[arg(long, conflicts_with = "env")]
        test: bool,
        /// `test` or `live` (default live, as before; --test for test).
        #[arg(long)]
        env: Option<String>,
        /// Scope: read, relay, webhooks or admin; repeat for several (default: read and relay).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Lifetime: seconds, or a number with s, m, h or d (`30d`). Default: no expiry.
        #[arg(long)]
        expires_in: Option<String>,
        /// Network the key may be used from (CIDR or address); repeat for several. Default: any.
        #[arg(long = "allow-cidr")]
        allowed_cidrs: Vec<String>,
        /// Requests per minute (per relayer process). Default: unlimited.
        #[arg(long)]
        rate_limit: Option<u32>,
    },
    /// List keys that are not deleted (metadata only).
    List {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an API key by id (it stays listed for audit).
    Revoke { id: i64 },
    /// Replace a key with a new secret with the same settings, and print it (once).
    Rotate {
        id: i64,
        /// Seconds the old key keeps working (default 0: revoked at once; at most 7 days).
        #[arg(long, default_value_t = 0)]
        grace: u64,
    },
    /// Delete an API key by id (it stops working and leaves the listings).
    Delete { id: i64 },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Mint a short-lived admin token for /api/v1/admin/* (needs admin.jwt_secret or
    /// STREAMPAY_ADMIN_JWT_SECRET), printed alone for `$(streampay admin token)`.
    Token {
        /// Lifetime: seconds, or a number with s, m or h. At most 1h.
        #[arg(long, default_value = "15m")]
        ttl: String,
        /// Who the token is for (its `sub`), for the logs.
        #[arg(long, default_value = "cli")]
        subject: String,
    },
}

/// `90`, `90s`, `15m`, `2h`, `30d` to seconds.
fn parse_duration(flag: &str, s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = digits.parse().with_context(|| format!("{flag}: {s:?} is not a duration like 90, 15m, 2h or 30d"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => anyhow::bail!("{flag}: {s:?} is not a duration like 90, 15m, 2h or 30d"),
    };
    n.checked_mul(unit).with_context(|| format!("{flag}: {s:?} is too long"))
}

fn print_created(verb: &str, view: &KeyView, key: &str) {
    println!(
        "API key #{} ({}) {verb}; scopes {}; shown once, store it now:\n{key}",
        view.id,
        view.name,
        view.scopes.join(",")
    );
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: failed to start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Dev(args) => dev::run(args).await,
        Command::Sign { private_key, file, permit } => sign(&private_key, &file, permit).await,
        command => {
            let config = Config::load(cli.config.as_deref())?;
            server::init_tracing(cli.log_format.unwrap_or(config.log_format));
            match command {
                Command::Serve => server::serve(config).await,
                Command::Migrate => {
                    store(&config).await?.migrate().await?;
                    println!("migrations applied");
                    Ok(())
                }
                Command::Keys { command } => keys(&config, command).await,
                Command::Admin { command: AdminCommand::Token { ttl, subject } } => {
                    let secret = config.admin_jwt_secret.as_ref().context(
                        "No admin secret: set admin.jwt_secret or STREAMPAY_ADMIN_JWT_SECRET (the relayer's own)",
                    )?;
                    let ttl = std::time::Duration::from_secs(parse_duration("--ttl", &ttl)?);
                    println!("{}", auth::mint_admin_token(secret.expose(), ttl, &subject)?);
                    Ok(())
                }
                Command::Dev(_) | Command::Sign { .. } => unreachable!("handled above"),
            }
        }
    }
}

async fn keys(config: &Config, command: KeysCommand) -> anyhow::Result<()> {
    let store = store(config).await?;
    store.migrate().await?;
    let view = |store: &Store, id: i64| {
        let store = store.clone();
        async move { store.key_info(id).await?.map(KeyView::from).with_context(|| format!("no API key #{id}")) }
    };
    match command {
        KeysCommand::Create { sponsors, name, test, env, scopes, expires_in, allowed_cidrs, rate_limit } => {
            // The same checks as POST /api/v1/admin/keys.
            let req = CreateKeyRequest {
                name: Some(name),
                environment: Some(if test { "test".into() } else { env.unwrap_or_else(|| "live".into()) }),
                scopes: (!scopes.is_empty()).then_some(scopes),
                sponsors: Some(sponsors),
                expires_in_seconds: expires_in.map(|e| parse_duration("--expires-in", &e)).transpose()?,
                allowed_cidrs: Some(allowed_cidrs),
                rate_limit_per_minute: rate_limit,
                // Publishable keys and web origins are made through the admin API, which knows
                // the deployments a key may be limited to.
                kind: None,
                allowed_origins: None,
                allowed_contracts: None,
                allowed_operations: None,
                signer_rate_limit_per_minute: None,
                daily_budget: None,
                signer_daily_budget: None,
            };
            let spec = key_spec(req, &[], &[]).map_err(|e| anyhow::anyhow!("{e}"))?;
            let key = store.create_key(&spec).await?;
            print_created("created", &view(&store, key.id).await?, &key.key);
        }
        KeysCommand::List { json } => {
            let keys: Vec<KeyView> = store.list_keys().await?.into_iter().map(KeyView::from).collect();
            if json {
                for k in &keys {
                    println!("{}", serde_json::to_string(k)?);
                }
            } else {
                println!(
                    "{:>5}  {:<16}  {:<4}  {:<7}  {:<24}  {:<20}  NAME",
                    "ID", "PREFIX", "ENV", "STATUS", "SCOPES", "EXPIRES"
                );
                for k in &keys {
                    println!(
                        "{:>5}  {:<16}  {:<4}  {:<7}  {:<24}  {:<20}  {}",
                        k.id,
                        k.prefix,
                        k.environment,
                        k.status,
                        k.scopes.join(","),
                        k.expires_at.as_deref().unwrap_or("-"),
                        k.name
                    );
                }
            }
        }
        KeysCommand::Revoke { id } => {
            let revoked = store.revoke_api_key(id).await?;
            anyhow::ensure!(revoked, "no active API key #{id}");
            println!("API key #{id} revoked");
        }
        KeysCommand::Rotate { id, grace } => {
            anyhow::ensure!(grace <= crate::api::MAX_GRACE_SECS, "--grace: at most 7 days");
            match store.rotate_key(id, grace).await? {
                KeyChange::Done(key) => {
                    print_created(&format!("replaces #{id}"), &view(&store, key.id).await?, &key.key);
                    if grace > 0 {
                        println!("API key #{id} keeps working for {grace}s");
                    }
                }
                KeyChange::NotFound => anyhow::bail!("no API key #{id}"),
                KeyChange::NotActive(why) => anyhow::bail!("API key #{id} cannot be rotated: {why}"),
            }
        }
        KeysCommand::Delete { id } => {
            anyhow::ensure!(store.delete_key(id).await?, "no API key #{id}");
            println!("API key #{id} deleted");
        }
    }
    Ok(())
}

async fn store(config: &Config) -> anyhow::Result<Store> {
    Store::connect(config.database_url()?, config.database_max_connections).await
}

async fn sign(private_key: &str, file: &PathBuf, permit: bool) -> anyhow::Result<()> {
    let signer: PrivateKeySigner = private_key.trim().parse().context("--private-key is not a private key")?;
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("Failed to read stdin")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("Failed to read {}", file.display()))?
    };
    let mut doc: serde_json::Value = serde_json::from_str(&text).context("Not JSON")?;
    let field = if permit { "PermitTypedData" } else { "TypedData" };
    if let Some(inner) = doc.get("Transaction").and_then(|t| t.get(field)) {
        doc = inner.clone();
    }
    // A StreamPay SignedCall names the account it runs as (v2): a key signs for its own EOA, or as
    // the owner of a contract wallet (ERC-1271), which must then validate the signature itself.
    if doc["primaryType"] == "SignedCall" {
        let named = doc["message"]["signer"].as_str().context(
            "SignedCall without message.signer: built for the v1 contract (SignedCall(uint256 traits,bytes data)); rebuild it",
        )?;
        let named: alloy::primitives::Address = named.parse().context("message.signer is not an address")?;
        if named != signer.address() {
            eprintln!("note: signing a call that runs as {named} with the key of {}", signer.address());
        }
    }
    let typed: TypedData = serde_json::from_value(doc).context("Not an EIP-712 typed-data document")?;
    let sig = signer.sign_dynamic_typed_data(&typed).await.context("Failed to sign")?;
    println!("0x{}", alloy::hex::encode(sig.as_bytes()));
    Ok(())
}
