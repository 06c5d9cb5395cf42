//! The tamper-evident audit log: typed security events, appended to the database and chained.
//!
//! Each event belongs to a stream (`u<user id>` for a customer's events, one of
//! [`AUDIT_ANONYMOUS_STREAMS`] `a<n>` streams for events without a user, keyed by client IP, and
//! `sys` for operator actions). Each event carries a MAC over its content and the previous
//! event's MAC in the same stream, and the stream's head row holds the newest `(seq, mac)`, so an
//! edited, deleted, inserted or reordered event is detected by `alphabank verify`. Streams make
//! appends for different customers independent: no global lock per request.
//!
//! Events never carry a password, code, cookie, key or secret: the detail is a typed struct, and
//! every field is serialised as JSON (no string-built log lines, so no log injection).

use std::net::IpAddr;

use serde::Serialize;
use sqlx::AnyConnection;

use crate::crypto::{Keyring, sha256};
use crate::domain::UserId;
use crate::limits::{AUDIT_ANONYMOUS_STREAMS, SCAN_BATCH_ROWS};
use crate::store::audit::{self as audit_store, AuditHead, AuditRow};
use crate::store::{Db, StoreError, Tx, WriteTx};

/// Every security-relevant event. The variant name is the event name (`snake_case`).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", content = "detail", rename_all = "snake_case")]
pub enum AuditEvent {
    Signup,
    /// A client address over its sign-ups for the window.
    SignupThrottled,
    LoginSucceeded {
        method: &'static str,
    },
    LoginFailed {
        reason: &'static str,
    },
    /// A failure count locked: `scope` "shared" (every browser without the account's device
    /// cookie) or "device" (one known browser).
    AccountLocked {
        locked_for_secs: i64,
        lockouts: i64,
        scope: &'static str,
    },
    Logout,
    SessionExpired {
        reason: &'static str,
    },
    SessionsRevoked {
        count: u64,
    },
    TwoFactorEnrolled,
    RecoveryCodeUsed {
        remaining: i64,
    },
    Transfer {
        entry_id: i64,
        to_user_id: UserId,
        /// The passkey signature that confirmed it (CONTRACT §7); none for a code.
        #[serde(skip_serializing_if = "Option::is_none")]
        signed: Option<Signature>,
    },
    Deposit {
        entry_id: i64,
    },
    MoneyMovementRefused {
        kind: &'static str,
        reason: &'static str,
    },
    CsrfRejected {
        path: String,
    },
    RateLimited {
        path: String,
    },
    CaptchaFailed {
        form: &'static str,
    },
    AccessDenied {
        path: String,
    },
    PasswordChanged,
    PasskeyAdded {
        passkey_id: i64,
    },
    PasskeyRemoved {
        passkey_id: i64,
    },
    /// Adding or removing a passkey refused (`action` "add" or "remove").
    PasskeyRefused {
        action: &'static str,
        reason: &'static str,
    },
    /// An assertion whose signature counter did not move forward: a cloned authenticator, or a
    /// replayed assertion. Refused.
    PasskeyCloneSuspected {
        passkey_id: i64,
    },
    /// A `recovery-code` message was written (the code is never in an event).
    RecoveryCodeSent,
    /// A recovery step refused for the account: "mail_throttled" (over its messages an hour),
    /// "wrong_code", "wrong_second_factor".
    RecoveryRefused {
        reason: &'static str,
    },
    /// The password was replaced through account recovery; every session ended.
    PasswordReset {
        sessions_ended: u64,
    },
    /// The customer asked for a new authenticator (its secret waits for a first code).
    AuthenticatorReplacementStarted,
    /// A new authenticator's first code confirmed it: the old one no longer works.
    AuthenticatorReplaced,
    /// Ten new recovery codes; the old ones no longer work.
    RecoveryCodesReplaced,
    /// A new authenticator or new recovery codes (`what` "authenticator" or "recovery_codes")
    /// refused for a wrong password or code.
    SecondFactorChangeRefused {
        what: &'static str,
        reason: &'static str,
    },
    /// A password change refused for a wrong current password or code (one message to the user).
    PasswordChangeRefused {
        reason: &'static str,
    },
    /// A message given up after failing to be delivered for `MAIL_GIVE_UP_AFTER` (or unreadable):
    /// `kind` its `X-AlphaBank-Event`, `attempts` how often it was tried, `error` the last failure.
    MailAbandoned {
        kind: String,
        attempts: i64,
        error: String,
    },
    /// A message not written because the outbox (or the customer's share of it) was full.
    MailDropped {
        kind: &'static str,
    },
    KeyRotation {
        new_key_id: u32,
        resealed: u64,
    },
    /// `keys rotate-master` (`phase` "started") or `keys rotate-master --finish` ("finished");
    /// `new_master_key_id` is the new key's non-secret id (see `crypto::master`).
    MasterKeyRotation {
        phase: &'static str,
        new_master_key_id: String,
        data_keys: u64,
    },
}

/// The passkey signature of a payment: SHA-256 of its canonical text (hex), and which passkey.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Signature {
    pub digest: String,
    pub passkey_id: i64,
    /// The credential id (base64url).
    pub credential: String,
}

/// Longest path stored in an event detail.
const DETAIL_PATH_CHARS_MAX: usize = 200;

impl AuditEvent {
    /// Builds a path-carrying detail, bounded in length.
    pub fn path(path: &str) -> String {
        path.chars().take(DETAIL_PATH_CHARS_MAX).collect()
    }

    fn name_and_detail(&self) -> (String, String) {
        let value = serde_json::to_value(self).unwrap_or_default();
        let name = value
            .get("event")
            .and_then(|v| v.as_str())
            .unwrap_or("unknown")
            .to_string();
        let detail = value
            .get("detail")
            .cloned()
            .unwrap_or(serde_json::Value::Object(Default::default()));
        (name, detail.to_string())
    }
}

/// Who and where: attached to every event.
#[derive(Debug, Clone, Default)]
pub struct AuditContext {
    pub user_id: Option<UserId>,
    pub client_ip: Option<IpAddr>,
    pub request_id: Option<String>,
}

impl AuditContext {
    pub fn system() -> Self {
        AuditContext::default()
    }
    pub fn with_user(&self, user_id: UserId) -> Self {
        AuditContext {
            user_id: Some(user_id),
            ..self.clone()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A JSON line of `audit tail`.
#[derive(Debug, Serialize)]
pub struct AuditLine {
    pub id: i64,
    pub time: String,
    pub event: String,
    pub user_id: Option<UserId>,
    pub client_ip: Option<String>,
    pub request_id: Option<String>,
    pub detail: serde_json::Value,
}

impl From<AuditRow> for AuditLine {
    fn from(row: AuditRow) -> Self {
        AuditLine {
            id: row.id,
            time: format_time(row.created_at_millis),
            event: row.event,
            user_id: row.user_id,
            client_ip: row.client_ip,
            request_id: row.request_id,
            detail: serde_json::from_str(&row.detail).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// RFC 3339 UTC time of a millisecond timestamp.
pub fn format_time(millis: i64) -> String {
    let nanos = i128::from(millis) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[derive(Clone, Debug)]
pub struct AuditLog {
    db: Db,
    keyring: Keyring,
}

/// The stream of a customer's events.
pub fn user_stream(user_id: UserId) -> String {
    format!("u{user_id}")
}

fn stream_of(ctx: &AuditContext) -> String {
    match (ctx.user_id, ctx.client_ip) {
        (Some(user_id), _) => user_stream(user_id),
        (None, Some(ip)) => {
            let digest = sha256(ip.to_string().as_bytes());
            let shard = u64::from_be_bytes(
                digest
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .unwrap_or([0; 8]),
            );
            format!("a{}", shard % AUDIT_ANONYMOUS_STREAMS)
        }
        (None, None) => "sys".to_string(),
    }
}

/// Writes an appended event to the operator's log too.
fn logged(row: &AuditRow) {
    tracing::info!(
        target: "audit",
        event = %row.event,
        user_id = ?row.user_id,
        client_ip = ?row.client_ip,
        request_id = ?row.request_id,
        detail = %row.detail,
        "audit event"
    );
}

impl AuditLog {
    pub fn new(db: Db, keyring: Keyring) -> Self {
        AuditLog { db, keyring }
    }

    fn genesis_mac(&self, stream: &str) -> [u8; 32] {
        self.keyring.mac(&[b"audit-genesis", stream.as_bytes()])
    }

    fn event_mac(&self, row: &AuditRow) -> [u8; 32] {
        let user = row
            .user_id
            .map(|u| u.to_be_bytes().to_vec())
            .unwrap_or_default();
        self.keyring.mac(&[
            b"audit",
            row.stream.as_bytes(),
            &row.seq.to_be_bytes(),
            &row.created_at_millis.to_be_bytes(),
            row.event.as_bytes(),
            &user,
            row.client_ip.as_deref().unwrap_or_default().as_bytes(),
            row.request_id.as_deref().unwrap_or_default().as_bytes(),
            row.detail.as_bytes(),
            &row.prev_mac,
        ])
    }

    /// Appends an event in its own transaction.
    pub async fn record(&self, ctx: &AuditContext, event: AuditEvent) -> Result<(), AuditError> {
        let mut tx = self.db.begin_write().await?;
        self.record_in(&mut tx, ctx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Appends an event inside the caller's transaction (e.g. with the ledger movement it reports).
    pub async fn record_in(
        &self,
        tx: &mut WriteTx,
        ctx: &AuditContext,
        event: AuditEvent,
    ) -> Result<(), AuditError> {
        self.record_in_after(&mut Tx::Sqlx(tx), ctx, event, None)
            .await
    }

    /// [`Audit::record_in`] for a caller that already read the head of the event's stream under
    /// this transaction's write lock (on SQLite, a money movement reads it in the statement
    /// that locks its accounts: one statement fewer). A head of another stream, or none, is
    /// read here. A stale head cannot fork the chain: the append moves the head only from the
    /// `seq` it was read at, and fails otherwise.
    pub async fn record_in_after(
        &self,
        tx: &mut Tx<'_>,
        ctx: &AuditContext,
        event: AuditEvent,
        head: Option<AuditHead>,
    ) -> Result<(), AuditError> {
        let stream = stream_of(ctx);
        let (seq, prev_mac) = match head {
            Some(head) if head.stream == stream => (head.seq, head.mac),
            _ => audit_store::lock_head(tx, &stream, &self.genesis_mac(&stream)).await?,
        };
        let row = self.next_row(ctx, event, stream, seq, prev_mac);
        audit_store::append(tx, &row).await?;
        logged(&row);
        Ok(())
    }

    /// The event that follows `(seq, prev_mac)` in `stream`, with its MAC.
    fn next_row(
        &self,
        ctx: &AuditContext,
        event: AuditEvent,
        stream: String,
        seq: i64,
        prev_mac: Vec<u8>,
    ) -> AuditRow {
        let (name, detail) = event.name_and_detail();
        let mut row = AuditRow {
            id: 0,
            stream,
            seq: seq + 1,
            created_at_millis: crate::now_millis(),
            event: name,
            user_id: ctx.user_id,
            client_ip: ctx.client_ip.map(|ip| ip.to_string()),
            request_id: ctx.request_id.clone(),
            detail,
            prev_mac,
            mac: Vec::new(),
        };
        row.mac = self.event_mac(&row).to_vec();
        row
    }

    /// Records an event and logs (rather than fails the request) if the database refuses it.
    pub async fn record_best_effort(&self, ctx: &AuditContext, event: AuditEvent) {
        if let Err(error) = self.record(ctx, event).await {
            tracing::error!(%error, "could not append audit event");
        }
    }

    pub async fn tail(&self, n: u32) -> Result<Vec<AuditLine>, AuditError> {
        let rows = audit_store::tail(&self.db, i64::from(n)).await?;
        Ok(rows.into_iter().map(AuditLine::from).collect())
    }

    pub async fn recent_for_user(
        &self,
        user_id: UserId,
        n: u32,
    ) -> Result<Vec<AuditLine>, AuditError> {
        let rows = audit_store::recent_for_user(&self.db, user_id, i64::from(n)).await?;
        Ok(rows.into_iter().map(AuditLine::from).collect())
    }

    /// Walks every stream; returns how many events were checked, or the first bad record.
    pub async fn verify(
        &self,
        conn: &mut AnyConnection,
    ) -> Result<Result<u64, String>, StoreError> {
        if let Some(stream) = audit_store::streams_without_head(conn)
            .await?
            .into_iter()
            .next()
        {
            return Ok(Err(format!(
                "audit stream {stream}: its head record is missing"
            )));
        }
        let mut checked = 0u64;
        let mut after = String::new();
        loop {
            let heads = audit_store::heads_after(conn, &after, SCAN_BATCH_ROWS).await?;
            let Some(last) = heads.last() else { break };
            after = last.0.clone();
            for (stream, head_seq, head_mac) in heads {
                let mut running = self.genesis_mac(&stream).to_vec();
                let mut expected_seq = 1;
                loop {
                    let events =
                        audit_store::stream_after(conn, &stream, expected_seq - 1, SCAN_BATCH_ROWS)
                            .await?;
                    if events.is_empty() {
                        break;
                    }
                    for event in events {
                        let at = format!(
                            "audit event id={} (stream {}, seq {})",
                            event.id, stream, event.seq
                        );
                        if event.seq != expected_seq {
                            return Ok(Err(format!(
                                "{at}: expected seq {expected_seq}; an event was deleted or reordered"
                            )));
                        }
                        if event.prev_mac != running {
                            return Ok(Err(format!(
                                "{at}: does not follow the previous event; the chain was broken"
                            )));
                        }
                        if !crate::crypto::constant_time_eq(&self.event_mac(&event), &event.mac) {
                            return Ok(Err(format!("{at}: MAC mismatch; the event was edited")));
                        }
                        running = event.mac;
                        expected_seq += 1;
                        checked += 1;
                    }
                }
                if expected_seq - 1 != head_seq || running != head_mac {
                    return Ok(Err(format!(
                        "audit stream {stream}: head says seq {head_seq} but the chain ends at seq {}; events were deleted or the head was edited",
                        expected_seq - 1
                    )));
                }
            }
        }
        Ok(Ok(checked))
    }
}
