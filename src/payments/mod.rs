//! Moving money: the one use case every money page goes through (a transfer, an ATM deposit).
//!
//! A money form is checked in the contract's order: session and CSRF (the web's extractors),
//! then the idempotency key ([`Payments::accept_key`]; a key that already moved money answers its
//! receipt, [`Payments::prepare`]), field syntax and the captcha's checks (the web's), then the
//! one-time code and the business rules, which are decided here inside the movement's one write
//! transaction: the captcha's replay mark, the code step, the journal entry, its postings,
//! balances and idempotency outcome and the audit event are one commit
//! ([`crate::store::Db::run_write`]: on SQLite a group-commit batch, on PostgreSQL a transaction
//! of its own). A refusal from the code check on commits the spent captcha and code step with
//! its audit event, so neither can be tried again; an operating error rolls everything back.

mod confirmation;
mod review;

pub use confirmation::{CONFIRMATION_TTL_MILLIS, ConfirmationError, Reviewed};
pub use review::{Review, SecondFactor, TransferOrder};

use crate::audit::{AuditContext, AuditEvent, AuditLog};
use crate::auth::passkey::{Passkeys, VerifiedSignature};
use crate::auth::totp_step_with;
use crate::captcha::{CaptchaError, PendingSpend};
use crate::crypto::Keyring;
use crate::domain::UserId;
use crate::domain::{Amount, CardName, DepositAmount, IdempotencyKey, Message, Username};
use crate::ledger::{Ledger, LedgerError, Move};
use crate::store::failures::{self as failure_store, Count, Side};
use crate::store::users::CodeCheck;
use crate::store::{Db, StoreError, Tx, TxWork, Verdict};

/// Which kind of movement a form makes (named in its audit events): the kind of the journal
/// entry it writes.
pub use crate::domain::EntryKind as Kind;

/// What a money form moves, once its fields parsed.
#[derive(Debug, Clone)]
pub enum Movement {
    Transfer {
        to: Username,
        amount: Amount,
        message: Message,
    },
    Deposit {
        amount: DepositAmount,
        card_name: CardName,
    },
}

impl Movement {
    pub fn kind(&self) -> Kind {
        match self {
            Movement::Transfer { .. } => Kind::Transfer,
            Movement::Deposit { .. } => Kind::Deposit,
        }
    }
}

/// A money form's command, once its key was accepted, its fields parsed and its captcha
/// checked: who moves what, the username the customer typed as their own (`None`: checked when
/// the transfer was reviewed), the second factor and the captcha still to spend.
pub struct Command {
    pub movement: Movement,
    pub own_username: Option<Username>,
    pub factor: Factor,
    pub captcha: Option<PendingSpend>,
}

/// The second factor of a movement: a one-time code (checked and spent in the movement's
/// transaction), or a passkey signature over the payment, verified before it.
#[derive(Debug, Clone)]
pub enum Factor {
    Code(String),
    Signed(VerifiedSignature),
}

/// The movement a customer can see: its journal entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    pub entry_id: i64,
}

/// A refusal the customer caused; nothing moved. Each is audited where it is decided.
#[derive(Debug)]
pub enum Refusal {
    /// The code is wrong, or its step was already used.
    WrongCode,
    /// The passkey signature does not verify for this payment, or its passkey is not the
    /// customer's.
    WrongPasskey,
    /// A wrong code that filled the account's failure count: the session must end, and the
    /// count is locked (CONTRACT §3).
    TooManyFailures,
    /// The username given as the customer's own is someone else's.
    NotOwnUsername,
    InsufficientFunds,
    SelfTransfer,
    UnknownReceiver,
    /// The captcha's replay mark was already spent (here or on another instance).
    CaptchaReused(CaptchaError),
    /// A transfer's confirmation was changed, foreign or expired: review it again.
    Confirmation(ConfirmationError),
}

impl Refusal {
    /// The audit event's reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::WrongCode | Refusal::TooManyFailures => "wrong_code",
            Refusal::WrongPasskey => "wrong_passkey",
            Refusal::NotOwnUsername => "not_own_username",
            Refusal::InsufficientFunds => "insufficient_funds",
            Refusal::SelfTransfer => "self_transfer",
            Refusal::UnknownReceiver => "unknown_receiver",
            Refusal::CaptchaReused(_) => "captcha_failed",
            Refusal::Confirmation(error) => error.reason(),
        }
    }

    fn of_ledger(error: &LedgerError) -> Option<Refusal> {
        match error {
            LedgerError::InsufficientFunds => Some(Refusal::InsufficientFunds),
            LedgerError::SelfTransfer => Some(Refusal::SelfTransfer),
            LedgerError::UnknownReceiver => Some(Refusal::UnknownReceiver),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error("refused: {}", .0.reason())]
    Refused(Refusal),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Captcha(CaptchaError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
}

impl PaymentError {
    /// Whether the database was only busy (503 rather than a fault).
    pub fn is_busy(&self) -> bool {
        match self {
            PaymentError::Store(error) => error.is_busy(),
            PaymentError::Ledger(LedgerError::Store(error)) => error.is_busy(),
            _ => false,
        }
    }
}

/// What [`Payments::prepare`] found before the write transaction.
pub enum Prepared {
    /// The key already moved money: its receipt, nothing more to do.
    Replayed(Receipt),
    Ready(Ready),
}

/// A fresh key and the reads that go with it.
pub struct Ready {
    key: IdempotencyKey,
    reads: crate::store::ledger::MovementReads,
}

/// The movement service (cheap to clone).
#[derive(Clone, Debug)]
pub struct Payments {
    db: Db,
    keyring: Keyring,
    ledger: Ledger,
    audit: AuditLog,
    captcha: crate::captcha::Captcha,
    passkeys: Passkeys,
    outbox: crate::mail::Outbox,
}

/// What the movement service works with.
pub struct PaymentParts {
    pub db: Db,
    pub keyring: Keyring,
    pub ledger: Ledger,
    pub audit: AuditLog,
    pub captcha: crate::captcha::Captcha,
    pub passkeys: Passkeys,
    pub outbox: crate::mail::Outbox,
}

impl Payments {
    pub fn new(parts: PaymentParts) -> Self {
        let PaymentParts {
            db,
            keyring,
            ledger,
            audit,
            captcha,
            passkeys,
            outbox,
        } = parts;
        Payments {
            db,
            keyring,
            ledger,
            audit,
            captcha,
            passkeys,
            outbox,
        }
    }

    /// Request options for signing `reviewed` with one of its customer's passkeys (the review
    /// page's `passkey-sign`); `None` when the customer has none.
    pub async fn signing_options(
        &self,
        reviewed: &Reviewed,
    ) -> Result<Option<serde_json::Value>, PaymentError> {
        let digest = reviewed.digest();
        Ok(self
            .passkeys
            .payment_options(reviewed.customer, &digest)
            .await?)
    }

    /// Issues an idempotency key for this customer: `random.mac`, so a key cannot be forged or
    /// borrowed from another customer.
    pub fn issue_key(&self, customer: UserId) -> String {
        let random = hex::encode(crate::crypto::random_bytes::<16>());
        format!("{random}.{}", self.key_mac(customer, &random))
    }

    fn key_mac(&self, customer: UserId, random: &str) -> String {
        let mac = self.keyring.mac(&[
            b"idempotency-key",
            &customer.to_be_bytes(),
            random.as_bytes(),
        ]);
        hex::encode(mac.get(..16).unwrap_or_default())
    }

    /// The key, if it is well-formed and was issued to this customer.
    pub fn accept_key(&self, customer: UserId, raw: &str) -> Option<IdempotencyKey> {
        let key = IdempotencyKey::parse(raw).ok()?;
        let (random, mac) = raw.split_once('.')?;
        crate::crypto::constant_time_eq(self.key_mac(customer, random).as_bytes(), mac.as_bytes())
            .then_some(key)
    }

    /// Every read before the write transaction, in one statement (SQLite has one writer at a
    /// time: keep its transaction short): whether the key already moved money (checked before
    /// anything else, so a resubmission gets the first receipt whatever it carries), the
    /// customer's code state, and the receiver of a transfer (usernames never change hands).
    pub async fn prepare(
        &self,
        customer: UserId,
        key: IdempotencyKey,
        receiver: Option<&Username>,
    ) -> Result<Prepared, PaymentError> {
        let receiver_key = receiver.map(Username::lookup_key);
        let reads = self
            .ledger
            .movement_reads(customer, &key, receiver_key.as_deref())
            .await?;
        Ok(match reads.replayed {
            Some(entry_id) => Prepared::Replayed(Receipt { entry_id }),
            None => Prepared::Ready(Ready { key, reads }),
        })
    }

    /// Moves the money of `command` in one write transaction (see the module doc).
    pub async fn execute(
        &self,
        ctx: &AuditContext,
        customer: UserId,
        own_username: &str,
        ready: Ready,
        command: Command,
    ) -> Result<Receipt, PaymentError> {
        let (step, signed) = self.second_factor(customer, &ready, command.factor)?;
        let kind = command.movement.kind();
        // The passkey and counter the movement's transaction raises.
        let counter = signed.as_ref().map(|v| (v.signature.passkey_id, v.counter));
        let signed = signed.map(|v| v.signature);
        let what = match command.movement {
            Movement::Transfer {
                amount, message, ..
            } => Move::Transfer {
                receiver: ready.reads.receiver,
                amount,
                message,
                signed,
            },
            Movement::Deposit { amount, card_name } => Move::Deposit { amount, card_name },
        };
        let work = MovementWork {
            payments: self.clone(),
            ctx: ctx.clone(),
            kind,
            customer,
            captcha: command.captcha,
            step,
            signed: counter,
            own_username_ok: command
                .own_username
                .is_none_or(|typed| typed.lookup_key() == own_username.to_ascii_lowercase()),
            what,
            key: ready.key,
            outcome: None,
            failures: None,
        };
        let done = self.db.run_write(work).await?;
        let outcome = done.outcome.unwrap_or_else(|| {
            Err(StoreError::Corrupt("a movement's transaction did not run".into()).into())
        });
        if let Some(count) = done.failures {
            let (db, outbox) = (&self.db, &self.outbox);
            let side = &Side::Shared;
            if crate::auth::failures::lock_if_full(db, outbox, ctx, customer, side, count).await? {
                return Err(PaymentError::Refused(Refusal::TooManyFailures));
            }
        }
        if let Err(PaymentError::Refused(Refusal::CaptchaReused(_))) = &outcome {
            // Audited once the write gate is free (nothing of the movement was written).
            let event = AuditEvent::CaptchaFailed {
                form: kind.as_str(),
            };
            self.audit.record_best_effort(ctx, event).await;
            self.audit_refusal(ctx, kind, "captcha_failed").await;
        }
        outcome
    }

    /// A code's step (if it matches; spent in the movement's transaction), or the verified
    /// signature.
    fn second_factor(
        &self,
        customer: UserId,
        ready: &Ready,
        factor: Factor,
    ) -> Result<(Option<i64>, Option<VerifiedSignature>), PaymentError> {
        Ok(match factor {
            Factor::Code(otp) => {
                let step = totp_step_with(
                    &self.keyring,
                    customer,
                    &otp,
                    ready.reads.totp_secret_enc.as_deref(),
                    ready.reads.totp_last_step,
                )?;
                (step, None)
            }
            Factor::Signed(signature) => (None, Some(signature)),
        })
    }

    /// Records a refusal decided before the movement's transaction (the customer's mistake,
    /// or an operating error), in a transaction of its own.
    pub async fn audit_refusal(&self, ctx: &AuditContext, kind: Kind, reason: &'static str) {
        let event = AuditEvent::MoneyMovementRefused {
            kind: kind.as_str(),
            reason,
        };
        self.audit.record_best_effort(ctx, event).await;
    }
}

/// The movement's write transaction: everything it writes, decided inside it.
struct MovementWork {
    payments: Payments,
    ctx: AuditContext,
    kind: Kind,
    customer: UserId,
    captcha: Option<PendingSpend>,
    step: Option<i64>,
    /// The payment was signed with this passkey (verified) and counter: no code to spend; the
    /// counter is raised in the movement's transaction.
    signed: Option<(i64, i64)>,
    own_username_ok: bool,
    what: Move,
    key: IdempotencyKey,
    outcome: Option<Result<Receipt, PaymentError>>,
    /// The shared failure count after a wrong code, counted in the refusal's transaction.
    failures: Option<Count>,
}

impl TxWork for MovementWork {
    async fn run(&mut self, tx: &mut Tx<'_>) -> Verdict {
        let (verdict, outcome) = self.decide(tx).await;
        // A wrong code is counted in the transaction that commits its refusal.
        let wrong_code = matches!(
            outcome,
            Err(PaymentError::Refused(
                Refusal::WrongCode | Refusal::WrongPasskey
            ))
        );
        self.failures = None;
        if wrong_code && verdict == Verdict::Keep {
            match failure_store::count_in(tx, self.customer).await {
                Ok(count) => self.failures = Some(count),
                Err(error) => {
                    self.outcome = Some(Err(error.into()));
                    return Verdict::Abort;
                }
            }
        }
        self.outcome = Some(outcome);
        verdict
    }
}

type Decided = (Verdict, Result<Receipt, PaymentError>);

impl MovementWork {
    /// `Keep` when the transaction may be committed (a movement; a refusal whose spent captcha,
    /// code step and audit event must stay; a replayed captcha, which wrote nothing), `Abort`
    /// on an operating error. The captcha's replay mark is spent first: on a replay nothing
    /// else runs.
    async fn decide(&self, tx: &mut Tx<'_>) -> Decided {
        let code_ok = match self.spend(tx).await {
            Ok(code_ok) => code_ok,
            Err(error) if error.is_operating_error() => {
                return (Verdict::Abort, Err(PaymentError::Captcha(error)));
            }
            Err(error) => {
                let refused = PaymentError::Refused(Refusal::CaptchaReused(error));
                return (Verdict::Keep, Err(refused));
            }
        };
        let refusal = match self.refusal_before_moving(code_ok) {
            Some(refusal) => refusal,
            None => {
                let ctx = &self.ctx;
                let ledger = &self.payments.ledger;
                match ledger
                    .move_in(tx, ctx, self.customer, &self.what, &self.key)
                    .await
                {
                    Ok(outcome) => {
                        let entry_id = outcome.entry_id();
                        return (Verdict::Keep, Ok(Receipt { entry_id }));
                    }
                    Err(error) => match Refusal::of_ledger(&error) {
                        Some(refusal) => refusal,
                        None => return (Verdict::Abort, Err(error.into())),
                    },
                }
            }
        };
        let event = AuditEvent::MoneyMovementRefused {
            kind: self.kind.as_str(),
            reason: refusal.reason(),
        };
        let audit = &self.payments.audit;
        match audit.record_in_after(tx, &self.ctx, event, None).await {
            Ok(()) => (Verdict::Keep, Err(PaymentError::Refused(refusal))),
            Err(error) => (Verdict::Abort, Err(error.into())),
        }
    }

    /// Spends the captcha's replay mark and the code's step (both in one statement where both
    /// are given; a replayed challenge spends no step). `Ok(whether the second factor counts)`:
    /// a verified passkey signature counts unless the failure count is full.
    async fn spend(&self, tx: &mut Tx<'_>) -> Result<bool, CaptchaError> {
        let captcha = &self.payments.captcha;
        if let Some((passkey, counter)) = self.signed {
            if let Some(pending) = self.captcha.clone() {
                captcha.spend_in(tx, pending).await?;
            }
            // Two signatures with the same counter (a clone, a replay) cannot both pass.
            let now = crate::now_millis();
            if !crate::store::passkeys::record_use_in(tx, passkey, counter, now).await? {
                return Ok(false);
            }
            let counts = crate::store::users::passkey_signature_counts_in(tx, self.customer);
            return Ok(counts.await?);
        }
        match (self.captcha.clone(), self.step) {
            (Some(pending), Some(step)) => {
                captcha
                    .spend_with_step_in(tx, pending, self.customer, step)
                    .await
            }
            (pending, step) => {
                if let Some(pending) = pending {
                    captcha.spend_in(tx, pending).await?;
                }
                match step {
                    Some(step) => Ok(crate::store::users::spend_totp_step_in(
                        tx,
                        self.customer,
                        step,
                        CodeCheck::Session,
                    )
                    .await?),
                    None => Ok(false),
                }
            }
        }
    }

    /// The refusal owed before any money moves: a wrong or spent code, or a username that is not
    /// the customer's own.
    fn refusal_before_moving(&self, code_ok: bool) -> Option<Refusal> {
        if !code_ok && self.signed.is_some() {
            Some(Refusal::WrongPasskey)
        } else if !code_ok {
            Some(Refusal::WrongCode)
        } else if !self.own_username_ok {
            Some(Refusal::NotOwnUsername)
        } else {
            None
        }
    }
}
