//! Idempotency keys: issued with a money form, they make a resubmission return the first outcome.

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("This form has expired or was changed. Reload the page and try again.")]
pub struct IdempotencyKeyError;

impl IdempotencyKey {
    pub const LEN_MIN: usize = 16;
    pub const LEN_MAX: usize = 128;

    /// Syntax only: 16–128 characters of `A–Z a–z 0–9 - _ .`. Whether it was issued to this
    /// customer is checked by the web layer, which signs the keys it issues.
    pub fn parse(input: &str) -> Result<Self, IdempotencyKeyError> {
        let ok = (Self::LEN_MIN..=Self::LEN_MAX).contains(&input.len())
            && input
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(IdempotencyKey(input.to_string()))
        } else {
            Err(IdempotencyKeyError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

display_as_str!(IdempotencyKey);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax() {
        assert!(IdempotencyKey::parse("abcdefghijklmnop").is_ok());
        assert!(IdempotencyKey::parse("short").is_err());
        assert!(IdempotencyKey::parse(&"a".repeat(129)).is_err());
        assert!(IdempotencyKey::parse("abcdefghijklmnop'; DROP").is_err());
    }
}
