//! Time-based one-time passwords, RFC 6238 (TOTP) over RFC 4226 (HOTP): HMAC-SHA-1, 6 digits,
//! 30-second steps, 160-bit secrets. A code of step s is accepted for s−1 ≤ step ≤ s+1, and only
//! if its step is greater than the last step accepted for that user (replay protection is the
//! caller's atomic update, see `store::users::spend_totp_step`).

use data_encoding::BASE32_NOPAD;
use hmac::{Hmac, Mac};
use sha1::Sha1;

pub const TOTP_STEP_SECS: i64 = 30;
pub const TOTP_DIGITS: u32 = 6;
pub const TOTP_SECRET_BYTES: usize = 20;
pub const ISSUER: &str = "AlphaBank";

/// A TOTP secret (20 random bytes).
pub struct TotpSecret(zeroize::Zeroizing<Vec<u8>>);

impl TotpSecret {
    pub fn generate() -> Self {
        TotpSecret(zeroize::Zeroizing::new(
            crate::crypto::random_bytes::<TOTP_SECRET_BYTES>().to_vec(),
        ))
    }

    pub fn from_bytes(bytes: &[u8]) -> Self {
        TotpSecret(zeroize::Zeroizing::new(bytes.to_vec()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Base32 without padding, as authenticator apps expect.
    pub fn base32(&self) -> String {
        BASE32_NOPAD.encode(&self.0)
    }

    /// `otpauth://totp/AlphaBank:<username>?secret=…&issuer=AlphaBank&algorithm=SHA1&digits=6&period=30`
    pub fn otpauth_uri(&self, username: &str) -> String {
        format!(
            "otpauth://totp/{ISSUER}:{username}?secret={}&issuer={ISSUER}&algorithm=SHA1&digits={TOTP_DIGITS}&period={TOTP_STEP_SECS}",
            self.base32()
        )
    }

    /// HOTP value for a counter (RFC 4226 §5.3 dynamic truncation).
    pub fn code_at_step(&self, step: i64) -> u32 {
        let Ok(mut mac) = <Hmac<Sha1> as Mac>::new_from_slice(&self.0) else {
            return u32::MAX;
        };
        mac.update(&step.to_be_bytes());
        let digest = mac.finalize().into_bytes();
        let offset = usize::from(digest.get(19).copied().unwrap_or(0) & 0x0f);
        let word = digest
            .get(offset..offset + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .unwrap_or([0; 4]);
        (u32::from_be_bytes(word) & 0x7fff_ffff) % 10u32.pow(TOTP_DIGITS)
    }

    /// The step (within ±1 of now) whose code equals `code`, if any. Compared in constant time.
    pub fn matching_step(&self, code: &str, now_secs: i64) -> Option<i64> {
        let current = now_secs.div_euclid(TOTP_STEP_SECS);
        let mut found = None;
        for step in [current - 1, current, current + 1] {
            let expected = format!("{:06}", self.code_at_step(step));
            if crate::crypto::constant_time_eq(expected.as_bytes(), code.as_bytes()) {
                found = Some(step);
            }
        }
        found
    }
}

/// The code a customer typed: exactly six ASCII digits (spaces ignored).
pub fn parse_code(input: &str) -> Option<String> {
    let digits: String = input.chars().filter(|c| !c.is_whitespace()).collect();
    (digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

pub fn current_step(now_secs: i64) -> i64 {
    now_secs.div_euclid(TOTP_STEP_SECS)
}

/// A QR code of `uri` as an SVG data URI (shown in an `<img>`, so the CSP needs no inline style).
pub fn qr_svg_data_uri(uri: &str) -> Option<String> {
    use base64::Engine as _;
    let code = qrcode::QrCode::new(uri.as_bytes()).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build();
    Some(format!(
        "data:image/svg+xml;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(svg)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B test vectors (SHA-1, secret "12345678901234567890"), last 6 digits.
    #[test]
    fn rfc6238_vectors() {
        let secret = TotpSecret::from_bytes(b"12345678901234567890");
        for (time, code) in [
            (59, 287_082),
            (1_111_111_109, 81_804),
            (1_111_111_111, 50_471),
            (1_234_567_890, 5_924),
            (2_000_000_000, 279_037),
            (20_000_000_000i64, 353_130),
        ] {
            assert_eq!(secret.code_at_step(time / 30), code, "t={time}");
        }
    }

    #[test]
    fn window_is_plus_minus_one_step() {
        let secret = TotpSecret::generate();
        let now = 1_700_000_000;
        let step = now / 30;
        for (delta, ok) in [(-2, false), (-1, true), (0, true), (1, true), (2, false)] {
            let code = format!("{:06}", secret.code_at_step(step + delta));
            assert_eq!(
                secret.matching_step(&code, now).is_some(),
                ok,
                "delta {delta}"
            );
        }
    }

    #[test]
    fn codes_parse_strictly() {
        assert_eq!(parse_code("123 456").as_deref(), Some("123456"));
        for bad in ["12345", "1234567", "12345a", "", "١٢٣٤٥٦"] {
            assert_eq!(parse_code(bad), None, "{bad}");
        }
    }

    #[test]
    fn secret_is_160_bits_and_uri_names_the_issuer() {
        let secret = TotpSecret::generate();
        assert_eq!(secret.as_bytes().len(), 20);
        assert_eq!(secret.base32().len(), 32);
        let uri = secret.otpauth_uri("kari");
        assert!(uri.starts_with("otpauth://totp/AlphaBank:kari?secret="));
        assert!(uri.contains("issuer=AlphaBank"));
        assert!(qr_svg_data_uri(&uri).is_some_and(|d| d.starts_with("data:image/svg+xml;base64,")));
    }
}
