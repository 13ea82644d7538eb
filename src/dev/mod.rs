//! `streampay dev`: the whole stack on one machine.
//!
//! 1. `scripts/bootstrap.sh` installs the pinned toolchain if it is missing;
//! 2. `anvil/start.sh` starts Anvil with the contracts deployed (or the running dev chain is
//!    reused, `anvil/deploy.sh` being idempotent) and writes `anvil/deployment.json`;
//! 3. a Postgres cluster of its own under `.dev/postgres` (kept between runs);
//! 4. migrations, a fresh `sk_test_` API key with every scope, an admin token (its secret kept in
//!    `.dev/admin-jwt-secret` unless STREAMPAY_ADMIN_JWT_SECRET is set), a demo wallet holding
//!    tokens and no native coin;
//! 5. the API, until Ctrl-C, which also stops Anvil (its state is dumped) and Postgres.

pub mod postgres;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
};

use alloy::{
    primitives::U256,
    providers::{Provider, ProviderBuilder},
    signers::local::PrivateKeySigner,
};
use anyhow::{Context, bail};
use tokio::net::TcpListener;

use crate::{
    amount::format_units,
    chain::MockToken,
    config::{Config, LogFormat, Secret},
    server,
    store::Store,
};
use postgres::PgCluster;

/// Anvil's well-known dev accounts #1, #2, #4 and #5 (public test mnemonic): the dev sponsor pool.
/// Account #0 deploys the contracts and mints the demo wallet's tokens, and account #3 mints in
/// the TypeScript tests, so none of them competes with a sponsor for nonces. The dev API key may
/// use every sponsor, so builds spread over the pool (least busy first).
const DEV_SPONSOR_KEYS: [&str; 4] = [
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
];
/// Anvil's well-known dev account #0: deploys the contracts (anvil/deploy.sh) and mints the demo
/// wallet's tokens.
const DEV_DEPLOYER_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
/// Tokens minted to the demo wallet, in whole tokens.
const DEMO_TOKENS: u64 = 1_000;

#[derive(Debug, Clone, clap::Args)]
pub struct DevArgs {
    /// Address the API listens on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Port of the local Anvil.
    #[arg(long, default_value_t = 8545)]
    pub anvil_port: u16,
    /// Port of the local Postgres cluster.
    #[arg(long, default_value_t = 25432)]
    pub pg_port: u16,
    /// Start from a fresh chain and a fresh database (drops the dumped Anvil state and .dev/postgres).
    #[arg(long)]
    pub fresh: bool,
    /// Set everything up, print the banner, then stop everything instead of serving (a smoke
    /// test of the stack for scripts and CI).
    #[arg(long)]
    pub no_serve: bool,
}

/// The repository root: the working directory if it looks like the repo, else where this
/// binary was built from.
fn repo_root() -> anyhow::Result<PathBuf> {
    let cwd = std::env::current_dir().context("Failed to read the working directory")?;
    for candidate in [cwd, PathBuf::from(env!("CARGO_MANIFEST_DIR"))] {
        if candidate.join("anvil/start.sh").is_file() && candidate.join("scripts/bootstrap.sh").is_file() {
            return Ok(candidate);
        }
    }
    bail!("run `streampay dev` from the repository root (anvil/start.sh not found)")
}

fn bash(root: &Path, script: &str, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("bash")
        .arg(root.join(script))
        .args(args)
        .current_dir(root)
        .status()
        .with_context(|| format!("Failed to run {script}"))?;
    if !status.success() {
        bail!("{script} failed ({status})");
    }
    Ok(())
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    server::init_tracing(LogFormat::Text);
    let root = repo_root()?;
    let dev_dir = root.join(".dev");
    std::fs::create_dir_all(&dev_dir).context("Failed to create .dev/")?;

    println!("==> toolchain");
    bash(&root, "scripts/bootstrap.sh", &[])?;

    println!("==> anvil on port {}", args.anvil_port);
    let rpc_url = format!("http://127.0.0.1:{}", args.anvil_port);
    let deployment_file = root.join("anvil/deployment.json");
    let probe = crate::chain::connect(&rpc_url)?;
    if probe.get_chain_id().await.is_ok() {
        // A dev chain from an earlier run (or the user's own Anvil): deploy.sh only writes the
        // file when the contracts are already there.
        println!("    reusing the chain already answering on {rpc_url}");
        bash(&root, "anvil/deploy.sh", &["--rpc-url", &rpc_url, "--out", &deployment_file.to_string_lossy()])?;
    } else {
        let port = args.anvil_port.to_string();
        let mut start_args = vec!["--port", port.as_str(), "--out"];
        let out = deployment_file.to_string_lossy().to_string();
        start_args.push(&out);
        if args.fresh {
            start_args.push("--fresh");
        }
        bash(&root, "anvil/start.sh", &start_args)?;
    }

    println!("==> postgres on port {}", args.pg_port);
    let pg_dir = dev_dir.join("postgres");
    if args.fresh && pg_dir.exists() {
        // The database describes the chain (nonces, transactions, the index): a fresh chain with
        // the old database would serve state of a chain that no longer exists.
        std::fs::remove_dir_all(&pg_dir).with_context(|| format!("Failed to remove {}", pg_dir.display()))?;
    }
    let cluster = tokio::task::spawn_blocking(move || PgCluster::start(&pg_dir, args.pg_port, false))
        .await
        .context("Postgres start panicked")??;
    cluster.ensure_database("streampay").await?;
    let database_url = cluster.url("streampay");

    let admin_jwt_secret = match std::env::var("STREAMPAY_ADMIN_JWT_SECRET").ok().filter(|s| !s.trim().is_empty()) {
        Some(s) => s,
        None => dev_admin_secret(&dev_dir.join("admin-jwt-secret"))?,
    };
    let config = Config {
        admin_jwt_secret: Some(Secret::new(admin_jwt_secret)),
        listen: args.listen,
        database_url: Some(Secret::new(database_url.clone())),
        chains: vec![crate::config::ChainConfig {
            rpc_urls: vec![Secret::new(rpc_url.clone())],
            sponsor_keys: DEV_SPONSOR_KEYS.iter().map(|k| Secret::new(*k)).collect(),
            // The dev chain mines a block per transaction and never reorgs: final at once.
            finality_depth: Some(1),
            ..crate::config::ChainConfig::single(deployment_file)
        }],
        log_format: LogFormat::Text,
        // The dev chain mines a block per transaction and never reorgs: send events at once; local
        // receivers are what dev is for.
        webhooks: crate::webhooks::WebhookSettings {
            confirmations: Some(0),
            allow_private_targets: true,
            ..Default::default()
        },
        ..Config::default()
    };
    let result = serve_dev(&root, &config, &args).await;

    println!("==> stopping");
    if let Err(e) = cluster.stop() {
        eprintln!("could not stop Postgres: {e:#}");
    }
    // anvil/stop.sh dumps the chain state, so the next `streampay dev` resumes it.
    if let Err(e) = bash(&root, "anvil/stop.sh", &[]) {
        eprintln!("could not stop Anvil: {e:#}");
    }
    result
}

async fn serve_dev(root: &Path, config: &Config, args: &DevArgs) -> anyhow::Result<()> {
    let state = server::state_from_config(config).await?;
    let rpc_url = config.chains.first().and_then(|c| c.rpc_urls.first()).map(Secret::expose).unwrap_or_default();
    let sponsors = DEV_SPONSOR_KEYS
        .iter()
        .map(|k| k.parse::<PrivateKeySigner>().map(|s| s.address()))
        .collect::<Result<Vec<_>, _>>()
        .context("dev sponsor key")?;
    let minter: PrivateKeySigner = DEV_DEPLOYER_KEY.parse().context("dev deployer key")?;
    let store: &Store = &state.store;
    // Every scope (read, relay, webhooks, admin) and the whole sponsor pool, so the whole API can
    // be tried with it.
    let key = store.create_api_key("dev", &sponsors, true).await?;
    let admin_token = crate::api::auth::mint_admin_token(
        config.admin_jwt_secret.as_ref().map(Secret::expose).unwrap_or_default(),
        crate::api::auth::MAX_ADMIN_TOKEN_TTL,
        "dev",
    )?;

    let contract = state.contracts().next().context("no deployment")?.deployment.clone();
    let demo = demo_wallet(&root.join(".dev/demo-wallet.key"))?;
    let wallet_provider = ProviderBuilder::new().wallet(minter).connect_http(rpc_url.parse().context("rpc url")?);
    let token = MockToken::new(contract.token, &wallet_provider);
    let unit = U256::from(10u64).pow(U256::from(contract.token_decimals));
    let held = token.balanceOf(demo.address()).call().await.context("Failed to read the demo balance")?;
    if held < U256::from(DEMO_TOKENS) * unit {
        token
            .mint(demo.address(), U256::from(DEMO_TOKENS) * unit)
            .send()
            .await
            .context("Failed to mint demo tokens")?
            .get_receipt()
            .await
            .context("Failed to mine the demo mint")?;
    }
    let held = token.balanceOf(demo.address()).call().await.context("Failed to read the demo balance")?;

    let base = format!("http://{}", config.listen);
    let demo_addr = demo.address();
    println!(
        "\nStreamPay dev stack is up\n\
         \x20 API        {base}   (key scope: sponsors {sponsors})\n\
         \x20 API key    {key}   (all scopes; shown once; `streampay keys create` makes more)\n\
         \x20 admin      {admin_token}\n\
         \x20            (admin token for /api/v1/admin/keys, valid 1h; more with\n\
         \x20             STREAMPAY_ADMIN_JWT_SECRET=$(cat .dev/admin-jwt-secret) streampay admin token)\n\
         \x20 contract   {name} = {addr} (token {token_addr}, {dec} decimals) on {rpc}\n\
         \x20 demo user  {demo_addr} holds {bal} tokens and no ETH; its private key is in .dev/demo-wallet.key\n\
         \x20 creators   {base}/creators/{name}/{demo_addr}   (the demo user's live creator page)\n\
         \x20 postgres   {db}\n\n\
         Try:\n\
         \x20 curl -s {base}/api/v1/contracts -H 'X-API-Key: {key}'\n\
         \x20 curl -s {base}/api/v1/admin/keys -H 'Authorization: Bearer {admin_token}'\n\
         \x20 curl -s -X POST {base}/api/v1/{name}/payments/deposit -H 'X-API-Key: {key}' \\\n\
         \x20      -H 'Content-Type: application/json' -d '{{\"From\":\"{demo_addr}\",\"Amount\":\"100\"}}'\n",
        sponsors = sponsors.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "),
        key = key.key,
        name = contract.name,
        addr = contract.address,
        token_addr = contract.token,
        dec = contract.token_decimals,
        rpc = rpc_url,
        bal = format_units(held, contract.token_decimals.into()),
        db = config.database_url.as_ref().map(Secret::expose).unwrap_or_default(),
    );
    if args.no_serve {
        return Ok(());
    }
    let listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("Failed to listen on {}", config.listen))?;
    println!("Serving on {base}; Ctrl-C stops the API, Anvil and Postgres.");
    server::serve_on(listener, state).await
}

/// The dev admin-token secret, created once and kept in `.dev/` so tokens survive restarts.
fn dev_admin_secret(path: &Path) -> anyhow::Result<String> {
    if let Ok(text) = std::fs::read_to_string(path)
        && text.trim().len() >= 32
    {
        return Ok(text.trim().to_string());
    }
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let secret = alloy::hex::encode(bytes);
    std::fs::write(path, format!("{secret}\n")).with_context(|| format!("Failed to write {}", path.display()))?;
    Ok(secret)
}

/// The demo user's key, created once and kept in `.dev/` so restarts keep the same wallet.
fn demo_wallet(path: &Path) -> anyhow::Result<PrivateKeySigner> {
    if let Ok(text) = std::fs::read_to_string(path) {
        return text.trim().parse().with_context(|| format!("{} is not a private key", path.display()));
    }
    let signer = PrivateKeySigner::random();
    std::fs::write(path, format!("0x{}\n", alloy::hex::encode(signer.to_bytes())))
        .with_context(|| format!("Failed to write {}", path.display()))?;
    Ok(signer)
}
