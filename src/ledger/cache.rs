//! Decrypted history rows, kept in memory because a posting never changes once written.
//!
//! A posting is identified by `(account_id, seq)`; postings are append-only (the tamper-evident
//! chain depends on it) and the usernames they name are never renamed, so the decrypted view of
//! a row stays true for as long as the row exists, on every instance that shares the database.
//! There is nothing to invalidate: a new movement gets a new `seq`, which is simply a miss.
//!
//! Bounded: two generations of at most [`HISTORY_CACHE_ROWS`] rows each. When the young
//! generation fills up it becomes the old one and the previous old one is dropped; a hit in the
//! old generation moves the row back to the young one. Memory is at most twice the bound times
//! the largest row (a 120-character message, a 64-character card name, a username).
//!
//! What it trades: plaintext amounts and messages of recently viewed rows stay in the server's
//! memory between requests (they were there during each request before). The process memory is
//! already trusted with the data keys that open every row; see `docs/security.md`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::MovementView;
use crate::limits::HISTORY_CACHE_ROWS;

type Key = (i64, i64);

#[derive(Default)]
struct Generations {
    young: HashMap<Key, Arc<MovementView>>,
    old: HashMap<Key, Arc<MovementView>>,
}

impl Generations {
    fn insert(&mut self, key: Key, row: Arc<MovementView>) {
        if self.young.len() >= HISTORY_CACHE_ROWS {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key, row);
    }
}

#[derive(Clone, Default)]
pub(crate) struct RowCache {
    inner: Arc<Mutex<Generations>>,
}

// Never prints the rows: they are plaintext amounts and messages.
impl std::fmt::Debug for RowCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RowCache")
    }
}

impl RowCache {
    /// The rows `seq_high` down to `seq_low` of `account_id` (newest first): `Some` for each row
    /// held, `None` for each row that must be read.
    pub(crate) fn range(
        &self,
        account_id: i64,
        seq_low: i64,
        seq_high: i64,
    ) -> Vec<Option<Arc<MovementView>>> {
        // A poisoned lock only means another thread panicked while holding it; the maps are
        // still valid (every update is a single insert or swap).
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        (seq_low..=seq_high)
            .rev()
            .map(|seq| {
                let key = (account_id, seq);
                if let Some(row) = g.young.get(&key) {
                    return Some(row.clone());
                }
                let row = g.old.remove(&key)?;
                g.insert(key, row.clone());
                Some(row)
            })
            .collect()
    }

    pub(crate) fn keep(&self, account_id: i64, rows: &[Arc<MovementView>]) {
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        for row in rows {
            g.insert((account_id, row.seq), row.clone());
        }
    }

    #[cfg(test)]
    fn holds(&self, account_id: i64, seq: i64) -> bool {
        self.range(account_id, seq, seq).iter().all(Option::is_some)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        g.young.len() + g.old.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Money;

    fn row(seq: i64) -> Arc<MovementView> {
        Arc::new(MovementView {
            entry_id: seq,
            seq,
            created_at_millis: 0,
            kind: crate::domain::EntryKind::Deposit,
            amount: Money::from_minor(seq),
            counterparty: None,
            message: None,
            card_name: None,
            display: std::sync::OnceLock::new(),
        })
    }

    #[test]
    fn a_range_reports_what_it_holds_and_what_must_be_read() {
        let cache = RowCache::default();
        cache.keep(1, &[row(2), row(3)]);
        cache.keep(9, &[row(4)]);
        let got: Vec<Option<i64>> = cache
            .range(1, 1, 4)
            .into_iter()
            .map(|r| r.map(|r| r.seq))
            .collect();
        assert_eq!(got, vec![None, Some(3), Some(2), None]);
    }

    #[test]
    fn the_cache_never_holds_more_than_two_generations() {
        let cache = RowCache::default();
        let many: Vec<_> = (0..(3 * HISTORY_CACHE_ROWS as i64)).map(row).collect();
        cache.keep(1, &many);
        assert!(cache.len() <= 2 * HISTORY_CACHE_ROWS);
        // The newest rows are still there; the oldest are gone.
        let newest = 3 * HISTORY_CACHE_ROWS as i64 - 1;
        assert!(cache.holds(1, newest));
        assert!(!cache.holds(1, 0));
    }

    #[test]
    fn a_hit_in_the_old_generation_survives_the_next_turnover() {
        let cache = RowCache::default();
        cache.keep(1, &[row(0)]);
        let filler: Vec<_> = (1..=(HISTORY_CACHE_ROWS as i64)).map(row).collect();
        cache.keep(2, &filler); // row 0 of account 1 is now old
        assert!(cache.holds(1, 0)); // … and back in the young generation
        let filler: Vec<_> = (1..(HISTORY_CACHE_ROWS as i64)).map(row).collect();
        cache.keep(3, &filler);
        assert!(cache.holds(1, 0));
    }
}
