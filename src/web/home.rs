//! `GET /`: the landing page for visitors, the home page (balance and recent movements) for
//! customers, and a redirect to enrollment for a session whose 2FA is not yet confirmed.

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::context::{SessionState, cookie};
use super::extract::{Context, NOTICE_COOKIE, see_other, with_cookie};
use super::view::{Chrome, internal, render};
use crate::auth::session::{EndReason, Stage, clear_cookie_header};
use crate::ledger::MovementView;
use crate::limits::HOME_RECENT_ROWS;
use crate::startup::Services;

#[derive(Template)]
#[template(path = "landing.html")]
struct LandingPage {
    chrome: Chrome,
    notice: Option<String>,
}

/// A movement ready for display.
pub struct Row {
    pub minor: i64,
    pub amount: String,
    pub date: String,
    pub description: String,
    pub counterparty: Option<String>,
    pub message: Option<String>,
}

impl From<MovementView> for Row {
    fn from(m: MovementView) -> Self {
        let (description, counterparty) = match (m.kind.as_str(), m.amount.minor() < 0) {
            ("deposit", _) => ("ATM deposit".to_string(), None),
            (_, true) => ("Sent to".to_string(), m.counterparty.clone()),
            (_, false) => ("Received from".to_string(), m.counterparty.clone()),
        };
        Row {
            minor: m.amount.minor(),
            amount: m.amount.to_string(),
            date: crate::audit::format_time(m.created_at)
                .get(..16)
                .unwrap_or_default()
                .replace('T', " "),
            description,
            counterparty,
            message: m.message.or(m.card_name.map(|c| format!("Card: {c}"))),
        }
    }
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    chrome: Chrome,
    balance_minor: i64,
    balance: String,
    rows: Vec<Row>,
}

fn notice_text(kind: &str, idle_secs: u64) -> Option<String> {
    match kind {
        "idle" => Some(format!(
            "Your session ended after {} of inactivity. Log in again to continue.",
            if idle_secs.is_multiple_of(60) && idle_secs >= 60 {
                format!("{} minutes", idle_secs / 60)
            } else {
                format!("{idle_secs} seconds")
            }
        )),
        "absolute" => {
            Some("Your session reached its maximum length. Log in again to continue.".into())
        }
        _ => None,
    }
}

pub async fn index(
    State(services): State<Services>,
    Context(context): Context,
    headers: HeaderMap,
) -> Response {
    let idle = services.config.session_idle_secs;
    match &context.session {
        SessionState::Live(session) if session.stage == Stage::PendingTwoFactor => {
            see_other("/2fa/setup")
        }
        SessionState::Live(session) => {
            let user_id = session.user_id;
            // The account row read with the session serves the balance and the recent rows.
            let history = services.ledger.history_with(
                user_id,
                session.account.as_deref().cloned(),
                1,
                HOME_RECENT_ROWS,
            );
            let (balance, rows) = match history.await {
                Ok(page) => (page.balance, page.rows.into_iter().map(Row::from).collect()),
                Err(error) => return internal(&context.request_id, error),
            };
            let chrome = Chrome::for_session(&services, session, true).await;
            let page = HomePage {
                chrome,
                balance_minor: balance.minor(),
                balance: balance.to_string(),
                rows,
            };
            render(StatusCode::OK, &page, &context.request_id)
        }
        SessionState::Ended(reason) => {
            let kind = if *reason == EndReason::Idle {
                "idle"
            } else {
                "absolute"
            };
            let page = LandingPage {
                chrome: Chrome::visitor(),
                notice: notice_text(kind, idle),
            };
            with_cookie(
                render(StatusCode::OK, &page, &context.request_id),
                &clear_cookie_header(),
            )
        }
        SessionState::Anonymous => {
            let notice = cookie(&headers, NOTICE_COOKIE).and_then(|kind| notice_text(kind, idle));
            let page = LandingPage {
                chrome: Chrome::visitor(),
                notice: notice.clone(),
            };
            let response = render(StatusCode::OK, &page, &context.request_id);
            if notice.is_some() {
                with_cookie(
                    response,
                    &format!(
                        "{NOTICE_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"
                    ),
                )
            } else {
                response
            }
        }
    }
}
