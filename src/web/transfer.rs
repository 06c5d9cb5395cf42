//! `/transfer`: send money to another customer by username (the flow is `money_form`'s).

use askama::Template;

use super::form::CsrfForm;
use super::money_form::{Fields, Frame, MoneyForm, MoneyPage, OwnUsernameField, Parsed};
use super::view::{Chrome, Errors};
use crate::captcha::CaptchaFields;
use crate::domain::{Amount, Message, Username};
use crate::payments::{Kind, Movement};

#[derive(Template)]
#[template(path = "transfer.html")]
pub struct TransferPage {
    chrome: Chrome,
    captcha: CaptchaFields,
    money: MoneyForm,
    amount: String,
    from_username: String,
    to_username: String,
    message: String,
}

impl MoneyPage for TransferPage {
    const KIND: Kind = Kind::Transfer;
    const OWN_USERNAME: OwnUsernameField = OwnUsernameField {
        field: "from_username",
        message: "Enter your own username to confirm that the money leaves your account.",
    };

    fn parse(form: &CsrfForm, errors: &mut Errors) -> Option<Parsed> {
        let mut field = |name: &'static str, error: String| errors.add(name, error);
        let amount = Amount::parse(form.get("amount")).map_err(|e| field("amount", e.to_string()));
        let from = Username::parse(form.get("from_username"))
            .map_err(|e| field("from_username", e.to_string()));
        let to = Username::parse(form.get("to_username"))
            .map_err(|e| field("to_username", e.to_string()));
        let message =
            Message::parse(form.get("message")).map_err(|e| field("message", e.to_string()));
        let (amount, own_username, to, message) =
            (amount.ok()?, from.ok()?, to.ok()?, message.ok()?);
        Some(Parsed {
            movement: Movement::Transfer {
                to,
                amount,
                message,
            },
            own_username,
        })
    }

    fn page(
        Frame {
            chrome,
            captcha,
            money,
        }: Frame,
        fields: &Fields<'_>,
    ) -> Self {
        TransferPage {
            chrome,
            captcha,
            money,
            amount: fields.typed("amount", 20),
            from_username: fields.own_username("from_username", 64),
            to_username: fields.typed("to_username", 64),
            message: fields.typed("message", 200),
        }
    }
}
