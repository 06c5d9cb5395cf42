//! Rendering helpers shared by the pages: the page chrome (navigation, flash message), field
//! errors, and turning a template into a response.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use super::error::render_error;
use crate::auth::session::Session;
use crate::services::Services;

/// What every page's layout needs: who is logged in (for the navigation and the logout form).
#[derive(Debug, Clone, Default)]
pub struct Chrome {
    pub username: Option<String>,
    pub csrf_token: String,
    pub flash: Option<String>,
    pub customer: bool,
}

impl Chrome {
    pub fn visitor() -> Self {
        Chrome::default()
    }

    /// Chrome for a session page; takes the flash message (it survives exactly one redirect).
    pub async fn for_session(services: &Services, session: &Session, customer: bool) -> Self {
        let username = Some(session.username.clone()).filter(|name| !name.is_empty());
        let flash = session.flash.clone();
        if flash.is_some()
            && let Err(error) = crate::auth::session::set_flash(services, session, None).await
        {
            tracing::error!(%error, "could not clear flash message");
        }
        Chrome {
            username,
            csrf_token: session.csrf_token.clone(),
            flash,
            customer,
        }
    }
}

/// Errors of a form, by field name.
#[derive(Debug, Clone, Default)]
pub struct Errors(Vec<(&'static str, String)>);

impl Errors {
    pub fn add(&mut self, field: &'static str, message: impl Into<String>) {
        if self.get(field).is_none() {
            self.0.push((field, message.into()));
        }
    }
    /// The parsed value of `field`, or `None` with its error's message added.
    pub fn check<T, E: std::fmt::Display>(
        &mut self,
        field: &'static str,
        parsed: Result<T, E>,
    ) -> Option<T> {
        parsed.map_err(|e| self.add(field, e.to_string())).ok()
    }
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, m)| m.as_str())
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn one(field: &'static str, message: impl Into<String>) -> Self {
        let mut e = Errors::default();
        e.add(field, message);
        e
    }
}

pub fn render<T: Template>(status: StatusCode, template: &T, request_id: &str) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(%error, request_id, "template rendering failed");
            render_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong on our side. Nothing was changed.",
                request_id,
            )
        }
    }
}

/// Sets the flash message shown on the next page of this session.
pub async fn flash(services: &Services, session: &Session, message: &str) {
    if let Err(error) = crate::auth::session::set_flash(services, session, Some(message)).await {
        tracing::error!(%error, "could not store flash message");
    }
}
