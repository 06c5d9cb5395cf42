//! Mail (CONTRACT §8): what each message says, the outbox it is written to in the transaction of
//! its event, and the sender that delivers it (`sender`).
//!
//! A message is a row of the `outbox` table (its text sealed like every other secret) until it is
//! delivered: written with its event's state change and audit row in one transaction, so a
//! committed event always has its message and a rolled-back one never does. The sender claims
//! due rows with a lease, delivers them over SMTP (or as `.eml` files when no SMTP server is
//! configured), deletes them once delivered, and retries a failure with back-off until
//! `MAIL_GIVE_UP_AFTER`. Several instances share the table; a claim moves a row a lease ahead,
//! so each message is sent by one of them.

pub mod sender;

use std::sync::Arc;

use tokio::sync::Notify;

use crate::audit::{AuditContext, AuditError, AuditEvent, AuditLog};
use crate::crypto::{Aad, Keyring};
use crate::domain::UserId;
use crate::limits::MAIL_BODY_BYTES_MAX;
use crate::store::outbox::{self as outbox_store, NewMessage, Queued};
use crate::store::{Db, StoreError, WriteTx};

/// Why a message is sent: its `X-AlphaBank-Event` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailKind {
    VerifyEmail,
    SignupAttempt,
    RecoveryCode,
    NewDeviceLogin,
    AccountLocked,
    PasswordChanged,
    AuthenticatorReplaced,
    RecoveryCodesReplaced,
    PasskeyAdded,
    PasskeyRemoved,
    PaymentRequest,
}

impl MailKind {
    pub const ALL: [MailKind; 11] = [
        MailKind::VerifyEmail,
        MailKind::SignupAttempt,
        MailKind::RecoveryCode,
        MailKind::NewDeviceLogin,
        MailKind::AccountLocked,
        MailKind::PasswordChanged,
        MailKind::AuthenticatorReplaced,
        MailKind::RecoveryCodesReplaced,
        MailKind::PasskeyAdded,
        MailKind::PasskeyRemoved,
        MailKind::PaymentRequest,
    ];

    /// The header's value, also the `kind` column.
    pub fn event(self) -> &'static str {
        match self {
            MailKind::VerifyEmail => "verify-email",
            MailKind::SignupAttempt => "signup-attempt",
            MailKind::RecoveryCode => "recovery-code",
            MailKind::NewDeviceLogin => "new-device-login",
            MailKind::AccountLocked => "account-locked",
            MailKind::PasswordChanged => "password-changed",
            MailKind::AuthenticatorReplaced => "authenticator-replaced",
            MailKind::RecoveryCodesReplaced => "recovery-codes-replaced",
            MailKind::PasskeyAdded => "passkey-added",
            MailKind::PasskeyRemoved => "passkey-removed",
            MailKind::PaymentRequest => "payment-request",
        }
    }

    pub fn from_event(event: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.event() == event)
    }

    pub fn subject(self) -> &'static str {
        match self {
            MailKind::VerifyEmail => "Your AlphaBank verification code",
            MailKind::SignupAttempt => {
                "Someone tried to open an AlphaBank account with your address"
            }
            MailKind::RecoveryCode => "Your AlphaBank recovery code",
            MailKind::NewDeviceLogin => "New log-in to your AlphaBank account",
            MailKind::AccountLocked => "Your AlphaBank account is locked for a while",
            MailKind::PasswordChanged => "Your AlphaBank password was changed",
            MailKind::AuthenticatorReplaced => "Your AlphaBank authenticator was replaced",
            MailKind::RecoveryCodesReplaced => "You have new AlphaBank recovery codes",
            MailKind::PasskeyAdded => "A passkey was added to your AlphaBank account",
            MailKind::PasskeyRemoved => "A passkey was removed from your AlphaBank account",
            MailKind::PaymentRequest => "You have a new payment request in AlphaBank",
        }
    }
}

/// A message before it is written: why, and its text. The recipient is the customer it is
/// written for, at the address they have when it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub kind: MailKind,
    pub body: String,
}

/// Lines longer than this are wrapped at a space, so that a message stays 7-bit text with
/// lines a mail reader does not fold (a longer word, such as a link, stays whole).
const LINE_CHARS_MAX: usize = 72;

fn wrap(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / LINE_CHARS_MAX);
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let mut width = 0;
        for (j, word) in line.split(' ').enumerate() {
            let len = word.chars().count();
            if j > 0 {
                if width + 1 + len > LINE_CHARS_MAX {
                    out.push('\n');
                    width = 0;
                } else {
                    out.push(' ');
                    width += 1;
                }
            }
            out.push_str(word);
            width += len;
        }
    }
    out
}

impl Mail {
    fn new(kind: MailKind, body: String) -> Mail {
        Mail {
            kind,
            body: wrap(&body),
        }
    }
}

/// The closing every notification carries: what to do if it was not the customer.
fn not_you(public_url: &str) -> String {
    format!(
        "If this was not you, log in at {public_url} and change your password, or answer this \
         message to reach us. AlphaBank never asks for your password or codes by mail.\n"
    )
}

/// When something happened, as the message states it.
fn when(millis: i64) -> String {
    let nanos = i128::from(millis) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[day] [month repr:short] [year], [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_default()
}

impl Mail {
    /// A browser without the account's device cookie logged in.
    pub fn new_device_login(
        public_url: &str,
        at_millis: i64,
        ip: Option<std::net::IpAddr>,
        user_agent: Option<&str>,
    ) -> Mail {
        let ip = ip.map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
        let browser = crate::domain::browser::describe(user_agent.unwrap_or_default());
        Mail::new(
            MailKind::NewDeviceLogin,
            format!(
                "Hello,\n\nyour AlphaBank account was logged into from a browser it has not seen \
                 before.\n\nTime: {}\nAddress: {ip}\nBrowser: {browser}\n\n{}",
                when(at_millis),
                not_you(public_url)
            ),
        )
    }

    /// Too many failed log-ins or codes locked the account (or one browser's log-ins) for a while.
    pub fn account_locked(public_url: &str, at_millis: i64, locked_for_secs: i64) -> Mail {
        let minutes = (locked_for_secs.max(0) + 59) / 60;
        let unit = if minutes == 1 { "minute" } else { "minutes" };
        Mail::new(
            MailKind::AccountLocked,
            format!(
                "Hello,\n\nafter too many failed attempts to log in or confirm with a code, \
                 log-ins to your AlphaBank account are refused for {minutes} {unit} \
                 (from {}). Browsers you have logged in with before may not be affected.\n\n{}",
                when(at_millis),
                not_you(public_url)
            ),
        )
    }

    pub fn password_changed(public_url: &str, at_millis: i64) -> Mail {
        Mail::new(
            MailKind::PasswordChanged,
            format!(
                "Hello,\n\nthe password of your AlphaBank account was changed on {}. Every other \
                 session was logged out.\n\n{}",
                when(at_millis),
                not_you(public_url)
            ),
        )
    }

    /// The code for a forgotten password, on a line of its own (CONTRACT §8).
    pub fn recovery_code(public_url: &str, code: &str, valid: std::time::Duration) -> Mail {
        Mail::new(
            MailKind::RecoveryCode,
            format!(
                "Hello,\n\nsomeone asked to set a new password for your AlphaBank account. \
                 To do it, enter this code on the page that asked for it, with a code from your \
                 authenticator app or one of your recovery codes:\n\nCode: {code}\n\nThe code \
                 is valid for {} minutes. If you did not ask for it, ignore this message: \
                 without the code and your authenticator nobody can change your password.\n\n{}",
                valid.as_secs() / 60,
                not_you(public_url)
            ),
        )
    }

    pub fn authenticator_replaced(public_url: &str, at_millis: i64) -> Mail {
        Mail::new(
            MailKind::AuthenticatorReplaced,
            format!(
                "Hello,\n\nyour AlphaBank account has a new authenticator app since {}. Codes \
                 from the old one no longer work.\n\n{}",
                when(at_millis),
                not_you(public_url)
            ),
        )
    }

    pub fn recovery_codes_replaced(public_url: &str, at_millis: i64) -> Mail {
        Mail::new(
            MailKind::RecoveryCodesReplaced,
            format!(
                "Hello,\n\nnew recovery codes were made for your AlphaBank account on {}. The \
                 old codes no longer work.\n\n{}",
                when(at_millis),
                not_you(public_url)
            ),
        )
    }

    pub fn passkey_added(public_url: &str, at_millis: i64) -> Mail {
        Mail::new(
            MailKind::PasskeyAdded,
            format!(
                "Hello,\n\na passkey was added to your AlphaBank account on {}. It can log in \
                 and sign payments.\n\n{}",
                when(at_millis),
                not_you(public_url)
            ),
        )
    }

    pub fn passkey_removed(public_url: &str, at_millis: i64) -> Mail {
        Mail::new(
            MailKind::PasskeyRemoved,
            format!(
                "Hello,\n\na passkey was removed from your AlphaBank account on {}.\n\n{}",
                when(at_millis),
                not_you(public_url)
            ),
        )
    }
}

/// The associated data of a message's sealed text: bound to its row.
pub fn body_aad(id: i64) -> Aad {
    Aad::new("outbox", "body_enc", id)
}

/// Writes messages into the outbox (with the audit event that causes them) and wakes this
/// instance's sender after a commit.
#[derive(Clone, Debug)]
pub struct Outbox {
    db: Db,
    keyring: Keyring,
    audit: AuditLog,
    public_url: String,
    wake: Arc<Notify>,
}

impl Outbox {
    pub fn new(db: Db, keyring: Keyring, audit: AuditLog, public_url: &url::Url) -> Self {
        Outbox {
            db,
            keyring,
            audit,
            public_url: public_url.as_str().trim_end_matches('/').to_string(),
            wake: Arc::new(Notify::new()),
        }
    }

    /// The origin messages link to.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// Writes `mail` for `user` in the caller's transaction. `Full` when the outbox, or the
    /// customer's share of it, is full (or the text is over its bound): nothing is written.
    pub async fn queue_in(
        &self,
        tx: &mut WriteTx,
        user: UserId,
        mail: &Mail,
    ) -> Result<Queued, StoreError> {
        if mail.body.len() > MAIL_BODY_BYTES_MAX {
            tracing::error!(
                kind = mail.kind.event(),
                "message over its size bound; not written"
            );
            return Ok(Queued::Full);
        }
        let id = crate::crypto::random_row_id();
        let body_enc = self.keyring.seal_str(&body_aad(id), &mail.body);
        let message = NewMessage {
            id,
            user_id: user,
            kind: mail.kind.event(),
            body_enc: &body_enc,
            created_at: crate::now_millis(),
        };
        outbox_store::insert(tx, &message).await
    }

    /// Tells this instance's sender that a message was committed (others find it by polling).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) fn woken(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Writes the notification `mail` for `user` in the caller's transaction; a full outbox
    /// audits `mail_dropped` there instead. The caller calls [`Outbox::wake`] after its commit.
    pub async fn notify_in(
        &self,
        tx: &mut WriteTx,
        ctx: &AuditContext,
        user: UserId,
        mail: &Mail,
    ) -> Result<(), AuditError> {
        if self.queue_in(tx, user, mail).await? == Queued::Full {
            tracing::warn!(kind = mail.kind.event(), user_id = %user, "outbox full; notification dropped");
            let event = AuditEvent::MailDropped {
                kind: mail.kind.event(),
            };
            self.audit
                .record_in(tx, &ctx.with_user(user), event)
                .await?;
        }
        Ok(())
    }

    /// Records `event` and writes the notification `mail` for `user` in one transaction; like
    /// [`AuditLog::record_best_effort`], a failure is logged rather than failing the request
    /// that caused it (the event already happened).
    pub async fn record_and_notify(
        &self,
        ctx: &AuditContext,
        event: AuditEvent,
        user: UserId,
        mail: &Mail,
    ) {
        if let Err(error) = self.try_record_and_notify(ctx, event, user, mail).await {
            tracing::error!(%error, kind = mail.kind.event(), "could not record an event and its message");
        }
    }

    async fn try_record_and_notify(
        &self,
        ctx: &AuditContext,
        event: AuditEvent,
        user: UserId,
        mail: &Mail,
    ) -> Result<(), AuditError> {
        let mut tx = self.db.begin_write().await?;
        let ctx = ctx.with_user(user);
        self.audit.record_in(&mut tx, &ctx, event).await?;
        self.notify_in(&mut tx, &ctx, user, mail).await?;
        tx.commit().await?;
        self.wake();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_kind_has_its_header_value_and_a_subject() {
        for kind in MailKind::ALL {
            assert_eq!(MailKind::from_event(kind.event()), Some(kind));
            assert!(!kind.subject().is_empty());
        }
        assert_eq!(MailKind::from_event("nonsense"), None);
    }

    #[test]
    fn a_new_device_message_names_time_address_and_browser_but_not_the_raw_agent() {
        let ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";
        let at = 1_796_000_000_000;
        let mail = Mail::new_device_login(
            "https://bank.example",
            at,
            Some("192.0.2.7".parse().unwrap()),
            Some(ua),
        );
        assert!(
            mail.body.contains("Browser: Chrome on Linux"),
            "{}",
            mail.body
        );
        assert!(mail.body.contains("Address: 192.0.2.7"));
        assert!(
            mail.body.contains("Time: 30 Nov 2026, 00:53 UTC"),
            "{}",
            mail.body
        );
        assert!(!mail.body.contains("Mozilla"));
        assert!(mail.body.contains("https://bank.example"));
    }

    #[test]
    fn long_lines_are_wrapped_at_spaces_and_words_stay_whole() {
        let long = format!("{} {}", "word ".repeat(40).trim_end(), "x".repeat(90));
        let wrapped = wrap(&format!("short\n{long}"));
        assert!(wrapped.starts_with("short\nword word"));
        assert!(
            wrapped
                .lines()
                .all(|l| l.len() <= LINE_CHARS_MAX || !l.contains(' '))
        );
        assert_eq!(wrapped.replace('\n', " "), format!("short {long}"));
    }

    #[test]
    fn a_lock_message_says_how_long_in_whole_minutes() {
        let text = |secs| {
            Mail::account_locked("https://b", 0, secs)
                .body
                .replace('\n', " ")
        };
        assert!(text(300).contains("for 5 minutes"), "{}", text(300));
        assert!(text(30).contains("for 1 minute "), "{}", text(30));
    }
}
