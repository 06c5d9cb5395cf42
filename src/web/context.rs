//! Per-request context, computed once by middleware: request id, the real client address
//! (`X-Forwarded-For` believed only from `ALPHABANK_TRUSTED_PROXIES`), user agent, and the
//! session (looked up, expiry-checked and touched here, so handlers and the rate limiter share it).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::error::render_error;
use crate::audit::AuditContext;
use crate::auth::session::{self, EndReason, Lookup, SESSION_COOKIE, Session};
use crate::services::Services;

#[derive(Clone, Debug)]
pub enum SessionState {
    Anonymous,
    Live(Session),
    Ended(EndReason),
}

#[derive(Clone, Debug)]
pub struct RequestContext {
    pub request_id: String,
    pub client_ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub session: SessionState,
}

impl RequestContext {
    pub fn audit(&self) -> AuditContext {
        let user_id = match &self.session {
            SessionState::Live(s) => Some(s.user_id),
            _ => None,
        };
        AuditContext {
            user_id,
            client_ip: self.client_ip,
            request_id: Some(self.request_id.clone()),
        }
    }
}

/// Reads one cookie's value from the request headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The client address: the socket peer, or — only when the peer is a trusted proxy — the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy.
pub fn client_ip(services: &Services, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
    let trusted = |ip: &IpAddr| {
        services
            .config
            .trusted_proxies
            .iter()
            .any(|net| net.contains(ip))
    };
    let peer = peer?;
    if !trusted(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    Some(
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !trusted(ip))
            .unwrap_or(peer),
    )
}

pub async fn request_context(
    State(services): State<Services>,
    request: Request,
    next: Next,
) -> Response {
    use tracing::Instrument as _;
    let request_id = hex::encode(crate::crypto::random_bytes::<8>());
    let span = tracing::info_span!("request", request_id = %request_id, method = %request.method(), path = %request.uri().path());
    let mut response = handle(services, request, next, request_id.clone())
        .instrument(span)
        .await;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// One request through its layers, in order: the in-flight and size limits, the client's
/// context, the session and the rate limit (not for static files or the health check), then the
/// handler.
async fn handle(
    services: Services,
    mut request: Request,
    next: Next,
    request_id: String,
) -> Response {
    let Ok(_in_flight) = services.in_flight.clone().try_acquire_owned() else {
        return render_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "The bank is very busy right now. Please try again in a moment.",
            &request_id,
        );
    };
    if let Some(refused) = refuse_oversized(&request, &request_id) {
        return refused;
    }
    let mut context = client_context(&services, &request, request_id.clone());
    let path = request.uri().path().to_string();
    if is_counted(&path) {
        if let Err(failed) = look_up_session(&services, request.headers(), &mut context).await {
            return failed;
        }
        if let Some(limited) = rate_limit(&services, &context, &path).await {
            return limited;
        }
    }
    request.extensions_mut().insert(context);
    run_handler(next, request, &request_id).await
}

/// Refuses a request whose address or headers are larger than the limits.
fn refuse_oversized(request: &Request, request_id: &str) -> Option<Response> {
    if request.uri().to_string().len() > crate::limits::REQUEST_URI_BYTES_MAX {
        return Some(render_error(
            StatusCode::URI_TOO_LONG,
            "The address is too long.",
            request_id,
        ));
    }
    let head_bytes: usize = request
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if head_bytes > crate::limits::REQUEST_HEAD_BYTES_MAX {
        return Some(render_error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "The request headers are too large.",
            request_id,
        ));
    }
    None
}

/// The request's context with no session yet: its id, the client address and the user agent.
fn client_context(services: &Services, request: &Request, request_id: String) -> RequestContext {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let client_ip = client_ip(services, peer, request.headers());
    let user_agent = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(session::USER_AGENT_CHARS_MAX).collect());
    RequestContext {
        request_id,
        client_ip,
        user_agent,
        session: SessionState::Anonymous,
    }
}

/// Whether a request looks up its session and counts against the rate limit: every one but
/// static files and the health check.
fn is_counted(path: &str) -> bool {
    !(path.starts_with("/static/") || path == "/healthz")
}

/// Sets the context's session from the session cookie, if there is one; a failed lookup is the
/// busy page (503).
async fn look_up_session(
    services: &Services,
    headers: &HeaderMap,
    context: &mut RequestContext,
) -> Result<(), Response> {
    let Some(value) = cookie(headers, SESSION_COOKIE) else {
        return Ok(());
    };
    match session::lookup(services, value, &context.audit()).await {
        Ok(Lookup::Live(s)) => context.session = SessionState::Live(s),
        Ok(Lookup::Ended(reason)) => context.session = SessionState::Ended(reason),
        Ok(Lookup::None) => {}
        Err(error) => {
            tracing::error!(%error, "session lookup failed");
            return Err(render_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "The bank is busy. Please try again in a moment.",
                &context.request_id,
            ));
        }
    }
    Ok(())
}

/// The rate limit, counted per session when one is live and per client address otherwise; the
/// 429 page once it is reached.
async fn rate_limit(services: &Services, context: &RequestContext, path: &str) -> Option<Response> {
    let key = match &context.session {
        SessionState::Live(s) => format!("s:{}", s.id_hash),
        _ => format!(
            "ip:{}",
            context
                .client_ip
                .map(|ip| ip.to_string())
                .unwrap_or_default()
        ),
    };
    if let super::rate_limit::Decision::Limited { retry_after } = services.rate_limiter.check(&key)
    {
        return Some(rate_limited(services, context, path, retry_after).await);
    }
    None
}

/// Runs the handler. A panic becomes the generic 500 page, never a dropped connection; a
/// handler's error page is rendered with the request id.
async fn run_handler(next: Next, request: Request, request_id: &str) -> Response {
    match futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(next.run(request)))
        .await
    {
        Ok(response) => super::error::rendered_with_id(response, request_id),
        Err(_) => {
            tracing::error!("handler panicked");
            render_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong on our side. Nothing was changed. Please try again; if it keeps happening, contact us with the request id below.",
                request_id,
            )
        }
    }
}

/// 429 with `Retry-After`; a logged-in session also ends (audited).
async fn rate_limited(
    services: &Services,
    context: &RequestContext,
    path: &str,
    retry_after: std::time::Duration,
) -> Response {
    let event = crate::audit::AuditEvent::RateLimited {
        path: crate::audit::AuditEvent::path(path),
    };
    services
        .audit
        .record_best_effort(&context.audit(), event)
        .await;
    let mut response = render_error(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many requests. Wait a little and try again.",
        &context.request_id,
    );
    let secs = retry_after.as_secs().max(1);
    if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    if let SessionState::Live(session) = &context.session {
        if let Err(error) = session::end(services, session).await {
            tracing::error!(%error, "could not end a rate-limited session");
        }
        if let Ok(value) = HeaderValue::from_str(&session::clear_cookie_header()) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    if let Ok(value) = HeaderValue::from_str(&context.request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}
