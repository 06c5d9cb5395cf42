//! One error type that renders itself. 4xx carry a safe message for the user; 5xx are opaque
//! with a request id, and the full cause goes to the log only.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

/// What a handler answers when it does not answer a page: every service error converts into it
/// (`?` in a handler), and it renders itself. 4xx carry a message safe to show; a busy database
/// is 503 (chosen by the error's variant, never by its text); anything else is an opaque 500.
/// The page carries the request's id: the response holds the error's status and message as an
/// extension, and the request middleware, which knows the id, renders the page
/// ([`rendered_with_id`]). The full cause goes to the log (inside the request's span, which
/// names the request id).
#[derive(Debug)]
pub enum Error {
    /// The user's mistake: status and a message safe to show.
    Client { status: StatusCode, message: String },
    /// The database was only busy: try again in a moment.
    Busy { cause: String },
    /// Ours: logged in full, shown as a generic page with the request id.
    Internal { cause: String },
}

pub type Result<T = Response, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn client(status: StatusCode, message: impl Into<String>) -> Self {
        Error::Client {
            status,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Error::client(StatusCode::NOT_FOUND, message)
    }

    /// An operating error of a kind that has no conversion of its own.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Error::Internal {
            cause: cause.to_string(),
        }
    }
}

impl From<crate::store::StoreError> for Error {
    fn from(error: crate::store::StoreError) -> Self {
        if error.is_busy() {
            Error::Busy {
                cause: error.to_string(),
            }
        } else {
            Error::internal(error)
        }
    }
}

impl From<crate::ledger::LedgerError> for Error {
    fn from(error: crate::ledger::LedgerError) -> Self {
        match error {
            crate::ledger::LedgerError::Store(error) => error.into(),
            other => Error::internal(other),
        }
    }
}

impl From<crate::payments::PaymentError> for Error {
    fn from(error: crate::payments::PaymentError) -> Self {
        if error.is_busy() {
            Error::Busy {
                cause: error.to_string(),
            }
        } else {
            Error::internal(error)
        }
    }
}

impl From<crate::auth::AuthError> for Error {
    fn from(error: crate::auth::AuthError) -> Self {
        match error {
            crate::auth::AuthError::Store(error) => error.into(),
            crate::auth::AuthError::Busy => Error::Busy {
                cause: "the password hashing queue is full".into(),
            },
            other => Error::internal(other),
        }
    }
}

impl From<crate::audit::AuditError> for Error {
    fn from(error: crate::audit::AuditError) -> Self {
        Error::internal(error)
    }
}

impl From<askama::Error> for Error {
    fn from(error: askama::Error) -> Self {
        Error::internal(format_args!("template rendering failed: {error}"))
    }
}

/// The status and message of an error page still to render with the request's id.
#[derive(Debug, Clone)]
pub struct PendingErrorPage {
    status: StatusCode,
    message: String,
}

const BUSY_MESSAGE: &str = "The bank is busy right now. Please try again in a moment.";
const INTERNAL_MESSAGE: &str = "Something went wrong on our side. Nothing was changed. Please try again; if it keeps happening, contact us with the request id below.";

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Error::Client { status, message } => (status, message),
            Error::Busy { cause } => {
                tracing::warn!(%cause, "database busy");
                (StatusCode::SERVICE_UNAVAILABLE, BUSY_MESSAGE.to_string())
            }
            Error::Internal { cause } => {
                tracing::error!(%cause, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    INTERNAL_MESSAGE.to_string(),
                )
            }
        };
        let mut response = status.into_response();
        response
            .extensions_mut()
            .insert(PendingErrorPage { status, message });
        response
    }
}

/// The error page of a handler's [`Error`], rendered with the request's id (the request
/// middleware calls this on every response); other responses pass unchanged.
pub fn rendered_with_id(mut response: Response, request_id: &str) -> Response {
    match response.extensions_mut().remove::<PendingErrorPage>() {
        Some(page) => render_error(page.status, &page.message, request_id),
        None => response,
    }
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
