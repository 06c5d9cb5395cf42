//! Usernames are public identifiers: 3–32 characters of `A–Z a–z 0–9 _ . -`, unique ignoring case.

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Username(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    #[error("Enter a username.")]
    Empty,
    #[error("A username has 3 to 32 characters.")]
    Length,
    #[error("A username may contain only letters A–Z, digits, and _ . -")]
    Characters,
}

impl Username {
    pub const LEN_MIN: usize = 3;
    pub const LEN_MAX: usize = 32;

    pub fn parse(input: &str) -> Result<Self, UsernameError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(UsernameError::Empty);
        }
        if !input
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return Err(UsernameError::Characters);
        }
        if !(Self::LEN_MIN..=Self::LEN_MAX).contains(&input.len()) {
            return Err(UsernameError::Length);
        }
        Ok(Username(input.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form used for uniqueness and lookups: usernames match ignoring case.
    pub fn lookup_key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

display_as_str!(Username);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn valid_usernames() {
        for ok in ["abc", "Alice_01", "a.b-c", &"x".repeat(32)] {
            assert_eq!(Username::parse(ok).unwrap().as_str(), ok);
        }
        assert_eq!(Username::parse("Alice").unwrap().lookup_key(), "alice");
    }

    #[test]
    fn invalid_usernames() {
        assert_eq!(Username::parse(""), Err(UsernameError::Empty));
        assert_eq!(Username::parse("ab"), Err(UsernameError::Length));
        assert_eq!(Username::parse(&"x".repeat(33)), Err(UsernameError::Length));
        for bad in [
            "al ice",
            "ålice",
            "bob!",
            "<script>",
            "a\u{0}b",
            "abc\u{202e}",
            "ab'c",
        ] {
            assert_eq!(
                Username::parse(bad),
                Err(UsernameError::Characters),
                "{bad}"
            );
        }
    }
}
