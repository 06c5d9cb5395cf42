//! `alphabank verify`: every entry's postings sum to zero, every balance equals the sum of its
//! postings, total money is conserved (all balances, the cash account included, sum to zero), no
//! customer balance is negative, and the ledger and audit chains are intact. Reads one consistent
//! snapshot, so it can run beside a serving bank.
//!
//! Memory: one small record per journal entry (its MAC and running sum) while walking; about
//! 100 bytes an entry.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::AnyConnection;

use super::{
    EntryContent, Ledger, LedgerError, amount_aad, balance_aad, card_name_aad, message_aad,
};
use crate::audit::AuditLog;
use crate::domain::AccountKind;
use crate::limits::SCAN_BATCH_ROWS;
use crate::store::StoreError;
use crate::store::ledger::{self as ledger_store, AccountRow, EntryRow, PostingRow};

#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    pub accounts: u64,
    pub entries: u64,
    pub postings: u64,
    pub audit_events: u64,
    /// Money held by customers, in øre (equals minus the cash account's balance).
    pub customer_money_minor: i64,
}

/// The first record `verify` finds wrong. Its text names the record and what is wrong with it;
/// `alphabank verify` prints it after `verify FAILED: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRecord {
    #[error("journal entry id={id}: {problem}")]
    Entry { id: i64, problem: EntryProblem },
    #[error("posting account={account_id} seq={seq} (entry {entry_id}): {problem}")]
    Posting {
        account_id: i64,
        seq: i64,
        entry_id: i64,
        problem: PostingProblem,
    },
    #[error("account id={id}: {problem}")]
    Account { id: i64, problem: AccountProblem },
    /// All balances together are not zero.
    #[error("ledger: all balances sum to {total} øre instead of 0; money was created or destroyed")]
    MoneyNotConserved { total: i64 },
    /// The audit chain's own account of its first bad record (stream or event).
    #[error("{problem}")]
    AuditChain { problem: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EntryProblem {
    #[error("message does not open (edited or moved from another row)")]
    MessageDoesNotOpen,
    #[error("card name does not open (edited or moved from another row)")]
    CardNameDoesNotOpen,
    #[error("MAC mismatch; the entry was edited")]
    MacMismatch,
    /// Not two postings summing to zero.
    #[error("{postings} postings summing to {sum} øre; postings were deleted or edited")]
    Unbalanced { postings: u32, sum: i64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PostingProblem {
    #[error("expected seq {expected}; a posting was deleted or reordered")]
    OutOfSequence { expected: i64 },
    #[error("does not follow the previous posting; the chain was broken")]
    ChainBroken,
    #[error("amount does not open (edited or moved from another row)")]
    AmountDoesNotOpen,
    #[error("its journal entry is missing")]
    EntryMissing,
    #[error("MAC mismatch; the posting was edited")]
    MacMismatch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AccountProblem {
    #[error(
        "head says seq {head_seq} but the chain ends at seq {chain_seq}; postings were deleted or the head was edited"
    )]
    HeadMismatch { head_seq: i64, chain_seq: i64 },
    #[error("balance does not open (edited or moved from another row)")]
    BalanceDoesNotOpen,
    #[error("balance {balance} øre differs from the sum of its postings {sum} øre")]
    BalanceDiffers { balance: i64, sum: i64 },
    /// A customer's balance below zero.
    #[error("negative balance {balance} øre")]
    Negative { balance: i64 },
}

/// `Ok(Ok(report))` when intact, `Ok(Err(bad))` naming the first bad record.
pub async fn check(
    ledger: &Ledger,
    audit: &AuditLog,
) -> Result<Result<VerifyReport, BadRecord>, LedgerError> {
    match walk(ledger, audit).await {
        Ok(report) => Ok(Ok(report)),
        Err(Halt::Bad(bad)) => Ok(Err(bad)),
        Err(Halt::Failed(error)) => Err(error),
    }
}

/// [`check`] with the first bad record as its text.
pub async fn verify(
    ledger: &Ledger,
    audit: &AuditLog,
) -> Result<Result<VerifyReport, String>, LedgerError> {
    Ok(check(ledger, audit).await?.map_err(|bad| bad.to_string()))
}

/// Why a walk stops before its end.
enum Halt {
    Bad(BadRecord),
    Failed(LedgerError),
}

impl From<BadRecord> for Halt {
    fn from(bad: BadRecord) -> Self {
        Halt::Bad(bad)
    }
}

impl From<StoreError> for Halt {
    fn from(error: StoreError) -> Self {
        Halt::Failed(error.into())
    }
}

/// The checks in order, in one snapshot; the first bad record stops them.
async fn walk(ledger: &Ledger, audit: &AuditLog) -> Result<VerifyReport, Halt> {
    let mut snapshot = ledger.db.begin_snapshot().await?;
    let conn = snapshot.conn();
    let mut report = VerifyReport::default();
    let mut entries = check_entries(ledger, conn, &mut report).await?;
    let total = check_accounts(ledger, conn, &mut entries, &mut report).await?;
    check_entries_balance(&entries)?;
    if total != 0 {
        return Err(BadRecord::MoneyNotConserved { total }.into());
    }
    match audit.verify(conn).await? {
        Ok(events) => report.audit_events = events,
        Err(problem) => return Err(BadRecord::AuditChain { problem }.into()),
    }
    Ok(report)
}

/// A journal entry as its postings are checked against it.
struct EntryCheck {
    mac: Vec<u8>,
    sum: i64,
    postings: u32,
}

/// Every journal entry opens and matches its MAC. Returns each entry's MAC, with no postings
/// counted yet.
async fn check_entries(
    ledger: &Ledger,
    conn: &mut AnyConnection,
    report: &mut VerifyReport,
) -> Result<HashMap<i64, EntryCheck>, Halt> {
    let mut entries: HashMap<i64, EntryCheck> = HashMap::new();
    let mut after = 0;
    loop {
        let batch = ledger_store::entries_after(conn, after, SCAN_BATCH_ROWS).await?;
        let Some(last) = batch.last() else { break };
        after = last.id;
        for entry in batch {
            check_entry(ledger, &entry).map_err(|problem| BadRecord::Entry {
                id: entry.id,
                problem,
            })?;
            let check = EntryCheck {
                mac: entry.mac,
                sum: 0,
                postings: 0,
            };
            entries.insert(entry.id, check);
            report.entries += 1;
        }
    }
    Ok(entries)
}

fn check_entry(ledger: &Ledger, entry: &EntryRow) -> Result<(), EntryProblem> {
    let keyring = ledger.keyring();
    let message = match &entry.message_enc {
        Some(ct) => Some(
            keyring
                .open_string(&message_aad(entry.id), ct)
                .map_err(|_| EntryProblem::MessageDoesNotOpen)?,
        ),
        None => None,
    };
    let card_name = match &entry.card_name_enc {
        Some(ct) => Some(
            keyring
                .open_string(&card_name_aad(entry.id), ct)
                .map_err(|_| EntryProblem::CardNameDoesNotOpen)?,
        ),
        None => None,
    };
    let mac = ledger.entry_mac(&EntryContent {
        id: entry.id,
        kind: entry.kind,
        initiator_user_id: entry.initiator_user_id,
        created_at_millis: entry.created_at_millis,
        message: message.as_deref(),
        card_name: card_name.as_deref(),
    });
    if !crate::crypto::constant_time_eq(&mac, &entry.mac) {
        return Err(EntryProblem::MacMismatch);
    }
    Ok(())
}

/// Every account's chain of postings and its balance; each posting's amount is added to its
/// entry. Returns the sum of all balances.
async fn check_accounts(
    ledger: &Ledger,
    conn: &mut AnyConnection,
    entries: &mut HashMap<i64, EntryCheck>,
    report: &mut VerifyReport,
) -> Result<i64, Halt> {
    let mut total: i64 = 0;
    let mut after = 0;
    loop {
        let batch = ledger_store::accounts_after(conn, after, SCAN_BATCH_ROWS).await?;
        let Some(last) = batch.last() else { break };
        after = last.id;
        for account in batch {
            let chain = walk_chain(ledger, conn, account.id, entries).await?;
            report.postings += chain.postings;
            let balance =
                check_account(ledger, &account, &chain).map_err(|problem| BadRecord::Account {
                    id: account.id,
                    problem,
                })?;
            if account.kind == AccountKind::Customer {
                report.customer_money_minor = report.customer_money_minor.saturating_add(balance);
            }
            total = total.saturating_add(balance);
            report.accounts += 1;
        }
    }
    Ok(total)
}

/// Where an account's chain of postings ends (seq 0 and the genesis MAC when it has none), and
/// what its postings add up to.
struct ChainEnd {
    seq: i64,
    mac: Vec<u8>,
    sum: i64,
    postings: u64,
}

/// Walks one account's postings in order, each checked by [`check_posting`].
async fn walk_chain(
    ledger: &Ledger,
    conn: &mut AnyConnection,
    account_id: i64,
    entries: &mut HashMap<i64, EntryCheck>,
) -> Result<ChainEnd, Halt> {
    let mut chain = ChainEnd {
        seq: 0,
        mac: ledger.account_genesis_mac(account_id).to_vec(),
        sum: 0,
        postings: 0,
    };
    loop {
        let postings =
            ledger_store::postings_after(conn, account_id, chain.seq, SCAN_BATCH_ROWS).await?;
        if postings.is_empty() {
            break;
        }
        for posting in postings {
            let amount = check_posting(ledger, account_id, &posting, &chain, entries).map_err(
                |problem| BadRecord::Posting {
                    account_id: posting.account_id,
                    seq: posting.seq,
                    entry_id: posting.entry_id,
                    problem,
                },
            )?;
            chain.seq += 1;
            chain.mac = posting.mac;
            chain.sum = chain.sum.saturating_add(amount);
            chain.postings += 1;
        }
    }
    Ok(chain)
}

/// The posting after `chain`'s end: next in sequence, following the previous posting, opening,
/// of a known entry, and matching its MAC. Returns its amount, added to its entry's sum.
fn check_posting(
    ledger: &Ledger,
    account_id: i64,
    posting: &PostingRow,
    chain: &ChainEnd,
    entries: &mut HashMap<i64, EntryCheck>,
) -> Result<i64, PostingProblem> {
    let expected = chain.seq + 1;
    if posting.seq != expected {
        return Err(PostingProblem::OutOfSequence { expected });
    }
    if posting.prev_mac != chain.mac {
        return Err(PostingProblem::ChainBroken);
    }
    let amount = ledger
        .keyring()
        .open_i64(&amount_aad(account_id, posting.seq), &posting.amount_enc)
        .map_err(|_| PostingProblem::AmountDoesNotOpen)?;
    let entry = entries
        .get_mut(&posting.entry_id)
        .ok_or(PostingProblem::EntryMissing)?;
    if !crate::crypto::constant_time_eq(
        &ledger.posting_mac(posting, amount, &entry.mac),
        &posting.mac,
    ) {
        return Err(PostingProblem::MacMismatch);
    }
    entry.sum = entry.sum.saturating_add(amount);
    entry.postings += 1;
    Ok(amount)
}

/// The account's head names the end of its chain, its balance opens and equals the sum of its
/// postings, and a customer's is not negative. Returns the balance.
fn check_account(
    ledger: &Ledger,
    account: &AccountRow,
    chain: &ChainEnd,
) -> Result<i64, AccountProblem> {
    if chain.seq != account.seq || chain.mac != account.head_mac {
        return Err(AccountProblem::HeadMismatch {
            head_seq: account.seq,
            chain_seq: chain.seq,
        });
    }
    let balance = ledger
        .keyring()
        .open_i64(&balance_aad(account.id), &account.balance_enc)
        .map_err(|_| AccountProblem::BalanceDoesNotOpen)?;
    if balance != chain.sum {
        return Err(AccountProblem::BalanceDiffers {
            balance,
            sum: chain.sum,
        });
    }
    if account.kind == AccountKind::Customer && balance < 0 {
        return Err(AccountProblem::Negative { balance });
    }
    Ok(balance)
}

/// Every entry has two postings summing to zero; otherwise the one with the lowest id is bad.
fn check_entries_balance(entries: &HashMap<i64, EntryCheck>) -> Result<(), BadRecord> {
    let unbalanced = entries
        .iter()
        .filter(|(_, e)| e.sum != 0 || e.postings != 2)
        .min_by_key(|(id, _)| **id);
    match unbalanced {
        Some((id, entry)) => Err(BadRecord::Entry {
            id: *id,
            problem: EntryProblem::Unbalanced {
                postings: entry.postings,
                sum: entry.sum,
            },
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bad_record_names_the_record_then_the_problem() {
        let cases = [
            (
                BadRecord::Entry {
                    id: 7,
                    problem: EntryProblem::MessageDoesNotOpen,
                },
                "journal entry id=7: message does not open (edited or moved from another row)",
            ),
            (
                BadRecord::Entry {
                    id: 7,
                    problem: EntryProblem::CardNameDoesNotOpen,
                },
                "journal entry id=7: card name does not open (edited or moved from another row)",
            ),
            (
                BadRecord::Entry {
                    id: 7,
                    problem: EntryProblem::MacMismatch,
                },
                "journal entry id=7: MAC mismatch; the entry was edited",
            ),
            (
                BadRecord::Entry {
                    id: 7,
                    problem: EntryProblem::Unbalanced {
                        postings: 1,
                        sum: -500,
                    },
                },
                "journal entry id=7: 1 postings summing to -500 øre; postings were deleted or edited",
            ),
            (
                posting(PostingProblem::OutOfSequence { expected: 2 }),
                "posting account=3 seq=4 (entry 5): expected seq 2; a posting was deleted or reordered",
            ),
            (
                posting(PostingProblem::ChainBroken),
                "posting account=3 seq=4 (entry 5): does not follow the previous posting; the chain was broken",
            ),
            (
                posting(PostingProblem::AmountDoesNotOpen),
                "posting account=3 seq=4 (entry 5): amount does not open (edited or moved from another row)",
            ),
            (
                posting(PostingProblem::EntryMissing),
                "posting account=3 seq=4 (entry 5): its journal entry is missing",
            ),
            (
                posting(PostingProblem::MacMismatch),
                "posting account=3 seq=4 (entry 5): MAC mismatch; the posting was edited",
            ),
            (
                account(AccountProblem::HeadMismatch {
                    head_seq: 4,
                    chain_seq: 3,
                }),
                "account id=3: head says seq 4 but the chain ends at seq 3; postings were deleted or the head was edited",
            ),
            (
                account(AccountProblem::BalanceDoesNotOpen),
                "account id=3: balance does not open (edited or moved from another row)",
            ),
            (
                account(AccountProblem::BalanceDiffers {
                    balance: 100,
                    sum: 90,
                }),
                "account id=3: balance 100 øre differs from the sum of its postings 90 øre",
            ),
            (
                account(AccountProblem::Negative { balance: -1 }),
                "account id=3: negative balance -1 øre",
            ),
            (
                BadRecord::MoneyNotConserved { total: 12 },
                "ledger: all balances sum to 12 øre instead of 0; money was created or destroyed",
            ),
            (
                BadRecord::AuditChain {
                    problem: "audit stream user:1: its head record is missing".into(),
                },
                "audit stream user:1: its head record is missing",
            ),
        ];
        for (bad, text) in cases {
            assert_eq!(bad.to_string(), text);
        }
    }

    fn posting(problem: PostingProblem) -> BadRecord {
        BadRecord::Posting {
            account_id: 3,
            seq: 4,
            entry_id: 5,
            problem,
        }
    }

    fn account(problem: AccountProblem) -> BadRecord {
        BadRecord::Account { id: 3, problem }
    }
}
