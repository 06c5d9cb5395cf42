//! Row ids as types of their own, so that a customer's id cannot be passed where an account's or
//! an entry's is meant. The store reads and binds them as the integers the tables hold.

use std::fmt;

/// A customer: the id of their `users` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct UserId(i64);

impl UserId {
    pub const fn new(raw: i64) -> Self {
        UserId(raw)
    }

    pub const fn get(self) -> i64 {
        self.0
    }

    /// The id as it enters a MAC.
    pub const fn to_be_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
