//! Passwords: 12–128 characters after Unicode NFKC (NIST SP 800-63B §5.1.1.2), any character
//! allowed, refused when too guessable: zxcvbn score below 3 (common and breached-list words,
//! keyboard patterns, dates) or built from the username or email.

use std::fmt;

use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroizing;

pub struct Password(Zeroizing<String>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("Enter a password.")]
    Empty,
    #[error("Use at least 12 characters. A few unrelated words make a strong password.")]
    TooShort,
    #[error("A password has at most 128 characters.")]
    TooLong,
    #[error("This password is built from your username or email. Choose something unrelated.")]
    FromIdentity,
    #[error(
        "This password is too easy to guess (it is common, or follows a pattern). Add more unrelated words."
    )]
    TooGuessable,
}

impl Password {
    pub const LEN_MIN: usize = 12;
    pub const LEN_MAX: usize = 128;
    /// zxcvbn score a new password must reach (0–4; 3 = "safely unguessable: 10^10 guesses").
    pub const SCORE_MIN: u8 = 3;

    /// Normalises and checks length only: for passwords being *verified* (login, current password).
    pub fn parse_existing(input: &str) -> Result<Self, PasswordError> {
        if input.is_empty() {
            return Err(PasswordError::Empty);
        }
        // Bound the work before normalising (NFKC can expand a string by a small factor).
        if input.chars().count() > Self::LEN_MAX * 4 {
            return Err(PasswordError::TooLong);
        }
        let normalised: String = input.nfkc().collect();
        let length = normalised.chars().count();
        if length > Self::LEN_MAX {
            return Err(PasswordError::TooLong);
        }
        if length < Self::LEN_MIN {
            return Err(PasswordError::TooShort);
        }
        Ok(Password(Zeroizing::new(normalised)))
    }

    /// Full check for a password being *chosen* (sign-up, password change).
    pub fn parse_new(input: &str, username: &str, email: &str) -> Result<Self, PasswordError> {
        let password = Self::parse_existing(input)?;
        let lower = password.0.to_lowercase();
        let email_local = email.split('@').next().unwrap_or_default().to_lowercase();
        let identities = [username.to_lowercase(), email.to_lowercase(), email_local];
        for identity in identities.iter().filter(|i| i.chars().count() >= 3) {
            // Built from the identity: it contains it, or it is most of the password.
            if lower.contains(identity.as_str()) || identity.contains(lower.as_str()) {
                return Err(PasswordError::FromIdentity);
            }
        }
        // The bank's own name is the first word a guesser tries.
        let mut inputs: Vec<&str> = identities.iter().map(String::as_str).collect();
        inputs.extend(["alphabank", "bank"]);
        let estimate = zxcvbn::zxcvbn(&password.0, &inputs);
        if (estimate.score() as u8) < Self::SCORE_MIN {
            return Err(PasswordError::TooGuessable);
        }
        Ok(password)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    const USER: &str = "kari.nordmann";
    const EMAIL: &str = "kari@example.no";

    #[test]
    fn the_banks_own_name_makes_a_password_guessable() {
        for password in ["alphabank2026!", "AlphaBank-2026", "alphabankoslo1"] {
            // Strong to zxcvbn on its own; a guesser of this bank tries its name first.
            assert!(zxcvbn::zxcvbn(password, &[]).score() as u8 >= Password::SCORE_MIN);
            assert_eq!(
                Password::parse_new(password, USER, EMAIL).err(),
                Some(PasswordError::TooGuessable),
                "{password}"
            );
        }
    }

    #[test]
    fn strong_passwords_pass() {
        for ok in [
            "correct horse battery staple",
            "Fjord-lantern-92-quietly",
            "ÆØÅ tåke over Bergen 1987!",
        ] {
            assert!(Password::parse_new(ok, USER, EMAIL).is_ok(), "{ok}");
        }
    }

    #[test]
    fn length_is_counted_after_nfkc() {
        assert_eq!(
            Password::parse_new("short", USER, EMAIL).unwrap_err(),
            PasswordError::TooShort
        );
        assert_eq!(
            Password::parse_new("", USER, EMAIL).unwrap_err(),
            PasswordError::Empty
        );
        assert_eq!(
            Password::parse_new(&"x".repeat(129), USER, EMAIL).unwrap_err(),
            PasswordError::TooLong
        );
        // U+FB01 (ﬁ ligature) normalises to two characters under NFKC.
        let p = Password::parse_existing(&"\u{FB01}".repeat(6)).unwrap();
        assert_eq!(p.expose(), "fi".repeat(6));
    }

    #[test]
    fn guessable_passwords_are_refused() {
        for weak in [
            "password1234",
            "qwertyuiop123",
            "123456789012",
            "aaaaaaaaaaaa",
            "iloveyou2024!",
        ] {
            assert_eq!(
                Password::parse_new(weak, USER, EMAIL).unwrap_err(),
                PasswordError::TooGuessable,
                "{weak}"
            );
        }
    }

    #[test]
    fn passwords_built_from_identity_are_refused() {
        for weak in [
            "kari.nordmann2024!",
            "kari@example.no123",
            "xkarixkarixkari",
        ] {
            assert_eq!(
                Password::parse_new(weak, USER, EMAIL).unwrap_err(),
                PasswordError::FromIdentity,
                "{weak}"
            );
        }
    }

    #[test]
    fn debug_never_prints_the_password() {
        let p = Password::parse_existing("correct horse battery staple").unwrap();
        assert!(!format!("{p:?}").contains("horse"));
    }
}
