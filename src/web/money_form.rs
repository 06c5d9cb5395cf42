//! What the two money forms (`transfer`, `atm`) share: the steps of a submission that are the
//! web's (the idempotency key, field syntax, the captcha's checks), the call to the movement
//! service, and how each refusal is shown. Every refusal re-shows the form with a message next
//! to its field, keeps what was typed (not the code), moves nothing, and is audited.

use axum::http::StatusCode;
use axum::response::Response;

use super::captcha_gate;
use super::extract::{CurrentUser, see_other};
use super::form::CsrfForm;
use super::view::Errors;
use crate::auth::session::Session;
use crate::domain::Username;
use crate::payments::{Command, Kind, Movement, PaymentError, Prepared, Receipt, Refusal};
use crate::services::Services;

/// A form's fields once parsed: what moves and the username the customer gave as their own.
pub struct Parsed {
    pub movement: Movement,
    pub own_username: Username,
}

/// Why the form is shown again: the status, the messages by field, and the audit reason when
/// the web decided the refusal (the movement service audits its own).
pub struct FormRefusal {
    pub status: StatusCode,
    pub errors: Errors,
    audit_reason: Option<&'static str>,
}

impl FormRefusal {
    fn new(status: StatusCode, field: &'static str, message: impl Into<String>) -> Self {
        FormRefusal {
            status,
            errors: Errors::one(field, message),
            audit_reason: None,
        }
    }

    fn audited_here(self, reason: &'static str) -> Self {
        FormRefusal {
            audit_reason: Some(reason),
            ..self
        }
    }
}

/// The per-form texts of the one refusal whose field differs between the forms.
pub struct OwnUsernameField {
    pub field: &'static str,
    pub message: &'static str,
}

/// A money form after the extractors (session, CSRF), in the contract's order: the idempotency
/// key (a key that already moved money answers its receipt), field syntax, captcha, then the
/// movement service (one-time code, business rules, one transaction). `Ok`: the receipt to show.
pub async fn submit(
    services: &Services,
    user: &CurrentUser,
    form: &CsrfForm,
    kind: Kind,
    field_errors: Errors,
    parsed: Option<Parsed>,
    own: &OwnUsernameField,
) -> Result<Response, FormRefusal> {
    let refused = match run(services, user, form, kind, field_errors, parsed, own).await {
        Ok(receipt) => return Ok(see_other(&format!("/receipts/{}", receipt.entry_id))),
        Err(refused) => refused,
    };
    if let Some(reason) = refused.audit_reason {
        let ctx = user.context.audit();
        services.payments.audit_refusal(&ctx, kind, reason).await;
    }
    Err(refused)
}

async fn run(
    services: &Services,
    user: &CurrentUser,
    form: &CsrfForm,
    kind: Kind,
    field_errors: Errors,
    parsed: Option<Parsed>,
    own: &OwnUsernameField,
) -> Result<Receipt, FormRefusal> {
    let payments = &services.payments;
    let customer = user.session.user_id;
    let Some(key) = payments.accept_key(customer, form.get("idempotency_key")) else {
        let message = "This form has expired or was changed. Reload the page and try again.";
        let refused = FormRefusal::new(StatusCode::BAD_REQUEST, "form", message);
        return Err(refused.audited_here("bad_idempotency_key"));
    };
    let receiver = match &parsed {
        Some(Parsed {
            movement: Movement::Transfer { to, .. },
            ..
        }) => Some(to),
        _ => None,
    };
    let ready = match payments.prepare(customer, key, receiver).await {
        Ok(Prepared::Replayed(receipt)) => return Ok(receipt),
        Ok(Prepared::Ready(ready)) => ready,
        Err(error) => return Err(refusal_of(error, own)),
    };
    let Some(parsed) = parsed.filter(|_| field_errors.is_empty()) else {
        let refused = FormRefusal {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            errors: field_errors,
            audit_reason: Some("invalid_fields"),
        };
        return Err(refused);
    };
    let captcha = match captcha_gate::check(services, form, &user.context, kind.as_str()).await {
        Ok(pending) => pending,
        Err(failure) if failure.operating_error => return Err(unavailable(&failure.message)),
        Err(failure) => {
            let refused = FormRefusal::new(StatusCode::BAD_REQUEST, "form", failure.message);
            return Err(refused.audited_here("captcha_failed"));
        }
    };
    let command = Command {
        movement: parsed.movement,
        own_username: parsed.own_username,
        otp: form.get("otp").to_string(),
        captcha,
    };
    let ctx = user.context.audit();
    let own_name = &user.session.username;
    payments
        .execute(&ctx, customer, own_name, ready, command)
        .await
        .map_err(|error| refusal_of(error, own))
}

/// How the movement service's answer is shown.
fn refusal_of(error: PaymentError, own: &OwnUsernameField) -> FormRefusal {
    let refusal = match error {
        PaymentError::Refused(refusal) => refusal,
        other => return unavailable(&other),
    };
    let (status, field, message) = match &refusal {
        Refusal::WrongCode => (
            StatusCode::UNAUTHORIZED,
            "otp",
            "The code is not right, or was already used. Wait for the next code in your app."
                .into(),
        ),
        Refusal::NotOwnUsername => (StatusCode::FORBIDDEN, own.field, own.message.into()),
        Refusal::InsufficientFunds => (
            StatusCode::CONFLICT,
            "amount",
            "Your balance is too low for this transfer.".into(),
        ),
        Refusal::SelfTransfer => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "to_username",
            "You cannot send money to yourself.".into(),
        ),
        Refusal::UnknownReceiver => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "to_username",
            "There is no customer with that username.".into(),
        ),
        Refusal::CaptchaReused(error) => (StatusCode::BAD_REQUEST, "form", error.user_message()),
    };
    FormRefusal::new(status, field, message)
}

/// An operating error: logged, nothing changed, audited as `internal_error`.
fn unavailable(error: &dyn std::fmt::Display) -> FormRefusal {
    tracing::error!(%error, "money movement failed");
    let message = "Something went wrong on our side. Nothing was changed.";
    FormRefusal::new(StatusCode::SERVICE_UNAVAILABLE, "form", message)
        .audited_here("internal_error")
}

/// The balance shown on a money form, from the account row read with the session when the
/// form is opened (one read less), read now when it is shown again.
pub async fn balance_text(services: &Services, session: &Session, fresh: bool) -> String {
    let known = if fresh {
        None
    } else {
        session.account.as_deref()
    };
    services
        .ledger
        .balance_with(session.user_id, known)
        .await
        .map(|b| b.to_string())
        .unwrap_or_default()
}

/// The key a re-shown form carries: the one it was sent with if it is this customer's (a
/// refused submission does not use it up), else a new one.
pub fn key_again(services: &Services, session: &Session, form: &CsrfForm) -> String {
    let sent = form.get("idempotency_key");
    match services.payments.accept_key(session.user_id, sent) {
        Some(_) => sent.to_string(),
        None => services.payments.issue_key(session.user_id),
    }
}

/// A field as typed, at most `max` characters (to show it again).
pub fn kept(form: &CsrfForm, name: &str, max: usize) -> String {
    form.get(name).chars().take(max).collect()
}
