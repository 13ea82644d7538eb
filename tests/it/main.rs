//! Integration tests: the HTTP API against a real Anvil and a real Postgres (see `harness`).

mod auth;
mod batch;
mod harness;
mod info;
mod meta;
mod payments;
mod pipeline;
mod story;
mod subscriptions;
mod indexer;
