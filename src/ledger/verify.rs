//! `alphabank verify`: every entry's postings sum to zero, every balance equals the sum of its
//! postings, total money is conserved (all balances, the cash account included, sum to zero), no
//! customer balance is negative, and the ledger and audit chains are intact. Reads one consistent
//! snapshot, so it can run beside a serving bank.
//!
//! Memory: one small record per journal entry (its MAC and running sum) while walking; about
//! 100 bytes an entry.

use std::collections::HashMap;

use serde::Serialize;

use super::{
    EntryContent, Ledger, LedgerError, amount_aad, balance_aad, card_name_aad, message_aad,
};
use crate::audit::AuditLog;
use crate::limits::SCAN_BATCH_ROWS;
use crate::store::ledger as ledger_store;

#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    pub accounts: u64,
    pub entries: u64,
    pub postings: u64,
    pub audit_events: u64,
    /// Money held by customers, in øre (equals minus the cash account's balance).
    pub customer_money_minor: i64,
}

struct EntryCheck {
    mac: Vec<u8>,
    sum: i64,
    postings: u32,
}

/// `Ok(Ok(report))` when intact, `Ok(Err(message))` naming the first bad record.
pub async fn verify(
    ledger: &Ledger,
    audit: &AuditLog,
) -> Result<Result<VerifyReport, String>, LedgerError> {
    let mut snapshot = ledger.db.begin_snapshot().await?;
    let conn = snapshot.conn();
    let keyring = ledger.keyring();
    let mut report = VerifyReport::default();

    // 1. Entries: each opens and matches its MAC.
    let mut entries: HashMap<i64, EntryCheck> = HashMap::new();
    let mut after = 0;
    loop {
        let batch = ledger_store::entries_after(conn, after, SCAN_BATCH_ROWS).await?;
        let Some(last) = batch.last() else { break };
        after = last.id;
        for entry in batch {
            let at = format!("journal entry id={}", entry.id);
            let message = match &entry.message_enc {
                Some(ct) => match keyring.open_string(&message_aad(entry.id), ct) {
                    Ok(m) => Some(m),
                    Err(_) => {
                        return Ok(Err(format!(
                            "{at}: message does not open (edited or moved from another row)"
                        )));
                    }
                },
                None => None,
            };
            let card_name = match &entry.card_name_enc {
                Some(ct) => match keyring.open_string(&card_name_aad(entry.id), ct) {
                    Ok(c) => Some(c),
                    Err(_) => {
                        return Ok(Err(format!(
                            "{at}: card name does not open (edited or moved from another row)"
                        )));
                    }
                },
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
                return Ok(Err(format!("{at}: MAC mismatch; the entry was edited")));
            }
            entries.insert(
                entry.id,
                EntryCheck {
                    mac: entry.mac,
                    sum: 0,
                    postings: 0,
                },
            );
            report.entries += 1;
        }
    }

    // 2. Accounts: walk each account's chain; the balance equals the sum of its postings.
    let mut total: i64 = 0;
    let mut after = 0;
    loop {
        let batch = ledger_store::accounts_after(conn, after, SCAN_BATCH_ROWS).await?;
        let Some(last) = batch.last() else { break };
        after = last.id;
        for account in batch {
            let mut running = ledger.account_genesis_mac(account.id).to_vec();
            let mut sum: i64 = 0;
            let mut expected_seq = 1;
            loop {
                let postings = ledger_store::postings_after(
                    conn,
                    account.id,
                    expected_seq - 1,
                    SCAN_BATCH_ROWS,
                )
                .await?;
                if postings.is_empty() {
                    break;
                }
                for posting in postings {
                    let at = format!(
                        "posting account={} seq={} (entry {})",
                        posting.account_id, posting.seq, posting.entry_id
                    );
                    if posting.seq != expected_seq {
                        return Ok(Err(format!(
                            "{at}: expected seq {expected_seq}; a posting was deleted or reordered"
                        )));
                    }
                    if posting.prev_mac != running {
                        return Ok(Err(format!(
                            "{at}: does not follow the previous posting; the chain was broken"
                        )));
                    }
                    let Ok(amount) =
                        keyring.open_i64(&amount_aad(account.id, posting.seq), &posting.amount_enc)
                    else {
                        return Ok(Err(format!(
                            "{at}: amount does not open (edited or moved from another row)"
                        )));
                    };
                    let Some(entry) = entries.get_mut(&posting.entry_id) else {
                        return Ok(Err(format!("{at}: its journal entry is missing")));
                    };
                    if !crate::crypto::constant_time_eq(
                        &ledger.posting_mac(&posting, amount, &entry.mac),
                        &posting.mac,
                    ) {
                        return Ok(Err(format!("{at}: MAC mismatch; the posting was edited")));
                    }
                    entry.sum = entry.sum.saturating_add(amount);
                    entry.postings += 1;
                    sum = sum.saturating_add(amount);
                    running = posting.mac;
                    expected_seq += 1;
                    report.postings += 1;
                }
            }
            let at = format!("account id={}", account.id);
            if expected_seq - 1 != account.seq || running != account.head_mac {
                return Ok(Err(format!(
                    "{at}: head says seq {} but the chain ends at seq {}; postings were deleted or the head was edited",
                    account.seq,
                    expected_seq - 1
                )));
            }
            let Ok(balance) = keyring.open_i64(&balance_aad(account.id), &account.balance_enc)
            else {
                return Ok(Err(format!(
                    "{at}: balance does not open (edited or moved from another row)"
                )));
            };
            if balance != sum {
                return Ok(Err(format!(
                    "{at}: balance {balance} øre differs from the sum of its postings {sum} øre"
                )));
            }
            if account.kind == crate::domain::AccountKind::Customer {
                if balance < 0 {
                    return Ok(Err(format!("{at}: negative balance {balance} øre")));
                }
                report.customer_money_minor = report.customer_money_minor.saturating_add(balance);
            }
            total = total.saturating_add(balance);
            report.accounts += 1;
        }
    }

    // 3. Every entry balances and has its postings.
    let mut unbalanced: Vec<(&i64, &EntryCheck)> = entries
        .iter()
        .filter(|(_, e)| e.sum != 0 || e.postings != 2)
        .collect();
    unbalanced.sort_by_key(|(id, _)| **id);
    if let Some((id, entry)) = unbalanced.first() {
        return Ok(Err(format!(
            "journal entry id={id}: {} postings summing to {} øre; postings were deleted or edited",
            entry.postings, entry.sum
        )));
    }

    // 4. Conservation: money is neither created nor destroyed.
    if total != 0 {
        return Ok(Err(format!(
            "ledger: all balances sum to {total} øre instead of 0; money was created or destroyed"
        )));
    }

    // 5. The audit chain.
    match audit.verify(conn).await? {
        Ok(events) => report.audit_events = events,
        Err(message) => return Ok(Err(message)),
    }
    Ok(Ok(report))
}
