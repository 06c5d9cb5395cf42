//! Account recovery (CONTRACT §9): `/recover` asks for a code by mail, `/recover/reset` sets a
//! new password with that code and a second factor. Neither page says whether an address has an
//! account.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;

use super::account::visitor_form;
use super::captcha_gate;
use super::error::{Error, Result};
use super::extract::{Visitor, see_other};
use super::form::CsrfForm;
use super::view::{Chrome, Errors, render};
use crate::auth::AuthError;
use crate::auth::recovery::{self, Reset, ResetError};
use crate::captcha::CaptchaFields;
use crate::domain::Email;
use crate::services::Services;

#[derive(Template)]
#[template(path = "recover.html")]
struct RecoverPage {
    chrome: Chrome,
    csrf_token: String,
    email: String,
    errors: Errors,
    captcha: CaptchaFields,
}

#[derive(Template)]
#[template(path = "recover_reset.html")]
struct ResetPage {
    chrome: Chrome,
    csrf_token: String,
    email: String,
    errors: Errors,
    captcha: CaptchaFields,
}

const TOO_MANY: &str = "Too many password resets from your network. Try again in an hour.";

pub async fn recover_form(
    State(services): State<Services>,
    visitor: Visitor,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    visitor_form(&headers, &visitor.context.request_id, |csrf_token| {
        RecoverPage {
            chrome: Chrome::visitor(),
            csrf_token,
            email: String::new(),
            errors: Errors::default(),
            captcha: captcha_gate::fields(&services),
        }
    })
}

/// `POST /recover`: 303 to `/recover/reset` whether or not the address is known.
pub async fn recover(State(services): State<Services>, visitor: Visitor, form: CsrfForm) -> Result {
    let context = visitor.context;
    let again = |status: StatusCode, errors: Errors| {
        let page = RecoverPage {
            chrome: Chrome::visitor(),
            csrf_token: form.get("csrf_token").to_string(),
            email: form.get("email").chars().take(254).collect(),
            errors,
            captcha: captcha_gate::fields(&services),
        };
        Ok(render(status, &page, &context.request_id))
    };
    let email = match Email::parse(form.get("email")) {
        Ok(email) => email,
        Err(error) => {
            return again(
                StatusCode::UNPROCESSABLE_ENTITY,
                Errors::one("email", error.to_string()),
            );
        }
    };
    if let Err(failure) = captcha_gate::verify(&services, &form, &context, "recover").await {
        return again(
            StatusCode::BAD_REQUEST,
            Errors::one("form", failure.message),
        );
    }
    match recovery::request_code(&services, &context.audit(), &email).await {
        Ok(()) => Ok(see_other("/recover/reset")),
        Err(AuthError::Throttled) => {
            again(StatusCode::TOO_MANY_REQUESTS, Errors::one("form", TOO_MANY))
        }
        Err(error @ AuthError::Busy) => again(
            StatusCode::SERVICE_UNAVAILABLE,
            Errors::one("form", error.to_string()),
        ),
        Err(error) => Err(Error::internal(error)),
    }
}

pub async fn reset_form(
    State(services): State<Services>,
    visitor: Visitor,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    visitor_form(&headers, &visitor.context.request_id, |csrf_token| {
        ResetPage {
            chrome: Chrome::visitor(),
            csrf_token,
            email: String::new(),
            errors: Errors::default(),
            captcha: captcha_gate::fields(&services),
        }
    })
}

/// `POST /recover/reset`: 303 to `/login` with a notice; any wrong part: 401 with one message.
pub async fn reset(State(services): State<Services>, visitor: Visitor, form: CsrfForm) -> Result {
    let context = visitor.context;
    let again = |status: StatusCode, errors: Errors| {
        let page = ResetPage {
            chrome: Chrome::visitor(),
            csrf_token: form.get("csrf_token").to_string(),
            email: form.get("email").chars().take(254).collect(),
            errors,
            captcha: captcha_gate::fields(&services),
        };
        Ok(render(status, &page, &context.request_id))
    };
    if services.hasher.is_saturated() {
        let busy = Errors::one("form", AuthError::Busy.to_string());
        return again(StatusCode::SERVICE_UNAVAILABLE, busy);
    }
    if let Err(failure) = captcha_gate::verify(&services, &form, &context, "recover_reset").await {
        return again(
            StatusCode::BAD_REQUEST,
            Errors::one("form", failure.message),
        );
    }
    let typed = Reset {
        email: form.get("email"),
        code: form.get("code"),
        otp: form.get("otp"),
        new_password: form.get("new_password"),
        new_password_confirm: form.get("new_password_confirm"),
    };
    match recovery::reset(&services, &context.audit(), &typed).await {
        Ok(()) => Ok(see_other("/login?notice=password-reset")),
        Err(error @ ResetError::Wrong) => again(
            StatusCode::UNAUTHORIZED,
            Errors::one("form", error.to_string()),
        ),
        Err(ResetError::Password(message)) => again(
            StatusCode::UNPROCESSABLE_ENTITY,
            Errors::one("new_password", message),
        ),
        Err(error @ ResetError::Mismatch) => again(
            StatusCode::UNPROCESSABLE_ENTITY,
            Errors::one("new_password_confirm", error.to_string()),
        ),
        Err(ResetError::Auth(AuthError::Throttled)) => {
            again(StatusCode::TOO_MANY_REQUESTS, Errors::one("form", TOO_MANY))
        }
        Err(ResetError::Auth(error @ AuthError::Busy)) => again(
            StatusCode::SERVICE_UNAVAILABLE,
            Errors::one("form", error.to_string()),
        ),
        Err(ResetError::Auth(error)) => Err(Error::internal(error)),
    }
}
