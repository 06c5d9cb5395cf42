//! Public pages: landing, static files, 404 and 405.

use askama::Template;
use axum::Extension;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::RequestId;
use super::error::render_error;

#[derive(Template)]
#[template(path = "landing.html")]
struct Landing;

pub async fn landing(Extension(request_id): Extension<RequestId>) -> Response {
    match Landing.render() {
        Ok(html) => Html(html).into_response(),
        Err(error) => {
            tracing::error!(%error, "template");
            render_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong on our side.",
                &request_id.0,
            )
        }
    }
}

/// Same-origin static assets, compiled into the binary.
pub async fn static_file(Path(file): Path<String>) -> Response {
    let (body, content_type): (&'static [u8], &str) = match file.as_str() {
        "app.css" => (
            include_bytes!("../../static/app.css"),
            "text/css; charset=utf-8",
        ),
        "logo.svg" => (include_bytes!("../../static/logo.svg"), "image/svg+xml"),
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

pub async fn not_found(request_id: Option<Extension<RequestId>>) -> Response {
    let id = request_id.map(|r| r.0.0).unwrap_or_default();
    render_error(
        StatusCode::NOT_FOUND,
        "There is no page at this address.",
        &id,
    )
}

pub async fn method_not_allowed(request_id: Option<Extension<RequestId>>) -> Response {
    let id = request_id.map(|r| r.0.0).unwrap_or_default();
    render_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "This page does not accept that kind of request.",
        &id,
    )
}
