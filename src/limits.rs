//! Every bound the bank enforces, in one place (TigerBeetle style: units last).
//! `docs/limits.md` lists each with its reason; tests assert each one.

use std::time::Duration;

/// Largest accepted request body (forms are small; 16 KiB is generous).
pub const REQUEST_BODY_BYTES_MAX: usize = 16 * 1024;
/// A request that takes longer than this is answered 408/503 and dropped.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A client must send its request head within this time (slowloris).
pub const REQUEST_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line + headers) hyper buffers; beyond it: 431.
pub const REQUEST_HEAD_BYTES_MAX: usize = 16 * 1024;
/// Longest request target (path + query); beyond it: 414.
pub const REQUEST_URI_BYTES_MAX: usize = 2_048;
/// Requests handled at once by one instance; beyond it: 503 at once (no unbounded queue).
pub const REQUESTS_IN_FLIGHT_MAX: usize = 1_024;
/// Graceful shutdown waits at most this long for in-flight requests.
pub const SHUTDOWN_DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Database pool size for SQLite (one writer at a time anyway; readers run in parallel under WAL).
pub const DB_POOL_CONNECTIONS_SQLITE_MAX: u32 = 8;
/// Database pool size for PostgreSQL, per instance.
pub const DB_POOL_CONNECTIONS_POSTGRES_MAX: u32 = 16;
/// Waiting longer than this for a pooled connection fails the request (503) instead of queueing forever.
pub const DB_POOL_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// SQLite busy timeout for cross-process write contention (CLI beside a running server).
pub const SQLITE_BUSY_TIMEOUT_MILLIS: u32 = 5_000;

/// Largest ATM deposit: 10 000,00 kr (from the original AlphaBank design).
pub const ATM_DEPOSIT_MINOR_MAX: i64 = 1_000_000;
/// Largest amount a form may carry: 9 integer digits of kroner plus øre.
pub const AMOUNT_MINOR_MAX: i64 = 99_999_999_999;

/// Rows per page in the full transaction history.
pub const HISTORY_PAGE_ROWS: u32 = 20;
/// Movements shown on the home page.
pub const HOME_RECENT_ROWS: u32 = 10;
/// Decrypted history rows kept in memory per generation (two generations; rows never change).
pub const HISTORY_CACHE_ROWS: usize = 8_192;
/// Rows read per batch when `verify` or `keys rotate` walks a table.
pub const SCAN_BATCH_ROWS: i64 = 500;

/// `audit tail -n` upper bound.
pub const AUDIT_TAIL_ROWS_MAX: u32 = 10_000;
/// Anonymous audit events (no user) are spread over this many chains so they do not contend.
pub const AUDIT_ANONYMOUS_STREAMS: u64 = 16;

/// Money movements committed together in one SQLite transaction at most (group commit).
pub const GROUP_COMMIT_BATCH_MAX: usize = 64;
/// Movements waiting for the SQLite writer at most; beyond it a movement runs on its own.
pub const GROUP_COMMIT_QUEUE_MAX: usize = 1024;

/// Messages waiting in the outbox at most, for all customers together; beyond it a notification
/// is dropped (logged) and a message that carries a code is refused (503, try again).
pub const OUTBOX_PENDING_MAX: i64 = 50_000;
/// Messages waiting in the outbox at most for one customer (a login flood from new browsers
/// must not fill the queue); beyond it the same as above.
pub const OUTBOX_PENDING_PER_USER_MAX: i64 = 50;
/// Longest text part of a message.
pub const MAIL_BODY_BYTES_MAX: usize = 8 * 1024;
/// Messages one sender takes from the outbox at a time.
pub const MAIL_CLAIM_BATCH: i64 = 16;
/// A claimed message is due again after this long if its sender has not settled it (the sender
/// died mid-send): longer than any one delivery may take (`MAIL_SEND_TIMEOUT`).
pub const MAIL_LEASE: Duration = Duration::from_secs(120);
/// One delivery attempt (connect, TLS, the SMTP dialogue) at most.
pub const MAIL_SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// First retry after a failed delivery; each further one waits twice as long, up to the cap.
pub const MAIL_RETRY_FIRST: Duration = Duration::from_secs(5);
/// Longest wait between two attempts.
pub const MAIL_RETRY_MAX: Duration = Duration::from_secs(15 * 60);
/// A message not delivered this long after it was written is given up (audited).
pub const MAIL_GIVE_UP_AFTER: Duration = Duration::from_secs(25 * 60 * 60);
/// How often a sender looks for due messages it was not woken for (retries, other instances').
pub const MAIL_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// A code sent by mail (account recovery) is valid this long.
pub const EMAIL_CODE_TTL: Duration = Duration::from_secs(30 * 60);
/// Tries a code sent by mail allows; the next wrong one has burnt it.
pub const EMAIL_CODE_TRIES_MAX: i64 = 5;
/// The window of the recovery counts below.
pub const RECOVERY_WINDOW: Duration = Duration::from_secs(60 * 60);
/// `recovery-code` messages one account gets per window (CONTRACT §9: at most 3 an hour).
pub const RECOVERY_MAILS_PER_WINDOW: i64 = 3;
/// Recovery requests and resets one client address may make per window, together.
pub const RECOVERY_REQUESTS_PER_IP: i64 = 20;
