//! HTTP: routes (one module per page), middleware (request id, security headers) and the error
//! type that renders itself. Nothing below this module knows about HTTP.

mod account;
mod atm;
mod captcha_gate;
pub mod context;
mod error;
pub mod extract;
pub mod form;
mod headers;
mod history;
mod home;
mod money_form;
mod pages;
mod passkeys;
mod receipts;
mod recover;
mod review;
mod settings;
mod transfer;
mod view;

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri, header};
use axum::middleware;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

pub use error::{Error, Result};

// `context` reaches the rate limiter through this name.
use crate::rate_limit;
use crate::services::Services;
use atm::AtmPage;
use transfer::TransferPage;

pub fn router(services: Services) -> Router {
    let tls = !services.config.plain_http;
    let csp = headers::content_security_policy(&services.captcha.csp_sources());
    Router::new()
        .route("/", get(home::index))
        .route("/signup", get(account::signup_form).post(account::signup))
        .route("/login", get(account::login_form).post(account::login))
        .route(
            "/recover",
            get(recover::recover_form).post(recover::recover),
        )
        .route(
            "/recover/reset",
            get(recover::reset_form).post(recover::reset),
        )
        .route("/logout", axum::routing::post(account::logout))
        .route("/2fa/setup", get(account::setup_form).post(account::setup))
        .route("/2fa/recovery", get(account::recovery))
        .route("/settings", get(settings::show))
        .route(
            "/settings/password",
            axum::routing::post(settings::change_password),
        )
        .route(
            "/settings/passkeys/options",
            axum::routing::post(passkeys::add_options),
        )
        .route(
            "/settings/authenticator",
            get(settings::authenticator_form).post(settings::replace_authenticator),
        )
        .route(
            "/settings/recovery-codes",
            axum::routing::post(settings::replace_recovery_codes),
        )
        .route("/settings/passkeys", axum::routing::post(passkeys::add))
        .route(
            "/settings/passkeys/remove",
            axum::routing::post(passkeys::remove),
        )
        .route(
            "/login/passkey/options",
            axum::routing::post(passkeys::login_options),
        )
        .route("/login/passkey", axum::routing::post(passkeys::login))
        .route(
            "/settings/sessions/revoke-others",
            axum::routing::post(settings::revoke_others),
        )
        .route(
            "/transfer",
            get(money_form::show::<TransferPage>).post(money_form::submit::<TransferPage>),
        )
        .route("/transfer/confirm", axum::routing::post(review::confirm))
        .route(
            "/atm",
            get(money_form::show::<AtmPage>).post(money_form::submit::<AtmPage>),
        )
        .route("/receipts/{entry}", get(receipts::show))
        .route("/transactions", get(history::show))
        .route("/healthz", get(healthz))
        .route("/static/{*file}", get(pages::static_file))
        .fallback(pages::not_found)
        .method_not_allowed_fallback(pages::method_not_allowed)
        // Innermost first: the request timeout, then the context (request id, limits, session,
        // rate limit), then the security headers outermost so that every response carries them.
        .layer(middleware::from_fn(request_timeout))
        .layer(middleware::from_fn_with_state(
            services.clone(),
            context::request_context,
        ))
        .layer(middleware::from_fn(move |req, next| {
            headers::security_headers(tls, csp.clone(), req, next)
        }))
        .with_state(services)
}

/// `REQUEST_TIMEOUT` over the whole handler, reading the body included (a client stalling in
/// its body): the request is dropped and answered with the generic 408 page and its request id.
async fn request_timeout(request: Request, next: middleware::Next) -> Response {
    let request_id = request
        .extensions()
        .get::<context::RequestContext>()
        .map(|c| c.request_id.clone())
        .unwrap_or_default();
    match tokio::time::timeout(crate::limits::REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!("request timed out");
            error::render_error(
                StatusCode::REQUEST_TIMEOUT,
                "The request took too long and was stopped. Please try again.",
                &request_id,
            )
        }
    }
}

async fn healthz(State(services): State<Services>) -> Response {
    match services.db.ping().await {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "ok",
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "health check: database does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "database unavailable",
            )
                .into_response()
        }
    }
}

/// The plain-HTTP listener of `ALPHABANK_HTTP_REDIRECT_LISTEN`: every request → 308 to
/// `https://` + the request's host name + the HTTPS port + the same path and query.
pub fn redirect_router(https_port: u16) -> Router {
    Router::new().fallback(move |request: Request| redirect_to_https(https_port, request))
}

async fn redirect_to_https(https_port: u16, request: Request) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().host())
        .and_then(host_name);
    let Some(host) = host else {
        return (
            StatusCode::BAD_REQUEST,
            "Bad request: a Host header is required.",
        )
            .into_response();
    };
    let path = request
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let location = format!("https://{host}{port}{path}");
    match location.parse::<Uri>() {
        Ok(_) => Redirect::permanent(&location).into_response(),
        Err(_) => (StatusCode::BAD_REQUEST, "Bad request.").into_response(),
    }
}

/// The host name of a `Host` header without its port; `None` unless it is a plausible DNS name,
/// IPv4 address or bracketed IPv6 address (no header injection through the redirect).
fn host_name(host: &str) -> Option<String> {
    if let Some(rest) = host.strip_prefix('[') {
        let end = rest.find(']')?;
        let ip: std::net::Ipv6Addr = rest.get(..end)?.parse().ok()?;
        return Some(format!("[{ip}]"));
    }
    let name = host.split(':').next()?;
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    ok.then(|| name.to_ascii_lowercase())
}

/// The client's address as seen on the socket.
pub fn peer_ip(addr: Option<&axum::extract::ConnectInfo<SocketAddr>>) -> Option<std::net::IpAddr> {
    addr.map(|a| a.0.ip())
}

#[cfg(test)]
mod tests {
    use super::host_name;

    #[test]
    fn host_names() {
        assert_eq!(host_name("localhost:8080").as_deref(), Some("localhost"));
        assert_eq!(host_name("Bank.Example").as_deref(), Some("bank.example"));
        assert_eq!(host_name("[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(host_name("evil.com/\r\nSet-Cookie:x"), None);
        assert_eq!(host_name(""), None);
        assert_eq!(host_name("a@b"), None);
    }
}
