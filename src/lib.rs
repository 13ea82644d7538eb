//! StreamPay Relayer: builds, verifies and relays gasless meta-transactions for `StreamPay.sol`.
//!
//! Dapps call the REST API to *build* a meta-transaction (calldata + EIP-712 typed data), the user
//! signs it, and `POST /meta/execute` verifies, simulates and submits it from a sponsor account
//! that pays the gas.
//!
//! # Layout
//!
//! | module | what lives there |
//! |---|---|
//! | [`config`] | configuration: defaults, a TOML file and `STREAMPAY_*` variables layered by figment, checked once; the chains served; the deployments file |
//! | [`amount`] | exact decimal amounts and monthly rates parsed at the edge into on-chain integers |
//! | [`api`] | the axum router (`api::app`), one module per resource, one error type ([`api::AppError`]) |
//! | [`chain`] | contract bindings from `abi/`, EIP-712 documents and digests, `bySig` traits, signature checks, revert decoding |
//! | [`pipeline`] | the persistent per-sponsor queue: nonces allocated in Postgres, one worker per sponsor that broadcasts, tracks receipts, bumps fees and repairs nonce drift; fault table |
//! | [`store`] | Postgres queries (sqlx, checked at runtime): API keys, meta-transaction nonces, transactions |
//! | [`indexer`] | mirrors every contract event into Postgres (backfill, head following, reorg rollback) |
//! | [`dev`] | `streampay dev`: a whole local stack (Anvil + contracts, Postgres, key, demo funds) |
//! | [`cli`] | the `streampay` command line (`serve`, `migrate`, `keys create`, `dev`, `sign`) |
//! | [`views`] | how records are shown outside (EIP-55 addresses, legacy statuses, the transaction view), shared by the API and webhooks |
//! | [`webhooks`] | signed event deliveries to registered endpoints: outbox, fan-out, retries with backoff |
//! | [`keeper`] | the liquidation keeper: predicts from the index when accounts become liquidatable, liquidates them through the pipeline |
//! | [`observability`] | Prometheus metrics (`GET /metrics`): HTTP, pipeline stages, queue depth, indexer lag, RPC |
//! | [`server`] | wiring for `serve`: state from config, tracing, graceful shutdown |

/// Dated version of the HTTP API and of webhook payloads, sent as `X-Api-Version` on every
/// response and as `api_version` in every webhook event.
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
pub mod secret;
pub mod server;
pub mod store;
pub mod supervisor;
pub mod views;
pub mod webhooks;
