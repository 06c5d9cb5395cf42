//! One error type that renders itself. 4xx carry a safe message for the user; 5xx are opaque
//! with a request id, and the full cause goes to the log only.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

#[derive(Debug)]
pub enum AppError {
    /// The user's mistake: status and a message safe to show.
    Client { status: StatusCode, message: String },
    /// Ours: logged in full, shown as a generic page with the request id.
    Internal { request_id: String, cause: String },
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    pub chrome: super::view::Chrome,
    pub status: u16,
    pub title: &'a str,
    pub message: &'a str,
    pub request_id: &'a str,
}

pub fn render_error(status: StatusCode, message: &str, request_id: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let page = ErrorPage {
        chrome: super::view::Chrome::visitor(),
        status: status.as_u16(),
        title,
        message,
        request_id,
    };
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(_) => (status, format!("{title} (request {request_id})")).into_response(),
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match self {
            AppError::Client { status, message } => render_error(status, &message, ""),
            // A saturated pool or a held write gate (`DB_POOL_ACQUIRE_TIMEOUT`) is not a fault:
            // 503, try again in a moment.
            AppError::Internal { request_id, cause }
                if crate::store::StoreError::is_busy_text(&cause) =>
            {
                tracing::warn!(request_id = %request_id, cause = %cause, "database busy");
                render_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The bank is busy right now. Please try again in a moment.",
                    &request_id,
                )
            }
            AppError::Internal { request_id, cause } => {
                tracing::error!(request_id = %request_id, cause = %cause, "internal error");
                render_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong on our side. Nothing was changed. Please try again; if it keeps happening, contact us with the request id below.",
                    &request_id,
                )
            }
        }
    }
}
