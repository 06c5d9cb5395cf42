//! `GET, POST /transfer`: send money to another customer by username.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::captcha_gate;
use super::extract::CurrentUser;
use super::form::CsrfForm;
use super::money_form::{self, OwnUsernameField, Parsed, kept};
use super::view::{Chrome, Errors, render};
use crate::captcha::CaptchaFields;
use crate::domain::{Amount, Message, Username};
use crate::payments::{Kind, Movement};
use crate::services::Services;

#[derive(Template)]
#[template(path = "transfer.html")]
struct TransferPage {
    chrome: Chrome,
    balance: String,
    key: String,
    amount: String,
    from_username: String,
    to_username: String,
    message: String,
    errors: Errors,
    captcha: CaptchaFields,
}

const OWN_USERNAME: OwnUsernameField = OwnUsernameField {
    field: "from_username",
    message: "Enter your own username to confirm that the money leaves your account.",
};

pub async fn form(State(services): State<Services>, user: CurrentUser) -> Response {
    let session = &user.session;
    let page = TransferPage {
        chrome: Chrome::for_session(&services, session, true).await,
        balance: money_form::balance_text(&services, session, false).await,
        key: services.payments.issue_key(session.user_id),
        amount: String::new(),
        from_username: session.username.clone(),
        to_username: String::new(),
        message: String::new(),
        errors: Errors::default(),
        captcha: captcha_gate::fields(&services),
    };
    render(StatusCode::OK, &page, &user.context.request_id)
}

pub async fn submit(
    State(services): State<Services>,
    user: CurrentUser,
    form: CsrfForm,
) -> Response {
    let mut errors = Errors::default();
    let mut field = |name: &'static str, error: String| errors.add(name, error);
    let amount = Amount::parse(form.get("amount")).map_err(|e| field("amount", e.to_string()));
    let from = Username::parse(form.get("from_username"))
        .map_err(|e| field("from_username", e.to_string()));
    let to =
        Username::parse(form.get("to_username")).map_err(|e| field("to_username", e.to_string()));
    let message = Message::parse(form.get("message")).map_err(|e| field("message", e.to_string()));
    let parsed = match (amount, from, to, message) {
        (Ok(amount), Ok(own_username), Ok(to), Ok(message)) => Some(Parsed {
            movement: Movement::Transfer {
                to,
                amount,
                message,
            },
            own_username,
        }),
        _ => None,
    };
    let outcome = money_form::submit(
        &services,
        &user,
        &form,
        Kind::Transfer,
        errors,
        parsed,
        &OWN_USERNAME,
    )
    .await;
    let refused = match outcome {
        Ok(receipt) => return receipt,
        Err(refused) => refused,
    };
    let session = &user.session;
    let page = TransferPage {
        chrome: Chrome::for_session(&services, session, true).await,
        balance: money_form::balance_text(&services, session, true).await,
        key: money_form::key_again(&services, session, &form),
        amount: kept(&form, "amount", 20),
        from_username: kept(&form, "from_username", 64),
        to_username: kept(&form, "to_username", 64),
        message: kept(&form, "message", 200),
        errors: refused.errors,
        captcha: captcha_gate::fields(&services),
    };
    render(refused.status, &page, &user.context.request_id)
}
