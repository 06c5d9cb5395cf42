//! Money pages: transfer, ATM deposit, receipts and the full history.
//!
//! A money-moving POST is checked in the contract's order: session, CSRF (extractors), then the
//! idempotency key (issued with the form, signed for this customer; a key that already moved
//! money answers 303 to its receipt), field syntax, captcha, one-time code, business rules. Every
//! refusal re-shows the form with a message next to the field, keeps what was typed (not the
//! code), moves nothing, and is audited.

use crate::auth::session::Session;
use askama::Template;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;

use super::captcha_gate;
use super::context::RequestContext;
use super::extract::{CurrentUser, see_other};
use super::form::CsrfForm;
use super::home::{Row, row_html};
use super::view::{Chrome, Errors, internal, render};
use crate::audit::{AuditContext, AuditEvent};
use crate::captcha::CaptchaFields;
use crate::captcha::{CaptchaError, PendingSpend};
use crate::domain::{Amount, CardName, DepositAmount, IdempotencyKey, Message, Username};
use crate::ledger::{LedgerError, Outcome};
use crate::limits::HISTORY_PAGE_ROWS;
use crate::startup::Services;
use crate::store::WriteTx;
use crate::store::group::{BatchError, Batched, SyncTx, Verdict};

/// Issues an idempotency key for this customer: `random.mac`, so a key cannot be forged or
/// borrowed from another customer.
fn issue_key(services: &Services, user_id: i64) -> String {
    let random = hex::encode(crate::crypto::random_bytes::<16>());
    format!("{random}.{}", key_mac(services, user_id, &random))
}

fn key_mac(services: &Services, user_id: i64, random: &str) -> String {
    let mac = services.keyring.mac(&[
        b"idempotency-key",
        &user_id.to_be_bytes(),
        random.as_bytes(),
    ]);
    hex::encode(mac.get(..16).unwrap_or_default())
}

/// The key, if it is well-formed and was issued to this customer.
fn issued_key(services: &Services, user_id: i64, raw: &str) -> Option<IdempotencyKey> {
    let key = IdempotencyKey::parse(raw).ok()?;
    let (random, mac) = raw.split_once('.')?;
    crate::crypto::constant_time_eq(
        key_mac(services, user_id, random).as_bytes(),
        mac.as_bytes(),
    )
    .then_some(key)
}

#[derive(Template)]
#[template(path = "transfer.html")]
struct TransferPage {
    chrome: Chrome,
    balance: String,
    key: String,
    amount: String,
    from_username: String,
    to_username: String,
    message: String,
    errors: Errors,
    captcha: CaptchaFields,
}

#[derive(Template)]
#[template(path = "atm.html")]
struct AtmPage {
    chrome: Chrome,
    balance: String,
    key: String,
    amount: String,
    username: String,
    card_name: String,
    errors: Errors,
    captcha: CaptchaFields,
}

/// Which form, for refusal audit events.
const TRANSFER: &str = "transfer";
const DEPOSIT: &str = "deposit";

struct Refusal {
    status: StatusCode,
    errors: Errors,
    reason: &'static str,
    /// Already recorded in the audit log (in the movement's transaction).
    audited: bool,
}

fn refuse(
    status: StatusCode,
    field: &'static str,
    message: impl Into<String>,
    reason: &'static str,
) -> Refusal {
    Refusal {
        status,
        errors: Errors::one(field, message),
        reason,
        audited: false,
    }
}

async fn balance_text(services: &Services, user_id: i64) -> String {
    services
        .ledger
        .balance(user_id)
        .await
        .map(|b| b.to_string())
        .unwrap_or_default()
}

/// The balance on a form as the page is opened: from the account row read with the session
/// (one read less per form).
async fn session_balance_text(services: &Services, session: &Session) -> String {
    services
        .ledger
        .balance_with(session.user_id, session.account.as_deref())
        .await
        .map(|b| b.to_string())
        .unwrap_or_default()
}

pub async fn transfer_form(State(services): State<Services>, user: CurrentUser) -> Response {
    let user_id = user.session.user_id;
    let page = TransferPage {
        chrome: Chrome::for_session(&services, &user.session, true).await,
        balance: session_balance_text(&services, &user.session).await,
        key: issue_key(&services, user_id),
        amount: String::new(),
        from_username: user.session.username.clone(),
        to_username: String::new(),
        message: String::new(),
        errors: Errors::default(),
        captcha: captcha_gate::fields(&services),
    };
    render(StatusCode::OK, &page, &user.context.request_id)
}

pub async fn atm_form(State(services): State<Services>, user: CurrentUser) -> Response {
    let user_id = user.session.user_id;
    let page = AtmPage {
        chrome: Chrome::for_session(&services, &user.session, true).await,
        balance: session_balance_text(&services, &user.session).await,
        key: issue_key(&services, user_id),
        amount: String::new(),
        username: user.session.username.clone(),
        card_name: String::new(),
        errors: Errors::default(),
        captcha: captcha_gate::fields(&services),
    };
    render(StatusCode::OK, &page, &user.context.request_id)
}

/// What a money form moves, once its fields parsed.
enum Movement {
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

/// The username a form must name (the customer's own), and where to say so if it does not.
struct OwnUsername {
    given: Username,
    field: &'static str,
    message: &'static str,
}

/// A money form after the extractors (session, CSRF): the idempotency key, field syntax,
/// captcha, one-time code and business rules, in the contract's order. Reads and a provider's
/// captcha call happen first; then every write of the movement (captcha replay mark, code step,
/// journal entry, postings, balances, idempotency outcome, audit event) is one transaction with
/// one commit. A refusal from the code check on commits the spent captcha and code step with
/// its audit event, so neither can be tried again; an operating error rolls everything back.
/// `Ok(entry_id)`: the receipt to show (new, or the key's earlier one).
async fn submit(
    services: &Services,
    user: &CurrentUser,
    form: &CsrfForm,
    kind: &'static str,
    field_errors: Errors,
    parsed: Option<(Movement, OwnUsername)>,
) -> Result<i64, Refusal> {
    let user_id = user.session.user_id;
    let Some(key) = issued_key(services, user_id, form.get("idempotency_key")) else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "form",
            "This form has expired or was changed. Reload the page and try again.",
            "bad_idempotency_key",
        ));
    };
    // Every read before the write transaction, in one statement (SQLite has one writer at a
    // time: keep its transaction short; every pooled read costs a checkout and a ping).
    let receiver_key = match &parsed {
        Some((Movement::Transfer { to, .. }, _)) => Some(to.lookup_key()),
        _ => None,
    };
    let reads = services
        .ledger
        .movement_reads(user_id, &key, receiver_key.as_deref())
        .await
        .map_err(|error| unavailable(&error))?;
    if let Some(entry_id) = reads.replayed {
        return Ok(entry_id);
    }
    if !field_errors.is_empty() {
        return Err(Refusal {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            errors: field_errors,
            reason: "invalid_fields",
            audited: false,
        });
    }
    let pending = captcha_gate::check(services, form, &user.context, kind)
        .await
        .map_err(captcha_refusal)?;
    let Some((movement, own)) = parsed else {
        return Err(invalid_fields());
    };
    let step = crate::auth::totp_step_of(
        services,
        user_id,
        form.get("otp"),
        reads.totp_secret_enc.as_deref(),
        reads.totp_last_step,
    )
    .map_err(|error| unavailable(&error))?;
    let own_username_ok = own.given.lookup_key() == user.session.username.to_ascii_lowercase();
    let receiver = match &movement {
        Movement::Transfer { .. } => reads.receiver,
        Movement::Deposit { .. } => None,
    };
    let write = MovementWrite {
        services: services.clone(),
        context: user.context.clone(),
        kind,
        user_id,
        pending,
        step,
        own_username_ok,
        own,
        movement,
        receiver,
        key,
    };
    match services.db.group_commit() {
        Some(group) => {
            let (reply, answer) = tokio::sync::oneshot::channel();
            group.submit(Box::new(BatchedMovement {
                write,
                outcome: None,
                reply: Some(reply),
            }));
            match answer.await {
                Ok((write, Ok(()), Some(outcome))) => write.answer(outcome).await,
                // Rolled back with its batch (or never queued): the movement runs on its own.
                Ok((write, Err(BatchError::Retry), _)) => write.run().await,
                Ok((_, Err(BatchError::Failed(error)), _)) => Err(unavailable(&error)),
                Ok((_, Ok(()), None)) => Err(unavailable(&"a batched movement did not run")),
                Err(_) => Err(unavailable(&"the group-commit writer stopped")),
            }
        }
        None => write.run().await,
    }
}

/// What a movement's transaction decided, before the caller answers.
enum MovementOutcome {
    Done(Result<i64, Refusal>),
    /// Refused by the captcha's replay mark; audited by the caller once the write gate is free.
    CaptchaRefused(CaptchaError),
}

/// A [`MovementWrite`] queued for group commit; it hands itself back with its outcome.
struct BatchedMovement {
    write: MovementWrite,
    outcome: Option<MovementOutcome>,
    reply: Option<BatchReply>,
}

type BatchReply = tokio::sync::oneshot::Sender<(
    MovementWrite,
    Result<(), BatchError>,
    Option<MovementOutcome>,
)>;

impl Batched for BatchedMovement {
    fn run(&mut self, tx: &SyncTx<'_>) -> Verdict {
        let (verdict, outcome) = self.write.run_sync(tx);
        self.outcome = Some(outcome);
        verdict
    }

    fn finish(self: Box<Self>, result: Result<(), BatchError>) {
        let BatchedMovement {
            write,
            outcome,
            reply,
        } = *self;
        if let Some(reply) = reply {
            // The request may have gone away meanwhile; its movement is committed or not all the same.
            let _ = reply.send((write, result, outcome));
        }
    }
}

/// The write half of a money form: everything it writes, in one transaction.
struct MovementWrite {
    services: Services,
    context: RequestContext,
    kind: &'static str,
    user_id: i64,
    pending: Option<PendingSpend>,
    step: Option<i64>,
    own_username_ok: bool,
    own: OwnUsername,
    movement: Movement,
    receiver: Option<i64>,
    key: IdempotencyKey,
}

impl MovementWrite {
    /// The movement in a transaction of its own.
    async fn run(self) -> Result<i64, Refusal> {
        let mut tx = self
            .services
            .db
            .begin_write()
            .await
            .map_err(|error| unavailable(&error))?;
        let (verdict, outcome) = self.run_in(&mut tx).await;
        if verdict == Verdict::Keep {
            tx.commit().await.map_err(|error| unavailable(&error))?;
        } else {
            drop(tx);
        }
        self.answer(outcome).await
    }

    /// Turns a decided outcome into the form's answer (audits a captcha refusal; call it only
    /// after the transaction is committed or dropped).
    async fn answer(&self, outcome: MovementOutcome) -> Result<i64, Refusal> {
        match outcome {
            MovementOutcome::Done(result) => result,
            MovementOutcome::CaptchaRefused(error) => Err(captcha_refusal(
                captcha_gate::refused(&self.services, &self.context, self.kind, error).await,
            )),
        }
    }

    /// Every write of the movement inside `tx`: `Keep` when `tx` may be committed (a movement;
    /// a refusal whose spent captcha and code step and audit event must stay; a replayed captcha,
    /// which wrote nothing), `Abort` when it must be rolled back (an operating error). The
    /// captcha's replay mark is spent first: on a replay nothing else runs. On SQLite the caller
    /// audits a captcha refusal only after the write gate is free (see [`MovementWrite::answer`]).
    async fn run_in(&self, tx: &mut WriteTx) -> Decided {
        let services = &self.services;
        let user_id = self.user_id;
        let code_ok = match (self.pending.clone(), self.step) {
            // Both: one trip to the writer's thread on SQLite.
            (Some(pending), Some(step)) => match services
                .captcha
                .spend_with_step_in(tx, pending, user_id, step)
                .await
            {
                Ok(spent) => spent,
                Err(error) => return captcha_refused(error),
            },
            (pending, step) => {
                if let Some(pending) = pending
                    && let Err(error) = services.captcha.spend_in(tx, pending).await
                {
                    return captcha_refused(error);
                }
                match step {
                    Some(step) => {
                        match crate::store::users::spend_totp_step_in(tx, user_id, step).await {
                            Ok(spent) => spent,
                            Err(error) => return abort(&error),
                        }
                    }
                    None => false,
                }
            }
        };
        let ctx = self.context.audit();
        let refusal = match self.refusal_before_moving(code_ok) {
            Some(refusal) => refusal,
            None => {
                let ledger = &services.ledger;
                let moved = match &self.movement {
                    Movement::Transfer {
                        amount, message, ..
                    } => {
                        ledger
                            .transfer_in(
                                tx,
                                &ctx,
                                user_id,
                                self.receiver,
                                *amount,
                                message,
                                &self.key,
                            )
                            .await
                    }
                    Movement::Deposit { amount, card_name } => {
                        ledger
                            .deposit_in(tx, &ctx, user_id, *amount, card_name, &self.key)
                            .await
                    }
                };
                match moved_or_refused(moved) {
                    Ok(decided) => return decided,
                    Err(refusal) => refusal,
                }
            }
        };
        // The refusal is audited in the same transaction that keeps the captcha and code spent.
        match services
            .audit
            .record_in(tx, &ctx, self.refusal_event(&refusal))
            .await
        {
            Ok(()) => audited(refusal),
            Err(error) => abort(&error),
        }
    }

    /// [`MovementWrite::run_in`] in a batch of SQLite's group-commit writer: the same writes in
    /// the same order, each statement run on the writer's thread.
    fn run_sync(&self, tx: &SyncTx<'_>) -> Decided {
        let services = &self.services;
        let user_id = self.user_id;
        let code_ok = match (self.pending.clone(), self.step) {
            (Some(pending), Some(step)) => {
                match services
                    .captcha
                    .spend_with_step_sync(tx, pending, user_id, step)
                {
                    Ok(spent) => spent,
                    Err(error) => return captcha_refused(error),
                }
            }
            (pending, step) => {
                if let Some(pending) = pending
                    && let Err(error) = services.captcha.spend_sync(tx, pending)
                {
                    return captcha_refused(error);
                }
                match step {
                    Some(step) => {
                        match crate::store::users::spend_totp_step_sync(tx, user_id, step) {
                            Ok(spent) => spent,
                            Err(error) => return abort(&error),
                        }
                    }
                    None => false,
                }
            }
        };
        let ctx = self.context.audit();
        let refusal = match self.refusal_before_moving(code_ok) {
            Some(refusal) => refusal,
            None => {
                let ledger = &services.ledger;
                let moved = match &self.movement {
                    Movement::Transfer {
                        amount, message, ..
                    } => ledger.transfer_sync(
                        tx,
                        &ctx,
                        user_id,
                        self.receiver,
                        *amount,
                        message,
                        &self.key,
                    ),
                    Movement::Deposit { amount, card_name } => {
                        ledger.deposit_sync(tx, &ctx, user_id, *amount, card_name, &self.key)
                    }
                };
                match moved_or_refused(moved) {
                    Ok(decided) => return decided,
                    Err(refusal) => refusal,
                }
            }
        };
        match services
            .audit
            .record_sync(tx, &ctx, self.refusal_event(&refusal), None)
        {
            Ok(()) => audited(refusal),
            Err(error) => abort(&error),
        }
    }

    /// The refusal owed before any money moves: a wrong or spent code, or a username that is not
    /// the customer's own.
    fn refusal_before_moving(&self, code_ok: bool) -> Option<Refusal> {
        if !code_ok {
            Some(refuse(
                StatusCode::UNAUTHORIZED,
                "otp",
                "The code is not right, or was already used. Wait for the next code in your app.",
                "wrong_code",
            ))
        } else if !self.own_username_ok {
            Some(refuse(
                StatusCode::FORBIDDEN,
                self.own.field,
                self.own.message,
                "not_own_username",
            ))
        } else {
            None
        }
    }

    fn refusal_event(&self, refusal: &Refusal) -> AuditEvent {
        AuditEvent::MoneyMovementRefused {
            kind: self.kind,
            reason: refusal.reason,
        }
    }
}

/// A movement's transaction verdict and what to answer.
type Decided = (Verdict, MovementOutcome);

/// A captcha refused by its replay mark (nothing was written), or an operating error.
fn captcha_refused(error: CaptchaError) -> Decided {
    let verdict = if error.is_operating_error() {
        Verdict::Abort
    } else {
        Verdict::Keep // nothing was written
    };
    (verdict, MovementOutcome::CaptchaRefused(error))
}

/// An operating error: the transaction is rolled back.
fn abort(error: &dyn std::fmt::Display) -> Decided {
    (
        Verdict::Abort,
        MovementOutcome::Done(Err(unavailable(error))),
    )
}

/// A refusal whose audit event is written: kept with the spent captcha and code step.
fn audited(refusal: Refusal) -> Decided {
    (
        Verdict::Keep,
        MovementOutcome::Done(Err(Refusal {
            audited: true,
            ..refusal
        })),
    )
}

/// The ledger's answer: money moved (or the key's earlier entry), a refusal the customer caused
/// (to audit), or an operating error.
fn moved_or_refused(moved: Result<Outcome, LedgerError>) -> Result<Decided, Refusal> {
    match moved {
        Ok(outcome) => Ok((Verdict::Keep, MovementOutcome::Done(Ok(outcome.entry_id())))),
        Err(error) => match ledger_refusal(&error) {
            Some(refusal) => Err(refusal),
            None => Ok(abort(&error)),
        },
    }
}

fn captcha_refusal(failure: captcha_gate::CaptchaFailure) -> Refusal {
    if failure.operating_error {
        unavailable(&failure.message)
    } else {
        refuse(
            StatusCode::BAD_REQUEST,
            "form",
            failure.message,
            "captcha_failed",
        )
    }
}

/// An operating error: logged, nothing changed (the transaction, if any, is dropped).
fn unavailable(error: &dyn std::fmt::Display) -> Refusal {
    tracing::error!(%error, "money movement failed");
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        "form",
        "Something went wrong on our side. Nothing was changed.",
        "internal_error",
    )
}

/// Fields that did not parse (their messages were already shown by `submit`).
fn invalid_fields() -> Refusal {
    refuse(
        StatusCode::UNPROCESSABLE_ENTITY,
        "form",
        "Check the fields.",
        "invalid_fields",
    )
}

fn ledger_refusal(error: &LedgerError) -> Option<Refusal> {
    let message = error.to_string();
    match error {
        LedgerError::InsufficientFunds => Some(refuse(
            StatusCode::CONFLICT,
            "amount",
            message,
            "insufficient_funds",
        )),
        LedgerError::SelfTransfer => Some(refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            "to_username",
            message,
            "self_transfer",
        )),
        LedgerError::UnknownReceiver => Some(refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            "to_username",
            message,
            "unknown_receiver",
        )),
        _ => None,
    }
}

fn receipt(entry_id: i64) -> Response {
    see_other(&format!("/receipts/{entry_id}"))
}

pub async fn transfer(
    State(services): State<Services>,
    user: CurrentUser,
    form: CsrfForm,
) -> Response {
    let mut errors = Errors::default();
    let amount = Amount::parse(form.get("amount"))
        .map_err(|e| errors.add("amount", e.to_string()))
        .ok();
    let from = Username::parse(form.get("from_username"))
        .map_err(|e| errors.add("from_username", e.to_string()))
        .ok();
    let to = Username::parse(form.get("to_username"))
        .map_err(|e| errors.add("to_username", e.to_string()))
        .ok();
    let message = Message::parse(form.get("message"))
        .map_err(|e| errors.add("message", e.to_string()))
        .ok();
    let parsed = match (amount, from, to, message) {
        (Some(amount), Some(from), Some(to), Some(message)) => Some((
            Movement::Transfer {
                to,
                amount,
                message,
            },
            OwnUsername {
                given: from,
                field: "from_username",
                message: "Enter your own username to confirm that the money leaves your account.",
            },
        )),
        _ => None,
    };
    let outcome = submit(&services, &user, &form, TRANSFER, errors, parsed).await;
    finish(&services, &user, &form, TRANSFER, outcome).await
}

pub async fn atm(State(services): State<Services>, user: CurrentUser, form: CsrfForm) -> Response {
    let mut errors = Errors::default();
    let amount = DepositAmount::parse(form.get("amount"))
        .map_err(|e| errors.add("amount", e.to_string()))
        .ok();
    let username = Username::parse(form.get("username"))
        .map_err(|e| errors.add("username", e.to_string()))
        .ok();
    let card_name = CardName::parse(form.get("card_name"))
        .map_err(|e| errors.add("card_name", e.to_string()))
        .ok();
    let parsed = match (amount, username, card_name) {
        (Some(amount), Some(username), Some(card_name)) => Some((
            Movement::Deposit { amount, card_name },
            OwnUsername {
                given: username,
                field: "username",
                message: "Enter your own username: deposits go to your own account.",
            },
        )),
        _ => None,
    };
    let outcome = submit(&services, &user, &form, DEPOSIT, errors, parsed).await;
    finish(&services, &user, &form, DEPOSIT, outcome).await
}

/// Turns the outcome of a money form into the response: a receipt, or the form again.
async fn finish(
    services: &Services,
    user: &CurrentUser,
    form: &CsrfForm,
    kind: &'static str,
    outcome: Result<i64, Refusal>,
) -> Response {
    let user_id = user.session.user_id;
    let refusal = match outcome {
        Ok(entry_id) => return receipt(entry_id),
        Err(refusal) => refusal,
    };
    if !refusal.audited {
        let audit_ctx: AuditContext = user.context.audit();
        services
            .ledger
            .audit_refusal(&audit_ctx, kind, refusal.reason)
            .await;
    }
    let chrome = Chrome::for_session(services, &user.session, true).await;
    let balance = balance_text(services, user_id).await;
    let keep = |name: &str, max: usize| form.get(name).chars().take(max).collect::<String>();
    let key = if issued_key(services, user_id, form.get("idempotency_key")).is_some() {
        form.get("idempotency_key").to_string()
    } else {
        issue_key(services, user_id)
    };
    let captcha = captcha_gate::fields(services);
    let request_id = &user.context.request_id;
    if kind == TRANSFER {
        let page = TransferPage {
            chrome,
            balance,
            key,
            amount: keep("amount", 20),
            from_username: keep("from_username", 64),
            to_username: keep("to_username", 64),
            message: keep("message", 200),
            errors: refusal.errors,
            captcha,
        };
        render(refusal.status, &page, request_id)
    } else {
        let page = AtmPage {
            chrome,
            balance,
            key,
            amount: keep("amount", 20),
            username: keep("username", 64),
            card_name: keep("card_name", 100),
            errors: refusal.errors,
            captcha,
        };
        render(refusal.status, &page, request_id)
    }
}

#[derive(Template)]
#[template(path = "receipt.html")]
struct ReceiptPage {
    chrome: Chrome,
    row: Row,
    kind: String,
    balance_minor: i64,
    balance: String,
}

pub async fn show_receipt(
    State(services): State<Services>,
    user: CurrentUser,
    Path(entry): Path<String>,
) -> Response {
    let request_id = &user.context.request_id;
    let not_found = || {
        super::error::render_error(
            StatusCode::NOT_FOUND,
            "There is no such receipt.",
            request_id,
        )
    };
    let Ok(entry_id) = entry.parse::<i64>() else {
        return not_found();
    };
    let movement = match services
        .ledger
        .movement(user.session.user_id, entry_id)
        .await
    {
        Ok(Some(m)) => m,
        Ok(None) => return not_found(),
        Err(error) => return internal(request_id, error),
    };
    let balance = match services.ledger.balance(user.session.user_id).await {
        Ok(b) => b,
        Err(error) => return internal(request_id, error),
    };
    let kind = movement.kind.clone();
    let chrome = Chrome::for_session(&services, &user.session, true).await;
    let page = ReceiptPage {
        chrome,
        row: Row::from(&movement),
        kind,
        balance_minor: balance.minor(),
        balance: balance.to_string(),
    };
    render(StatusCode::OK, &page, request_id)
}

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

pub async fn history(State(services): State<Services>, user: CurrentUser, uri: Uri) -> Response {
    let request_id = &user.context.request_id;
    let Some(page) = page_number(&uri) else {
        return super::error::render_error(
            StatusCode::BAD_REQUEST,
            "The page number must be a whole number from 1.",
            request_id,
        );
    };
    match services
        .ledger
        .history_with(
            user.session.user_id,
            user.session.account.as_deref().cloned(),
            page,
            HISTORY_PAGE_ROWS,
        )
        .await
    {
        Ok(history) => {
            let chrome = Chrome::for_session(&services, &user.session, true).await;
            let page = HistoryPage {
                chrome,
                rows: history.rows.iter().map(|m| row_html(m)).collect(),
                page: history.page,
                last_page: history.last_page,
                total: history.total_rows,
            };
            render(StatusCode::OK, &page, request_id)
        }
        Err(LedgerError::NoSuchPage { last_page }) => super::error::render_error(
            StatusCode::NOT_FOUND,
            &format!("That page does not exist. Your history has {last_page} page(s)."),
            request_id,
        ),
        Err(error) => internal(request_id, error),
    }
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
