//! The kinds of journal entries and ledger accounts, as their `kind` columns store them.

/// What a journal entry records: a customer's transfer or an ATM deposit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    Transfer,
    Deposit,
}

/// Whose an account is: a customer's, or the bank's cash account (the source of deposits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccountKind {
    Customer,
    Cash,
}

/// A `kind` column held a value no kind has: the row was not written by this bank.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} kind {value:?}")]
pub struct UnknownKind {
    pub what: &'static str,
    pub value: String,
}

impl EntryKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            EntryKind::Transfer => "transfer",
            EntryKind::Deposit => "deposit",
        }
    }

    pub fn parse(value: &str) -> Result<Self, UnknownKind> {
        match value {
            "transfer" => Ok(EntryKind::Transfer),
            "deposit" => Ok(EntryKind::Deposit),
            other => Err(UnknownKind {
                what: "entry",
                value: other.to_string(),
            }),
        }
    }
}

impl AccountKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            AccountKind::Customer => "customer",
            AccountKind::Cash => "cash",
        }
    }

    pub fn parse(value: &str) -> Result<Self, UnknownKind> {
        match value {
            "customer" => Ok(AccountKind::Customer),
            "cash" => Ok(AccountKind::Cash),
            other => Err(UnknownKind {
                what: "account",
                value: other.to_string(),
            }),
        }
    }
}

display_as_str!(EntryKind, AccountKind);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_kind_reads_back_what_it_writes() {
        for kind in [EntryKind::Transfer, EntryKind::Deposit] {
            assert_eq!(EntryKind::parse(kind.as_str()), Ok(kind));
        }
        for kind in [AccountKind::Customer, AccountKind::Cash] {
            assert_eq!(AccountKind::parse(kind.as_str()), Ok(kind));
        }
    }

    #[test]
    fn an_unknown_kind_is_refused_by_name() {
        let error = EntryKind::parse("Transfer").unwrap_err();
        assert_eq!(error.to_string(), "unknown entry kind \"Transfer\"");
        assert!(AccountKind::parse("").is_err());
    }
}
