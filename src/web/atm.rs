//! `GET, POST /atm`: a simulated ATM deposit of cash into the customer's own account.

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
use crate::domain::{CardName, DepositAmount, Username};
use crate::payments::{Kind, Movement};
use crate::services::Services;

#[derive(Template)]
#[template(path = "atm.html")]
struct AtmPage {
    chrome: Chrome,
    balance: String,
    key: String,
    amount: String,
    username: String,
    card_name: String,
    errors: Errors,
    captcha: CaptchaFields,
}

const OWN_USERNAME: OwnUsernameField = OwnUsernameField {
    field: "username",
    message: "Enter your own username: deposits go to your own account.",
};

pub async fn form(State(services): State<Services>, user: CurrentUser) -> Response {
    let session = &user.session;
    let page = AtmPage {
        chrome: Chrome::for_session(&services, session, true).await,
        balance: money_form::balance_text(&services, session, false).await,
        key: services.payments.issue_key(session.user_id),
        amount: String::new(),
        username: session.username.clone(),
        card_name: String::new(),
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
    let amount =
        DepositAmount::parse(form.get("amount")).map_err(|e| field("amount", e.to_string()));
    let username =
        Username::parse(form.get("username")).map_err(|e| field("username", e.to_string()));
    let card_name =
        CardName::parse(form.get("card_name")).map_err(|e| field("card_name", e.to_string()));
    let parsed = match (amount, username, card_name) {
        (Ok(amount), Ok(own_username), Ok(card_name)) => Some(Parsed {
            movement: Movement::Deposit { amount, card_name },
            own_username,
        }),
        _ => None,
    };
    let outcome = money_form::submit(
        &services,
        &user,
        &form,
        Kind::Deposit,
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
    let page = AtmPage {
        chrome: Chrome::for_session(&services, session, true).await,
        balance: money_form::balance_text(&services, session, true).await,
        key: money_form::key_again(&services, session, &form),
        amount: kept(&form, "amount", 20),
        username: kept(&form, "username", 64),
        card_name: kept(&form, "card_name", 100),
        errors: refused.errors,
        captcha: captcha_gate::fields(&services),
    };
    render(refused.status, &page, &user.context.request_id)
}
