//! `GET /receipts/ID`: one movement of the customer's own; anything else is 404.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::error::{Error, Result};
use super::extract::CurrentUser;
use super::home::Row;
use super::view::{Chrome, render};
use crate::domain::EntryKind;
use crate::services::Services;

#[derive(Template)]
#[template(path = "receipt.html")]
struct ReceiptPage {
    chrome: Chrome,
    row: Row,
    deposit: bool,
    balance_minor: i64,
    balance: String,
}

pub async fn show(
    State(services): State<Services>,
    user: CurrentUser,
    Path(entry): Path<String>,
) -> Result {
    let not_found = || Error::not_found("There is no such receipt.");
    let entry_id = entry.parse::<i64>().map_err(|_| not_found())?;
    let customer = user.session.user_id;
    let movement = services
        .ledger
        .movement(customer, entry_id)
        .await?
        .ok_or_else(not_found)?;
    let balance = services.ledger.balance(customer).await?;
    let page = ReceiptPage {
        chrome: Chrome::for_session(&services, &user.session, true).await,
        row: Row::from(&movement),
        deposit: movement.kind == EntryKind::Deposit,
        balance_minor: balance.minor(),
        balance: balance.to_string(),
    };
    Ok(render(StatusCode::OK, &page, &user.context.request_id))
}
