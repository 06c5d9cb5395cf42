//! Structured logging (`pretty` or `json`). Fields are structured, never concatenated into the
//! message, so user input cannot forge log lines. `serve` logs to stdout (CONTRACT §1); the other
//! commands log to stderr so that their own output (`audit tail` JSON lines, `verify`'s report)
//! stays machine-readable.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use crate::config::LogFormat;

pub fn init(format: LogFormat, to_stderr: bool) {
    let filter = EnvFilter::try_from_env("ALPHABANK_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let writer = if to_stderr {
        BoxMakeWriter::new(std::io::stderr)
    } else {
        BoxMakeWriter::new(std::io::stdout)
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    // A second init (tests start several apps in one process) is harmless: the first one wins.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}
