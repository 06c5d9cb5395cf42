//! SQL for server-side sessions, recovery codes and per-IP login throttling.

use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

use super::group::Param;
use super::ledger::AccountRow;
use super::{Db, StoreError, Tx, TxWork, Verdict, WriteTx};
use crate::domain::AccountKind;
use crate::domain::UserId;

#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id_hash: String,
    pub user_id: UserId,
    pub stage: String,
    pub csrf_token: String,
    pub created_at_millis: i64,
    pub last_seen_at_millis: i64,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub recovery_codes_enc: Option<Vec<u8>>,
    pub flash: Option<String>,
    /// "recovery_code" for a session that logged in with a recovery code; else `None`.
    pub login_method: Option<String>,
}

impl sqlx::FromRow<'_, AnyRow> for SessionRow {
    /// Reads the columns of [`COLUMNS`] by name.
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(SessionRow {
            id_hash: r.try_get("id_hash")?,
            user_id: r.try_get("user_id")?,
            stage: r.try_get("stage")?,
            csrf_token: r.try_get("csrf_token")?,
            created_at_millis: r.try_get("created_at")?,
            last_seen_at_millis: r.try_get("last_seen_at")?,
            client_ip: r.try_get("client_ip")?,
            user_agent: r.try_get("user_agent")?,
            recovery_codes_enc: r.try_get("recovery_codes_enc")?,
            flash: r.try_get("flash")?,
            login_method: r.try_get("login_method")?,
        })
    }
}

const COLUMNS: &str = "id_hash, user_id, stage, csrf_token, created_at, last_seen_at, client_ip, user_agent, recovery_codes_enc, flash, login_method";

/// Inserts a session and ends the oldest ones beyond `max_per_user`. Returns the ended ids.
pub async fn insert(
    tx: &mut WriteTx,
    row: &SessionRow,
    max_per_user: i64,
) -> Result<u64, StoreError> {
    sqlx::query(
        "INSERT INTO sessions (id_hash, user_id, stage, csrf_token, created_at, last_seen_at, client_ip, user_agent, recovery_codes_enc, flash, login_method) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&row.id_hash)
    .bind(row.user_id)
    .bind(&row.stage)
    .bind(&row.csrf_token)
    .bind(row.created_at_millis)
    .bind(row.last_seen_at_millis)
    .bind(row.client_ip.as_deref())
    .bind(row.user_agent.as_deref())
    .bind(row.recovery_codes_enc.as_deref())
    .bind(row.flash.as_deref())
    .bind(row.login_method.as_deref())
    .execute(tx.conn())
    .await
    .map_err(|e| StoreError::from_insert(e, "session id"))?;
    let ended = sqlx::query(
        "DELETE FROM sessions WHERE user_id = $1 AND id_hash NOT IN \
         (SELECT id_hash FROM sessions WHERE user_id = $1 ORDER BY created_at DESC, id_hash LIMIT $2)",
    )
    .bind(row.user_id)
    .bind(max_per_user)
    .execute(tx.conn())
    .await?
    .rows_affected();
    Ok(ended)
}

/// A session as read for a request: the row, its customer's username and account.
pub struct Found {
    pub row: SessionRow,
    pub username: String,
    /// The customer's account as of this read (none before enrolment finished creating it).
    pub account: Option<AccountRow>,
}

/// The session, its customer's username and account, in one statement: every page needs the
/// first two and the home page the third, which then costs no second round trip.
pub async fn find(db: &Db, id_hash: &str) -> Result<Option<Found>, StoreError> {
    let row = sqlx::query(
        "SELECT s.id_hash, s.user_id, s.stage, s.csrf_token, s.created_at, s.last_seen_at, \
         s.client_ip, s.user_agent, s.recovery_codes_enc, s.flash, s.login_method, u.username, \
         a.id AS account_id, a.kind AS account_kind, a.balance_enc AS account_balance_enc, \
         a.seq AS account_seq, a.head_mac AS account_head_mac \
         FROM sessions s LEFT JOIN users u ON u.id = s.user_id \
         LEFT JOIN accounts a ON a.user_id = s.user_id WHERE s.id_hash = $1",
    )
    .bind(id_hash)
    .fetch_optional(db.pool())
    .await?;
    let Some(r) = row else {
        return Ok(None);
    };
    let row = SessionRow::from_row(&r)?;
    let account = match r.try_get::<Option<i64>, _>("account_id")? {
        Some(id) => Some(AccountRow {
            id,
            user_id: Some(row.user_id),
            kind: super::ledger::kind_column(&r, "account_kind", AccountKind::parse)?,
            balance_enc: r.try_get("account_balance_enc")?,
            seq: r.try_get("account_seq")?,
            head_mac: r.try_get("account_head_mac")?,
        }),
        None => None,
    };
    Ok(Some(Found {
        row,
        username: r
            .try_get::<Option<String>, _>("username")?
            .unwrap_or_default(),
        account,
    }))
}

/// Records that the session was used at `now`. On SQLite it joins the group commit: a touch is
/// a write for every session that comes back after the touch interval, and alone each would wait
/// for the write gate and pay its own `fsync`, with the batch writer waiting behind it.
pub async fn touch(db: &Db, id_hash: &str, now: i64) -> Result<(), StoreError> {
    let touch = Touch {
        id_hash: id_hash.to_string(),
        now,
        outcome: None,
    };
    db.run_write(touch)
        .await?
        .outcome
        .unwrap_or_else(|| Err(StoreError::Corrupt("a session touch did not run".into())))
}

const TOUCH: &str = "UPDATE sessions SET last_seen_at = $1 WHERE id_hash = $2";

/// A session touch as a write of its own.
struct Touch {
    id_hash: String,
    now: i64,
    outcome: Option<Result<(), StoreError>>,
}

impl TxWork for Touch {
    async fn run(&mut self, tx: &mut Tx<'_>) -> Verdict {
        let outcome = match tx {
            Tx::Sqlx(tx) => sqlx::query(TOUCH)
                .bind(self.now)
                .bind(&self.id_hash)
                .execute(tx.conn())
                .await
                .map(|_| ())
                .map_err(StoreError::from),
            Tx::Batch(tx) => {
                let params = [
                    Param::Integer(self.now),
                    Param::Text(self.id_hash.as_bytes()),
                ];
                tx.execute(&[TOUCH], &params).map(|_| ())
            }
        };
        let verdict = if outcome.is_ok() {
            Verdict::Keep
        } else {
            Verdict::Abort
        };
        self.outcome = Some(outcome);
        verdict
    }
}

pub async fn delete(db: &Db, id_hash: &str) -> Result<bool, StoreError> {
    let mut tx = db.begin_write().await?;
    let n = sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
        .bind(id_hash)
        .execute(tx.conn())
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(n == 1)
}

pub async fn delete_in(tx: &mut WriteTx, id_hash: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
        .bind(id_hash)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// Ends every session of `user_id` except `keep`; returns how many ended.
pub async fn delete_others(
    tx: &mut WriteTx,
    user_id: UserId,
    keep: &str,
) -> Result<u64, StoreError> {
    Ok(
        sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND id_hash <> $2")
            .bind(user_id)
            .bind(keep)
            .execute(tx.conn())
            .await?
            .rows_affected(),
    )
}

pub async fn list_for_user(db: &Db, user_id: UserId) -> Result<Vec<SessionRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM sessions WHERE user_id = $1 ORDER BY created_at DESC"
    ));
    let rows: Vec<SessionRow> = sqlx::query_as(sql)
        .bind(user_id)
        .fetch_all(db.pool())
        .await?;
    Ok(rows)
}

/// Takes (reads and clears) the session's sealed recovery codes.
pub async fn take_recovery_codes(db: &Db, id_hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let mut tx = db.begin_write().await?;
    let row: Option<(Option<Vec<u8>>,)> =
        sqlx::query_as("SELECT recovery_codes_enc FROM sessions WHERE id_hash = $1")
            .bind(id_hash)
            .fetch_optional(tx.conn())
            .await?;
    sqlx::query("UPDATE sessions SET recovery_codes_enc = NULL WHERE id_hash = $1")
        .bind(id_hash)
        .execute(tx.conn())
        .await?;
    tx.commit().await?;
    Ok(row.and_then(|(codes,)| codes))
}

pub async fn set_flash(db: &Db, id_hash: &str, flash: Option<&str>) -> Result<(), StoreError> {
    let mut tx = db.begin_write().await?;
    sqlx::query("UPDATE sessions SET flash = $1 WHERE id_hash = $2")
        .bind(flash)
        .bind(id_hash)
        .execute(tx.conn())
        .await?;
    tx.commit().await
}

pub async fn insert_recovery_codes(
    tx: &mut WriteTx,
    user_id: UserId,
    hashes: &[Vec<u8>],
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
        .bind(user_id)
        .execute(tx.conn())
        .await?;
    for hash in hashes {
        sqlx::query("INSERT INTO recovery_codes (user_id, code_hash) VALUES ($1, $2)")
            .bind(user_id)
            .bind(hash.as_slice())
            .execute(tx.conn())
            .await?;
    }
    Ok(())
}

/// Marks a recovery code used; `true` only for the first use (atomic).
pub async fn spend_recovery_code(
    db: &Db,
    user_id: UserId,
    hash: &[u8],
    now: i64,
) -> Result<bool, StoreError> {
    let mut tx = db.begin_write().await?;
    let n = sqlx::query("UPDATE recovery_codes SET used_at = $1 WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL")
        .bind(now)
        .bind(user_id)
        .bind(hash)
        .execute(tx.conn())
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(n == 1)
}

pub async fn recovery_codes_left(db: &Db, user_id: UserId) -> Result<i64, StoreError> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
    )
    .bind(user_id)
    .fetch_one(db.pool())
    .await?;
    Ok(n)
}

/// Failed logins from `client_ip` in the current window (fixed window per address).
pub async fn ip_login_failures(
    db: &Db,
    client_ip: &str,
    now: i64,
    window_millis: i64,
) -> Result<i64, StoreError> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT attempts FROM login_throttle WHERE client_ip = $1 AND window_start >= $2",
    )
    .bind(client_ip)
    .bind(now - window_millis)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.map_or(0, |(n,)| n))
}

/// Counts a failed login from `client_ip`; a window older than `window_millis` starts afresh.
pub async fn record_ip_login_failure(
    db: &Db,
    client_ip: &str,
    now: i64,
    window_millis: i64,
) -> Result<(), StoreError> {
    let mut tx = db.begin_write().await?;
    sqlx::query("DELETE FROM login_throttle WHERE window_start < $1")
        .bind(now - window_millis)
        .execute(tx.conn())
        .await?;
    sqlx::query(
        "INSERT INTO login_throttle (client_ip, window_start, attempts) VALUES ($1, $2, 1) \
         ON CONFLICT (client_ip) DO UPDATE SET attempts = login_throttle.attempts + 1",
    )
    .bind(client_ip)
    .bind(now)
    .execute(tx.conn())
    .await?;
    tx.commit().await
}

/// Counts one attempt of `key` in one statement: `false` (refuse) when the window that started
/// within `window_millis` already holds `max`. The `signup_throttle` table holds every such
/// count: a sign-up's key is its client address (counted before the password is hashed), the
/// account-recovery counts are `recover-ip|<address>` and `recover-mail|<user id>`.
pub async fn charge_window(
    db: &Db,
    key: &str,
    now: i64,
    window_millis: i64,
    max: i64,
) -> Result<bool, StoreError> {
    let mut tx = db.begin_write().await?;
    let row: Option<(i64,)> = sqlx::query_as(
        "INSERT INTO signup_throttle (client_ip, window_start, attempts) VALUES ($1, $2, 1) \
         ON CONFLICT (client_ip) DO UPDATE SET \
           attempts = CASE WHEN signup_throttle.window_start < $3 THEN 1 \
                           ELSE signup_throttle.attempts + 1 END, \
           window_start = CASE WHEN signup_throttle.window_start < $3 THEN $2 \
                               ELSE signup_throttle.window_start END \
         WHERE signup_throttle.window_start < $3 OR signup_throttle.attempts < $4 \
         RETURNING attempts",
    )
    .bind(key)
    .bind(now)
    .bind(now - window_millis)
    .bind(max)
    .fetch_optional(tx.conn())
    .await?;
    sqlx::query("DELETE FROM signup_throttle WHERE window_start < $1")
        .bind(now - window_millis)
        .execute(tx.conn())
        .await?;
    tx.commit().await?;
    Ok(row.is_some())
}

/// Ends sessions idle or older than allowed (housekeeping; expiry is also checked per request).
pub async fn delete_expired(
    db: &Db,
    idle_before: i64,
    created_before: i64,
) -> Result<u64, StoreError> {
    let mut tx = db.begin_write().await?;
    let n = sqlx::query("DELETE FROM sessions WHERE last_seen_at < $1 OR created_at < $2")
        .bind(idle_before)
        .bind(created_before)
        .execute(tx.conn())
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(n)
}

/// Marks the session as logged in by `method` ("recovery_code"), for the home page's notice.
pub async fn set_login_method(db: &Db, id_hash: &str, method: &str) -> Result<(), StoreError> {
    let mut tx = db.begin_write().await?;
    sqlx::query("UPDATE sessions SET login_method = $1 WHERE id_hash = $2")
        .bind(method)
        .bind(id_hash)
        .execute(tx.conn())
        .await?;
    tx.commit().await
}

/// A new authenticator is in place: no session of the customer asks for one any more.
pub async fn clear_login_methods_in(tx: &mut WriteTx, user_id: UserId) -> Result<(), StoreError> {
    sqlx::query("UPDATE sessions SET login_method = NULL WHERE user_id = $1")
        .bind(user_id)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// Keeps `codes_enc` (the sealed new recovery codes) on the session, to be shown once.
pub async fn set_recovery_codes_in(
    tx: &mut WriteTx,
    id_hash: &str,
    codes_enc: &[u8],
) -> Result<(), StoreError> {
    sqlx::query("UPDATE sessions SET recovery_codes_enc = $1 WHERE id_hash = $2")
        .bind(codes_enc)
        .bind(id_hash)
        .execute(tx.conn())
        .await?;
    Ok(())
}
