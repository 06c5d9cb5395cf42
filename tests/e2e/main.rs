//! End-to-end suite: the real application (in process, HTTPS on a loopback port, fresh
//! database) driven by a real headless Chromium through chromedriver, as a person would use it —
//! typing into inputs, clicking buttons, reading the page. Needs `/usr/bin/chromium` and
//! `/usr/bin/chromedriver` (Debian's `chromium` and `chromium-driver`, installed by
//! `scripts/test`); fails with a clear message without them.
//!
//! Run: `cargo test --test e2e`. Screenshots of every page visited land in `target/e2e/`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod accounts;
mod browser;
mod flows;
#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;
mod history;
mod money;
mod passkeys;
