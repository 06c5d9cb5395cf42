//! The captcha step of a form: the fields to render, and the check of a submission (audited
//! when refused). The captcha itself lives in `crate::captcha`.

use super::context::RequestContext;
use super::form::CsrfForm;
use crate::audit::AuditEvent;
use crate::captcha::{CaptchaFields, CaptchaSubmission, provider_response_field};
use crate::startup::Services;

pub fn fields(services: &Services) -> CaptchaFields {
    services.captcha.form_fields()
}

/// `Err(message for the user)` when the captcha is refused.
pub async fn verify(
    services: &Services,
    form: &CsrfForm,
    context: &RequestContext,
    form_name: &'static str,
) -> Result<(), String> {
    let submission = CaptchaSubmission {
        pow_challenge: form.opt("pow_challenge").map(str::to_string),
        pow_nonce: form.opt("pow_nonce").map(str::to_string),
        provider_response: provider_response_field(services.captcha.mode())
            .and_then(|f| form.opt(f))
            .map(str::to_string),
    };
    match services
        .captcha
        .verify(&submission, context.client_ip)
        .await
    {
        Ok(()) => Ok(()),
        Err(error) => {
            if error.is_operating_error() {
                tracing::error!(%error, "captcha store failed");
            }
            services
                .audit
                .record_best_effort(
                    &context.audit(),
                    AuditEvent::CaptchaFailed { form: form_name },
                )
                .await;
            Err(error.user_message())
        }
    }
}
