//! StreamPay Relayer: builds, verifies and relays gasless meta-transactions for `StreamPay.sol`.
//!
//! Dapps call the REST API to *build* a meta-transaction (calldata + EIP-712 typed data), the user
//! signs it, and `POST /meta/execute` verifies, simulates and submits it from a sponsor account
//! that pays the gas.
//!
//! # Layout
//!
//! Dependencies run one way, top to bottom (`tests/it/layout.rs` fails on a cycle between these
//! modules, and on a domain module naming `api` or the wiring):
//!
//! | layer | module | what lives there |
//! |---|---|---|
//! | wiring | [`cli`] | the `streampay` command line (`serve`, `migrate`, `keys create`, `dev`, `sign`) |
//! | wiring | [`dev`] | `streampay dev`: a whole local stack (Anvil + contracts, Postgres, key, demo funds) |
//! | wiring | [`server`] | builds every service from configuration, starts the background tasks under one [`supervisor::Supervisor`], stops them in order; tracing |
//! | wiring | [`config`] | configuration: defaults, a TOML file and `STREAMPAY_*` variables layered by figment, checked once; the chains served; the deployments file |
//! | serving | [`api`] | the axum router (`api::app`), one module per resource, typed answers and the OpenAPI document generated from them, one error type ([`api::AppError`]) |
//! | domain | [`keeper`] | the liquidation keeper of one chain: predicts from the index when accounts become liquidatable, liquidates them through the chain's pipeline |
//! | domain | [`webhooks`] | signed event deliveries to registered endpoints for every chain: outbox, fan-out, retries with backoff |
//! | domain | [`chains`] | the chains one process serves: per chain its provider (RPC failover, timeouts), deployments, sponsors, pipeline and read model |
//! | domain | [`pipeline`] | the persistent per-sponsor queue: nonces allocated in Postgres, one worker per sponsor that broadcasts, tracks receipts, bumps fees and repairs nonce drift; fault table |
//! | domain | [`pricing`] | per chain, in the background: the fee estimate new transactions are checked against and the receipts' effective gas prices of mined rows (requests only read them) |
//! | domain | [`indexer`] | mirrors every contract event into Postgres (backfill, head following, reorg rollback); the read model |
//! | domain | [`views`] | how records are shown outside (EIP-55 addresses, legacy statuses, the transaction view), shared by the API and webhooks |
//! | domain | [`store`] | every SQL statement, each checked at compile time (sqlx macros, `.sqlx/`), by aggregate: API keys, meta-transaction nonces, transactions, history, admission, idempotency, the index (with its plain data: events, block headers, derived keys and values), webhooks, the keeper's reads, probes; of the other modules it names only [`chain`] |
//! | base | [`chain`] | contract bindings from `abi/`, the RPC provider, EIP-712 documents and digests, `bySig` traits, signature checks, revert decoding, [`chain::Deployment`] |
//! | base | [`observability`] | Prometheus metrics (`GET /metrics`): HTTP, pipeline stages, RPC, keeper; the recorder |
//! | base | [`supervisor`] | background tasks in named stages: restart with back-off, ordered shutdown |
//! | base | [`amount`], [`secret`] | exact decimal amounts parsed at the edge; values never printed |

/// Dated version of the HTTP API and of webhook payloads, sent as `X-Api-Version` on every
/// response and as `ApiVersion` in every webhook event.
pub const API_VERSION: &str = "2026-11-21";

pub mod amount;
pub mod api;
pub mod chain;
pub mod chains;
pub mod cli;
pub mod config;
pub mod dev;
pub mod indexer;
pub mod keeper;
pub mod observability;
pub mod pipeline;
pub mod pricing;
pub mod secret;
pub mod server;
pub mod store;
pub mod supervisor;
pub mod views;
pub mod webhooks;
