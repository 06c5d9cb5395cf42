//! Per-request context, computed once by middleware: request id, the real client address
//! (`X-Forwarded-For` believed only from `ALPHABANK_TRUSTED_PROXIES`), user agent, and the
//! session (looked up, expiry-checked and touched here, so handlers and the rate limiter share it).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::audit::AuditContext;
use crate::auth::session::{self, EndReason, Lookup, SESSION_COOKIE, Session};
use crate::startup::Services;

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
    mut request: Request,
    next: Next,
) -> Response {
    let request_id = hex::encode(crate::crypto::random_bytes::<8>());
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let client_ip = client_ip(&services, peer, request.headers());
    let user_agent = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(session::USER_AGENT_CHARS_MAX).collect());
    let mut context = RequestContext {
        request_id: request_id.clone(),
        client_ip,
        user_agent,
        session: SessionState::Anonymous,
    };
    let span = tracing::info_span!("request", request_id = %request_id, method = %request.method(), path = %request.uri().path());
    let _entered = span.enter();
    if !request.uri().path().starts_with("/static/")
        && let Some(value) = cookie(request.headers(), SESSION_COOKIE)
    {
        match session::lookup(&services, value, &context.audit()).await {
            Ok(Lookup::Live(s)) => context.session = SessionState::Live(s),
            Ok(Lookup::Ended(reason)) => context.session = SessionState::Ended(reason),
            Ok(Lookup::None) => {}
            Err(error) => {
                tracing::error!(%error, "session lookup failed");
                return super::error::render_error(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "The bank is busy. Please try again in a moment.",
                    &request_id,
                );
            }
        }
    }
    request.extensions_mut().insert(context);
    let mut response = next.run(request).await.into_response();
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}
