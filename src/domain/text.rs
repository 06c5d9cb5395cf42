//! Free text a customer writes: transfer messages (≤ 120 characters), ATM card names and passkey
//! names (1–64).
//! Characters are Unicode scalar values. Control characters are refused (they have no place in a
//! message and are a log/terminal injection vector); bidirectional text is allowed and isolated
//! when shown (`<bdi>` in the templates).

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("This field is required.")]
    Empty,
    #[error("At most {0} characters.")]
    TooLong(usize),
    #[error("Control characters are not allowed.")]
    ControlCharacter,
}

fn check(input: &str, min: usize, max: usize) -> Result<String, TextError> {
    let trimmed = input.trim();
    if trimmed.chars().any(char::is_control) {
        return Err(TextError::ControlCharacter);
    }
    let length = trimmed.chars().count();
    if length < min {
        return Err(TextError::Empty);
    }
    if length > max {
        return Err(TextError::TooLong(max));
    }
    Ok(trimmed.to_string())
}

/// A transfer message: 0–120 characters.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Message(String);

impl Message {
    pub const LEN_MAX: usize = 120;
    pub fn parse(input: &str) -> Result<Self, TextError> {
        check(input, 0, Self::LEN_MAX).map(Message)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The name on an ATM card: 1–64 characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardName(String);

impl CardName {
    pub const LEN_MAX: usize = 64;
    pub fn parse(input: &str) -> Result<Self, TextError> {
        check(input, 1, Self::LEN_MAX).map(CardName)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A customer's name for one of their passkeys: 1–64 characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasskeyName(String);

impl PasskeyName {
    pub const LEN_MAX: usize = 64;
    pub fn parse(input: &str) -> Result<Self, TextError> {
        check(input, 1, Self::LEN_MAX).map(PasskeyName)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

display_as_str!(Message, CardName, PasskeyName);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn message_limits_count_scalar_values() {
        assert!(Message::parse("").is_ok());
        assert!(Message::parse(&"ø".repeat(120)).is_ok());
        assert_eq!(
            Message::parse(&"ø".repeat(121)),
            Err(TextError::TooLong(120))
        );
        assert!(Message::parse("<script>alert(1)</script>").is_ok());
        assert!(Message::parse("abc \u{202E}cba").is_ok());
        assert_eq!(Message::parse("a\u{0}b"), Err(TextError::ControlCharacter));
        assert_eq!(Message::parse("a\nb"), Err(TextError::ControlCharacter));
    }

    #[test]
    fn card_name_limits() {
        assert_eq!(CardName::parse("  "), Err(TextError::Empty));
        assert!(CardName::parse(&"🂡".repeat(64)).is_ok());
        assert_eq!(
            CardName::parse(&"x".repeat(65)),
            Err(TextError::TooLong(64))
        );
    }
}
