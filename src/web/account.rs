//! Sign-up, authenticator enrollment, recovery codes, login and logout.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::captcha_gate;
use super::context::cookie;
use super::extract::{PendingUser, SessionUser, Visitor, see_other, with_cookie};
use super::form::{CsrfForm, VISITOR_CSRF_COOKIE};
use super::view::{Chrome, Errors, internal, render};
use crate::auth::session::{NewSession, clear_cookie_header, cookie_header};
use crate::auth::{self, AuthError, LoginAttempt};
use crate::captcha::CaptchaFields;
use crate::customers::CreateCustomerError;
use crate::domain::{Email, Password, Username};
use crate::startup::Services;

#[derive(Template)]
#[template(path = "signup.html")]
struct SignupPage {
    chrome: Chrome,
    csrf_token: String,
    username: String,
    email: String,
    errors: Errors,
    captcha: CaptchaFields,
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    chrome: Chrome,
    csrf_token: String,
    email: String,
    errors: Errors,
    captcha: CaptchaFields,
}

#[derive(Template)]
#[template(path = "setup_2fa.html")]
struct SetupPage {
    chrome: Chrome,
    secret: String,
    qr: String,
    errors: Errors,
}

#[derive(Template)]
#[template(path = "recovery.html")]
struct RecoveryPage {
    chrome: Chrome,
    codes: Vec<String>,
}

/// The visitor's CSRF token: the existing double-submit cookie, or a new one to set.
fn visitor_token(headers: &axum::http::HeaderMap) -> (String, Option<String>) {
    match cookie(headers, VISITOR_CSRF_COOKIE)
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        Some(existing) => (existing.to_string(), None),
        None => {
            let token = hex::encode(crate::crypto::random_bytes::<32>());
            let set =
                format!("{VISITOR_CSRF_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict");
            (token, Some(set))
        }
    }
}

fn with_optional_cookie(response: Response, cookie: Option<String>) -> Response {
    match cookie {
        Some(c) => with_cookie(response, &c),
        None => response,
    }
}

fn signed_in(location: &str, new: &NewSession) -> Response {
    with_cookie(see_other(location), &cookie_header(&new.cookie_value))
}

pub async fn signup_form(
    State(services): State<Services>,
    visitor: Visitor,
    headers: axum::http::HeaderMap,
) -> Response {
    let (csrf_token, set) = visitor_token(&headers);
    let page = SignupPage {
        chrome: Chrome::visitor(),
        csrf_token,
        username: String::new(),
        email: String::new(),
        errors: Errors::default(),
        captcha: captcha_gate::fields(&services),
    };
    with_optional_cookie(
        render(StatusCode::OK, &page, &visitor.context.request_id),
        set,
    )
}

pub async fn signup(
    State(services): State<Services>,
    visitor: Visitor,
    form: CsrfForm,
) -> Response {
    let context = visitor.context;
    let mut errors = Errors::default();
    let username = Username::parse(form.get("username"))
        .map_err(|e| errors.add("username", e.to_string()))
        .ok();
    let email = Email::parse(form.get("email"))
        .map_err(|e| errors.add("email", e.to_string()))
        .ok();
    let password = match (&username, &email) {
        (Some(u), Some(e)) => Password::parse_new(form.get("password"), u.as_str(), e.as_str()),
        _ => Password::parse_new(
            form.get("password"),
            form.get("username"),
            form.get("email"),
        ),
    }
    .map_err(|e| errors.add("password", e.to_string()))
    .ok();
    if form.get("password") != form.get("password_confirm") {
        errors.add("password_confirm", "The two passwords are not the same.");
    }
    let again = |status: StatusCode, errors: Errors| {
        let page = SignupPage {
            chrome: Chrome::visitor(),
            csrf_token: form.get("csrf_token").to_string(),
            username: form.get("username").chars().take(64).collect(),
            email: form.get("email").chars().take(254).collect(),
            errors,
            captcha: captcha_gate::fields(&services),
        };
        render(status, &page, &context.request_id)
    };
    let (Some(username), Some(email), Some(password), true) =
        (username, email, password, errors.is_empty())
    else {
        return again(StatusCode::UNPROCESSABLE_ENTITY, errors);
    };
    if services.hasher.is_saturated() {
        // Refused before any database work: a flood costs the database nothing.
        let busy = auth::password::HashError::Busy.to_string();
        return again(StatusCode::SERVICE_UNAVAILABLE, Errors::one("form", busy));
    }
    if let Err(message) = captcha_gate::verify(&services, &form, &context, "signup").await {
        return again(StatusCode::BAD_REQUEST, Errors::one("form", message));
    }
    let hash = match services.hasher.hash(&password).await {
        Ok(hash) => hash,
        Err(auth::password::HashError::Busy) => {
            return again(
                StatusCode::SERVICE_UNAVAILABLE,
                Errors::one("form", "The bank is busy. Please try again in a moment."),
            );
        }
        Err(error) => return internal(&context.request_id, error),
    };
    let audit = context.audit();
    let user_id = match crate::customers::create(&services, &audit, &username, &email, &hash).await
    {
        Ok(id) => id,
        Err(CreateCustomerError::UsernameTaken) => {
            return again(
                StatusCode::CONFLICT,
                Errors::one("username", "This username is taken. Choose another."),
            );
        }
        Err(CreateCustomerError::EmailTaken) => {
            return again(
                StatusCode::CONFLICT,
                Errors::one(
                    "email",
                    "An account with this email already exists. Log in instead.",
                ),
            );
        }
        Err(error) => return internal(&context.request_id, error),
    };
    match auth::session::create(
        &services,
        user_id,
        auth::session::Stage::PendingTwoFactor,
        &audit.with_user(user_id),
        context.user_agent.as_deref(),
    )
    .await
    {
        Ok(new) => signed_in("/2fa/setup", &new),
        Err(error) => internal(&context.request_id, error),
    }
}

pub async fn setup_form(State(services): State<Services>, user: PendingUser) -> Response {
    setup_page(&services, &user, StatusCode::OK, Errors::default()).await
}

async fn setup_page(
    services: &Services,
    user: &PendingUser,
    status: StatusCode,
    errors: Errors,
) -> Response {
    let request_id = &user.context.request_id;
    let secret = match auth::totp_secret(services, user.session.user_id).await {
        Ok(secret) => secret,
        Err(error) => return internal(request_id, error),
    };
    let chrome = Chrome::for_session(services, &user.session, false).await;
    let username = chrome.username.clone().unwrap_or_default();
    let qr = auth::totp::qr_svg_data_uri(&secret.otpauth_uri(&username)).unwrap_or_default();
    let page = SetupPage {
        chrome,
        secret: secret.base32(),
        qr,
        errors,
    };
    render(status, &page, request_id)
}

pub async fn setup(
    State(services): State<Services>,
    user: PendingUser,
    form: CsrfForm,
) -> Response {
    let audit = user.context.audit();
    match auth::confirm_enrollment(
        &services,
        &audit,
        &user.session,
        form.get("otp"),
        user.context.user_agent.as_deref(),
    )
    .await
    {
        Ok(Some(new)) => signed_in("/2fa/recovery", &new),
        Ok(None) => {
            let errors = Errors::one(
                "otp",
                "That code is not right, or was already used. Check the time on your phone and enter the newest code.",
            );
            setup_page(&services, &user, StatusCode::UNPROCESSABLE_ENTITY, errors).await
        }
        Err(error) => internal(&user.context.request_id, error),
    }
}

pub async fn recovery(
    State(services): State<Services>,
    user: super::extract::CurrentUser,
) -> Response {
    match auth::take_recovery_codes(&services, &user.session).await {
        Ok(Some(codes)) => {
            let chrome = Chrome::for_session(&services, &user.session, true).await;
            render(
                StatusCode::OK,
                &RecoveryPage { chrome, codes },
                &user.context.request_id,
            )
        }
        Ok(None) => see_other("/"),
        Err(error) => internal(&user.context.request_id, error),
    }
}

pub async fn login_form(
    State(services): State<Services>,
    visitor: Visitor,
    headers: axum::http::HeaderMap,
) -> Response {
    let (csrf_token, set) = visitor_token(&headers);
    let page = LoginPage {
        chrome: Chrome::visitor(),
        csrf_token,
        email: String::new(),
        errors: Errors::default(),
        captcha: captcha_gate::fields(&services),
    };
    with_optional_cookie(
        render(StatusCode::OK, &page, &visitor.context.request_id),
        set,
    )
}

pub async fn login(State(services): State<Services>, visitor: Visitor, form: CsrfForm) -> Response {
    let context = visitor.context;
    let attempt = LoginAttempt {
        email: form.get("email"),
        password: form.get("password"),
        otp: form.get("otp"),
    };
    let again = |status: StatusCode, message: String| {
        let page = LoginPage {
            chrome: Chrome::visitor(),
            csrf_token: form.get("csrf_token").to_string(),
            email: form.get("email").chars().take(254).collect(),
            errors: Errors::one("form", message),
            captcha: captcha_gate::fields(&services),
        };
        render(status, &page, &context.request_id)
    };
    if services.hasher.is_saturated() {
        // Every hashing thread busy and the queue full: refused before any database work, so
        // a flood of logins cannot hold the connection pool that other customers' pages need.
        return again(StatusCode::SERVICE_UNAVAILABLE, AuthError::Busy.to_string());
    }
    if let Err(message) = captcha_gate::verify(&services, &form, &context, "login").await {
        return again(StatusCode::BAD_REQUEST, message);
    }
    match auth::login(
        &services,
        &context.audit(),
        &attempt,
        context.user_agent.as_deref(),
    )
    .await
    {
        Ok(new) => signed_in("/", &new),
        Err(error @ AuthError::LoginFailed) => again(StatusCode::UNAUTHORIZED, error.to_string()),
        Err(error @ AuthError::Throttled) => {
            again(StatusCode::TOO_MANY_REQUESTS, error.to_string())
        }
        Err(error @ AuthError::Busy) => again(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
        Err(error) => internal(&context.request_id, error),
    }
}

pub async fn logout(
    State(services): State<Services>,
    user: SessionUser,
    _form: CsrfForm,
) -> Response {
    if let Err(error) = auth::logout(&services, &user.context.audit(), &user.session).await {
        return internal(&user.context.request_id, error);
    }
    with_cookie(see_other("/"), &clear_cookie_header())
}
