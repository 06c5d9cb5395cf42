//! Pure domain types, no I/O. Each input is a newtype with a private field and a `parse` that
//! returns a typed error ("parse, don't validate"): a handler never sees a raw amount or username.

/// `Display` as the type's `as_str()`: the text a customer typed, or a kind's stored name.
macro_rules! display_as_str {
    ($($type:ty),+) => {
        $(impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        })+
    };
}

pub mod browser;
mod email;
mod idempotency;
mod ids;
mod kinds;
mod money;
mod password;
mod text;
mod username;

pub use email::{Email, EmailError};
pub use idempotency::{IdempotencyKey, IdempotencyKeyError};
pub use ids::UserId;
pub use kinds::{AccountKind, EntryKind, UnknownKind};
pub use money::{Amount, AmountError, DepositAmount, Money};
pub use password::{Password, PasswordError};
pub use text::{CardName, Message, PasskeyName, TextError};
pub use username::{Username, UsernameError};
