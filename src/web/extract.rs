//! Access is decided by extractors in the handler signature: `Visitor`, `SessionUser` (either
//! stage; logout, `/2fa/setup` which serves each stage) and `CurrentUser` (a full customer). A
//! refused request is redirected (CONTRACT §2): no session → `/`; 2FA pending → `/2fa/setup`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::context::{RequestContext, SessionState};
use crate::auth::session::{EndReason, Session, Stage};
use crate::services::Services;

/// Cookie telling the landing page why the session ended (shown once).
pub const NOTICE_COOKIE: &str = "__Host-alphabank-notice";

pub fn see_other(location: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}

/// Appends a `Set-Cookie` header to a response.
pub fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

fn ended_redirect(reason: EndReason) -> Response {
    let kind = match reason {
        EndReason::Idle => "idle",
        EndReason::Absolute => "absolute",
    };
    session_ended(see_other("/"), kind)
}

/// `response` with the session cookie cleared and the notice (`kind`) the next page explains.
fn session_ended(response: Response, kind: &str) -> Response {
    let response = with_cookie(response, &crate::auth::session::clear_cookie_header());
    with_cookie(
        response,
        &format!("{NOTICE_COOKIE}={kind}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=600"),
    )
}

/// What the landing page says after a session ended for too many failures.
pub const ENDED_BY_FAILURES: &str = "For your security your session was ended after 5 wrong \
    codes or passwords in a row. Log in again to continue.";

/// The answer to a failure that filled the account's failure count inside a session (CONTRACT
/// §3): the session ends, `401` says why, and the next page says it again.
pub async fn ended_by_failures(services: &Services, user: &CurrentUser) -> Response {
    let ctx = user.context.audit();
    if let Err(error) =
        crate::auth::session::end_after_failures(services, &ctx, &user.session).await
    {
        tracing::error!(%error, "could not end a session after too many failures");
    }
    let page = super::error::render_error(
        StatusCode::UNAUTHORIZED,
        ENDED_BY_FAILURES,
        &user.context.request_id,
    );
    session_ended(page, "failures")
}

fn context(parts: &Parts) -> RequestContext {
    parts
        .extensions
        .get::<RequestContext>()
        .cloned()
        .unwrap_or(RequestContext {
            request_id: String::new(),
            client_ip: None,
            user_agent: None,
            session: SessionState::Anonymous,
        })
}

/// A fully enrolled, logged-in customer.
pub struct CurrentUser {
    pub session: Session,
    pub context: RequestContext,
}

impl FromRequestParts<Services> for CurrentUser {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, _services: &Services) -> Result<Self, Response> {
        let context = context(parts);
        match &context.session {
            SessionState::Live(session) if session.stage == Stage::Full => Ok(CurrentUser {
                session: session.clone(),
                context,
            }),
            SessionState::Live(_) => Err(see_other("/2fa/setup")),
            SessionState::Ended(reason) => Err(ended_redirect(*reason)),
            SessionState::Anonymous => Err(see_other("/")),
        }
    }
}

/// Any live session, whatever its stage (logout, and `/2fa/setup`: enrolment or replacement).
pub struct SessionUser {
    pub session: Session,
    pub context: RequestContext,
}

impl FromRequestParts<Services> for SessionUser {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, _services: &Services) -> Result<Self, Response> {
        let context = context(parts);
        match &context.session {
            SessionState::Live(session) => Ok(SessionUser {
                session: session.clone(),
                context,
            }),
            SessionState::Ended(reason) => Err(ended_redirect(*reason)),
            SessionState::Anonymous => Err(see_other("/")),
        }
    }
}

/// Someone without a live session (sign-up and login pages). Customers are sent home.
pub struct Visitor {
    pub context: RequestContext,
}

impl FromRequestParts<Services> for Visitor {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, _services: &Services) -> Result<Self, Response> {
        let context = context(parts);
        match &context.session {
            SessionState::Live(session) if session.stage == Stage::Full => Err(see_other("/")),
            SessionState::Live(_) => Err(see_other("/2fa/setup")),
            _ => Ok(Visitor { context }),
        }
    }
}

/// The request context for pages open to everyone.
pub struct Context(pub RequestContext);

impl FromRequestParts<Services> for Context {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, _services: &Services) -> Result<Self, Response> {
        Ok(Context(context(parts)))
    }
}
