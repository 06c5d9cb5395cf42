//! Black-box integration suite. Runs on SQLite, and on PostgreSQL when
//! `ALPHABANK_TEST_POSTGRES_URL` is set (see scripts/test).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod accounts;
mod banking;
mod captcha;
mod cli;
mod crash;
mod group;
mod hardening;
mod health;
mod helpers;
mod ledger;
mod loadgen;
mod lockout;
mod mail;
mod mailbox;
mod master_rotation;
mod multi;
mod passkeys;
mod process;
mod recovery;
mod renewal;
mod review;
#[allow(dead_code)] // saving and restoring is for the load generator
#[path = "../../loadgen/src/authenticator.rs"]
mod soft_authenticator;
mod tamper;
