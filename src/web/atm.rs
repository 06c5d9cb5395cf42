//! `/atm`: a simulated ATM deposit of cash into the customer's own account (the flow is
//! `money_form`'s).

use askama::Template;

use super::form::CsrfForm;
use super::money_form::{Fields, Frame, MoneyForm, MoneyPage};
use super::view::{Chrome, Errors};
use crate::captcha::CaptchaFields;
use crate::domain::{CardName, DepositAmount};
use crate::payments::{Kind, Movement};

#[derive(Template)]
#[template(path = "atm.html")]
pub struct AtmPage {
    chrome: Chrome,
    captcha: CaptchaFields,
    money: MoneyForm,
    amount: String,
    username: String,
    card_name: String,
}

impl MoneyPage for AtmPage {
    const KIND: Kind = Kind::Deposit;
    const OWN_USERNAME_FIELD: &'static str = "username";
    const NOT_OWN_USERNAME: &'static str =
        "Enter your own username: deposits go to your own account.";

    fn movement(form: &CsrfForm, errors: &mut Errors) -> Option<Movement> {
        let amount = errors.check("amount", DepositAmount::parse(form.get("amount")));
        let card_name = errors.check("card_name", CardName::parse(form.get("card_name")));
        Some(Movement::Deposit {
            amount: amount?,
            card_name: card_name?,
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
        AtmPage {
            chrome,
            captcha,
            money,
            amount: fields.typed("amount", 20),
            username: fields.own_username("username", 64),
            card_name: fields.typed("card_name", 100),
        }
    }
}
