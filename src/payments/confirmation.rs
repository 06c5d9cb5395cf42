//! A reviewed transfer's confirmation (CONTRACT §6): what the review page showed, carried by the
//! confirm form as one opaque field. The token is `base64url(payload).base64url(MAC)`; the MAC
//! (the keyring's MAC key) covers the payload, which names the customer, the amount, the
//! receiver, the message, the idempotency key, when it was issued and a random nonce. Nothing in
//! it can change without the MAC failing, it cannot be used by another customer, and it expires
//! after [`CONFIRMATION_TTL_MILLIS`]. It is used once because its idempotency key moves money
//! once: a confirmation whose key already moved money answers that receipt.
//!
//! No row is stored: a review costs no write, and nothing is left behind by reviews never
//! confirmed. The review's checked captcha travels in the token and is spent in the
//! confirmation's movement transaction (a challenge confirms one transfer at most), so a
//! transfer is one write transaction.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::captcha::PendingSpend;
use crate::crypto::Keyring;
use crate::domain::{Amount, IdempotencyKey, Message, UserId, Username};

/// How long a review may be confirmed.
pub const CONFIRMATION_TTL_MILLIS: i64 = 5 * 60 * 1_000;
/// The longest token accepted (a 120-character message of 4-byte characters fits with room).
pub const CONFIRMATION_LEN_MAX: usize = 2_048;
/// A token issued this far in the future is refused (clocks of several instances may differ).
const CLOCK_SKEW_MILLIS: i64 = 60 * 1_000;
const MAC_DOMAIN: &[u8] = b"transfer-confirmation-v1";

/// A transfer as the customer reviewed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reviewed {
    pub customer: UserId,
    pub amount: Amount,
    /// The receiver's username, lower case (usernames match ignoring case).
    pub to: Username,
    pub message: Message,
    pub key: IdempotencyKey,
    pub issued_millis: i64,
    /// Random, hex: makes each review's text, and so a passkey challenge over it, unique.
    pub nonce: String,
    /// The review's captcha, checked but not yet spent.
    pub captcha: Option<PendingSpend>,
}

/// Why a confirmation is refused (each answers 400: review the transfer again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConfirmationError {
    #[error("the confirmation is malformed")]
    Malformed,
    #[error("the confirmation was changed or not issued here")]
    Forged,
    #[error("the confirmation was issued to another customer")]
    OtherCustomer,
    #[error("the confirmation has expired")]
    Expired,
}

impl ConfirmationError {
    /// The audit event's reason.
    pub fn reason(self) -> &'static str {
        match self {
            ConfirmationError::Malformed | ConfirmationError::Forged => "bad_confirmation",
            ConfirmationError::OtherCustomer => "foreign_confirmation",
            ConfirmationError::Expired => "expired_confirmation",
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Payload {
    customer: i64,
    amount_minor: i64,
    to: String,
    message: String,
    key: String,
    issued_millis: i64,
    nonce: String,
    #[serde(default)]
    captcha: Option<(String, i64)>,
}

impl Reviewed {
    /// A new review of a transfer, issued now with a fresh nonce.
    pub fn new(
        customer: UserId,
        amount: Amount,
        to: &Username,
        message: Message,
        key: IdempotencyKey,
        captcha: Option<PendingSpend>,
    ) -> Reviewed {
        let to = Username::parse(&to.lookup_key()).unwrap_or_else(|_| to.clone());
        Reviewed {
            customer,
            amount,
            to,
            message,
            key,
            issued_millis: crate::now_millis(),
            nonce: hex::encode(crate::crypto::random_bytes::<16>()),
            captcha,
        }
    }

    /// The payment's canonical text (CONTRACT §7): what a passkey signature covers.
    pub fn canonical_text(&self) -> String {
        format!(
            "alphabank-payment-v1\n{}\n{}\n{}\n{}\n{}",
            self.amount.minor(),
            self.to.lookup_key(),
            self.message.as_str(),
            self.key.as_str(),
            self.nonce
        )
    }

    /// SHA-256 of [`Reviewed::canonical_text`]: recorded with the movement.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.canonical_text().as_bytes()).into()
    }

    /// The token the confirm form carries.
    pub fn seal(&self, keyring: &Keyring) -> String {
        let payload = Payload {
            customer: self.customer.get(),
            amount_minor: self.amount.minor(),
            to: self.to.as_str().to_string(),
            message: self.message.as_str().to_string(),
            key: self.key.as_str().to_string(),
            issued_millis: self.issued_millis,
            nonce: self.nonce.clone(),
            captcha: self.captcha.as_ref().map(PendingSpend::to_parts),
        };
        let json = serde_json::to_vec(&payload).unwrap_or_default();
        let mac = keyring.mac(&[MAC_DOMAIN, &json]);
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&json),
            URL_SAFE_NO_PAD.encode(mac)
        )
    }

    /// `Err(Expired)` when the review is older than [`CONFIRMATION_TTL_MILLIS`] at `now_millis`.
    pub fn check_age(&self, now_millis: i64) -> Result<(), ConfirmationError> {
        let age = now_millis.saturating_sub(self.issued_millis);
        if (-CLOCK_SKEW_MILLIS..=CONFIRMATION_TTL_MILLIS).contains(&age) {
            Ok(())
        } else {
            Err(ConfirmationError::Expired)
        }
    }

    /// The review a token names, if its MAC holds and it was issued to `customer`. Its age is
    /// checked apart ([`Reviewed::check_age`]): a confirmation whose key already moved money
    /// answers its receipt however old it is.
    pub fn open(
        keyring: &Keyring,
        customer: UserId,
        token: &str,
    ) -> Result<Reviewed, ConfirmationError> {
        let token = token.trim();
        if token.len() > CONFIRMATION_LEN_MAX {
            return Err(ConfirmationError::Malformed);
        }
        let (payload, mac) = token.split_once('.').ok_or(ConfirmationError::Malformed)?;
        let json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| ConfirmationError::Malformed)?;
        let mac = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| ConfirmationError::Malformed)?;
        if !keyring.verify_mac(&[MAC_DOMAIN, &json], &mac) {
            return Err(ConfirmationError::Forged);
        }
        let payload: Payload =
            serde_json::from_slice(&json).map_err(|_| ConfirmationError::Malformed)?;
        if payload.customer != customer.get() {
            return Err(ConfirmationError::OtherCustomer);
        }
        // The MAC holds, so these parsed when the token was made; parsing again keeps the types.
        let malformed = |_| ConfirmationError::Malformed;
        Ok(Reviewed {
            customer,
            amount: Amount::from_minor(payload.amount_minor).map_err(malformed)?,
            to: Username::parse(&payload.to).map_err(|_| ConfirmationError::Malformed)?,
            message: Message::parse(&payload.message).map_err(|_| ConfirmationError::Malformed)?,
            key: IdempotencyKey::parse(&payload.key).map_err(|_| ConfirmationError::Malformed)?,
            issued_millis: payload.issued_millis,
            nonce: payload.nonce,
            captcha: match payload.captcha {
                Some((key, keep_until)) => Some(
                    PendingSpend::from_parts(&key, keep_until)
                        .ok_or(ConfirmationError::Malformed)?,
                ),
                None => None,
            },
        })
    }
}
