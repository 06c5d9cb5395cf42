//! The double-entry ledger. Money is `i64` øre. Every movement is one database transaction that
//! writes an immutable journal entry whose postings sum to zero (a deposit debits the bank's cash
//! account), updates the account balances (so reading a balance is O(1)), records the idempotency
//! key with its outcome, and appends an audit event.
//!
//! Concurrency: the accounts a movement touches are locked in ascending id order (PostgreSQL
//! `SELECT … FOR UPDATE`; SQLite holds its single write lock), so two movements between unrelated
//! accounts never wait for each other on PostgreSQL, and no two movements can deadlock.
//!
//! Tamper evidence: each account has its own chain. A posting's MAC covers its content, the
//! entry's MAC and the previous posting's MAC of the same account; the account row holds the
//! newest `(seq, mac)`. Amounts, balances, messages and card names are sealed (see `crypto`).

mod cache;
pub mod verify;

use std::sync::{Arc, OnceLock};

use crate::audit::{AuditContext, AuditError, AuditEvent, AuditLog};
use crate::crypto::{Aad, CryptoError, Keyring, random_row_id};
use crate::domain::UserId;
use crate::domain::{
    AccountKind, Amount, CardName, DepositAmount, EntryKind, IdempotencyKey, Message, Money,
    Username,
};
use crate::store::ledger::{
    self as ledger_store, AccountHead, AccountRow, CASH_ACCOUNT_ID, CustomerKey, EntryRow,
    HistoryRow, PostingRow,
};
use crate::store::{Db, StoreError, Tx, TxWork, Verdict, WriteTx, users as user_store};

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("You cannot send money to yourself.")]
    SelfTransfer,
    #[error("There is no customer with that username.")]
    UnknownReceiver,
    #[error("Your balance is too low for this transfer.")]
    InsufficientFunds,
    #[error("This account has no ledger account")]
    NoAccount,
    #[error("That page of history does not exist.")]
    NoSuchPage { last_page: u32 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

impl LedgerError {
    /// A short machine-readable reason for a refusal a customer caused (audited), or `None` for
    /// an operating error.
    pub fn refusal_reason(&self) -> Option<&'static str> {
        match self {
            LedgerError::SelfTransfer => Some("self_transfer"),
            LedgerError::UnknownReceiver => Some("unknown_receiver"),
            LedgerError::InsufficientFunds => Some("insufficient_funds"),
            _ => None,
        }
    }
}

/// The result of a money movement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Money moved: this new entry.
    Moved { entry_id: i64 },
    /// The idempotency key had already moved money: the first entry, nothing moved now.
    Replayed { entry_id: i64 },
}

impl Outcome {
    pub fn entry_id(self) -> i64 {
        match self {
            Outcome::Moved { entry_id } | Outcome::Replayed { entry_id } => entry_id,
        }
    }
}

/// One movement as the customer sees it.
#[derive(Debug, Clone)]
pub struct MovementView {
    pub entry_id: i64,
    pub seq: i64,
    pub created_at_millis: i64,
    pub kind: EntryKind,
    /// Signed: positive into the customer's account.
    pub amount: Money,
    pub counterparty: Option<String>,
    pub message: Option<String>,
    pub card_name: Option<String>,
    /// The row as a page shows it, kept with the row by whoever shows it first (the web layer
    /// keeps its HTML here): a cached row never changes, so neither does its display.
    pub display: OnceLock<Arc<str>>,
}

#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// The balance as of this page (read with it: one account row serves both).
    pub balance: Money,
    /// Shared with the row cache.
    pub rows: Vec<Arc<MovementView>>,
    pub page: u32,
    pub last_page: u32,
    pub total_rows: i64,
}

#[derive(Clone, Debug)]
pub struct Ledger {
    db: Db,
    keyring: Keyring,
    audit: AuditLog,
    rows: cache::RowCache,
}

fn balance_aad(account_id: i64) -> Aad {
    Aad::new("accounts", "balance_enc", account_id)
}
fn amount_aad(account_id: i64, seq: i64) -> Aad {
    Aad::new("postings", "amount_enc", format!("{account_id}:{seq}"))
}
fn message_aad(entry_id: i64) -> Aad {
    Aad::new("journal_entries", "message_enc", entry_id)
}
fn card_name_aad(entry_id: i64) -> Aad {
    Aad::new("journal_entries", "card_name_enc", entry_id)
}

/// What a journal entry says, in the clear (input to its MAC).
pub(crate) struct EntryContent<'a> {
    id: i64,
    kind: EntryKind,
    initiator_user_id: UserId,
    created_at_millis: i64,
    message: Option<&'a str>,
    card_name: Option<&'a str>,
}

impl<'a> EntryContent<'a> {
    /// A new ATM deposit entry, made now by the customer, with a fresh id.
    fn deposit(initiator_user_id: UserId, card_name: &'a CardName) -> Self {
        EntryContent {
            id: random_row_id(),
            kind: EntryKind::Deposit,
            initiator_user_id,
            created_at_millis: crate::now_millis(),
            message: None,
            card_name: Some(card_name.as_str()),
        }
    }

    /// A new transfer entry, made now by the sender, with a fresh id.
    fn transfer(initiator_user_id: UserId, message: &'a Message) -> Self {
        EntryContent {
            id: random_row_id(),
            kind: EntryKind::Transfer,
            initiator_user_id,
            created_at_millis: crate::now_millis(),
            message: Some(message.as_str()),
            card_name: None,
        }
    }
}

impl Ledger {
    pub fn new(db: Db, keyring: Keyring, audit: AuditLog) -> Self {
        Ledger {
            db,
            keyring,
            audit,
            rows: cache::RowCache::default(),
        }
    }

    pub(crate) fn entry_mac(&self, e: &EntryContent<'_>) -> [u8; 32] {
        let optional = |v: Option<&str>| match v {
            Some(s) => [b"1".as_slice(), s.as_bytes()].concat(),
            None => b"0".to_vec(),
        };
        self.keyring.mac(&[
            b"entry",
            &e.id.to_be_bytes(),
            e.kind.as_str().as_bytes(),
            &e.initiator_user_id.to_be_bytes(),
            &e.created_at_millis.to_be_bytes(),
            &optional(e.message),
            &optional(e.card_name),
        ])
    }

    pub(crate) fn account_genesis_mac(&self, account_id: i64) -> [u8; 32] {
        self.keyring
            .mac(&[b"account-genesis", &account_id.to_be_bytes()])
    }

    pub(crate) fn posting_mac(
        &self,
        p: &PostingRow,
        amount_minor: i64,
        entry_mac: &[u8],
    ) -> [u8; 32] {
        self.keyring.mac(&[
            b"posting",
            &p.account_id.to_be_bytes(),
            &p.seq.to_be_bytes(),
            &p.entry_id.to_be_bytes(),
            &p.counterparty_account_id.unwrap_or(0).to_be_bytes(),
            &amount_minor.to_be_bytes(),
            &p.created_at_millis.to_be_bytes(),
            entry_mac,
            &p.prev_mac,
        ])
    }

    fn new_account_row(&self, id: i64, user_id: Option<UserId>, kind: AccountKind) -> AccountRow {
        AccountRow {
            id,
            user_id,
            kind,
            balance_enc: self.keyring.seal_i64(&balance_aad(id), 0),
            seq: 0,
            head_mac: self.account_genesis_mac(id).to_vec(),
        }
    }

    /// Creates the bank's cash account (the source of ATM deposits) if it does not exist yet.
    pub async fn ensure_cash_account(&self) -> Result<(), LedgerError> {
        let mut tx = self.db.begin_write().await?;
        if ledger_store::lock_account(&mut tx, CASH_ACCOUNT_ID)
            .await?
            .is_none()
        {
            let row = self.new_account_row(CASH_ACCOUNT_ID, None, AccountKind::Cash);
            match ledger_store::insert_account(&mut tx, &row, crate::now_millis()).await {
                Ok(()) => {}
                // Another instance starting at the same moment created it first.
                Err(StoreError::Conflict(_)) => return Ok(()),
                Err(error) => return Err(error.into()),
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Opens a customer's account inside the caller's transaction (sign-up).
    pub async fn open_customer_account(
        &self,
        tx: &mut WriteTx,
        user_id: UserId,
    ) -> Result<i64, LedgerError> {
        let row = self.new_account_row(random_row_id(), Some(user_id), AccountKind::Customer);
        ledger_store::insert_account(tx, &row, crate::now_millis()).await?;
        Ok(row.id)
    }

    /// The customer's balance: one row read, one field opened.
    pub async fn balance(&self, user_id: UserId) -> Result<Money, LedgerError> {
        self.balance_with(user_id, None).await
    }

    /// [`Ledger::balance`] from the customer's account row if it was already read (with the
    /// session); reads it otherwise.
    pub async fn balance_with(
        &self,
        user_id: UserId,
        known: Option<&AccountRow>,
    ) -> Result<Money, LedgerError> {
        match known.filter(|account| account.user_id == Some(user_id)) {
            Some(account) => self.balance_of(account),
            None => self.balance_of(&self.account_of(user_id).await?),
        }
    }

    /// The customer's account row, read now.
    async fn account_of(&self, user_id: UserId) -> Result<AccountRow, LedgerError> {
        ledger_store::account_of_user(&self.db, user_id)
            .await?
            .ok_or(LedgerError::NoAccount)
    }

    fn balance_of(&self, account: &AccountRow) -> Result<Money, LedgerError> {
        Ok(Money::from_minor(self.keyring.open_i64(
            &balance_aad(account.id),
            &account.balance_enc,
        )?))
    }

    /// A money form's reads before its write transaction, in one statement: whether the
    /// customer's idempotency key already produced an entry (checked before anything else, so a
    /// resubmission gets the first receipt whatever it carries), their TOTP state, and the
    /// receiver of a transfer (usernames never change hands, so this read may come first).
    pub async fn movement_reads(
        &self,
        user_id: UserId,
        key: &IdempotencyKey,
        receiver_key: Option<&str>,
    ) -> Result<ledger_store::MovementReads, LedgerError> {
        ledger_store::movement_reads(&self.db, user_id, key.as_str(), receiver_key)
            .await?
            .ok_or(LedgerError::NoAccount)
    }

    /// ATM deposit: the bank's cash account pays the customer's account (its own transaction).
    pub async fn deposit(
        &self,
        ctx: &AuditContext,
        user_id: UserId,
        amount: DepositAmount,
        card_name: &CardName,
        key: &IdempotencyKey,
    ) -> Result<Outcome, LedgerError> {
        let what = Move::Deposit {
            amount,
            card_name: card_name.clone(),
        };
        self.move_alone(ctx, user_id, what, key).await
    }

    /// Transfer to another customer by username (matched ignoring case), in its own transaction.
    pub async fn transfer(
        &self,
        ctx: &AuditContext,
        user_id: UserId,
        to: &Username,
        amount: Amount,
        message: &Message,
        key: &IdempotencyKey,
    ) -> Result<Outcome, LedgerError> {
        let receiver = self.receiver(to).await?;
        let what = Move::Transfer {
            receiver,
            amount,
            message: message.clone(),
            signed: None,
        };
        self.move_alone(ctx, user_id, what, key).await
    }

    /// A movement in a write transaction of its own (see [`Db::run_write`]).
    async fn move_alone(
        &self,
        ctx: &AuditContext,
        user_id: UserId,
        what: Move,
        key: &IdempotencyKey,
    ) -> Result<Outcome, LedgerError> {
        let work = MoveWork {
            ledger: self.clone(),
            ctx: ctx.clone(),
            user_id,
            what,
            key: key.clone(),
            outcome: None,
        };
        let done = self.db.run_write(work).await?;
        done.outcome.unwrap_or_else(|| {
            Err(StoreError::Corrupt("a movement's transaction did not run".into()).into())
        })
    }

    /// The customer a transfer to `to` goes to (`None`: no such customer). Usernames never
    /// change hands, so this read may happen before the write transaction.
    pub async fn receiver(&self, to: &Username) -> Result<Option<UserId>, LedgerError> {
        let mut conn = self.db.pool().acquire().await.map_err(StoreError::from)?;
        Ok(
            user_store::id_by_username_key_in(&mut conn, &to.lookup_key())
                .await?
                .map(|(id, _)| id),
        )
    }

    /// A customer's movement inside the caller's write transaction: lock (the store's, per
    /// engine), plan (pure, here), apply (the store's, per engine), and its audit event.
    /// Refusals (`UnknownReceiver`, `SelfTransfer`, `InsufficientFunds`) write nothing, so the
    /// caller may still commit its own writes. Nothing is written on an error.
    pub async fn move_in(
        &self,
        tx: &mut Tx<'_>,
        ctx: &AuditContext,
        user_id: UserId,
        what: &Move,
        key: &IdempotencyKey,
    ) -> Result<Outcome, LedgerError> {
        let audit_stream = crate::audit::user_stream(user_id);
        let customer_key = CustomerKey::new(user_id, key, &audit_stream);
        let planned = match what {
            Move::Transfer {
                receiver,
                amount,
                message,
                signed,
            } => {
                let to_user_id = transfer_receiver(user_id, *receiver)?;
                let locked = ledger_store::lock_accounts_of_users(
                    tx,
                    user_id,
                    to_user_id,
                    Some(customer_key),
                )
                .await?;
                let transfer = PlannedTransfer {
                    to_user_id,
                    amount: *amount,
                    message,
                    signed: signed.clone(),
                };
                self.plan_transfer(user_id, locked, transfer)?
            }
            Move::Deposit { amount, card_name } => {
                let locked = ledger_store::lock_account_and_user(
                    tx,
                    CASH_ACCOUNT_ID,
                    user_id,
                    Some(customer_key),
                )
                .await?;
                self.plan_deposit(user_id, locked, *amount, card_name)?
            }
        };
        let planned = match planned {
            Planned::Replayed(entry_id) => return Ok(Outcome::Replayed { entry_id }),
            Planned::Write(planned) => *planned,
        };
        let e = &planned.entry;
        ledger_store::write_entry(tx, &e.entry, &e.postings, e.heads(), Some(customer_key)).await?;
        self.audit
            .record_in_after(
                tx,
                &ctx.with_user(user_id),
                planned.event,
                planned.audit_head,
            )
            .await?;
        Ok(Outcome::Moved {
            entry_id: e.entry.id,
        })
    }

    /// What a deposit writes, once its accounts are locked.
    fn plan_deposit(
        &self,
        user_id: UserId,
        locked: ledger_store::Locked,
        amount: DepositAmount,
        card_name: &CardName,
    ) -> Result<Planned, LedgerError> {
        // Read under the locks: a concurrent submission with the same key may have won.
        if let Some(entry_id) = locked.replayed {
            return Ok(Planned::Replayed(entry_id));
        }
        let (cash, customer) = split_pair(locked.accounts, |a| a.id == CASH_ACCOUNT_ID)?;
        let content = EntryContent::deposit(user_id, card_name);
        let entry_id = content.id;
        let minor = amount.amount().minor();
        Ok(Planned::Write(Box::new(PlannedWrite {
            entry: self.compute_entry(&content, [(customer, minor), (cash, -minor)])?,
            event: AuditEvent::Deposit { entry_id },
            audit_head: locked.audit_head,
        })))
    }

    /// What a transfer writes, once its accounts are locked.
    fn plan_transfer(
        &self,
        user_id: UserId,
        locked: ledger_store::Locked,
        transfer: PlannedTransfer<'_>,
    ) -> Result<Planned, LedgerError> {
        let PlannedTransfer {
            to_user_id,
            amount,
            message,
            signed,
        } = transfer;
        let accounts = locked.accounts;
        if accounts.len() == 1 && accounts.iter().all(|a| a.user_id == Some(user_id)) {
            return Err(LedgerError::UnknownReceiver);
        }
        // Read under the locks: a concurrent submission with the same key may have won.
        if let Some(entry_id) = locked.replayed {
            return Ok(Planned::Replayed(entry_id));
        }
        let (from, receiver) = split_pair(accounts, |a| a.user_id == Some(user_id))?;
        let from_balance = self
            .keyring
            .open_i64(&balance_aad(from.id), &from.balance_enc)?;
        if from_balance < amount.minor() {
            return Err(LedgerError::InsufficientFunds);
        }
        let content = EntryContent::transfer(user_id, message);
        let entry_id = content.id;
        let minor = amount.minor();
        Ok(Planned::Write(Box::new(PlannedWrite {
            entry: self.compute_entry(&content, [(from, -minor), (receiver, minor)])?,
            event: AuditEvent::Transfer {
                entry_id,
                to_user_id,
                signed,
            },
            audit_head: locked.audit_head,
        })))
    }

    /// An entry, its two postings and both accounts' new heads, sealed and MACed: nothing written
    /// yet.
    fn compute_entry(
        &self,
        content: &EntryContent<'_>,
        postings: [(AccountRow, i64); 2],
    ) -> Result<ComputedEntry, LedgerError> {
        // Invariant (TigerBeetle style): the postings of an entry sum to zero.
        let sum: i64 = postings.iter().map(|(_, amount)| amount).sum();
        if sum != 0 {
            return Err(
                StoreError::Corrupt(format!("entry {} does not balance", content.id)).into(),
            );
        }
        let entry_mac = self.entry_mac(content);
        let entry = EntryRow {
            id: content.id,
            kind: content.kind,
            initiator_user_id: content.initiator_user_id,
            created_at_millis: content.created_at_millis,
            message_enc: content
                .message
                .map(|m| self.keyring.seal_str(&message_aad(content.id), m)),
            card_name_enc: content
                .card_name
                .map(|c| self.keyring.seal_str(&card_name_aad(content.id), c)),
            mac: entry_mac.to_vec(),
        };
        let account_ids = postings.each_ref().map(|(account, _)| account.id);
        // Everything is computed (and the no-negative-balance rule checked) before the first write.
        let mut rows = Vec::with_capacity(2);
        for (index, (account, amount)) in postings.into_iter().enumerate() {
            let counterparty = account_ids.get(1 - index).copied();
            let old_balance = self
                .keyring
                .open_i64(&balance_aad(account.id), &account.balance_enc)?;
            let new_balance = old_balance.checked_add(amount).ok_or_else(|| {
                StoreError::Corrupt(format!("account {} would overflow", account.id))
            })?;
            if account.kind == AccountKind::Customer && new_balance < 0 {
                // The rules above make this unreachable; refuse rather than write a negative balance.
                return Err(LedgerError::InsufficientFunds);
            }
            let seq = account.seq + 1;
            let mut posting = PostingRow {
                account_id: account.id,
                seq,
                entry_id: content.id,
                counterparty_account_id: counterparty,
                amount_enc: self.keyring.seal_i64(&amount_aad(account.id, seq), amount),
                created_at_millis: content.created_at_millis,
                prev_mac: account.head_mac.clone(),
                mac: Vec::new(),
            };
            posting.mac = self.posting_mac(&posting, amount, &entry_mac).to_vec();
            let balance_enc = self.keyring.seal_i64(&balance_aad(account.id), new_balance);
            rows.push((posting, account, balance_enc));
        }
        let [(p0, a0, b0), (p1, a1, b1)] = <[_; 2]>::try_from(rows).map_err(|_| {
            LedgerError::from(StoreError::Corrupt(format!(
                "entry {} has not two postings",
                content.id
            )))
        })?;
        Ok(ComputedEntry {
            entry,
            postings: [p0, p1],
            balances: [b0, b1],
            accounts: [a0, a1],
        })
    }

    /// Writes the entry and its two postings (no key: operator seeding), moves both account
    /// heads, and returns the accounts as they are now.
    async fn write_entry(
        &self,
        tx: &mut WriteTx,
        content: &EntryContent<'_>,
        postings: [(AccountRow, i64); 2],
    ) -> Result<[AccountRow; 2], LedgerError> {
        let computed = self.compute_entry(content, postings)?;
        ledger_store::write_entry(
            &mut Tx::Sqlx(tx),
            &computed.entry,
            &computed.postings,
            computed.heads(),
            None,
        )
        .await?;
        Ok(computed.into_accounts())
    }

    /// Many ATM deposits for one customer in one transaction (operator seeding, `alphabank seed`):
    /// the same rules, encryption, chains and audit events as [`Ledger::deposit`], one commit.
    pub async fn seed_deposits(
        &self,
        ctx: &AuditContext,
        user_id: UserId,
        amounts: &[DepositAmount],
        card_name: &CardName,
    ) -> Result<u64, LedgerError> {
        let mut tx = self.db.begin_write().await?;
        let locked = ledger_store::lock_account_and_user(
            &mut Tx::Sqlx(&mut tx),
            CASH_ACCOUNT_ID,
            user_id,
            None,
        )
        .await?;
        let (mut cash, mut customer) = split_pair(locked.accounts, |a| a.id == CASH_ACCOUNT_ID)?;
        let ctx = ctx.with_user(user_id);
        for amount in amounts {
            let content = EntryContent::deposit(user_id, card_name);
            let entry_id = content.id;
            let minor = amount.amount().minor();
            let [c, k] = self
                .write_entry(&mut tx, &content, [(customer, minor), (cash, -minor)])
                .await?;
            customer = c;
            cash = k;
            self.audit
                .record_in(&mut tx, &ctx, AuditEvent::Deposit { entry_id })
                .await?;
        }
        tx.commit().await?;
        Ok(amounts.len() as u64)
    }

    /// Page `page` (1 = newest) of a customer's history, `rows_per_page` rows. Reads only the
    /// rows of that page, through the `(account_id, seq)` key.
    pub async fn history(
        &self,
        user_id: UserId,
        page: u32,
        rows_per_page: u32,
    ) -> Result<HistoryPage, LedgerError> {
        self.history_with(user_id, None, page, rows_per_page).await
    }

    /// [`Ledger::history`] starting from the customer's account row if it was already read (with
    /// the session: one read less); reads it otherwise.
    pub async fn history_with(
        &self,
        user_id: UserId,
        known: Option<AccountRow>,
        page: u32,
        rows_per_page: u32,
    ) -> Result<HistoryPage, LedgerError> {
        let account = match known.filter(|account| account.user_id == Some(user_id)) {
            Some(account) => account,
            None => self.account_of(user_id).await?,
        };
        self.history_of(account, page, rows_per_page).await
    }

    async fn history_of(
        &self,
        account: AccountRow,
        page: u32,
        rows_per_page: u32,
    ) -> Result<HistoryPage, LedgerError> {
        let per_page = i64::from(rows_per_page.max(1));
        let total = account.seq;
        let last_page =
            u32::try_from(((total + per_page - 1) / per_page).max(1)).unwrap_or(u32::MAX);
        if page == 0 || page > last_page {
            return Err(LedgerError::NoSuchPage { last_page });
        }
        let seq_high = total - (i64::from(page) - 1) * per_page;
        let seq_low = (seq_high - per_page + 1).max(1);
        let rows = if total == 0 {
            Vec::new()
        } else {
            self.rows_between(account.id, seq_low, seq_high).await?
        };
        let balance = self.balance_of(&account)?;
        Ok(HistoryPage {
            balance,
            rows,
            page,
            last_page,
            total_rows: total,
        })
    }

    /// Rows `seq_high` down to `seq_low` of one account: those held in the row cache as they
    /// are, the others read and opened in one query (the newest rows, after a new movement).
    async fn rows_between(
        &self,
        account_id: i64,
        seq_low: i64,
        seq_high: i64,
    ) -> Result<Vec<Arc<MovementView>>, LedgerError> {
        let mut held = self.rows.range(account_id, seq_low, seq_high);
        // Newest first: held[i] is seq_high - i.
        let seq_of = |i: usize| seq_high - i as i64;
        let missing: Vec<i64> = held
            .iter()
            .enumerate()
            .filter(|(_, row)| row.is_none())
            .map(|(i, _)| seq_of(i))
            .collect();
        if let (Some(&high), Some(&low)) = (missing.first(), missing.last()) {
            let read = ledger_store::history_range(&self.db, account_id, low, high)
                .await?
                .into_iter()
                .map(|row| self.view(account_id, row).map(Arc::new))
                .collect::<Result<Vec<_>, _>>()?;
            self.rows.keep(account_id, &read);
            for row in read {
                if let Some(slot) = usize::try_from(seq_high - row.seq)
                    .ok()
                    .and_then(|i| held.get_mut(i))
                {
                    *slot = Some(row);
                }
            }
        }
        Ok(held.into_iter().flatten().collect())
    }

    /// The customer's side of one entry (a receipt), if the entry touched their account.
    pub async fn movement(
        &self,
        user_id: UserId,
        entry_id: i64,
    ) -> Result<Option<MovementView>, LedgerError> {
        let Some(account) = ledger_store::account_of_user(&self.db, user_id).await? else {
            return Ok(None);
        };
        match ledger_store::history_row_of_entry(&self.db, account.id, entry_id).await? {
            Some(row) => Ok(Some(self.view(account.id, row)?)),
            None => Ok(None),
        }
    }

    fn view(&self, account_id: i64, row: HistoryRow) -> Result<MovementView, LedgerError> {
        let amount = self
            .keyring
            .open_i64(&amount_aad(account_id, row.seq), &row.amount_enc)?;
        let message = row
            .message_enc
            .map(|ct| self.keyring.open_string(&message_aad(row.entry_id), &ct))
            .transpose()?;
        let card_name = row
            .card_name_enc
            .map(|ct| self.keyring.open_string(&card_name_aad(row.entry_id), &ct))
            .transpose()?;
        Ok(MovementView {
            entry_id: row.entry_id,
            seq: row.seq,
            created_at_millis: row.created_at_millis,
            kind: row.kind,
            amount: Money::from_minor(amount),
            counterparty: row.counterparty,
            message,
            card_name,
            display: OnceLock::new(),
        })
    }

    pub(crate) fn keyring(&self) -> &Keyring {
        &self.keyring
    }
}

/// A transfer to plan once its accounts are locked.
struct PlannedTransfer<'a> {
    to_user_id: UserId,
    amount: Amount,
    message: &'a Message,
    signed: Option<crate::audit::Signature>,
}

/// What a customer's movement moves, once its fields parsed.
#[derive(Debug, Clone)]
pub enum Move {
    /// To the customer `receiver` (`None`: no customer has the username given).
    Transfer {
        receiver: Option<UserId>,
        amount: Amount,
        message: Message,
        /// The passkey signature that confirmed it, for its audit event.
        signed: Option<crate::audit::Signature>,
    },
    /// From the bank's cash account (an ATM deposit).
    Deposit {
        amount: DepositAmount,
        card_name: CardName,
    },
}

/// [`Ledger::move_in`] as a write transaction of its own.
struct MoveWork {
    ledger: Ledger,
    ctx: AuditContext,
    user_id: UserId,
    what: Move,
    key: IdempotencyKey,
    outcome: Option<Result<Outcome, LedgerError>>,
}

impl TxWork for MoveWork {
    async fn run(&mut self, tx: &mut Tx<'_>) -> Verdict {
        let outcome = self
            .ledger
            .move_in(tx, &self.ctx, self.user_id, &self.what, &self.key)
            .await;
        let verdict = match &outcome {
            Ok(_) => Verdict::Keep,
            Err(_) => Verdict::Abort,
        };
        self.outcome = Some(outcome);
        verdict
    }
}

/// A movement's receiver: known, and not the sender.
fn transfer_receiver(user_id: UserId, receiver: Option<UserId>) -> Result<UserId, LedgerError> {
    let to_user_id = receiver.ok_or(LedgerError::UnknownReceiver)?;
    if to_user_id == user_id {
        return Err(LedgerError::SelfTransfer);
    }
    Ok(to_user_id)
}

/// What a customer's movement writes once its accounts are locked.
enum Planned {
    /// The idempotency key already moved money: this entry.
    Replayed(i64),
    Write(Box<PlannedWrite>),
}

struct PlannedWrite {
    entry: ComputedEntry,
    event: AuditEvent,
    /// The customer's audit head, read with the locks (`None`: read it when appending).
    audit_head: Option<crate::store::audit::AuditHead>,
}

/// An entry ready to write (see [`Ledger::compute_entry`]).
struct ComputedEntry {
    entry: EntryRow,
    postings: [PostingRow; 2],
    /// The accounts' new sealed balances.
    balances: [Vec<u8>; 2],
    /// The accounts as they were locked.
    accounts: [AccountRow; 2],
}

impl ComputedEntry {
    fn heads(&self) -> [AccountHead<'_>; 2] {
        let [a0, a1] = &self.accounts;
        let [p0, p1] = &self.postings;
        let [b0, b1] = &self.balances;
        fn head<'a>(a: &AccountRow, p: &'a PostingRow, balance_enc: &'a [u8]) -> AccountHead<'a> {
            AccountHead {
                id: a.id,
                balance_enc,
                seq: p.seq,
                head_mac: &p.mac,
            }
        }
        [head(a0, p0, b0), head(a1, p1, b1)]
    }

    /// The accounts with their new heads.
    fn into_accounts(self) -> [AccountRow; 2] {
        let [p0, p1] = self.postings;
        let [b0, b1] = self.balances;
        let [a0, a1] = self.accounts;
        let moved = |account: AccountRow, posting: PostingRow, balance_enc: Vec<u8>| AccountRow {
            balance_enc,
            seq: posting.seq,
            head_mac: posting.mac,
            ..account
        };
        [moved(a0, p0, b0), moved(a1, p1, b1)]
    }
}

/// Splits the two rows locked for a movement into `(the one matching is_first, the other)`.
fn split_pair(
    rows: Vec<AccountRow>,
    is_first: impl Fn(&AccountRow) -> bool,
) -> Result<(AccountRow, AccountRow), LedgerError> {
    let [a, b] = <[AccountRow; 2]>::try_from(rows).map_err(|_| LedgerError::NoAccount)?;
    if is_first(&a) && !is_first(&b) {
        Ok((a, b))
    } else if is_first(&b) && !is_first(&a) {
        Ok((b, a))
    } else {
        Err(LedgerError::NoAccount)
    }
}
