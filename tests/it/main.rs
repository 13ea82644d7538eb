//! Integration tests: the HTTP API against a real Anvil and a real Postgres (see `harness`).

mod auth;
mod batch;
mod faults;
mod harness;
mod idempotency;
mod info;
mod meta;
mod payments;
mod pipeline;
mod platform_discovery;
mod platform_health;
mod pipeline_stack;
mod story;
mod subscriptions;
mod indexer;
mod logs;
mod metrics;
mod keeper;
