//! `/settings`: live sessions, recent security events, recovery codes left, password change and
//! "log out everywhere else".

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;

use super::error::Result;
use super::extract::{CurrentUser, see_other};
use super::form::CsrfForm;
use super::view::{Chrome, Errors, flash, render};
use crate::auth::{self, AuthError, PasswordChange, PasswordChangeError};
use crate::services::Services;

/// Security events shown on the settings page.
pub const SETTINGS_EVENTS_MAX: u32 = 20;

pub struct SessionLine {
    pub current: bool,
    pub created: String,
    pub last_seen: String,
    pub ip: String,
    pub user_agent: String,
}

pub struct EventLine {
    pub time: String,
    pub what: String,
    pub ip: String,
}

pub struct PasskeyLine {
    pub id: i64,
    pub name: String,
    pub added: String,
    pub last_used: String,
}

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    chrome: Chrome,
    sessions: Vec<SessionLine>,
    events: Vec<EventLine>,
    recovery_left: i64,
    passkeys: Vec<PasskeyLine>,
    passkeys_max: i64,
    errors: Errors,
}

fn short_time(millis: i64) -> String {
    crate::audit::format_time(millis)
        .get(..19)
        .unwrap_or_default()
        .replace('T', " ")
}

fn describe(event: &str, detail: &serde_json::Value) -> String {
    match event {
        "signup" => "Account opened".into(),
        "login_succeeded" => "Logged in".into(),
        "login_failed" => "Failed login attempt".into(),
        "account_locked" => format!(
            "Log-in locked for {} minutes after 5 failed attempts{}",
            detail
                .get("locked_for_secs")
                .and_then(|v| v.as_i64())
                .unwrap_or(0)
                / 60,
            match detail.get("scope").and_then(|v| v.as_str()) {
                Some("device") => " (one of your browsers)",
                _ => " (browsers you have not logged in from)",
            }
        ),
        "logout" => "Logged out".into(),
        "session_expired" => "Session ended".into(),
        "sessions_revoked" => "Other sessions ended".into(),
        "two_factor_enrolled" => "Authenticator app set up".into(),
        "recovery_code_used" => "Recovery code used".into(),
        "transfer" => "Money sent".into(),
        "deposit" => "ATM deposit".into(),
        "money_movement_refused" => "Payment refused".into(),
        "csrf_rejected" => "Blocked a form from another site".into(),
        "rate_limited" => "Too many requests; session ended".into(),
        "captcha_failed" => "Security check failed".into(),
        "access_denied" => "Access denied".into(),
        "password_changed" => "Password changed".into(),
        "password_change_refused" => "Password change refused".into(),
        "recovery_code_sent" => "Password reset code mailed".into(),
        "recovery_refused" => "Password reset refused".into(),
        "password_reset" => "Password reset with an emailed code".into(),
        "authenticator_replacement_started" => "New authenticator requested".into(),
        "authenticator_replaced" => "Authenticator app replaced".into(),
        "recovery_codes_replaced" => "New recovery codes made".into(),
        "second_factor_change_refused" => "Authenticator or recovery code change refused".into(),
        "mail_abandoned" => "A message to you could not be delivered".into(),
        "passkey_added" => "Passkey added".into(),
        "passkey_removed" => "Passkey removed".into(),
        "passkey_refused" => "Passkey change refused".into(),
        "passkey_clone_suspected" => "A passkey signature was refused (possible copy)".into(),
        other => other.replace('_', " "),
    }
}

async fn page(
    services: &Services,
    user: &CurrentUser,
    status: StatusCode,
    errors: Errors,
) -> Result {
    let request_id = &user.context.request_id;
    let user_id = user.session.user_id;
    let sessions = crate::auth::session::list(services, user_id)
        .await?
        .into_iter()
        .map(|s| SessionLine {
            current: s.id_hash == user.session.id_hash,
            created: short_time(s.created_at_millis),
            last_seen: short_time(s.last_seen_at_millis),
            ip: s.client_ip.unwrap_or_default(),
            user_agent: s.user_agent.unwrap_or_default(),
        })
        .collect();
    let events = services
        .audit
        .recent_for_user(user_id, SETTINGS_EVENTS_MAX)
        .await?
        .into_iter()
        .map(|l| EventLine {
            what: describe(&l.event, &l.detail),
            time: l.time.get(..19).unwrap_or_default().replace('T', " "),
            ip: l.client_ip.unwrap_or_default(),
        })
        .collect();
    let recovery_left = crate::auth::session::recovery_codes_left(services, user_id).await?;
    let passkeys = services
        .passkeys
        .list(user_id)
        .await?
        .into_iter()
        .map(|p| PasskeyLine {
            id: p.id,
            name: p.name,
            added: short_time(p.created_millis),
            last_used: p
                .last_used_millis
                .map(short_time)
                .unwrap_or_else(|| "never".into()),
        })
        .collect();
    let chrome = Chrome::for_session(services, &user.session, true).await;
    Ok(render(
        status,
        &SettingsPage {
            chrome,
            sessions,
            events,
            recovery_left,
            passkeys,
            passkeys_max: crate::auth::passkey::PASSKEYS_PER_USER_MAX,
            errors,
        },
        request_id,
    ))
}

/// The settings page with one refused form's message (`field`), answered with `status`.
pub async fn refused(
    services: &Services,
    user: &CurrentUser,
    status: StatusCode,
    field: &'static str,
    message: String,
) -> axum::response::Response {
    match page(services, user, status, Errors::one(field, message)).await {
        Ok(response) => response,
        Err(error) => axum::response::IntoResponse::into_response(error),
    }
}

pub async fn show(State(services): State<Services>, user: CurrentUser) -> Result {
    page(&services, &user, StatusCode::OK, Errors::default()).await
}

pub async fn change_password(
    State(services): State<Services>,
    user: CurrentUser,
    form: CsrfForm,
) -> Result {
    let change = PasswordChange {
        current: form.get("current_password"),
        new: form.get("new_password"),
        confirm: form.get("new_password_confirm"),
        otp: form.get("otp"),
    };
    match auth::change_password(&services, &user.context.audit(), &user.session, &change).await {
        Ok(()) => {
            flash(
                &services,
                &user.session,
                "Your password was changed. Every other session was logged out.",
            )
            .await;
            Ok(see_other("/settings"))
        }
        Err(PasswordChangeError::Field { field, message }) => {
            let status = match field {
                "current_password" | "otp" => StatusCode::UNAUTHORIZED,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            page(&services, &user, status, Errors::one(field, message)).await
        }
        Err(PasswordChangeError::TooManyFailures) => {
            Ok(super::extract::ended_by_failures(&services, &user).await)
        }
        Err(PasswordChangeError::Auth(AuthError::Busy)) => {
            page(
                &services,
                &user,
                StatusCode::SERVICE_UNAVAILABLE,
                Errors::one("form", "The bank is busy. Please try again in a moment."),
            )
            .await
        }
        Err(PasswordChangeError::Auth(error)) => Err(error.into()),
    }
}

pub async fn revoke_others(
    State(services): State<Services>,
    user: CurrentUser,
    _form: CsrfForm,
) -> Result {
    let n = auth::revoke_other_sessions(&services, &user.context.audit(), &user.session).await?;
    let message = if n == 1 {
        "1 other session was logged out.".to_string()
    } else {
        format!("{n} other sessions were logged out.")
    };
    flash(&services, &user.session, &message).await;
    Ok(see_other("/settings"))
}

/// A refused new authenticator or new recovery codes: the message goes to that form's own
/// section (`section`), the status says why.
async fn second_factor_refused(
    services: &Services,
    user: &CurrentUser,
    section: &'static str,
    error: PasswordChangeError,
) -> Result {
    match error {
        PasswordChangeError::Field { message, .. } => {
            page(
                services,
                user,
                StatusCode::UNAUTHORIZED,
                Errors::one(section, message),
            )
            .await
        }
        PasswordChangeError::TooManyFailures => {
            Ok(super::extract::ended_by_failures(services, user).await)
        }
        PasswordChangeError::Auth(AuthError::Busy) => {
            let busy = "The bank is busy. Please try again in a moment.";
            page(
                services,
                user,
                StatusCode::SERVICE_UNAVAILABLE,
                Errors::one(section, busy),
            )
            .await
        }
        PasswordChangeError::Auth(error) => Err(error.into()),
    }
}

/// `GET /settings/authenticator`: the form is a section of `/settings` (the home page links here
/// after a recovery-code log-in).
pub async fn authenticator_form(_user: CurrentUser) -> axum::response::Response {
    see_other("/settings#authenticator")
}

/// `POST /settings/authenticator` (CONTRACT §9): the current password and the old
/// authenticator's code or a recovery code; then `/2fa/setup` shows the new secret.
pub async fn replace_authenticator(
    State(services): State<Services>,
    user: CurrentUser,
    form: CsrfForm,
) -> Result {
    let audit = user.context.audit();
    let (password, otp) = (form.get("current_password"), form.get("otp"));
    match auth::renewal::start_authenticator_replacement(
        &services,
        &audit,
        &user.session,
        password,
        otp,
    )
    .await
    {
        Ok(()) => Ok(see_other("/2fa/setup")),
        Err(error) => second_factor_refused(&services, &user, "authenticator", error).await,
    }
}

/// `POST /settings/recovery-codes` (CONTRACT §9): a code gives ten new recovery codes, shown once
/// on `/2fa/recovery`; the old ones stop working.
pub async fn replace_recovery_codes(
    State(services): State<Services>,
    user: CurrentUser,
    form: CsrfForm,
) -> Result {
    let audit = user.context.audit();
    match auth::renewal::replace_recovery_codes(&services, &audit, &user.session, form.get("otp"))
        .await
    {
        Ok(()) => Ok(see_other("/2fa/recovery")),
        Err(error) => second_factor_refused(&services, &user, "recovery", error).await,
    }
}
