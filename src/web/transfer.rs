//! `/transfer`: send money to another customer by username (the flow is `money_form`'s).

use askama::Template;

use super::form::CsrfForm;
use super::money_form::{Fields, Frame, MoneyForm, MoneyPage};
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
    const OWN_USERNAME_FIELD: &'static str = "from_username";
    const NOT_OWN_USERNAME: &'static str =
        "Enter your own username to confirm that the money leaves your account.";

    fn movement(form: &CsrfForm, errors: &mut Errors) -> Option<Movement> {
        let to = errors.check("to_username", Username::parse(form.get("to_username")));
        let amount = errors.check("amount", Amount::parse(form.get("amount")));
        let message = errors.check("message", Message::parse(form.get("message")));
        Some(Movement::Transfer {
            to: to?,
            amount: amount?,
            message: message?,
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
