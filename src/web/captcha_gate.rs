//! The captcha step of a form: the fields to render, and the check of a submission (audited
//! when refused). The captcha itself lives in `crate::captcha`.

use super::context::RequestContext;
use super::form::CsrfForm;
use crate::audit::AuditEvent;
use crate::captcha::{
    CaptchaError, CaptchaFields, CaptchaSubmission, PendingSpend, provider_response_field,
};
use crate::services::Services;

pub fn fields(services: &Services) -> CaptchaFields {
    services.captcha.form_fields()
}

/// Checks the captcha and spends it in its own transaction; `Err` when it is refused.
pub async fn verify(
    services: &Services,
    form: &CsrfForm,
    context: &RequestContext,
    form_name: &'static str,
) -> Result<(), CaptchaFailure> {
    let submission = submission(services, form);
    match services
        .captcha
        .verify(&submission, context.client_ip)
        .await
    {
        Ok(()) => Ok(()),
        Err(error) => Err(refused(services, context, form_name, error).await),
    }
}

/// The checks of [`verify`] that need no database write (a provider's verify call included).
/// `Ok(Some(pending))` must still be spent with `Captcha::spend_in` in the form's write
/// transaction.
pub async fn check(
    services: &Services,
    form: &CsrfForm,
    context: &RequestContext,
    form_name: &'static str,
) -> Result<Option<PendingSpend>, CaptchaFailure> {
    let submission = submission(services, form);
    match services.captcha.check(&submission, context.client_ip).await {
        Ok(pending) => Ok(pending),
        Err(error) => Err(refused(services, context, form_name, error).await),
    }
}

/// A refused captcha: the message for the user, and whether the cause was ours (the database).
pub struct CaptchaFailure {
    pub message: String,
    pub operating_error: bool,
}

/// Audits a refused captcha (a user's failure; an operating error is logged instead).
pub async fn refused(
    services: &Services,
    context: &RequestContext,
    form_name: &'static str,
    error: CaptchaError,
) -> CaptchaFailure {
    let operating_error = error.is_operating_error();
    if operating_error {
        tracing::error!(%error, "captcha store failed");
    } else {
        services
            .audit
            .record_best_effort(
                &context.audit(),
                AuditEvent::CaptchaFailed { form: form_name },
            )
            .await;
    }
    CaptchaFailure {
        message: error.user_message(),
        operating_error,
    }
}

fn submission(services: &Services, form: &CsrfForm) -> CaptchaSubmission {
    CaptchaSubmission {
        pow_challenge: form.opt("pow_challenge").map(str::to_string),
        pow_nonce: form.opt("pow_nonce").map(str::to_string),
        provider_response: provider_response_field(services.captcha.mode())
            .and_then(|f| form.opt(f))
            .map(str::to_string),
    }
}
