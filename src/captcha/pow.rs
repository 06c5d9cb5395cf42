//! The built-in proof-of-work captcha (CONTRACT §4): stateless, MAC-signed challenges.
//!
//! It exists so that the bank needs no third party to slow down scripted sign-ups and password
//! guessing: a challenge costs the server one HMAC to issue and nothing to store, and costs the
//! browser about 2^bits SHA-256 evaluations to solve. A challenge is a self-contained token
//!
//! ```text
//! v1.<salt: 32 lowercase hex>.<bits: decimal>.<expires_at: Unix seconds, decimal>.<mac: 64 lowercase hex>
//! ```
//!
//! where `mac` is the keyring's MAC over the domain tag `captcha-pow`, the version and the decoded
//! fields. Only the canonical spelling is accepted, so one issued challenge has exactly one string
//! form (the replay store keys on it). The browser finds a decimal `nonce` such that
//! SHA-256(`challenge` + `":"` + `nonce`) begins with at least `bits` zero bits.

use sha2::{Digest, Sha256};

use crate::crypto::{Keyring, constant_time_eq, random_bytes};

/// How long an issued challenge stays valid (CONTRACT §4: 10 minutes).
pub const POW_CHALLENGE_TTL_SECS: i64 = 10 * 60;
/// Longest challenge string accepted; a real one is about 120 bytes.
pub const POW_CHALLENGE_BYTES_MAX: usize = 200;
/// Longest nonce accepted, in decimal digits (a `u64` has at most 20).
pub const POW_NONCE_DIGITS_MAX: usize = 20;
/// Random salt per challenge, which makes every challenge unique.
pub const POW_SALT_BYTES: usize = 16;
/// Accepted difficulty range (the configuration allows the same).
pub const POW_BITS_MIN: u8 = 1;
pub const POW_BITS_MAX: u8 = 32;

const TOKEN_VERSION: &str = "v1";
const MAC_DOMAIN: &[u8] = b"captcha-pow";

/// The decoded fields of a well-formed challenge (its MAC not yet checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub salt: [u8; POW_SALT_BYTES],
    pub bits: u8,
    pub expires_at_secs: i64,
    pub mac: [u8; 32],
}

fn mac_of(keyring: &Keyring, salt: &[u8], bits: u8, expires_at_secs: i64) -> [u8; 32] {
    keyring.mac(&[
        MAC_DOMAIN,
        TOKEN_VERSION.as_bytes(),
        salt,
        &[bits],
        &expires_at_secs.to_be_bytes(),
    ])
}

fn encode(salt: &[u8], bits: u8, expires_at_secs: i64, mac: &[u8]) -> String {
    format!(
        "{TOKEN_VERSION}.{}.{bits}.{expires_at_secs}.{}",
        hex::encode(salt),
        hex::encode(mac)
    )
}

/// Mints a challenge of difficulty `bits` that expires `POW_CHALLENGE_TTL_SECS` after `now_secs`.
pub(crate) fn mint(keyring: &Keyring, bits: u8, now_secs: i64) -> String {
    let salt = random_bytes::<POW_SALT_BYTES>();
    let expires_at_secs = now_secs.saturating_add(POW_CHALLENGE_TTL_SECS);
    let mac = mac_of(keyring, &salt, bits, expires_at_secs);
    encode(&salt, bits, expires_at_secs, &mac)
}

/// Decodes a challenge; `None` unless it is in exactly the canonical form [`mint`] produces.
pub(crate) fn parse(challenge: &str) -> Option<Challenge> {
    if challenge.len() > POW_CHALLENGE_BYTES_MAX || !challenge.is_ascii() {
        return None;
    }
    let mut parts = challenge.split('.');
    let (version, salt_hex, bits_text, expires_text, mac_hex) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if parts.next().is_some() || version != TOKEN_VERSION {
        return None;
    }
    let salt: [u8; POW_SALT_BYTES] = hex::decode(salt_hex).ok()?.try_into().ok()?;
    let mac: [u8; 32] = hex::decode(mac_hex).ok()?.try_into().ok()?;
    if !bits_text.bytes().all(|b| b.is_ascii_digit())
        || !expires_text.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let bits: u8 = bits_text.parse().ok()?;
    let expires_at_secs: i64 = expires_text.parse().ok()?;
    if !(POW_BITS_MIN..=POW_BITS_MAX).contains(&bits) {
        return None;
    }
    // One spelling only (lowercase hex, no leading zeros, no sign), so that a spent challenge
    // cannot be replayed under another spelling of the same signed fields.
    if encode(&salt, bits, expires_at_secs, &mac) != challenge {
        return None;
    }
    Some(Challenge {
        salt,
        bits,
        expires_at_secs,
        mac,
    })
}

impl Challenge {
    /// Whether this server's keyring signed these fields (constant-time comparison).
    pub(crate) fn signed_by(&self, keyring: &Keyring) -> bool {
        let expected = mac_of(keyring, &self.salt, self.bits, self.expires_at_secs);
        constant_time_eq(&expected, &self.mac)
    }
}

/// Whether `nonce` has the accepted form: 1 to `POW_NONCE_DIGITS_MAX` ASCII digits.
pub(crate) fn nonce_is_well_formed(nonce: &str) -> bool {
    (1..=POW_NONCE_DIGITS_MAX).contains(&nonce.len()) && nonce.bytes().all(|b| b.is_ascii_digit())
}

/// Number of leading zero bits of `bytes`, most significant bit of the first byte first.
pub fn leading_zero_bits(bytes: &[u8]) -> u32 {
    let mut zeros = 0;
    for byte in bytes {
        if *byte == 0 {
            zeros += 8;
        } else {
            zeros += byte.leading_zeros();
            break;
        }
    }
    zeros
}

/// The work a `nonce` represents for `challenge`: the leading zero bits of
/// SHA-256(`challenge` + `":"` + `nonce`).
pub fn work_bits(challenge: &str, nonce: &str) -> u32 {
    let digest = Sha256::new()
        .chain_update(challenge.as_bytes())
        .chain_update(b":")
        .chain_update(nonce.as_bytes())
        .finalize();
    leading_zero_bits(&digest)
}

/// The replay-store key of a (canonical) challenge: a hash, so the table holds no tokens.
pub(crate) fn spent_key(challenge: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"alphabank.captcha-spent.v1|")
        .chain_update(challenge.as_bytes())
        .finalize()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_leading_zero_bits() {
        assert_eq!(leading_zero_bits(&[]), 0);
        assert_eq!(leading_zero_bits(&[0x80]), 0);
        assert_eq!(leading_zero_bits(&[0x01]), 7);
        assert_eq!(leading_zero_bits(&[0x00, 0xff]), 8);
        assert_eq!(leading_zero_bits(&[0x00, 0x00, 0x20, 0x00]), 18);
        assert_eq!(leading_zero_bits(&[0x00; 32]), 256);
    }

    #[test]
    fn parses_only_the_canonical_form() {
        let salt = [7u8; POW_SALT_BYTES];
        let mac = [9u8; 32];
        let good = encode(&salt, 18, 1_700_000_000, &mac);
        let parsed = parse(&good);
        assert_eq!(
            parsed,
            Some(Challenge {
                salt,
                bits: 18,
                expires_at_secs: 1_700_000_000,
                mac
            })
        );
        for bad in [
            good.to_uppercase(),
            good.replace(".18.", ".018."),
            good.replace(".18.", ".+18."),
            good.replace(".18.", ".0."),
            good.replace(".18.", ".33."),
            good.replace(".1700000000.", ".-1700000000."),
            good.replace("v1.", "v2."),
            format!("{good}."),
            format!("{good}00"),
            String::new(),
            "v1....".into(),
            "x".repeat(POW_CHALLENGE_BYTES_MAX + 1),
        ] {
            assert_eq!(parse(&bad), None, "{bad}");
        }
    }

    #[test]
    fn nonce_form() {
        assert!(nonce_is_well_formed("0"));
        assert!(nonce_is_well_formed("18446744073709551615"));
        assert!(!nonce_is_well_formed(""));
        assert!(!nonce_is_well_formed("123456789012345678901"));
        assert!(!nonce_is_well_formed("12a"));
        assert!(!nonce_is_well_formed("-1"));
        assert!(!nonce_is_well_formed("١٢"));
    }
}
