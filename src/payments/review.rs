//! Transfers are reviewed, then confirmed (CONTRACT §6). The review checks everything but the
//! second factor (own username, receiver, balance) and spends nothing; it answers a
//! [`Reviewed`] transfer and its sealed token. The confirmation opens that token, answers the
//! receipt if its key already moved money, refuses it when expired, and otherwise moves exactly
//! what was reviewed through [`Payments::execute`] (code, business rules again, one transaction).

use super::confirmation::{ConfirmationError, Reviewed};
use super::{
    Command, Factor, Kind, Movement, PaymentError, Payments, Prepared, Ready, Receipt, Refusal,
};
use crate::audit::AuditContext;
use crate::auth::passkey::VerifiedSignature;
use crate::captcha::PendingSpend;
use crate::domain::{Amount, Message, UserId, Username};
use crate::store::failures::{self as failure_store, Side};

/// A transfer form's fields once parsed.
pub struct TransferOrder {
    pub to: Username,
    pub amount: Amount,
    pub message: Message,
    /// The username the customer typed as their own.
    pub own_username: Username,
    /// The form's captcha, checked; spent when the transfer is confirmed.
    pub captcha: Option<PendingSpend>,
}

/// What confirms a reviewed transfer: the `otp` field, or the `passkey_assertion` field
/// (`AuthenticationResponseJSON`).
#[derive(Debug, Clone, Copy)]
pub enum SecondFactor<'a> {
    Code(&'a str),
    Passkey(&'a str),
}

/// A transfer that passed review: what the review page shows, and the token its form carries.
pub struct Review {
    pub reviewed: Reviewed,
    pub token: String,
}

impl Payments {
    /// Reviews a transfer: the business rules, with no code asked for or spent. A refusal is
    /// audited.
    pub async fn review(
        &self,
        ctx: &AuditContext,
        customer: UserId,
        own_username: &str,
        ready: Ready,
        order: TransferOrder,
    ) -> Result<Review, PaymentError> {
        if let Some(refusal) = self
            .review_refusal(customer, own_username, &ready, &order)
            .await?
        {
            self.audit_refusal(ctx, Kind::Transfer, refusal.reason())
                .await;
            return Err(PaymentError::Refused(refusal));
        }
        let reviewed = Reviewed::new(
            customer,
            order.amount,
            &order.to,
            order.message,
            ready.key,
            order.captcha,
        );
        let token = reviewed.seal(&self.keyring);
        Ok(Review { reviewed, token })
    }

    /// The passkey signature of `reviewed`, verified; a wrong one is audited and counted
    /// toward the customer's failures (the 5th ends the session).
    async fn verify_signature(
        &self,
        ctx: &AuditContext,
        reviewed: &Reviewed,
        assertion: &str,
    ) -> Result<VerifiedSignature, PaymentError> {
        let customer = reviewed.customer;
        let digest = reviewed.digest();
        let verified = self
            .passkeys
            .verify_payment(ctx, customer, &digest, assertion)
            .await?;
        if let Ok(signature) = verified {
            return Ok(signature);
        }
        self.audit_refusal(ctx, Kind::Transfer, Refusal::WrongPasskey.reason())
            .await;
        let full = match failure_store::charge_in_session(&self.db, customer).await? {
            None => true,
            Some(count) => {
                let (db, outbox, side) = (&self.db, &self.outbox, &Side::Shared);
                crate::auth::failures::lock_if_full(db, outbox, ctx, customer, side, count).await?
            }
        };
        Err(PaymentError::Refused(if full {
            Refusal::TooManyFailures
        } else {
            Refusal::WrongPasskey
        }))
    }

    async fn review_refusal(
        &self,
        customer: UserId,
        own_username: &str,
        ready: &Ready,
        order: &TransferOrder,
    ) -> Result<Option<Refusal>, PaymentError> {
        if order.own_username.lookup_key() != own_username.to_ascii_lowercase() {
            return Ok(Some(Refusal::NotOwnUsername));
        }
        match ready.reads.receiver {
            None => return Ok(Some(Refusal::UnknownReceiver)),
            Some(receiver) if receiver == customer => return Ok(Some(Refusal::SelfTransfer)),
            Some(_) => {}
        }
        let balance = self.ledger.balance(customer).await?;
        Ok((balance.minor() < order.amount.minor()).then_some(Refusal::InsufficientFunds))
    }

    /// The reviewed transfer a confirm form's token names (MAC, customer; not its age).
    pub fn open_confirmation(
        &self,
        customer: UserId,
        token: &str,
    ) -> Result<Reviewed, ConfirmationError> {
        Reviewed::open(&self.keyring, customer, token)
    }

    /// Confirms a reviewed transfer with a one-time code or a passkey signature over its
    /// digest: its receipt if its key already moved money, a refusal if it expired (nothing
    /// spent), else the movement of exactly what was reviewed.
    pub async fn confirm(
        &self,
        ctx: &AuditContext,
        own_username: &str,
        reviewed: &Reviewed,
        factor: SecondFactor<'_>,
    ) -> Result<Receipt, PaymentError> {
        let customer = reviewed.customer;
        let prepared = self
            .prepare(customer, reviewed.key.clone(), Some(&reviewed.to))
            .await?;
        let ready = match prepared {
            Prepared::Replayed(receipt) => return Ok(receipt),
            Prepared::Ready(ready) => ready,
        };
        if let Err(error) = reviewed.check_age(crate::now_millis()) {
            self.audit_refusal(ctx, Kind::Transfer, error.reason())
                .await;
            return Err(PaymentError::Refused(Refusal::Confirmation(error)));
        }
        let factor = match factor {
            SecondFactor::Code(otp) => Factor::Code(otp.to_string()),
            SecondFactor::Passkey(assertion) => {
                Factor::Signed(self.verify_signature(ctx, reviewed, assertion).await?)
            }
        };
        let command = Command {
            movement: Movement::Transfer {
                to: reviewed.to.clone(),
                amount: reviewed.amount,
                message: reviewed.message.clone(),
            },
            own_username: None,
            factor,
            captcha: reviewed.captcha.clone(),
        };
        self.execute(ctx, customer, own_username, ready, command)
            .await
    }
}
