//! The breakwater service: entity events in, webhooks out, each endpoint
//! behind its own circuit breaker, durably.
//!
//! `POST /events` stores each event with the actions its observers ask for
//! and answers 202 only once they are durable. The [`engine`] delivers them
//! at least once: per-endpoint lanes with a concurrency limit, parking
//! while a breaker is open, retries with backoff and jitter, a dead-letter
//! table. The binary `breakwater` runs it (`serve`), checks configurations
//! (`check-config`), manages dead letters (`dlq`) and shows it all working
//! on loopback (`demo`).

#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod console;
pub mod demo;
pub mod engine;
pub mod error;
pub mod executor;
mod http;
mod log_line;
pub mod metrics;
pub mod operations;
pub mod pg_cluster;
pub mod replay;
pub mod routes;
pub mod server;
pub mod store;
