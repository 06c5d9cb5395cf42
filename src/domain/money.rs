//! Money is an `i64` count of øre (1 kr = 100 øre). Never floats, never text arithmetic.

use std::fmt;

use crate::limits::{AMOUNT_MINOR_MAX, ATM_DEPOSIT_MINOR_MAX};

/// A signed quantity of money (a balance or a posting), in øre.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(i64);

impl Money {
    pub const ZERO: Money = Money(0);
    pub fn from_minor(minor: i64) -> Self {
        Money(minor)
    }
    pub fn minor(self) -> i64 {
        self.0
    }
    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }
    pub fn checked_sub(self, other: Money) -> Option<Money> {
        self.0.checked_sub(other.0).map(Money)
    }
}

/// Norwegian format: `1 234,50 kr`, `-12,00 kr`.
impl fmt::Display for Money {
    /// `-1 234,50 kr`: groups of three digits split by a space, a decimal comma. Built in one
    /// small buffer without the formatting machinery: a history page shows eleven of them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let abs = self.0.unsigned_abs();
        let (kroner, ore) = (abs / 100, abs % 100);
        // Longest: "-92 233 720 368 547 758,08 kr" (29 bytes).
        let mut out = String::with_capacity(32);
        if self.0 < 0 {
            out.push('-');
        }
        let mut divisor = 1u64;
        while kroner / divisor >= 1000 {
            divisor *= 1000;
        }
        push_digits(&mut out, kroner / divisor, false);
        while divisor > 1 {
            divisor /= 1000;
            out.push(' ');
            push_digits(&mut out, kroner / divisor % 1000, true);
        }
        out.push(',');
        push_digit(&mut out, ore / 10);
        push_digit(&mut out, ore % 10);
        out.push_str(" kr");
        f.write_str(&out)
    }
}

/// `group` (below 1000) in decimal; `full` pads it to three digits.
fn push_digits(out: &mut String, group: u64, full: bool) {
    if full || group >= 100 {
        push_digit(out, group / 100);
    }
    if full || group >= 10 {
        push_digit(out, group / 10 % 10);
    }
    push_digit(out, group % 10);
}

fn push_digit(out: &mut String, digit: u64) {
    out.push(char::from(b'0' + (digit % 10) as u8));
}

/// A positive amount entered by a customer: `^[0-9]{1,9}([.,][0-9]{1,2})?$`, greater than zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Amount(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("Enter an amount.")]
    Empty,
    #[error("Write the amount in kroner with at most two decimals, for example 250 or 99,50.")]
    Format,
    #[error("The amount must be greater than zero.")]
    Zero,
    #[error("An ATM deposit can be at most 10 000,00 kr.")]
    AboveAtmLimit,
}

impl Amount {
    pub fn parse(input: &str) -> Result<Self, AmountError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(AmountError::Empty);
        }
        let (whole, fraction) = match input.find(['.', ',']) {
            Some(pos) => (input.get(..pos).unwrap_or(""), input.get(pos + 1..)),
            None => (input, None),
        };
        let digits = |s: &str, min: usize, max: usize| {
            (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
        };
        if !digits(whole, 1, 9) {
            return Err(AmountError::Format);
        }
        let ore = match fraction {
            None => 0,
            Some(f) if digits(f, 1, 2) => {
                let value: i64 = f.parse().map_err(|_| AmountError::Format)?;
                if f.len() == 1 { value * 10 } else { value }
            }
            Some(_) => return Err(AmountError::Format),
        };
        let kroner: i64 = whole.parse().map_err(|_| AmountError::Format)?;
        let minor = kroner * 100 + ore;
        if minor == 0 {
            return Err(AmountError::Zero);
        }
        debug_assert!(minor <= AMOUNT_MINOR_MAX);
        Ok(Amount(minor))
    }

    /// For amounts that come from the system itself (seeding, tests), in øre.
    pub fn from_minor(minor: i64) -> Result<Self, AmountError> {
        if minor <= 0 {
            return Err(AmountError::Zero);
        }
        if minor > AMOUNT_MINOR_MAX {
            return Err(AmountError::Format);
        }
        Ok(Amount(minor))
    }

    pub fn minor(self) -> i64 {
        self.0
    }

    pub fn money(self) -> Money {
        Money(self.0)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Money(self.0).fmt(f)
    }
}

/// An ATM deposit: an [`Amount`] of at most 10 000,00 kr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DepositAmount(Amount);

impl DepositAmount {
    pub fn parse(input: &str) -> Result<Self, AmountError> {
        Self::try_from(Amount::parse(input)?)
    }
    pub fn amount(self) -> Amount {
        self.0
    }
}

impl TryFrom<Amount> for DepositAmount {
    type Error = AmountError;
    fn try_from(amount: Amount) -> Result<Self, AmountError> {
        if amount.minor() > ATM_DEPOSIT_MINOR_MAX {
            return Err(AmountError::AboveAtmLimit);
        }
        Ok(DepositAmount(amount))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_contract_forms() {
        assert_eq!(Amount::parse("1").unwrap().minor(), 100);
        assert_eq!(Amount::parse("0,01").unwrap().minor(), 1);
        assert_eq!(Amount::parse("12.5").unwrap().minor(), 1250);
        assert_eq!(Amount::parse("12,50").unwrap().minor(), 1250);
        assert_eq!(
            Amount::parse("999999999,99").unwrap().minor(),
            99_999_999_999
        );
        assert_eq!(Amount::parse(" 7 ").unwrap().minor(), 700);
    }

    #[test]
    fn refuses_everything_else() {
        for bad in ["", " ", "0", "0,00", "0.0"] {
            assert!(Amount::parse(bad).is_err(), "{bad}");
        }
        for bad in [
            "-1",
            "+1",
            "1e3",
            "1,234",
            "1.2.3",
            "1,",
            ",5",
            "1 000",
            "1000000000",
            "12,345",
            "NaN",
            "١٢",
            "1_000",
            "0x10",
            "1,5kr",
            "\u{0}1",
            "１",
        ] {
            assert_eq!(Amount::parse(bad), Err(AmountError::Format), "{bad}");
        }
        assert_eq!(Amount::parse("0"), Err(AmountError::Zero));
        assert_eq!(Amount::parse(""), Err(AmountError::Empty));
    }

    #[test]
    fn atm_ceiling_is_ten_thousand_kroner() {
        assert!(DepositAmount::parse("10000").is_ok());
        assert!(DepositAmount::parse("10000,00").is_ok());
        assert_eq!(
            DepositAmount::parse("10000,01"),
            Err(AmountError::AboveAtmLimit)
        );
    }

    #[test]
    fn formats_as_norwegian_kroner() {
        assert_eq!(Money::from_minor(123_450).to_string(), "1 234,50 kr");
        assert_eq!(Money::from_minor(5).to_string(), "0,05 kr");
        assert_eq!(Money::from_minor(0).to_string(), "0,00 kr");
        assert_eq!(Money::from_minor(10_000).to_string(), "100,00 kr");
        assert_eq!(Money::from_minor(100_000).to_string(), "1 000,00 kr");
        assert_eq!(
            Money::from_minor(1_200_300_405).to_string(),
            "12 003 004,05 kr"
        );
        assert_eq!(Money::from_minor(-7).to_string(), "-0,07 kr");
        assert_eq!(
            Money::from_minor(-100_000_000).to_string(),
            "-1 000 000,00 kr"
        );
        assert_eq!(
            Money::from_minor(99_999_999_999).to_string(),
            "999 999 999,99 kr"
        );
        assert_eq!(
            Money::from_minor(i64::MIN).to_string(),
            "-92 233 720 368 547 758,08 kr"
        );
    }

    proptest! {
        #[test]
        fn parse_format_round_trip(minor in 1i64..=AMOUNT_MINOR_MAX) {
            let shown = Money::from_minor(minor).to_string();
            let typed = shown.trim_end_matches(" kr").replace(' ', "");
            prop_assert_eq!(Amount::parse(&typed).unwrap().minor(), minor);
        }

        #[test]
        fn never_panics_on_any_text(s in "\\PC{0,20}") {
            let _ = Amount::parse(&s);
        }
    }
}
