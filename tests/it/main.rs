//! Integration tests: the HTTP API against a real Anvil and a real Postgres (see `harness`).

mod admission;
mod auth;
mod batch;
mod faults;
mod harness;
mod history;
mod idempotency;
mod indexer;
mod info;
mod keeper;
mod key_cache;
mod keys;
mod logs;
mod meta;
mod metrics;
mod nonces;
mod payments;
mod pipeline;
mod pipeline_stack;
mod platform_discovery;
mod platform_health;
mod resolve;
mod sponsors;
mod story;
mod subscriptions;
mod webhooks;
