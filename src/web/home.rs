//! `GET /`: the landing page for visitors, the home page (balance and recent movements) for
//! customers, and a redirect to enrollment for a session whose 2FA is not yet confirmed.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

use super::context::{SessionState, cookie};
use super::error::Result;
use super::extract::{Context, NOTICE_COOKIE, see_other, with_cookie};
use super::view::{Chrome, render};
use crate::auth::session::{EndReason, Stage, clear_cookie_header};
use crate::domain::EntryKind;
use crate::ledger::MovementView;
use crate::limits::HOME_RECENT_ROWS;
use crate::services::Services;

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
    pub description: &'static str,
    pub counterparty: Option<String>,
    pub message: Option<String>,
}

impl From<&MovementView> for Row {
    fn from(m: &MovementView) -> Self {
        let minor = m.amount.minor();
        let deposit = m.kind == EntryKind::Deposit;
        let description = match (deposit, minor < 0) {
            (true, _) => "ATM deposit",
            (false, true) => "Sent to",
            (false, false) => "Received from",
        };
        Row {
            minor,
            amount: m.amount.to_string(),
            date: display_minute(m.created_at_millis),
            description,
            counterparty: if deposit {
                None
            } else {
                m.counterparty.clone()
            },
            message: m
                .message
                .clone()
                .or_else(|| m.card_name.as_ref().map(|c| format!("Card: {c}"))),
        }
    }
}

/// One history row's `<tr>`, escaped like every template.
#[derive(Template)]
#[template(path = "row.html")]
struct RowHtml {
    row: Row,
}

/// A history row's HTML: rendered the first time the row is shown and kept with the cached row
/// (a posting never changes), so a page of rows already seen costs ten shared strings.
pub fn row_html(m: &MovementView) -> Arc<str> {
    m.display
        .get_or_init(|| {
            // Rendering into a `String` fails only if a field's `Display` does; none of a row's does.
            let html = RowHtml { row: Row::from(m) }.render().unwrap_or_default();
            Arc::from(html)
        })
        .clone()
}

/// `YYYY-MM-DD HH:MM` (UTC) of a time in Unix milliseconds, written digit by digit into one
/// string (a history page shows one for each row; `format!` machinery cost more than the rest of
/// the row); empty if out of range.
fn display_minute(millis: i64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(millis.div_euclid(1_000)) else {
        return String::new();
    };
    let (year, month, day) = t.to_calendar_date();
    let (hour, minute, _) = t.to_hms();
    let Ok(year) = u32::try_from(year) else {
        return String::new();
    };
    if year > 9_999 {
        return String::new();
    }
    let mut out = String::with_capacity(16);
    push_digits(&mut out, year, 4);
    out.push('-');
    push_digits(&mut out, u32::from(u8::from(month)), 2);
    out.push('-');
    push_digits(&mut out, u32::from(day), 2);
    out.push(' ');
    push_digits(&mut out, u32::from(hour), 2);
    out.push(':');
    push_digits(&mut out, u32::from(minute), 2);
    out
}

/// Appends the last `width` decimal digits of `n`, zero-padded.
fn push_digits(out: &mut String, n: u32, width: u32) {
    for place in (0..width).rev() {
        let digit = (n / 10u32.pow(place)) % 10;
        out.push(char::from_digit(digit, 10).unwrap_or('0'));
    }
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    chrome: Chrome,
    balance_minor: i64,
    balance: String,
    /// Each row's HTML (see [`row_html`]).
    rows: Vec<Arc<str>>,
    /// After a log-in with a recovery code: how many are left (CONTRACT §9).
    recovery_left: Option<i64>,
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
        "failures" => Some(super::extract::ENDED_BY_FAILURES.into()),
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
) -> Result {
    let idle = services.config.session_idle_secs;
    let response = match &context.session {
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
            let page = history.await?;
            let (balance, rows) = (
                page.balance,
                page.rows.iter().map(|m| row_html(m)).collect(),
            );
            let chrome = Chrome::for_session(&services, session, true).await;
            let recovery_left = if session.via_recovery_code {
                Some(crate::auth::session::recovery_codes_left(&services, user_id).await?)
            } else {
                None
            };
            let page = HomePage {
                recovery_left,
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
    };
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::{MovementView, display_minute, row_html};
    use std::sync::Arc;

    #[test]
    fn a_rows_html_is_rendered_once_escaped_and_shared() {
        let m = MovementView {
            entry_id: 7,
            seq: 3,
            created_at_millis: 1_795_920_133_999,
            kind: crate::domain::EntryKind::Transfer,
            amount: crate::domain::Money::from_minor(-150),
            counterparty: Some("bob".into()),
            message: Some("<script>alert(1)</script>".into()),
            card_name: None,
            display: std::sync::OnceLock::new(),
        };
        let first = row_html(&m);
        assert!(first.contains(r#"data-minor="-150""#), "{first}");
        assert!(first.contains("Sent to <bdi>bob</bdi>"), "{first}");
        assert!(first.contains("2026-11-29 02:42"), "{first}");
        assert!(
            first.contains("&#60;script&#62;") && !first.contains("<script>"),
            "{first}"
        );
        // The second page that shows the row reuses the first rendering.
        assert!(Arc::ptr_eq(&first, &row_html(&m)));
    }

    #[test]
    fn a_row_shows_its_minute_in_utc() {
        // 2026-11-29 02:42:13.999 UTC: seconds and milliseconds are not shown, nor rounded.
        assert_eq!(display_minute(1_795_920_133_999), "2026-11-29 02:42");
        assert_eq!(display_minute(0), "1970-01-01 00:00");
        // Before 1970 the minute is still the one the instant falls in.
        assert_eq!(display_minute(-1), "1969-12-31 23:59");
        // The same minute as the audit log's RFC 3339 time, cut to the minute.
        for millis in [1_795_920_133_999, 1_700_000_000_000, 951_782_400_000] {
            let rfc3339 = crate::audit::format_time(millis);
            let minute = rfc3339.get(..16).unwrap_or_default().replace('T', " ");
            assert_eq!(display_minute(millis), minute);
        }
        assert_eq!(display_minute(i64::MAX), "");
    }
}
