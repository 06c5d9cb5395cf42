//! Security headers on every response: pages, redirects, errors and static files.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; worker-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The policy, extended with a third-party captcha provider's origins only when one is configured.
pub fn content_security_policy(extra: &crate::captcha::CspSources) -> HeaderValue {
    let join = |v: &[&str]| v.iter().map(|s| format!(" {s}")).collect::<String>();
    let policy = if extra.is_empty() {
        CONTENT_SECURITY_POLICY.to_string()
    } else {
        format!(
            "default-src 'none'; script-src 'self'{}; style-src 'self'{}; img-src 'self' data:; connect-src 'self'{}; frame-src{}; worker-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            join(&extra.script),
            join(&extra.style),
            join(&extra.connect),
            if extra.frame.is_empty() {
                " 'none'".to_string()
            } else {
                join(&extra.frame)
            },
        )
    };
    HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static(CONTENT_SECURITY_POLICY))
}

pub async fn security_headers(
    tls: bool,
    csp: HeaderValue,
    request: Request,
    next: Next,
) -> Response {
    let is_static = request.uri().path().starts_with("/static/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    let mut set = |name: HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    if tls {
        set(
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=63072000; includeSubDomains",
        );
    }
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::REFERRER_POLICY, "no-referrer");
    set(
        HeaderName::from_static("permissions-policy"),
        "camera=(), microphone=(), geolocation=(), payment=(), usb=(), interest-cohort=()",
    );
    set(
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    set(
        HeaderName::from_static("cross-origin-resource-policy"),
        "same-origin",
    );
    if !is_static {
        // Pages may show account data: never stored by a browser or proxy.
        set(header::CACHE_CONTROL, "no-store");
    }
    headers.remove(header::SERVER);
    response
}
