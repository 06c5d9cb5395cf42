//! `GET /transactions?page=N`: the full history, newest first, `HISTORY_PAGE_ROWS` rows a page.

use askama::Template;
use axum::extract::State;
use axum::http::{StatusCode, Uri};

use super::error::{Error, Result};
use super::extract::CurrentUser;
use super::home::row_html;
use super::view::{Chrome, render};
use crate::ledger::LedgerError;
use crate::limits::HISTORY_PAGE_ROWS;
use crate::services::Services;

#[derive(Template)]
#[template(path = "transactions.html")]
struct HistoryPage {
    chrome: Chrome,
    /// Each row's HTML (see [`super::home::row_html`]).
    rows: Vec<std::sync::Arc<str>>,
    page: u32,
    last_page: u32,
    total: i64,
}

pub async fn show(State(services): State<Services>, user: CurrentUser, uri: Uri) -> Result {
    let page = page_number(&uri).ok_or_else(|| {
        Error::client(
            StatusCode::BAD_REQUEST,
            "The page number must be a whole number from 1.",
        )
    })?;
    let session = &user.session;
    let known = session.account.as_deref().cloned();
    let history = match services
        .ledger
        .history_with(session.user_id, known, page, HISTORY_PAGE_ROWS)
        .await
    {
        Ok(history) => history,
        Err(LedgerError::NoSuchPage { last_page }) => {
            return Err(Error::not_found(format!(
                "That page does not exist. Your history has {last_page} page(s)."
            )));
        }
        Err(error) => return Err(error.into()),
    };
    let page = HistoryPage {
        chrome: Chrome::for_session(&services, session, true).await,
        rows: history.rows.iter().map(|m| row_html(m)).collect(),
        page: history.page,
        last_page: history.last_page,
        total: history.total_rows,
    };
    Ok(render(StatusCode::OK, &page, &user.context.request_id))
}

/// `page` from the query: absent → 1; anything but a whole number ≥ 1 → `None`.
fn page_number(uri: &Uri) -> Option<u32> {
    let query = uri.query().unwrap_or_default();
    let mut found = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name == "page" {
            if found.is_some()
                || value.is_empty()
                || value.len() > 9
                || !value.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            found = Some(value.parse::<u32>().ok().filter(|n| *n >= 1)?);
        }
    }
    Some(found.unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::page_number;

    #[test]
    fn page_numbers() {
        let p = |q: &str| page_number(&format!("/transactions{q}").parse().unwrap_or_default());
        assert_eq!(p(""), Some(1));
        assert_eq!(p("?page=3"), Some(3));
        for bad in [
            "?page=0",
            "?page=-1",
            "?page=abc",
            "?page=",
            "?page=1&page=2",
            "?page=99999999999",
            "?page=1e3",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
    }
}
