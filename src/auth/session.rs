//! Server-side sessions: the cookie `__Host-alphabank` holds a random 256-bit id; the database
//! holds only its SHA-256, the user, the stage (2FA pending or full), a per-session CSRF token,
//! and the creation and last-seen times. Idle and absolute expiry are checked on every request.

use crate::audit::{AuditContext, AuditEvent};
use crate::crypto::{Aad, random_bytes, sha256};
use crate::domain::UserId;
use crate::services::Services;
use crate::store::StoreError;
use crate::store::ledger::AccountRow;
use crate::store::sessions::{self as session_store, SessionRow};

pub const SESSION_COOKIE: &str = "__Host-alphabank";
/// Live sessions per customer; creating one more ends the oldest.
pub const SESSIONS_PER_USER_MAX: i64 = 10;
/// Last-seen is written at most this often per session (bounded by a tenth of the idle timeout).
pub const SESSION_TOUCH_INTERVAL_MILLIS_MAX: i64 = 10_000;
/// Stored user-agent strings are cut to this many characters.
pub const USER_AGENT_CHARS_MAX: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    PendingTwoFactor,
    Full,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Stage::PendingTwoFactor => "pending_2fa",
            Stage::Full => "full",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Session {
    pub id_hash: String,
    pub user_id: UserId,
    pub stage: Stage,
    pub csrf_token: String,
    pub created_at_millis: i64,
    pub last_seen_at_millis: i64,
    pub flash: Option<String>,
    /// The session logged in with a recovery code (the home page offers a new authenticator).
    pub via_recovery_code: bool,
    /// The customer's username (read with the session; usernames never change).
    pub username: String,
    /// The customer's account as of the start of the request (read with the session, so the
    /// home page needs no second read). Money movements lock and re-read it; never write from it.
    pub account: Option<Box<AccountRow>>,
}

impl From<SessionRow> for Session {
    fn from(row: SessionRow) -> Self {
        Session {
            stage: if row.stage == "full" {
                Stage::Full
            } else {
                Stage::PendingTwoFactor
            },
            id_hash: row.id_hash,
            user_id: row.user_id,
            csrf_token: row.csrf_token,
            created_at_millis: row.created_at_millis,
            last_seen_at_millis: row.last_seen_at_millis,
            flash: row.flash,
            via_recovery_code: row.login_method.as_deref() == Some("recovery_code"),
            username: String::new(),
            account: None,
        }
    }
}

/// A session just created, with the cookie value to send (never stored).
pub struct NewSession {
    pub cookie_value: String,
    pub session: Session,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    Idle,
    Absolute,
}

pub enum Lookup {
    None,
    Live(Session),
    Ended(EndReason),
}

pub fn hash_cookie(value: &str) -> String {
    hex::encode(sha256(value.as_bytes()))
}

pub fn recovery_aad(id_hash: &str) -> Aad {
    Aad::new("sessions", "recovery_codes_enc", id_hash)
}

/// Creates a session (inside `tx`), ending the oldest beyond [`SESSIONS_PER_USER_MAX`].
pub async fn create_in(
    services: &Services,
    tx: &mut crate::store::WriteTx,
    user_id: UserId,
    stage: Stage,
    ctx: &AuditContext,
    user_agent: Option<&str>,
    recovery_codes: Option<&[String]>,
) -> Result<NewSession, StoreError> {
    let cookie_value = hex::encode(random_bytes::<32>());
    let id_hash = hash_cookie(&cookie_value);
    let now = crate::now_millis();
    let row = SessionRow {
        id_hash: id_hash.clone(),
        user_id,
        stage: stage.as_str().to_string(),
        csrf_token: hex::encode(random_bytes::<32>()),
        created_at_millis: now,
        last_seen_at_millis: now,
        client_ip: ctx.client_ip.map(|ip| ip.to_string()),
        user_agent: user_agent.map(|ua| ua.chars().take(USER_AGENT_CHARS_MAX).collect()),
        recovery_codes_enc: recovery_codes.map(|codes| {
            services
                .keyring
                .seal_str(&recovery_aad(&id_hash), &codes.join("\n"))
        }),
        flash: None,
        login_method: None,
    };
    session_store::insert(tx, &row, SESSIONS_PER_USER_MAX).await?;
    Ok(NewSession {
        cookie_value,
        session: Session::from(row),
    })
}

pub async fn create(
    services: &Services,
    user_id: UserId,
    stage: Stage,
    ctx: &AuditContext,
    user_agent: Option<&str>,
) -> Result<NewSession, StoreError> {
    let mut tx = services.db.begin_write().await?;
    let created = create_in(services, &mut tx, user_id, stage, ctx, user_agent, None).await?;
    tx.commit().await?;
    Ok(created)
}

/// Finds the live session for a cookie value, ending it if idle or too old.
pub async fn lookup(
    services: &Services,
    cookie_value: &str,
    ctx: &AuditContext,
) -> Result<Lookup, StoreError> {
    if cookie_value.len() != 64 || !cookie_value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(Lookup::None);
    }
    let id_hash = hash_cookie(cookie_value);
    let Some(session_store::Found {
        row,
        username,
        account,
    }) = session_store::find(&services.db, &id_hash).await?
    else {
        return Ok(Lookup::None);
    };
    let now = crate::now_millis();
    let idle_millis =
        i64::try_from(services.config.session_idle_secs).unwrap_or(i64::MAX / 2_000) * 1_000;
    let absolute_millis =
        i64::try_from(services.config.session_absolute_secs).unwrap_or(i64::MAX / 2_000) * 1_000;
    let ended = if now - row.created_at_millis >= absolute_millis {
        Some(EndReason::Absolute)
    } else if now - row.last_seen_at_millis >= idle_millis {
        Some(EndReason::Idle)
    } else {
        None
    };
    if let Some(reason) = ended {
        if session_store::delete(&services.db, &id_hash).await? {
            let why = if reason == EndReason::Idle {
                "idle"
            } else {
                "absolute"
            };
            services
                .audit
                .record_best_effort(
                    &ctx.with_user(row.user_id),
                    AuditEvent::SessionExpired { reason: why },
                )
                .await;
        }
        return Ok(Lookup::Ended(reason));
    }
    if now - row.last_seen_at_millis >= (idle_millis / 10).min(SESSION_TOUCH_INTERVAL_MILLIS_MAX) {
        session_store::touch(&services.db, &id_hash, now).await?;
    }
    Ok(Lookup::Live(Session {
        username,
        account: account.map(Box::new),
        ..Session::from(row)
    }))
}

/// Ends the session because a failure inside it filled the account's failure count (CONTRACT
/// §3), audited `session_expired` with reason `too_many_failures`.
pub async fn end_after_failures(
    services: &Services,
    ctx: &AuditContext,
    session: &Session,
) -> Result<(), StoreError> {
    if session_store::delete(&services.db, &session.id_hash).await? {
        let event = AuditEvent::SessionExpired {
            reason: "too_many_failures",
        };
        let ctx = ctx.with_user(session.user_id);
        services.audit.record_best_effort(&ctx, event).await;
    }
    Ok(())
}

/// The customer's live sessions, newest first (the settings page's list).
pub async fn list(services: &Services, user_id: UserId) -> Result<Vec<SessionRow>, StoreError> {
    session_store::list_for_user(&services.db, user_id).await
}

/// How many of the customer's recovery codes are still unused.
pub async fn recovery_codes_left(services: &Services, user_id: UserId) -> Result<i64, StoreError> {
    session_store::recovery_codes_left(&services.db, user_id).await
}

/// Sets (or with `None` clears) the message shown on the session's next page.
pub async fn set_flash(
    services: &Services,
    session: &Session,
    message: Option<&str>,
) -> Result<(), StoreError> {
    session_store::set_flash(&services.db, &session.id_hash, message).await
}

/// Ends the session at once (its cookie no longer finds it); `false` if it had already ended.
pub async fn end(services: &Services, session: &Session) -> Result<bool, StoreError> {
    session_store::delete(&services.db, &session.id_hash).await
}

/// `Set-Cookie` for a new session: `__Host-` prefix, Secure, HttpOnly, SameSite=Strict, Path=/.
pub fn cookie_header(value: &str) -> String {
    format!("{SESSION_COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Strict")
}

/// `Set-Cookie` that deletes the session cookie in the browser.
pub fn clear_cookie_header() -> String {
    format!("{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}
