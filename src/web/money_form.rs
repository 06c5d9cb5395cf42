//! What the two money forms (`transfer`, `atm`) share: the steps of a submission that are the
//! web's (the idempotency key, field syntax, the captcha's checks), the call to the movement
//! service, and how each refusal is shown. Every refusal re-shows the form with a message next
//! to its field, keeps what was typed (not the code), moves nothing, and is audited.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::captcha_gate;
use super::extract::{CurrentUser, see_other};
use super::form::CsrfForm;
use super::view::{Chrome, Errors, render};
use crate::auth::session::Session;
use crate::captcha::{CaptchaFields, PendingSpend};
use crate::domain::Username;
use crate::payments::{
    Command, Kind, Movement, PaymentError, Prepared, Ready, Receipt, Refusal, Review, TransferOrder,
};
use crate::services::Services;

/// A form's fields once parsed: what moves and the username the customer gave as their own.
struct Parsed {
    pub movement: Movement,
    pub own_username: Username,
}

/// Why the form is shown again: the status, the messages by field, and the audit reason when
/// the web decided the refusal (the movement service audits its own).
pub(super) struct FormRefusal {
    pub(super) status: StatusCode,
    pub(super) errors: Errors,
    audit_reason: Option<&'static str>,
    /// The failure filled the account's failure count: the session ends instead.
    ends_session: bool,
}

impl FormRefusal {
    pub(super) fn new(status: StatusCode, field: &'static str, message: impl Into<String>) -> Self {
        FormRefusal {
            status,
            errors: Errors::one(field, message),
            audit_reason: None,
            ends_session: false,
        }
    }

    pub(super) fn audited_here(self, reason: &'static str) -> Self {
        FormRefusal {
            audit_reason: Some(reason),
            ..self
        }
    }
}

/// A money page: its template, the kind of movement it makes and how its own fields are read
/// and shown again. The flow around them is [`show`] and [`submit`].
pub trait MoneyPage: Template + Sized {
    const KIND: Kind;
    /// The field where the customer gives their own username, and the message when it is not.
    const OWN_USERNAME_FIELD: &'static str;
    const NOT_OWN_USERNAME: &'static str;

    /// The movement the page's own fields describe, or `None` with each bad field's message
    /// added to `errors` (the own-username field is the flow's).
    fn movement(form: &CsrfForm, errors: &mut Errors) -> Option<Movement>;

    /// The page around `frame` with its own fields from `fields`.
    fn page(frame: Frame, fields: &Fields<'_>) -> Self;
}

/// What every money page shows besides its own fields: the layout's chrome, the captcha and
/// the form's state.
pub struct Frame {
    pub chrome: Chrome,
    pub captcha: CaptchaFields,
    pub money: MoneyForm,
}

/// A money form's state: the balance, the idempotency key and the messages by field.
pub struct MoneyForm {
    pub balance: String,
    pub key: String,
    pub errors: Errors,
}

/// Where a page's own fields come from: empty but for the customer's own username on a new
/// form, as typed when a refused form is shown again.
pub enum Fields<'a> {
    Empty { own_username: &'a str },
    Typed(&'a CsrfForm),
}

impl Fields<'_> {
    /// A field as typed (at most `max` characters), empty on a new form.
    pub fn typed(&self, name: &str, max: usize) -> String {
        match self {
            Fields::Empty { .. } => String::new(),
            Fields::Typed(form) => form.get(name).chars().take(max).collect(),
        }
    }

    /// The own-username field: the customer's username on a new form, as typed otherwise.
    pub fn own_username(&self, name: &str, max: usize) -> String {
        match self {
            Fields::Empty { own_username } => own_username.to_string(),
            Fields::Typed(_) => self.typed(name, max),
        }
    }
}

/// `GET` of a money page: a new form with a new idempotency key.
pub async fn show<P: MoneyPage>(State(services): State<Services>, user: CurrentUser) -> Response {
    let (services, user) = (&services, &user);
    let session = &user.session;
    let frame = Frame {
        chrome: Chrome::for_session(services, session, true).await,
        captcha: captcha_gate::fields(services),
        money: MoneyForm {
            balance: balance_text(services, session, false).await,
            key: services.payments.issue_key(session.user_id),
            errors: Errors::default(),
        },
    };
    let fields = Fields::Empty {
        own_username: &session.username,
    };
    render(
        StatusCode::OK,
        &P::page(frame, &fields),
        &user.context.request_id,
    )
}

/// A money form's fields: the page's movement and the username the customer gave as their own.
fn parse<P: MoneyPage>(form: &CsrfForm, errors: &mut Errors) -> Option<Parsed> {
    let movement = P::movement(form, errors);
    let own = P::OWN_USERNAME_FIELD;
    let own_username = errors.check(own, Username::parse(form.get(own)));
    Some(Parsed {
        movement: movement?,
        own_username: own_username?,
    })
}

/// What an accepted submission led to.
enum Accepted {
    /// Money moved (an ATM deposit), or the key already had.
    Moved(Receipt),
    /// A transfer passed review: the review page is next (CONTRACT §6).
    Reviewed(Review),
}

/// `POST` of a money page, in the contract's order: the idempotency key (a key that already
/// moved money answers its receipt), field syntax, captcha, then the movement service: a
/// deposit's one-time code, business rules and one transaction (a redirect to the receipt), or
/// a transfer's review (the review page; the code comes with its confirmation). Refused: the
/// form again, as typed, with the reason next to its field.
pub async fn submit<P: MoneyPage>(
    State(services): State<Services>,
    user: CurrentUser,
    form: CsrfForm,
) -> Response {
    let (services, user, form) = (&services, &user, &form);
    let mut errors = Errors::default();
    let parsed = parse::<P>(form, &mut errors);
    match run::<P>(services, user, form, errors, parsed).await {
        Ok(Accepted::Moved(receipt)) => see_other(&receipt_path(receipt)),
        Ok(Accepted::Reviewed(review)) => {
            super::review::page(services, user, &review, Errors::default(), StatusCode::OK).await
        }
        Err(refused) => {
            let key = key_again(services, &user.session, form);
            refused_form::<P>(services, user, &Fields::Typed(form), key, refused).await
        }
    }
}

/// Where a movement's receipt is.
pub fn receipt_path(receipt: Receipt) -> String {
    format!("/receipts/{}", receipt.entry_id)
}

/// The money page again after a refusal, with `fields` and `key`, audited when the web decided
/// the refusal.
pub(super) async fn refused_form<P: MoneyPage>(
    services: &Services,
    user: &CurrentUser,
    fields: &Fields<'_>,
    key: String,
    refused: FormRefusal,
) -> Response {
    if refused.ends_session {
        return super::extract::ended_by_failures(services, user).await;
    }
    if let Some(reason) = refused.audit_reason {
        let ctx = user.context.audit();
        services.payments.audit_refusal(&ctx, P::KIND, reason).await;
    }
    let session = &user.session;
    let frame = Frame {
        chrome: Chrome::for_session(services, session, true).await,
        captcha: captcha_gate::fields(services),
        money: MoneyForm {
            balance: balance_text(services, session, true).await,
            key,
            errors: refused.errors,
        },
    };
    let page = P::page(frame, fields);
    render(refused.status, &page, &user.context.request_id)
}

async fn run<P: MoneyPage>(
    services: &Services,
    user: &CurrentUser,
    form: &CsrfForm,
    field_errors: Errors,
    parsed: Option<Parsed>,
) -> Result<Accepted, FormRefusal> {
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
        Ok(Prepared::Replayed(receipt)) => return Ok(Accepted::Moved(receipt)),
        Ok(Prepared::Ready(ready)) => ready,
        Err(error) => return Err(refusal_of::<P>(error)),
    };
    let Some(parsed) = parsed.filter(|_| field_errors.is_empty()) else {
        let refused = FormRefusal {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            errors: field_errors,
            audit_reason: Some("invalid_fields"),
            ends_session: false,
        };
        return Err(refused);
    };
    let captcha = captcha_gate::check(services, form, &user.context, P::KIND.as_str()).await;
    let captcha = captcha.map_err(captcha_refusal)?;
    accept::<P>(services, user, form, ready, parsed, captcha).await
}

/// The movement service's step of a submission whose key, fields and captcha passed: a
/// transfer's review, or a deposit's movement (its code, business rules, one transaction).
async fn accept<P: MoneyPage>(
    services: &Services,
    user: &CurrentUser,
    form: &CsrfForm,
    ready: Ready,
    parsed: Parsed,
    captcha: Option<PendingSpend>,
) -> Result<Accepted, FormRefusal> {
    let payments = &services.payments;
    let (ctx, customer) = (user.context.audit(), user.session.user_id);
    let own_name = &user.session.username;
    match parsed.movement {
        Movement::Transfer {
            to,
            amount,
            message,
        } => {
            let order = TransferOrder {
                to,
                amount,
                message,
                own_username: parsed.own_username,
                captcha,
            };
            let review = payments
                .review(&ctx, customer, own_name, ready, order)
                .await;
            review.map(Accepted::Reviewed).map_err(refusal_of::<P>)
        }
        movement => {
            let command = Command {
                movement,
                own_username: Some(parsed.own_username),
                factor: crate::payments::Factor::Code(form.get("otp").to_string()),
                captcha,
            };
            let moved = payments
                .execute(&ctx, customer, own_name, ready, command)
                .await;
            moved.map(Accepted::Moved).map_err(refusal_of::<P>)
        }
    }
}

/// A refused captcha, shown on the form (its audit event is already written).
fn captcha_refusal(failure: captcha_gate::CaptchaFailure) -> FormRefusal {
    if failure.operating_error {
        return unavailable(&failure.message);
    }
    FormRefusal::new(StatusCode::BAD_REQUEST, "form", failure.message)
        .audited_here("captcha_failed")
}

/// How the movement service's answer is shown.
pub(super) fn refusal_of<P: MoneyPage>(error: PaymentError) -> FormRefusal {
    let refusal = match error {
        PaymentError::Refused(Refusal::TooManyFailures) => {
            let message = super::extract::ENDED_BY_FAILURES;
            let refused = FormRefusal::new(StatusCode::UNAUTHORIZED, "otp", message);
            return FormRefusal {
                ends_session: true,
                ..refused
            };
        }
        PaymentError::Refused(refusal) => refusal,
        other => return unavailable(&other),
    };
    let (status, field, message) = match &refusal {
        Refusal::WrongCode | Refusal::TooManyFailures => (
            StatusCode::UNAUTHORIZED,
            "otp",
            "The code is not right, or was already used. Wait for the next code in your app."
                .into(),
        ),
        Refusal::WrongPasskey => (
            StatusCode::UNAUTHORIZED,
            "passkey",
            "The passkey signature was not accepted for this payment. Sign again, or use a code."
                .into(),
        ),
        Refusal::NotOwnUsername => (
            StatusCode::FORBIDDEN,
            P::OWN_USERNAME_FIELD,
            P::NOT_OWN_USERNAME.into(),
        ),
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
        Refusal::Confirmation(_) => (
            StatusCode::BAD_REQUEST,
            "form",
            "This review has expired or was changed. Check the transfer and send it again.".into(),
        ),
    };
    FormRefusal::new(status, field, message)
}

/// An operating error: logged, nothing changed, audited as `internal_error`.
pub(super) fn unavailable(error: &dyn std::fmt::Display) -> FormRefusal {
    tracing::error!(%error, "money movement failed");
    let message = "Something went wrong on our side. Nothing was changed.";
    FormRefusal::new(StatusCode::SERVICE_UNAVAILABLE, "form", message)
        .audited_here("internal_error")
}

/// The balance shown on a money form, from the account row read with the session when the
/// form is opened (one read less), read now when it is shown again.
async fn balance_text(services: &Services, session: &Session, fresh: bool) -> String {
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
fn key_again(services: &Services, session: &Session, form: &CsrfForm) -> String {
    let sent = form.get("idempotency_key");
    match services.payments.accept_key(session.user_id, sent) {
        Some(_) => sent.to_string(),
        None => services.payments.issue_key(session.user_id),
    }
}
