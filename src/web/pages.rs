//! Static files, 404 and 405.

use axum::Extension;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::context::RequestContext;
use super::error::render_error;

/// Same-origin static assets, compiled into the binary.
pub async fn static_file(Path(file): Path<String>) -> Response {
    let (body, content_type): (&'static [u8], &str) = match file.as_str() {
        "app.css" => (
            include_bytes!("../../static/app.css"),
            "text/css; charset=utf-8",
        ),
        "logo.svg" => (include_bytes!("../../static/logo.svg"), "image/svg+xml"),
        "pow.js" => (
            include_bytes!("../../static/pow.js"),
            "text/javascript; charset=utf-8",
        ),
        "passkey.js" => (
            include_bytes!("../../static/passkey.js"),
            "text/javascript; charset=utf-8",
        ),
        "pow-worker.js" => (
            include_bytes!("../../static/pow-worker.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return (StatusCode::NOT_FOUND, "Not found").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

fn request_id(context: Option<Extension<RequestContext>>) -> String {
    context.map(|c| c.0.request_id).unwrap_or_default()
}

pub async fn not_found(context: Option<Extension<RequestContext>>) -> Response {
    render_error(
        StatusCode::NOT_FOUND,
        "There is no page at this address.",
        &request_id(context),
    )
}

pub async fn method_not_allowed(context: Option<Extension<RequestContext>>) -> Response {
    render_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "This page does not accept that kind of request.",
        &request_id(context),
    )
}
