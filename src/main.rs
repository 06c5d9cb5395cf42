//! The thin binary: parse the command line and hand over to the library.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    alphabank::cli::run(alphabank::cli::Cli::parse()).await
}
