//! The layering, the environment table, the checks and the chains, through the same path
//! [`Config::load`] takes, with the environment injected as a map (no process variable is set).

use super::*;

const ALICE: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
const BOB: &str = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC";

/// The file `toml` under the variables `env`.
fn load(toml: &str, env: &[(&str, &str)]) -> anyhow::Result<Config> {
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Config::from_layers(Some(Toml::string(toml)), move |name| {
        env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    })
}

/// The message of the error `load` returns (it must fail).
fn refused(toml: &str, env: &[(&str, &str)]) -> String {
    match load(toml, env) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn env_overrides_file() {
    let file = "[server]\nlisten = \"0.0.0.0:9000\"\n[chain]\nrpc_url = \"http://file:8545\"\n\
                [sponsors]\nprivate_keys = [\"0x01\"]\n";
    let c = load(file, &[]).unwrap();
    assert_eq!(c.listen.port(), 9000);
    assert_eq!(c.chains[0].rpc_urls, vec![Secret::new("http://file:8545")]);
    assert_eq!(c.chains[0].sponsor_keys, vec![Secret::new("0x01")]);
    let c = load(file, &[("STREAMPAY_RPC_URL", "http://env:8545"), ("STREAMPAY_SPONSOR_KEYS", "0x02, 0x03")]).unwrap();
    assert_eq!(c.chains[0].rpc_urls, vec![Secret::new("http://env:8545")]);
    assert_eq!(c.chains[0].sponsor_keys, vec![Secret::new("0x02"), Secret::new("0x03")]);
    assert_eq!(c.listen.port(), 9000, "what the environment does not set, the file keeps");
    let c = load(file, &[("STREAMPAY_LISTEN", "127.0.0.1:7000"), ("STREAMPAY_RPC_URL", "  ")]).unwrap();
    assert_eq!(c.listen.port(), 7000);
    assert_eq!(c.chains[0].rpc_urls, vec![Secret::new("http://file:8545")], "a blank variable is unset");
}

#[test]
fn nothing_configured_is_the_defaults() {
    let c = load("", &[]).unwrap();
    let d = Config::default();
    assert_eq!(c.chains, d.chains);
    assert_eq!(c.chains.len(), 1);
    assert_eq!(c.chains[0].deployments_file, PathBuf::from("anvil/deployment.json"));
    assert!(c.chains[0].rpc_urls.is_empty(), "the deployments file's rpcUrl then");
    assert_eq!(c.chains[0].rpc_timeout, DEFAULT_RPC_TIMEOUT);
    assert_eq!(c.listen, d.listen);
    assert_eq!(c.pipeline.poll_interval, d.pipeline.poll_interval);
    assert_eq!(c.webhooks.retention, d.webhooks.retention);
    assert_eq!(c.keeper.native_price_in_token, d.keeper.native_price_in_token);
    assert_eq!(c.admission.gas_per_operation, d.admission.gas_per_operation);
    assert!(c.indexer.read_cache && c.key_cache);
}

#[test]
fn the_example_config_parses() {
    let c = load(include_str!("../../streampay.example.toml"), &[]).unwrap();
    assert_eq!(c.meta_deadline_secs, 3600);
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.indexer.reorg_window, 128);
    assert_eq!(c.indexer.poll_interval, Duration::from_millis(500));
    assert_eq!(c.chains.len(), 1);
    assert_eq!(c.health_sponsor_min_balance_wei, U256::from(100_000_000_000_000_000u64));
}

#[test]
fn the_example_documents_every_variable() {
    let example = include_str!("../../streampay.example.toml");
    for (name, _, _) in env::VARS {
        // A family is documented as STREAMPAY_INDEXER_INITIAL_RANGE / _MAX_RANGE.
        let tail = name.strip_prefix("STREAMPAY_").and_then(|n| n.find('_').map(|i| &n[i..]));
        let shown = example.contains(name) || tail.is_some_and(|t| example.contains(&format!("/ {t}")));
        assert!(shown, "{name} is not in streampay.example.toml");
    }
}

#[test]
fn the_multi_chain_example_parses() {
    // The commented `[[chains]]` example, uncommented, in place of the single-chain keys.
    let example = include_str!("../../streampay.example.toml");
    let (_, multi) = example.split_once("# --- several chains ---").expect("the multi-chain example");
    let multi: String = multi
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| !l.starts_with("---"))
        .map(|l| format!("{l}\n"))
        .collect();
    let c = load(&multi, &[]).unwrap();
    assert_eq!(c.chains.len(), 2);
    assert_eq!(c.chains[0].name.as_deref(), Some("base"));
    assert_eq!(c.chains[0].rpc_urls.len(), 2);
    assert_eq!(c.chains[0].sponsor_policies.len(), 1);
    assert_eq!(c.chains[1].rpc_timeout, DEFAULT_RPC_TIMEOUT);
}

#[test]
fn every_variable_sets_a_key_the_tree_knows() {
    // A key in the table that the tree does not have would be refused as unknown.
    let sample = |key: &str, kind: env::Kind| match (key, kind) {
        (_, env::Kind::Number) => "7",
        (_, env::Kind::Bool) => "true",
        ("server.trusted_proxies", _) => "10.0.0.0/8, ::1",
        ("server.cors_public_origins", _) => "https://docs.example, http://localhost:5173",
        ("server.listen", _) => "127.0.0.1:9999",
        ("log.format", _) => "text",
        ("admin.jwt_secret", _) => "0123456789abcdef0123456789abcdef",
        ("keeper.sponsor", _) => ALICE,
        ("health.sponsor_min_balance", _) => "0.25",
        _ => "x",
    };
    let vars: Vec<(&str, &str)> = env::VARS.iter().map(|(n, k, kind)| (*n, sample(k, *kind))).collect();
    let c = load("", &vars).unwrap();
    assert_eq!(c.listen.port(), 9999);
    assert_eq!(c.cors_public_origins, ["https://docs.example", "http://localhost:5173"]);
    assert_eq!(c.database_max_connections, 7);
    assert_eq!(c.max_event_streams, 7);
    assert_eq!(c.pipeline.lease_ttl, Duration::from_secs(7));
    assert_eq!(c.webhooks.max_attempts, 7);
    assert_eq!(c.indexer.pipeline_depth, 7);
    assert_eq!(c.indexer.max_follow_range, 7);
    assert_eq!(c.keeper.sponsor, Some(ALICE.parse().unwrap()));
    assert_eq!(c.health_sponsor_min_balance_wei, U256::from(250_000_000_000_000_000u64));
    assert_eq!(c.trusted_proxies.len(), 2);
}

#[test]
fn bad_values_are_refused_naming_the_variable() {
    for (name, value) in [
        ("STREAMPAY_INDEXER_POLL_MS", "soon"),
        ("STREAMPAY_DATABASE_MAX_CONNECTIONS", "-1"),
        ("STREAMPAY_KEY_CACHE", "maybe"),
        ("STREAMPAY_INDEXER_READ_CACHE", "yes"),
        ("STREAMPAY_WEBHOOKS_ENABLED", "on"),
        ("STREAMPAY_KEEPER_ENABLED", "TRUE"),
        ("STREAMPAY_WEBHOOKS_ALLOW_PRIVATE_TARGETS", "2"),
        ("STREAMPAY_LOG_FORMAT", "xml"),
        ("STREAMPAY_LISTEN", "localhost"),
        ("STREAMPAY_KEEPER_SPONSOR", "nobody"),
        ("STREAMPAY_HEALTH_SPONSOR_MIN_BALANCE", "lots"),
        ("STREAMPAY_TRUSTED_PROXIES", "10.0.0.1/8"),
        ("STREAMPAY_ADMIN_JWT_SECRET", "short"),
        ("STREAMPAY_WEBHOOKS_MAX_ATTEMPTS", "99999999999"),
    ] {
        let e = refused("", &[(name, value)]);
        assert!(e.contains(name), "{name}={value}: {e}");
        if name == "STREAMPAY_ADMIN_JWT_SECRET" {
            assert!(!e.contains(value), "a secret is not repeated: {e}");
        }
    }
    // The same values in the file name the key.
    let e = refused("[health]\nsponsor_min_balance = \"lots\"", &[]);
    assert!(e.contains("health.sponsor_min_balance"), "{e}");
    let e = refused("[server]\nkey_cache = \"maybe\"", &[]);
    assert!(e.contains("key_cache"), "{e}");
}

#[test]
fn the_database_url_falls_back_to_database_url() {
    let c = load("", &[("DATABASE_URL", "postgres://plain")]).unwrap();
    assert_eq!(c.database_url().unwrap(), "postgres://plain");
    let both = [("DATABASE_URL", "postgres://plain"), ("STREAMPAY_DATABASE_URL", "postgres://ours")];
    assert_eq!(load("", &both).unwrap().database_url().unwrap(), "postgres://ours");
    let c = load("[database]\nurl = \"postgres://file\"", &[("DATABASE_URL", "postgres://plain")]).unwrap();
    assert_eq!(c.database_url().unwrap(), "postgres://plain", "the environment wins over the file");
    assert!(load("", &[]).unwrap().database_url().is_err());
}

#[test]
fn indexer_section_then_env() {
    let file = "[indexer]\npoll_interval_ms = 50\nreorg_window = 64\nfetch_concurrency = 3";
    let c = load(file, &[]).unwrap();
    assert_eq!(c.indexer.poll_interval, Duration::from_millis(50));
    assert_eq!(c.indexer.reorg_window, 64);
    assert_eq!(c.indexer.fetch_concurrency, 3);
    assert_eq!(c.indexer.max_range, crate::indexer::IndexerConfig::default().max_range, "unset keys keep defaults");
    let c = load(file, &[("STREAMPAY_INDEXER_REORG_WINDOW", "256")]).unwrap();
    assert_eq!(c.indexer.reorg_window, 256);
    assert_eq!(c.indexer.poll_interval, Duration::from_millis(50));
    assert!(load("[indexer]\npoll_ms = 5", &[]).is_err(), "unknown indexer key");
    assert!(c.indexer.read_cache, "serve caches reads unless told otherwise");
    let c = load("[indexer]\nread_cache = false", &[]).unwrap();
    assert!(!c.indexer.read_cache);
    let c = load("[indexer]\nread_cache = false", &[("STREAMPAY_INDEXER_READ_CACHE", "true")]).unwrap();
    assert!(c.indexer.read_cache);
}

#[test]
fn admin_secret_and_trusted_proxies_load_from_file_and_env() {
    let secret = "from-file-0123456789abcdef0123456789";
    let file = format!("[admin]\njwt_secret = \"{secret}\"\n[server]\ntrusted_proxies = [\"10.0.0.0/8\"]");
    let c = load(&file, &[]).unwrap();
    assert_eq!(c.admin_jwt_secret, Some(Secret::new(secret)));
    assert_eq!(c.trusted_proxies, vec!["10.0.0.0/8".parse::<ipnet::IpNet>().unwrap()]);
    assert!(!format!("{c:?}").contains("from-file"));
    let c = load(&file, &[("STREAMPAY_TRUSTED_PROXIES", "127.0.0.1, ::1")]).unwrap();
    assert_eq!(c.trusted_proxies.len(), 2);
    let e = refused("[admin]\njwt_secret = \"too-short\"", &[]);
    assert!(e.contains("admin.jwt_secret") && e.contains("32"), "{e}");
    assert!(load("[server]\ntrusted_proxies = [\"10.0.0.1/8\"]", &[]).is_err(), "host bits set");
    assert!(load("", &[]).unwrap().key_cache, "on by default");
    let c = load("[server]\nkey_cache = false", &[]).unwrap();
    assert!(!c.key_cache);
    let c = load("[server]\nkey_cache = false", &[("STREAMPAY_KEY_CACHE", "1")]).unwrap();
    assert!(c.key_cache);
}

#[test]
fn sponsor_policies_parse_with_exact_wei() {
    let c = load(
        &format!(
            "[[sponsors.policies]]\nsponsor = \"{ALICE}\"\nmax_fee_per_gas_wei = \"50000000000\"\ndaily_budget = \"0.5\"\n\
             [[sponsors.policies]]\nsponsor = \"{BOB}\"\nper_key_daily_budget = \"0.000000000000000001\"\n"
        ),
        &[],
    )
    .unwrap();
    let [(a, p), (_, q)] = &c.chains[0].sponsor_policies[..] else { panic!("{:?}", c.chains) };
    assert_eq!(a.to_string(), ALICE);
    assert_eq!(p.max_fee_per_gas, Some(U256::from(50_000_000_000u64)));
    assert_eq!(p.daily_budget, Some(U256::from(500_000_000_000_000_000u64)));
    assert_eq!(p.per_key_daily_budget, None);
    assert_eq!(q.per_key_daily_budget, Some(U256::from(1u64)));
    let dup = format!("[[sponsors.policies]]\nsponsor = \"{ALICE}\"\n");
    assert!(refused(&format!("{dup}{dup}"), &[]).contains("appears twice"));
    assert!(refused("[[sponsors.policies]]\ndaily_budget = \"1\"", &[]).contains("sponsor is required"));
    let bad = format!("[[sponsors.policies]]\nsponsor = \"{ALICE}\"\nmax_fee_per_gas_wei = \"1.5\"");
    assert!(refused(&bad, &[]).contains("max_fee_per_gas_wei"), "fractional wei");
    let bad = format!("[[sponsors.policies]]\nsponsor = \"{ALICE}\"\ndaily_budget = \"lots\"");
    assert!(refused(&bad, &[]).contains("sponsors.policies[0].daily_budget"), "bad native amount");
}

#[test]
fn webhooks_section_and_env() {
    let file = "[webhooks]\nmax_attempts = 3\nbackoff_base_ms = 250\ntimeout_ms = 1500\nretention_days = 7";
    let c = load(file, &[]).unwrap();
    assert_eq!(c.webhooks.max_attempts, 3);
    assert_eq!(c.webhooks.retention, Duration::from_secs(7 * 86_400));
    assert_eq!(c.webhooks.backoff_base, Duration::from_millis(250));
    let c = load(file, &[("STREAMPAY_WEBHOOKS_TIMEOUT_MS", "700")]).unwrap();
    assert_eq!(c.webhooks.timeout, Duration::from_millis(700));
    assert!(load("[webhooks]\nretries = 3", &[]).is_err());
}

#[test]
fn metrics_token_from_file_or_env() {
    assert_eq!(load("", &[]).unwrap().metrics_token, None);
    let c = load("[metrics]\ntoken = \"from-file\"", &[]).unwrap();
    assert_eq!(c.metrics_token, Some(Secret::new("from-file")));
    let c = load("[metrics]\ntoken = \"from-file\"", &[("STREAMPAY_METRICS_TOKEN", " from-env ")]).unwrap();
    assert_eq!(c.metrics_token, Some(Secret::new("from-env")));
    assert!(!format!("{c:?}").contains("from-env"));
    assert_eq!(load("[metrics]\ntoken = \"\"", &[]).unwrap().metrics_token, None, "empty is unset");
    // Digits stay text: a token is never read as a number.
    let c = load("", &[("STREAMPAY_METRICS_TOKEN", "12345")]).unwrap();
    assert_eq!(c.metrics_token, Some(Secret::new("12345")));
}

#[test]
fn admission_is_on_by_default_and_configurable() {
    let c = load("", &[]).unwrap();
    assert!(c.admission.key_daily_budget_wei.is_some() && c.admission.signer_daily_budget_wei.is_some());
    let c = load(
        "[admission]\nkey_daily_budget = \"0.5\"\nsigner_daily_budget = \"off\"\nmax_calldata_bytes = 100\n\
         [admission.gas_per_operation]\npay = 1000\n",
        &[],
    )
    .unwrap();
    assert_eq!(c.admission.key_daily_budget_wei, Some(U256::from(500_000_000_000_000_000u64)));
    assert_eq!(c.admission.signer_daily_budget_wei, None);
    assert_eq!(c.admission.max_calldata_bytes, 100);
    assert_eq!(c.admission.gas_per_operation["pay"], 1000);
    assert_eq!(c.admission.gas_per_operation["deposit"], 150_000, "other defaults stay");
    assert!(refused("[admission]\nkey_daily_budget = \"lots\"", &[]).contains("admission.key_daily_budget"));
}

#[test]
fn keeper_section_and_env() {
    assert!(load("", &[]).unwrap().keeper.enabled);
    let file = format!("[keeper]\nenabled = false\npoll_interval_ms = 250\nmax_per_tick = 3\nsponsor = \"{ALICE}\"");
    let c = load(&file, &[]).unwrap();
    assert!(!c.keeper.enabled);
    assert_eq!(c.keeper.poll_interval, Duration::from_millis(250));
    assert_eq!(c.keeper.max_per_tick, 3);
    assert!(c.keeper.sponsor.is_some());
    let c = load(&file, &[("STREAMPAY_KEEPER_ENABLED", "true"), ("STREAMPAY_KEEPER_MAX_PER_TICK", "7")]).unwrap();
    assert!(c.keeper.enabled);
    assert_eq!(c.keeper.max_per_tick, 7);
    let c = load("[keeper]\nnative_price_in_token = \"2500.5\"\ndaily_budget = \"off\"", &[]).unwrap();
    assert_eq!(c.keeper.native_price_in_token, U256::from(2_500_500_000_000_000_000_000u128));
    assert_eq!(c.keeper.daily_budget_wei, None);
}

#[test]
fn unknown_keys_are_refused() {
    assert!(refused("[server]\nlisten_addr = \"x\"", &[]).contains("listen_addr"));
    assert!(load("[servers]\nlisten = \"127.0.0.1:1\"", &[]).is_err());
    assert!(load("[[chains]]\ndeployments_file = \"a.json\"\nrpc_url = \"http://x\"", &[]).is_err());
    // Variables outside the table are not configuration (STREAMPAY_CONFIG, STREAMPAY_SIGNER_KEY, ...).
    assert!(load("", &[("STREAMPAY_SIGNER_KEY", "0x01"), ("STREAMPAY_NOT_A_SETTING", "x")]).is_ok());
}

#[test]
fn cross_key_checks() {
    assert!(refused("[chain]\nmeta_deadline_secs = 0", &[]).contains("chain.meta_deadline_secs"));
    let e = refused("[pipeline]\nlease_ttl_secs = 1\npoll_interval_ms = 1000", &[]);
    assert!(e.contains("pipeline.lease_ttl_secs") && e.contains("pipeline.poll_interval_ms"), "{e}");
    let e = refused("[pipeline]\nlease_ttl_secs = 1", &[("STREAMPAY_PIPELINE_POLL_INTERVAL_MS", "1500")]);
    assert!(e.contains("STREAMPAY_PIPELINE_POLL_INTERVAL_MS"), "{e}");
    assert!(load("[pipeline]\nlease_ttl_secs = 1\npoll_interval_ms = 20", &[]).is_ok());
}

#[test]
fn secrets_are_redacted_in_debug() {
    let file = "[[chains]]\ndeployments_file = \"a.json\"\nrpc_urls = [\"https://node/key-abc\"]\n\
                sponsor_keys = [\"0xdeadbeef\"]\n";
    let c = load(file, &[("STREAMPAY_DATABASE_URL", "postgres://u:hunter2@db")]).unwrap();
    let shown = format!("{c:?}");
    for secret in ["deadbeef", "key-abc", "hunter2"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}

#[test]
fn several_chains() {
    let c = load(
        &format!(
            "[chain]\nmeta_deadline_secs = 600\n\
             [[chains]]\nname = \"base\"\nrpc_urls = [\"https://a\", \"https://b\"]\nrpc_timeout_ms = 2500\n\
             deployments_file = \"deployments/base.json\"\nfinality_depth = 12\nsponsor_keys = [\"0x01\"]\n\
             [[chains.policies]]\nsponsor = \"{ALICE}\"\ndaily_budget = \"0.5\"\n\
             [[chains]]\ndeployments_file = \"deployments/op.json\"\n"
        ),
        &[],
    )
    .unwrap();
    assert_eq!(c.meta_deadline_secs, 600, "[chain]'s process-wide keys stay usable");
    let [base, op] = &c.chains[..] else { panic!("{:?}", c.chains) };
    assert_eq!(base.name.as_deref(), Some("base"));
    assert_eq!(base.rpc_urls, vec![Secret::new("https://a"), Secret::new("https://b")]);
    assert_eq!(base.rpc_timeout, Duration::from_millis(2500));
    assert_eq!(base.deployments_file, PathBuf::from("deployments/base.json"));
    assert_eq!(base.finality_depth, Some(12));
    assert_eq!(base.sponsor_keys, vec![Secret::new("0x01")]);
    assert_eq!(base.sponsor_policies[0].1.daily_budget, Some(U256::from(500_000_000_000_000_000u64)));
    assert_eq!(op.name, None);
    assert!(op.rpc_urls.is_empty() && op.sponsor_keys.is_empty() && op.sponsor_policies.is_empty());
    assert_eq!((op.rpc_timeout, op.finality_depth), (DEFAULT_RPC_TIMEOUT, None));
}

#[test]
fn several_chains_are_checked() {
    let one = "[[chains]]\ndeployments_file = \"a.json\"\n";
    assert!(refused("chains = []", &[]).contains("empty"));
    assert!(refused(&format!("{one}{one}"), &[]).contains("a.json"), "the same deployments file twice");
    let twice = "[[chains]]\ndeployments_file = \"./a.json\"\n[[chains]]\ndeployments_file = \"a.json\"\n";
    assert!(load(twice, &[]).is_err(), "the same file spelt two ways");
    let named = "[[chains]]\nname = \"x\"\ndeployments_file = \"a.json\"\n[[chains]]\nname = \"x\"\ndeployments_file = \"b.json\"";
    assert!(refused(named, &[]).contains("name x"));
    assert!(refused(&format!("{one}rpc_timeout_ms = 0"), &[]).contains("chains[0].rpc_timeout_ms"));
    assert!(load("[[chains]]\nname = \"x\"", &[]).is_err(), "deployments_file is required");
    let bad = format!("{one}[[chains.policies]]\nsponsor = \"{ALICE}\"\nmax_fee_per_gas_wei = \"x\"");
    assert!(refused(&bad, &[]).contains("chains[0].policies[0].max_fee_per_gas_wei"));
}

#[test]
fn the_two_chain_forms_do_not_mix() {
    let one = "[[chains]]\ndeployments_file = \"a.json\"\n";
    for (file, env, named) in [
        (format!("[chain]\nrpc_url = \"http://x\"\n{one}"), None, "chain.rpc_url"),
        (format!("[chain]\ndeployments_file = \"b.json\"\n{one}"), None, "chain.deployments_file"),
        (format!("[sponsors]\nprivate_keys = [\"0x01\"]\n{one}"), None, "sponsors.private_keys"),
        (format!("[[sponsors.policies]]\nsponsor = \"{ALICE}\"\n{one}"), None, "sponsors.policies"),
        (one.to_string(), Some(("STREAMPAY_RPC_URL", "http://x")), "STREAMPAY_RPC_URL"),
        (one.to_string(), Some(("STREAMPAY_SPONSOR_KEYS", "0x01")), "STREAMPAY_SPONSOR_KEYS"),
        (one.to_string(), Some(("STREAMPAY_DEPLOYMENTS_FILE", "b.json")), "STREAMPAY_DEPLOYMENTS_FILE"),
    ] {
        let e = refused(&file, env.as_slice());
        assert!(e.contains(named) && e.contains("[[chains]]"), "{named}: {e}");
    }
    // An empty key list (as the example file has) is no chain setting.
    assert!(load(&format!("[sponsors]\nprivate_keys = []\n{one}"), &[]).is_ok());
}

#[test]
fn load_refuses_a_missing_file_and_names_the_file() {
    let missing = std::env::temp_dir().join(format!("streampay-missing-{}.toml", std::process::id()));
    let e = format!("{:#}", Config::load(Some(&missing)).unwrap_err());
    assert!(e.contains("Failed to read config file"), "{e}");
    let path = std::env::temp_dir().join(format!("streampay-config-test-{}.toml", std::process::id()));
    std::fs::write(&path, "[server]\nlisten_addr = \"x\"\n").unwrap();
    let e = format!("{:#}", Config::load(Some(&path)).unwrap_err());
    std::fs::remove_file(&path).unwrap();
    assert!(e.contains(&path.display().to_string()) && e.contains("listen_addr"), "{e}");
}

#[test]
fn deployments_file_parses_the_anvil_format() {
    let f: DeploymentsFile = serde_json::from_str(
        r#"{"chainId":31337,"rpcUrl":"http://127.0.0.1:8545","deployments":[{"name":"USDC",
        "address":"0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512","token":"0x5FbDB2315678afecb367f032d93F642f64180aa3",
        "tokenDecimals":6,"startBlock":1}]}"#,
    )
    .unwrap();
    f.validate().unwrap();
    assert_eq!(f.deployments[0].token_decimals, 6);
}
