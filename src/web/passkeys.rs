//! Passkey endpoints (CONTRACT §7): options for adding one (`/settings/passkeys/options`, after
//! a one-time code), adding and removing one, and logging in with one (`/login/passkey/options`,
//! `/login/passkey`). The options endpoints answer JSON, refusals too (`{"error": "…"}`); the
//! others are ordinary forms.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::extract::{CurrentUser, Visitor, see_other, with_cookie};
use super::form::CsrfForm;
use super::view::flash;
use crate::audit::AuditEvent;
use crate::auth::passkey::{AddRefusal, PasskeyLogin};
use crate::auth::webauthn::CeremonyError;
use crate::auth::{self, AuthError, CodeVerdict};
use crate::domain::PasskeyName;
use crate::services::Services;

/// A JSON answer (never cached).
fn json(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn json_error(status: StatusCode, message: &str) -> Response {
    json(status, &serde_json::json!({ "error": message }))
}

/// A refused form of a JSON endpoint (CSRF, media type, size, syntax) as JSON, same status.
fn form_refused(rejection: &Response) -> Response {
    let status = rejection.status();
    let message = match status {
        StatusCode::FORBIDDEN => "The security token is missing or wrong. Reload the page.",
        StatusCode::PAYLOAD_TOO_LARGE => "The request is too large.",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "Send the form as application/x-www-form-urlencoded.",
        _ => "The request is malformed.",
    };
    json_error(status, message)
}

const WRONG_CODE: &str =
    "The code is not right, or was already used. Wait for the next code in your app.";

/// `POST /settings/passkeys/options` (`csrf_token`, `otp`): creation options.
pub async fn add_options(
    State(services): State<Services>,
    user: CurrentUser,
    form: Result<CsrfForm, Response>,
) -> Response {
    let form = match form {
        Ok(form) => form,
        Err(rejection) => return form_refused(&rejection),
    };
    match add_options_for(&services, &user, form.get("otp")).await {
        Ok(response) => response,
        Err(error) => {
            tracing::error!(%error, "passkey options failed");
            let status = match error {
                AuthError::Busy => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            json_error(status, "Something went wrong. Please try again.")
        }
    }
}

async fn add_options_for(
    services: &Services,
    user: &CurrentUser,
    otp: &str,
) -> Result<Response, AuthError> {
    let (session, ctx) = (&user.session, user.context.audit());
    let passkeys = &services.passkeys;
    if passkeys.list(session.user_id).await?.len() as i64 >= auth::passkey::PASSKEYS_PER_USER_MAX {
        return Ok(json_error(StatusCode::CONFLICT, TOO_MANY));
    }
    match auth::check_code_counted(services, &ctx, session.user_id, otp).await? {
        CodeVerdict::Right => {}
        CodeVerdict::Wrong => {
            audit_refused(services, user, "add", "wrong_code").await;
            return Ok(json_error(StatusCode::UNAUTHORIZED, WRONG_CODE));
        }
        CodeVerdict::TooManyFailures => {
            audit_refused(services, user, "add", "wrong_code").await;
            let ended = super::extract::ended_by_failures(services, user).await;
            let mut response =
                json_error(StatusCode::UNAUTHORIZED, super::extract::ENDED_BY_FAILURES);
            for cookie in ended.headers().get_all(header::SET_COOKIE) {
                response
                    .headers_mut()
                    .append(header::SET_COOKIE, cookie.clone());
            }
            return Ok(response);
        }
    }
    let binding = session.id_hash.as_bytes();
    Ok(
        match passkeys
            .creation_options(session.user_id, &session.username, binding)
            .await?
        {
            Some(options) => json(StatusCode::OK, &options),
            None => json_error(StatusCode::CONFLICT, TOO_MANY),
        },
    )
}

const TOO_MANY: &str = "You have 10 passkeys, the most allowed. Remove one before adding another.";

async fn audit_refused(
    services: &Services,
    user: &CurrentUser,
    action: &'static str,
    reason: &'static str,
) {
    let event = AuditEvent::PasskeyRefused { action, reason };
    services
        .audit
        .record_best_effort(&user.context.audit(), event)
        .await;
}

/// `POST /settings/passkeys` (`csrf_token`, `name`, `credential`): `303` to `/settings`.
pub async fn add(State(services): State<Services>, user: CurrentUser, form: CsrfForm) -> Response {
    let name = match PasskeyName::parse(form.get("name")) {
        Ok(name) => name,
        Err(error) => {
            let message = format!("Passkey name: {error}");
            return super::settings::refused(
                &services,
                &user,
                StatusCode::UNPROCESSABLE_ENTITY,
                "passkey_name",
                message,
            )
            .await;
        }
    };
    let session = &user.session;
    let outcome = services
        .passkeys
        .add(
            &user.context.audit(),
            (session.user_id, &session.username),
            session.id_hash.as_bytes(),
            &name,
            form.get("credential").trim(),
        )
        .await;
    let (status, message) = match outcome {
        Ok(Ok(_)) => {
            flash(
                &services,
                session,
                &format!(
                    "The passkey “{name}” was added. You can log in and sign payments with it."
                ),
            )
            .await;
            return see_other("/settings");
        }
        Ok(Err(AddRefusal::Full)) => (StatusCode::CONFLICT, TOO_MANY.to_string()),
        Ok(Err(AddRefusal::Duplicate)) => (
            StatusCode::CONFLICT,
            "That passkey is registered already.".to_string(),
        ),
        Ok(Err(AddRefusal::Ceremony(CeremonyError::BadChallenge))) => (
            StatusCode::BAD_REQUEST,
            "The passkey request expired or was already used. Start again.".to_string(),
        ),
        Ok(Err(AddRefusal::Ceremony(_))) => (
            StatusCode::BAD_REQUEST,
            "The passkey could not be checked. Start again.".to_string(),
        ),
        Err(error) => {
            tracing::error!(%error, "adding a passkey failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "Something went wrong. Please try again.".to_string(),
            )
        }
    };
    super::settings::refused(&services, &user, status, "passkey", message).await
}

/// `POST /settings/passkeys/remove` (`csrf_token`, `passkey_id`, `otp`): `303` to `/settings`.
pub async fn remove(
    State(services): State<Services>,
    user: CurrentUser,
    form: CsrfForm,
) -> Response {
    let refused = |status, message: &str| {
        let message = message.to_string();
        let (services, user) = (&services, &user);
        async move { super::settings::refused(services, user, status, "passkey", message).await }
    };
    let Ok(id) = form.get("passkey_id").trim().parse::<i64>() else {
        return refused(StatusCode::BAD_REQUEST, "Choose a passkey to remove.").await;
    };
    let session = &user.session;
    let known = match services.passkeys.list(session.user_id).await {
        Ok(list) => list.iter().any(|p| p.id == id),
        Err(error) => {
            tracing::error!(%error, "listing passkeys failed");
            return refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "Something went wrong. Please try again.",
            )
            .await;
        }
    };
    if !known {
        return refused(StatusCode::NOT_FOUND, "You have no such passkey.").await;
    }
    let ctx = user.context.audit();
    match auth::check_code_counted(&services, &ctx, session.user_id, form.get("otp")).await {
        Ok(CodeVerdict::Right) => {}
        Ok(CodeVerdict::Wrong) => {
            audit_refused(&services, &user, "remove", "wrong_code").await;
            return refused(StatusCode::UNAUTHORIZED, WRONG_CODE).await;
        }
        Ok(CodeVerdict::TooManyFailures) => {
            audit_refused(&services, &user, "remove", "wrong_code").await;
            return super::extract::ended_by_failures(&services, &user).await;
        }
        Err(error) => {
            tracing::error!(%error, "checking a code failed");
            return refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "Something went wrong. Please try again.",
            )
            .await;
        }
    }
    match services.passkeys.remove(&ctx, session.user_id, id).await {
        Ok(true) => {
            flash(&services, session, "The passkey was removed.").await;
            see_other("/settings")
        }
        Ok(false) => refused(StatusCode::NOT_FOUND, "You have no such passkey.").await,
        Err(error) => {
            tracing::error!(%error, "removing a passkey failed");
            refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "Something went wrong. Please try again.",
            )
            .await
        }
    }
}

/// `POST /login/passkey/options` (`csrf_token`): request options for any discoverable passkey.
pub async fn login_options(
    State(services): State<Services>,
    _visitor: Visitor,
    form: Result<CsrfForm, Response>,
) -> Response {
    let form = match form {
        Ok(form) => form,
        Err(rejection) => return form_refused(&rejection),
    };
    match services
        .passkeys
        .login_options(form.get("csrf_token").as_bytes())
    {
        Ok(options) => json(StatusCode::OK, &options),
        Err(error) => {
            tracing::error!(%error, "passkey login options failed");
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong. Please try again.",
            )
        }
    }
}

/// `POST /login/passkey` (`csrf_token`, `credential`, captcha): `303` to `/` with a new session,
/// or `401` with the login page's one message.
pub async fn login(
    State(services): State<Services>,
    visitor: Visitor,
    headers: axum::http::HeaderMap,
    form: CsrfForm,
) -> Response {
    let context = visitor.context;
    if let Err(failure) =
        super::captcha_gate::verify(&services, &form, &context, "login_passkey").await
    {
        return super::account::login_again(
            &services,
            &form,
            &context,
            StatusCode::BAD_REQUEST,
            failure.message,
        );
    }
    let attempt = PasskeyLogin {
        credential: form.get("credential").trim(),
        binding: form.get("csrf_token").as_bytes(),
        device_cookie: super::context::cookie(&headers, auth::failures::DEVICE_COOKIE),
    };
    let user_agent = context.user_agent.as_deref();
    match auth::passkey::login(&services, &context.audit(), &attempt, user_agent).await {
        Ok(logged_in) => {
            let response = super::account::signed_in("/", &logged_in.session);
            let device = auth::failures::device_cookie_header(&logged_in.device_cookie);
            with_cookie(response, &device)
        }
        Err(error @ AuthError::LoginFailed) => super::account::login_again(
            &services,
            &form,
            &context,
            StatusCode::UNAUTHORIZED,
            error.to_string(),
        ),
        Err(error @ AuthError::Throttled) => super::account::login_again(
            &services,
            &form,
            &context,
            StatusCode::TOO_MANY_REQUESTS,
            error.to_string(),
        ),
        Err(error) => {
            tracing::error!(%error, "passkey login failed");
            let status = if matches!(error, AuthError::Busy) || error_is_busy(&error) {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            super::error::render_error(
                status,
                "Something went wrong. Please try again.",
                &context.request_id,
            )
        }
    }
}

fn error_is_busy(error: &AuthError) -> bool {
    matches!(error, AuthError::Store(store) if store.is_busy())
}
