//! The `streampay` command line.

use std::{path::PathBuf, process::ExitCode};

use alloy::{
    dyn_abi::TypedData,
    signers::{Signer, local::PrivateKeySigner},
};
use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::{api::parse_address, config::Config, dev, server, store::Store};

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
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
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
        /// Make an `sp_test_` key instead of `sp_live_`.
        #[arg(long)]
        test: bool,
    },
    /// Revoke an API key by id.
    Revoke { id: i64 },
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
                Command::Keys { command: KeysCommand::Create { sponsors, name, test } } => {
                    let sponsors = sponsors
                        .iter()
                        .map(|s| parse_address("--sponsor", s).map_err(|e| anyhow::anyhow!("{e}")))
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    let store = store(&config).await?;
                    store.migrate().await?;
                    let key = store.create_api_key(&name, &sponsors, test).await?;
                    println!("API key #{} ({name}), shown once, store it now:\n{}", key.id, key.key);
                    Ok(())
                }
                Command::Keys { command: KeysCommand::Revoke { id } } => {
                    let revoked = store(&config).await?.revoke_api_key(id).await?;
                    anyhow::ensure!(revoked, "no active API key #{id}");
                    println!("API key #{id} revoked");
                    Ok(())
                }
                Command::Dev(_) | Command::Sign { .. } => unreachable!("handled above"),
            }
        }
    }
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
    let typed: TypedData = serde_json::from_value(doc).context("Not an EIP-712 typed-data document")?;
    let sig = signer.sign_dynamic_typed_data(&typed).await.context("Failed to sign")?;
    println!("0x{}", alloy::hex::encode(sig.as_bytes()));
    Ok(())
}
