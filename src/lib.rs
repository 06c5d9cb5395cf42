//! AlphaBank: a security-first, server-rendered web bank.
//!
//! Data flows one way: `web` parses input into `domain` types at the edge and calls a service
//! (`ledger`, `audit`), which uses `store` (the only module that owns SQL) and `crypto` (the only
//! module that touches key material). `services` is the one set of them that requests and
//! commands share; `startup` opens it. Only `cli` uses `startup`, and only `startup` uses `web`.
//! See `docs/architecture.md`.
#![forbid(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod captcha;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod customers;
pub mod domain;
pub mod ledger;
pub mod limits;
pub mod mail;
pub mod payments;
pub mod rate_limit;
pub mod seed;
pub mod services;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod web;

/// Wall-clock time in milliseconds since the Unix epoch, the single time unit stored in the database.
pub fn now_millis() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}
