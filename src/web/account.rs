//! Sign-up, authenticator enrollment, recovery codes, login and logout.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::captcha_gate;
use super::context::cookie;
use super::error::{Error, Result};
use super::extract::{SessionUser, Visitor, see_other, with_cookie};
use super::form::{CsrfForm, VISITOR_CSRF_COOKIE};
use super::view::{Chrome, Errors, render};
use crate::auth::session::{NewSession, clear_cookie_header, cookie_header};
use crate::auth::{self, AuthError, LoginAttempt};
use crate::captcha::CaptchaFields;
use crate::customers::CreateCustomerError;
use crate::domain::{Email, Password, Username};
use crate::services::Services;

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
    /// The passkey form's own captcha (a challenge is spent by one form).
    passkey_captcha: CaptchaFields,
    /// What happened before the visitor came here (`?notice=password-reset`); fixed texts only.
    notice: Option<&'static str>,
}

/// `GET /login?notice=…`: the notices a redirect to the login page may ask for.
#[derive(serde::Deserialize)]
pub struct LoginQuery {
    notice: Option<String>,
}

fn login_notice(query: &LoginQuery) -> Option<&'static str> {
    match query.notice.as_deref() {
        Some("password-reset") => Some(
            "Your password was changed and every session was logged out. Log in with the new password.",
        ),
        _ => None,
    }
}

/// The login page again after a refused login (password or passkey), with `message`.
pub(super) fn login_again(
    services: &Services,
    form: &CsrfForm,
    context: &super::context::RequestContext,
    status: StatusCode,
    message: String,
) -> Response {
    let page = LoginPage {
        chrome: Chrome::visitor(),
        csrf_token: form.get("csrf_token").to_string(),
        email: form.get("email").chars().take(254).collect(),
        errors: Errors::one("form", message),
        captcha: captcha_gate::fields(services),
        passkey_captcha: captcha_gate::fields(services),
        notice: None,
    };
    render(status, &page, &context.request_id)
}

#[derive(Template)]
#[template(path = "setup_2fa.html")]
struct SetupPage {
    chrome: Chrome,
    secret: String,
    qr: String,
    errors: Errors,
    /// A new authenticator for an enrolled customer (the old one works until this is confirmed).
    replacing: bool,
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

/// A visitor's form page, given the CSRF token its form carries: the visitor cookie's, or a new
/// one set with the response.
pub(super) fn visitor_form<T: Template>(
    headers: &axum::http::HeaderMap,
    request_id: &str,
    page: impl FnOnce(String) -> T,
) -> Response {
    let (csrf_token, set) = visitor_token(headers);
    let response = render(StatusCode::OK, &page(csrf_token), request_id);
    match set {
        Some(c) => with_cookie(response, &c),
        None => response,
    }
}

pub(super) fn signed_in(location: &str, new: &NewSession) -> Response {
    with_cookie(see_other(location), &cookie_header(&new.cookie_value))
}

pub async fn signup_form(
    State(services): State<Services>,
    visitor: Visitor,
    headers: axum::http::HeaderMap,
) -> Response {
    visitor_form(&headers, &visitor.context.request_id, |csrf_token| {
        SignupPage {
            chrome: Chrome::visitor(),
            csrf_token,
            username: String::new(),
            email: String::new(),
            errors: Errors::default(),
            captcha: captcha_gate::fields(&services),
        }
    })
}

pub async fn signup(State(services): State<Services>, visitor: Visitor, form: CsrfForm) -> Result {
    let context = visitor.context;
    let again = |status: StatusCode, errors: Errors| {
        let page = SignupPage {
            chrome: Chrome::visitor(),
            csrf_token: form.get("csrf_token").to_string(),
            username: form.get("username").chars().take(64).collect(),
            email: form.get("email").chars().take(254).collect(),
            errors,
            captcha: captcha_gate::fields(&services),
        };
        Ok(render(status, &page, &context.request_id))
    };
    let (username, email, password) = match signup_fields(&form) {
        Ok(fields) => fields,
        Err(errors) => return again(StatusCode::UNPROCESSABLE_ENTITY, errors),
    };
    let busy = || Errors::one("form", auth::password::HashError::Busy.to_string());
    if services.hasher.is_saturated() {
        // Refused before any database work: a flood costs the database nothing.
        return again(StatusCode::SERVICE_UNAVAILABLE, busy());
    }
    if let Err(failure) = captcha_gate::verify(&services, &form, &context, "signup").await {
        return again(
            StatusCode::BAD_REQUEST,
            Errors::one("form", failure.message),
        );
    }
    // Before the hash: a taken username or a client over its sign-ups costs no Argon2 work.
    match crate::customers::signup_allowed(&services, &context.audit(), &username).await? {
        crate::customers::SignupGate::Open => {}
        crate::customers::SignupGate::UsernameTaken => {
            let taken = "This username is taken. Choose another.";
            return again(StatusCode::CONFLICT, Errors::one("username", taken));
        }
        crate::customers::SignupGate::Throttled => {
            let message = "Too many sign-ups from your network. Try again later.";
            return again(StatusCode::TOO_MANY_REQUESTS, Errors::one("form", message));
        }
    }
    let hash = match services.hasher.hash(&password).await {
        Ok(hash) => hash,
        Err(auth::password::HashError::Busy) => {
            return again(StatusCode::SERVICE_UNAVAILABLE, busy());
        }
        Err(error) => return Err(Error::internal(error)),
    };
    let audit = context.audit();
    let user_id = match crate::customers::create(&services, &audit, &username, &email, &hash).await
    {
        Ok(id) => id,
        Err(CreateCustomerError::UsernameTaken) => {
            let taken = "This username is taken. Choose another.";
            return again(StatusCode::CONFLICT, Errors::one("username", taken));
        }
        Err(CreateCustomerError::EmailTaken) => {
            let taken = "An account with this email already exists. Log in instead.";
            return again(StatusCode::CONFLICT, Errors::one("email", taken));
        }
        Err(error) => return Err(Error::internal(error)),
    };
    let stage = auth::session::Stage::PendingTwoFactor;
    let ctx = audit.with_user(user_id);
    let agent = context.user_agent.as_deref();
    let new = auth::session::create(&services, user_id, stage, &ctx, agent).await?;
    Ok(signed_in("/2fa/setup", &new))
}

/// The sign-up form's fields, parsed, or every field's message.
fn signup_fields(form: &CsrfForm) -> std::result::Result<(Username, Email, Password), Errors> {
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
    match (username, email, password, errors.is_empty()) {
        (Some(username), Some(email), Some(password), true) => Ok((username, email, password)),
        _ => Err(errors),
    }
}

/// `GET /2fa/setup`: enrolment's authenticator, or the replacement an enrolled customer asked
/// for on `/settings` (none asked for: home, as before the replacement existed).
pub async fn setup_form(State(services): State<Services>, user: SessionUser) -> Result {
    let Some((secret, replacing)) = setup_secret(&services, &user).await? else {
        return Ok(see_other("/"));
    };
    setup_page(
        &services,
        &user,
        (secret, replacing),
        StatusCode::OK,
        Errors::default(),
    )
    .await
}

/// The secret `/2fa/setup` shows: the enrolling customer's, or the pending replacement's.
async fn setup_secret(
    services: &Services,
    user: &SessionUser,
) -> Result<Option<(auth::totp::TotpSecret, bool)>> {
    let user_id = user.session.user_id;
    Ok(match user.session.stage {
        auth::session::Stage::PendingTwoFactor => {
            Some((auth::totp_secret(services, user_id).await?, false))
        }
        auth::session::Stage::Full => auth::renewal::pending_secret(services, user_id)
            .await?
            .map(|secret| (secret, true)),
    })
}

async fn setup_page(
    services: &Services,
    user: &SessionUser,
    (secret, replacing): (auth::totp::TotpSecret, bool),
    status: StatusCode,
    errors: Errors,
) -> Result {
    let request_id = &user.context.request_id;
    let chrome = Chrome::for_session(services, &user.session, replacing).await;
    let username = chrome.username.clone().unwrap_or_default();
    let qr = auth::totp::qr_svg_data_uri(&secret.otpauth_uri(&username)).unwrap_or_default();
    let page = SetupPage {
        chrome,
        secret: secret.base32(),
        qr,
        errors,
        replacing,
    };
    Ok(render(status, &page, request_id))
}

const WRONG_SETUP_CODE: &str = "That code is not right, or was already used. Check the time on your phone and enter the newest code.";

/// `POST /2fa/setup`: the first code of the authenticator being enrolled or replacing the old one.
pub async fn setup(
    State(services): State<Services>,
    user: SessionUser,
    headers: axum::http::HeaderMap,
    form: CsrfForm,
) -> Result {
    let audit = user.context.audit();
    if user.session.stage == auth::session::Stage::Full {
        let confirmed = auth::renewal::confirm_authenticator_replacement(
            &services,
            &audit,
            &user.session,
            form.get("otp"),
        )
        .await?;
        if confirmed {
            let done = "Your new authenticator is set up. Codes from the old one no longer work.";
            super::view::flash(&services, &user.session, done).await;
            return Ok(see_other("/settings"));
        }
        let Some(shown) = setup_secret(&services, &user).await? else {
            return Ok(see_other("/"));
        };
        let errors = Errors::one("otp", WRONG_SETUP_CODE);
        return setup_page(
            &services,
            &user,
            shown,
            StatusCode::UNPROCESSABLE_ENTITY,
            errors,
        )
        .await;
    }
    match auth::confirm_enrollment(
        &services,
        &audit,
        &user.session,
        form.get("otp"),
        user.context.user_agent.as_deref(),
    )
    .await
    {
        Ok(Some(new)) => {
            // Enrolling completes the first login: this browser is the account's first device.
            let sent = cookie(&headers, auth::failures::DEVICE_COOKIE);
            let seen = auth::DeviceSeen::Enrolled;
            let device = auth::remember_device(&services, user.session.user_id, sent, seen).await?;
            let response = signed_in("/2fa/recovery", &new);
            Ok(with_cookie(
                response,
                &auth::failures::device_cookie_header(&device),
            ))
        }
        Ok(None) => {
            let secret = auth::totp_secret(&services, user.session.user_id).await?;
            let errors = Errors::one("otp", WRONG_SETUP_CODE);
            setup_page(
                &services,
                &user,
                (secret, false),
                StatusCode::UNPROCESSABLE_ENTITY,
                errors,
            )
            .await
        }
        Err(error) => Err(error.into()),
    }
}

pub async fn recovery(
    State(services): State<Services>,
    user: super::extract::CurrentUser,
) -> Result {
    let Some(codes) = auth::take_recovery_codes(&services, &user.session).await? else {
        return Ok(see_other("/"));
    };
    let chrome = Chrome::for_session(&services, &user.session, true).await;
    let page = RecoveryPage { chrome, codes };
    Ok(render(StatusCode::OK, &page, &user.context.request_id))
}

pub async fn login_form(
    State(services): State<Services>,
    visitor: Visitor,
    headers: axum::http::HeaderMap,
    query: axum::extract::Query<LoginQuery>,
) -> Response {
    let notice = login_notice(&query);
    visitor_form(&headers, &visitor.context.request_id, |csrf_token| {
        LoginPage {
            chrome: Chrome::visitor(),
            csrf_token,
            email: String::new(),
            errors: Errors::default(),
            captcha: captcha_gate::fields(&services),
            passkey_captcha: captcha_gate::fields(&services),
            notice,
        }
    })
}

pub async fn login(
    State(services): State<Services>,
    visitor: Visitor,
    headers: axum::http::HeaderMap,
    form: CsrfForm,
) -> Result {
    let context = visitor.context;
    let attempt = LoginAttempt {
        email: form.get("email"),
        password: form.get("password"),
        otp: form.get("otp"),
        device_cookie: cookie(&headers, auth::failures::DEVICE_COOKIE),
    };
    let again = |status: StatusCode, message: String| {
        Ok(login_again(&services, &form, &context, status, message))
    };
    if services.hasher.is_saturated() {
        // Every hashing thread busy and the queue full: refused before any database work, so
        // a flood of logins cannot hold the connection pool that other customers' pages need.
        return again(StatusCode::SERVICE_UNAVAILABLE, AuthError::Busy.to_string());
    }
    if let Err(failure) = captcha_gate::verify(&services, &form, &context, "login").await {
        return again(StatusCode::BAD_REQUEST, failure.message);
    }
    match auth::login(
        &services,
        &context.audit(),
        &attempt,
        context.user_agent.as_deref(),
    )
    .await
    {
        Ok(logged_in) => {
            let response = signed_in("/", &logged_in.session);
            let device = auth::failures::device_cookie_header(&logged_in.device_cookie);
            Ok(with_cookie(response, &device))
        }
        Err(error @ AuthError::LoginFailed) => again(StatusCode::UNAUTHORIZED, error.to_string()),
        Err(error @ AuthError::Throttled) => {
            again(StatusCode::TOO_MANY_REQUESTS, error.to_string())
        }
        Err(error @ AuthError::Busy) => again(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
        Err(error) => Err(error.into()),
    }
}

pub async fn logout(
    State(services): State<Services>,
    user: SessionUser,
    _form: CsrfForm,
) -> Result {
    auth::logout(&services, &user.context.audit(), &user.session).await?;
    Ok(with_cookie(see_other("/"), &clear_cookie_header()))
}
