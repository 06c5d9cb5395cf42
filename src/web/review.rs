//! The review page of a transfer and `POST /transfer/confirm` (CONTRACT §6): the reviewed
//! payment is shown with a form carrying its sealed confirmation and the code field; the
//! confirmation is checked first (a changed, foreign or expired one → 400 and the transfer form
//! again, nothing spent), then the movement service confirms it.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::extract::{CurrentUser, see_other};
use super::form::CsrfForm;
use super::money_form::{self, Fields, FormRefusal};
use super::transfer::TransferPage;
use super::view::{Chrome, Errors, render};
use crate::payments::{Kind, PaymentError, Refusal, Review, Reviewed, SecondFactor};
use crate::services::Services;

#[derive(Template)]
#[template(path = "review.html")]
pub struct ReviewPage {
    chrome: Chrome,
    amount: String,
    amount_minor: i64,
    to_username: String,
    message: String,
    confirmation: String,
    /// Request options for signing with a passkey (JSON), when the customer has one.
    passkey_options: Option<String>,
    nonce: String,
    errors: Errors,
}

/// The review page of `review`, with `errors` and `status`.
pub async fn page(
    services: &Services,
    user: &CurrentUser,
    review: &Review,
    errors: Errors,
    status: StatusCode,
) -> Response {
    let reviewed = &review.reviewed;
    let passkey_options = match services.payments.signing_options(reviewed).await {
        Ok(options) => options.map(|o| o.to_string()),
        Err(error) => {
            // The code field still confirms: a passkey problem must not block the payment.
            tracing::error!(%error, "could not build passkey signing options");
            None
        }
    };
    let page = ReviewPage {
        chrome: Chrome::for_session(services, &user.session, true).await,
        amount: reviewed.amount.to_string(),
        amount_minor: reviewed.amount.minor(),
        to_username: reviewed.to.as_str().to_string(),
        message: reviewed.message.as_str().to_string(),
        confirmation: review.token.clone(),
        passkey_options,
        nonce: reviewed.nonce.clone(),
        errors,
    };
    render(status, &page, &user.context.request_id)
}

/// `POST /transfer/confirm`.
pub async fn confirm(
    State(services): State<Services>,
    user: CurrentUser,
    form: CsrfForm,
) -> Response {
    let (services, user) = (&services, &user);
    let payments = &services.payments;
    let ctx = user.context.audit();
    let token = form.get("confirmation");
    let reviewed = match payments.open_confirmation(user.session.user_id, token) {
        Ok(reviewed) => reviewed,
        Err(error) => {
            let refusal = PaymentError::Refused(Refusal::Confirmation(error));
            let refused = money_form::refusal_of::<TransferPage>(refusal);
            let key = services.payments.issue_key(user.session.user_id);
            let fields = Fields::Empty {
                own_username: &user.session.username,
            };
            let refused = refused.audited_here(error.reason());
            return money_form::refused_form::<TransferPage>(services, user, &fields, key, refused)
                .await;
        }
    };
    let own_name = &user.session.username;
    let factor = match form.get("passkey_assertion").trim() {
        "" => SecondFactor::Code(form.get("otp")),
        assertion => SecondFactor::Passkey(assertion),
    };
    let outcome = payments.confirm(&ctx, own_name, &reviewed, factor).await;
    let error = match outcome {
        Ok(receipt) => return see_other(&money_form::receipt_path(receipt)),
        Err(error) => error,
    };
    let review = Review {
        reviewed,
        token: token.trim().to_string(),
    };
    match error {
        PaymentError::Refused(Refusal::TooManyFailures) => {
            super::extract::ended_by_failures(services, user).await
        }
        PaymentError::Refused(Refusal::WrongCode | Refusal::WrongPasskey) => {
            let refused = money_form::refusal_of::<TransferPage>(error);
            page(services, user, &review, refused.errors, refused.status).await
        }
        PaymentError::Refused(_) => {
            let refused = money_form::refusal_of::<TransferPage>(error);
            transfer_form_again(services, user, &review.reviewed, refused).await
        }
        other => {
            let refused = money_form::unavailable(&other);
            let reason = "internal_error";
            payments.audit_refusal(&ctx, Kind::Transfer, reason).await;
            page(services, user, &review, refused.errors, refused.status).await
        }
    }
}

/// The transfer form filled with what was reviewed (and its key, not used up), after the
/// confirmation found the payment no longer possible (the balance changed, the review expired).
async fn transfer_form_again(
    services: &Services,
    user: &CurrentUser,
    reviewed: &Reviewed,
    refused: FormRefusal,
) -> Response {
    let minor = reviewed.amount.minor();
    let typed = CsrfForm::from_fields(vec![
        (
            "amount".into(),
            format!("{},{:02}", minor / 100, minor % 100),
        ),
        ("from_username".into(), user.session.username.clone()),
        ("to_username".into(), reviewed.to.as_str().to_string()),
        ("message".into(), reviewed.message.as_str().to_string()),
    ]);
    let key = reviewed.key.as_str().to_string();
    money_form::refused_form::<TransferPage>(services, user, &Fields::Typed(&typed), key, refused)
        .await
}
