//! Pure domain types, no I/O. Each input is a newtype with a private field and a `parse` that
//! returns a typed error ("parse, don't validate"): a handler never sees a raw amount or username.

mod email;
mod idempotency;
mod money;
mod password;
mod text;
mod username;

pub use email::{Email, EmailError};
pub use idempotency::{IdempotencyKey, IdempotencyKeyError};
pub use money::{Amount, AmountError, DepositAmount, Money};
pub use password::{Password, PasswordError};
pub use text::{CardName, Message, TextError};
pub use username::{Username, UsernameError};
