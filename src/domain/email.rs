//! Email addresses: a valid address of at most 254 characters, unique ignoring case.
//! Stored encrypted; found through an HMAC blind index of [`Email::lookup_key`].

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Email(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("Enter an email address.")]
    Empty,
    #[error("An email address has at most 254 characters.")]
    TooLong,
    #[error("Enter a valid email address, like name@example.com.")]
    Invalid,
}

impl Email {
    pub const LEN_MAX: usize = 254;

    pub fn parse(input: &str) -> Result<Self, EmailError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(EmailError::Empty);
        }
        if input.chars().count() > Self::LEN_MAX {
            return Err(EmailError::TooLong);
        }
        let (local, domain) = input.rsplit_once('@').ok_or(EmailError::Invalid)?;
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !(local_ok && domain_ok) {
            return Err(EmailError::Invalid);
        }
        Ok(Email(input.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form used for uniqueness and lookups: emails match ignoring case.
    pub fn lookup_key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

/// Emails are personal data: `Debug` does not print them.
impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Email(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn valid_emails() {
        for ok in [
            "a@b.no",
            "first.last+tag@sub.example.com",
            "X_Y@EXAMPLE.ORG",
        ] {
            assert!(Email::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            Email::parse("Alice@Example.COM").unwrap().lookup_key(),
            "alice@example.com"
        );
    }

    #[test]
    fn invalid_emails() {
        assert_eq!(Email::parse(" "), Err(EmailError::Empty));
        let long = format!("{}@{}.com", "a".repeat(60), "b".repeat(200));
        assert_eq!(Email::parse(&long), Err(EmailError::TooLong));
        for bad in [
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a b@c.no",
            "a@b..no",
            ".a@b.no",
            "a..b@c.no",
            "a@-b.no",
            "a@b.no\u{7}",
            "a\u{0}@b.no",
            "<a>@b.no",
            "a@b_c.no",
            "æ@b.no",
        ] {
            assert_eq!(Email::parse(bad), Err(EmailError::Invalid), "{bad:?}");
        }
    }
}
