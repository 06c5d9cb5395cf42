//! The sender: a background task of every serving instance that claims due messages from the
//! outbox, delivers them over SMTP (`ALPHABANK_SMTP_URL`) or as `.eml` files in
//! `<data dir>/outbox/`, and settles each: delivered (deleted), due again after a back-off, or
//! given up after `MAIL_GIVE_UP_AFTER` (deleted, audited `mail_abandoned`).
//!
//! Delivery is at least once: a sender that dies after the server accepted a message but before
//! the row is deleted leaves it to be sent again when its lease runs out. Within the lease, the
//! claim keeps every other instance off it.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use lettre::message::Mailbox;
use lettre::message::header::{self, Header, HeaderName, HeaderValue};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{MailKind, body_aad};
use crate::audit::{AuditContext, AuditEvent};
use crate::config::{Config, SmtpSecurity, SmtpSettings};
use crate::limits::{
    MAIL_CLAIM_BATCH, MAIL_GIVE_UP_AFTER, MAIL_LEASE, MAIL_POLL_INTERVAL, MAIL_RETRY_FIRST,
    MAIL_RETRY_MAX, MAIL_SEND_TIMEOUT,
};
use crate::services::Services;
use crate::store::outbox::{self as outbox_store, Claimed};
use crate::store::users as user_store;

/// The `X-AlphaBank-Event` header (CONTRACT §8).
#[derive(Clone)]
struct AlphaBankEvent(String);

impl Header for AlphaBankEvent {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-AlphaBank-Event")
    }
    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AlphaBankEvent(s.to_string()))
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// Where messages go.
pub enum Transport {
    Smtp(Box<AsyncSmtpTransport<Tokio1Executor>>),
    Files(PathBuf),
}

impl Transport {
    /// The configured transport; an SMTP host that TLS cannot be set up for is refused.
    pub fn new(config: &Config) -> Result<Self, String> {
        match &config.smtp {
            None => Ok(Transport::Files(config.data_dir.join("outbox"))),
            Some(smtp) => Ok(Transport::Smtp(Box::new(smtp_transport(
                smtp,
                &config.public_url,
            )?))),
        }
    }

    async fn deliver(&self, message: &Message, name: &str) -> Result<(), String> {
        match self {
            Transport::Smtp(smtp) => {
                let sent = tokio::time::timeout(MAIL_SEND_TIMEOUT, smtp.send(message.clone()));
                match sent.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(error)) => Err(bounded(&error.to_string())),
                    Err(_) => Err("timed out".to_string()),
                }
            }
            Transport::Files(dir) => {
                let (dir, name, bytes) = (dir.clone(), name.to_string(), message.formatted());
                tokio::task::spawn_blocking(move || write_file(&dir, &name, &bytes))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| bounded(&e.to_string()))
            }
        }
    }
}

fn smtp_transport(
    smtp: &SmtpSettings,
    public_url: &url::Url,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let host = smtp.host.as_str();
    let tls = || {
        TlsParameters::new(host.to_string())
            .map_err(|e| format!("ALPHABANK_SMTP_URL: TLS for {host}: {e}"))
    };
    let builder =
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host).tls(match smtp.security {
            SmtpSecurity::ImplicitTls => Tls::Wrapper(tls()?),
            SmtpSecurity::StartTlsRequired => Tls::Required(tls()?),
            SmtpSecurity::StartTlsIfOffered => Tls::Opportunistic(tls()?),
        });
    let mut builder = builder
        .port(smtp.port)
        .timeout(Some(MAIL_SEND_TIMEOUT))
        .hello_name(ClientId::Domain(
            public_url.host_str().unwrap_or("localhost").to_string(),
        ));
    if let Some((user, password)) = &smtp.credentials {
        builder = builder.credentials(Credentials::new(
            user.clone(),
            password.expose().to_string(),
        ));
    }
    Ok(builder.build())
}

/// Writes one message as `<dir>/<name>` (mode 0600) through a temporary file, so a reader never
/// sees half a message; a message sent again replaces its earlier copy.
fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    if !dir.exists() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))
}

/// An error text short enough for the `last_error` column and an audit detail.
fn bounded(text: &str) -> String {
    text.chars().take(300).collect()
}

/// Why a message could not be delivered.
enum Failure {
    /// Worth another try (the server refused for now, or could not be reached).
    Transient(String),
    /// Never deliverable (unreadable, its customer gone, an address the server will never take).
    Permanent(String),
}

/// Runs the sender until the task is aborted (at shutdown; a message being sent then is sent
/// again after its lease).
pub async fn run(services: Services, transport: Transport) {
    let woken = services.outbox.woken();
    loop {
        let claimed = match deliver_due(&services, &transport).await {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::error!(%error, "could not read the outbox");
                0
            }
        };
        if claimed == 0 {
            tokio::select! {
                () = woken.notified() => {}
                () = tokio::time::sleep(MAIL_POLL_INTERVAL) => {}
            }
        }
    }
}

/// Claims the due messages (one batch) and settles each; returns how many were claimed.
async fn deliver_due(
    services: &Services,
    transport: &Transport,
) -> Result<usize, crate::store::StoreError> {
    let now = crate::now_millis();
    let lease = i64::try_from(MAIL_LEASE.as_millis()).unwrap_or(i64::MAX);
    let claimed = outbox_store::claim(
        &services.db,
        now,
        now.saturating_add(lease),
        MAIL_CLAIM_BATCH,
    )
    .await?;
    for message in &claimed {
        settle(services, transport, message).await;
    }
    Ok(claimed.len())
}

async fn settle(services: &Services, transport: &Transport, message: &Claimed) {
    let outcome = deliver(services, transport, message).await;
    let db = &services.db;
    let settled = match outcome {
        Ok(()) => {
            tracing::info!(kind = %message.kind, id = message.id, attempts = message.attempts, "mail delivered");
            outbox_store::delivered(db, message).await
        }
        Err(Failure::Permanent(error)) => abandon(services, message, error).await,
        Err(Failure::Transient(error)) => {
            let now = crate::now_millis();
            match next_attempt(message.created_at, now, message.attempts) {
                Some(at) => {
                    tracing::warn!(kind = %message.kind, id = message.id, attempts = message.attempts, %error, "mail not delivered; will retry");
                    outbox_store::retry_at(db, message, at, &error).await
                }
                None => abandon(services, message, error).await,
            }
        }
    };
    if let Err(error) = settled {
        // The claim's lease runs out and the message is tried again.
        tracing::error!(%error, id = message.id, "could not settle a message");
    }
}

/// Gives a message up: deleted, and audited for its customer.
async fn abandon(
    services: &Services,
    message: &Claimed,
    error: String,
) -> Result<bool, crate::store::StoreError> {
    tracing::error!(kind = %message.kind, id = message.id, attempts = message.attempts, %error, "mail given up");
    let gone = outbox_store::give_up(&services.db, message).await?;
    if gone {
        let event = AuditEvent::MailAbandoned {
            kind: message.kind.clone(),
            attempts: message.attempts,
            error,
        };
        let ctx = AuditContext::system().with_user(message.user_id);
        services.audit.record_best_effort(&ctx, event).await;
    }
    Ok(gone)
}

/// When a message that failed its `attempts`-th attempt at `now` is tried next: the back-off
/// doubles from `MAIL_RETRY_FIRST` up to `MAIL_RETRY_MAX`; `None` once it has waited
/// `MAIL_GIVE_UP_AFTER` since it was written.
pub fn next_attempt(created_at: i64, now: i64, attempts: i64) -> Option<i64> {
    let give_up_after = i64::try_from(MAIL_GIVE_UP_AFTER.as_millis()).unwrap_or(i64::MAX);
    if now.saturating_sub(created_at) >= give_up_after {
        return None;
    }
    let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let wait = MAIL_RETRY_FIRST
        .saturating_mul(2u32.saturating_pow(doublings))
        .min(MAIL_RETRY_MAX);
    Some(now.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)))
}

async fn deliver(
    services: &Services,
    transport: &Transport,
    message: &Claimed,
) -> Result<(), Failure> {
    let kind = MailKind::from_event(&message.kind)
        .ok_or_else(|| Failure::Permanent(format!("unknown kind {}", message.kind)))?;
    let body = services
        .keyring
        .open_string(&body_aad(message.id), &message.body_enc)
        .map_err(|e| Failure::Permanent(format!("text cannot be opened: {e}")))?;
    let email_enc = user_store::email_enc(&services.db, message.user_id)
        .await
        .map_err(|e| Failure::Transient(e.to_string()))?
        .ok_or_else(|| Failure::Permanent("the customer no longer exists".to_string()))?;
    let address = services
        .keyring
        .open_string(&crate::customers::email_aad(message.user_id), &email_enc)
        .map_err(|e| Failure::Permanent(format!("address cannot be opened: {e}")))?;
    let to: lettre::Address = address
        .parse()
        .map_err(|_| Failure::Permanent("the address is not one SMTP takes".to_string()))?;
    let config = &services.config;
    let created = SystemTime::UNIX_EPOCH
        + Duration::from_millis(u64::try_from(message.created_at).unwrap_or(0));
    let host = config.public_url.host_str().unwrap_or("localhost");
    let built = Message::builder()
        .from(config.mail_from.clone())
        .to(Mailbox::new(None, to))
        .subject(kind.subject())
        .date(created)
        .message_id(Some(format!("<{:016x}@{host}>", message.id)))
        .header(AlphaBankEvent(kind.event().to_string()))
        .header(header::ContentType::TEXT_PLAIN)
        .body(body.to_string())
        .map_err(|e| Failure::Permanent(format!("message cannot be built: {e}")))?;
    transport
        .deliver(&built, &file_name(message))
        .await
        .map_err(Failure::Transient)
}

/// `<time>-<id>.eml`: the time the message was written (UTC, sortable), then its id.
fn file_name(message: &Claimed) -> String {
    let nanos = i128::from(message.created_at) * 1_000_000;
    let time = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year][month][day]T[hour][minute][second].[subsecond digits:3]Z"
            ))
            .ok()
        })
        .unwrap_or_default();
    format!("{time}-{:016x}.eml", message.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_and_stop_after_a_day_and_more() {
        let start = 1_000_000;
        let first = i64::try_from(MAIL_RETRY_FIRST.as_millis()).unwrap_or(0);
        assert_eq!(next_attempt(start, start, 1), Some(start + first));
        assert_eq!(next_attempt(start, start, 2), Some(start + 2 * first));
        assert_eq!(next_attempt(start, start, 3), Some(start + 4 * first));
        let cap = i64::try_from(MAIL_RETRY_MAX.as_millis()).unwrap_or(0);
        assert_eq!(next_attempt(start, start, 40), Some(start + cap));
        let day = 24 * 60 * 60 * 1_000;
        assert!(
            next_attempt(start, start + day, 200).is_some(),
            "a message is tried for at least 24 hours"
        );
        let give_up = i64::try_from(MAIL_GIVE_UP_AFTER.as_millis()).unwrap_or(0);
        assert_eq!(next_attempt(start, start + give_up, 200), None);
    }
}
