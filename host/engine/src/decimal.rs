//! Decimal strings of the public API to and from integer steps.
//!
//! A [`Scale`] says how one integer step (a tick, a lot, a minimal unit) is
//! written in decimal: `step_units * 10^-decimals`. Parsing is strict on
//! purpose: digits with at most one `.`, no sign, no exponent, no spaces, no
//! more decimals than the scale has, and an exact multiple of the step.

use core::fmt;

use serde::{Deserialize, Serialize};

/// How an integer number of steps is written as a decimal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scale {
    /// Digits after the decimal point.
    pub decimals: u8,
    /// One step in units of `10^-decimals`; positive.
    pub step_units: u64,
}

/// Why a decimal string was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    #[error("not a decimal number (digits with an optional '.', e.g. \"27350.5\")")]
    Malformed,
    #[error("must be positive")]
    NotPositive,
    #[error("has more decimal places than the step allows")]
    TooPrecise,
    #[error("is not a multiple of the step")]
    OffStep,
    #[error("is too large")]
    Overflow,
}

/// The most decimals a scale may have: 10^18 still fits in a u64.
pub const DECIMALS_MAX: u8 = 18;

impl Scale {
    /// The scale whose step is written as `step` (e.g. "0.5" gives 1 decimal, 5 units).
    pub fn from_step(step: &str) -> Result<Scale, DecimalError> {
        let (digits, decimals) = split_decimal(step)?;
        // Trailing zeros after the point add precision without meaning: "0.50" is "0.5".
        let (mut units, mut decimals) = (digits, decimals);
        while decimals > 0 && units % 10 == 0 && units != 0 {
            units /= 10;
            decimals -= 1;
        }
        if units == 0 {
            return Err(DecimalError::NotPositive);
        }
        Ok(Scale { decimals, step_units: units })
    }

    /// The number of whole steps in a positive decimal string.
    pub fn parse_steps(&self, text: &str) -> Result<u64, DecimalError> {
        let units = self.parse_units(text)?;
        if units == 0 {
            return Err(DecimalError::NotPositive);
        }
        if units % self.step_units != 0 {
            return Err(DecimalError::OffStep);
        }
        Ok(units / self.step_units)
    }

    /// The value of a decimal string in units of `10^-decimals` (zero allowed).
    pub fn parse_units(&self, text: &str) -> Result<u64, DecimalError> {
        let (digits, decimals) = split_decimal(text)?;
        if decimals > self.decimals {
            // "1.50" at one decimal is fine: only non-zero extra digits are over-precise.
            let extra = decimals - self.decimals;
            let divisor = 10u64.pow(extra as u32);
            if digits % divisor != 0 {
                return Err(DecimalError::TooPrecise);
            }
            return Ok(digits / divisor);
        }
        digits.checked_mul(10u64.pow((self.decimals - decimals) as u32)).ok_or(DecimalError::Overflow)
    }

    /// Write a number of steps as a decimal string with exactly `decimals` places.
    pub fn format_steps(&self, steps: u64) -> String {
        self.format_units(steps as u128 * self.step_units as u128)
    }

    /// Write units of `10^-decimals` as a decimal string with exactly `decimals` places.
    pub fn format_units(&self, units: u128) -> String {
        format_fixed(units, self.decimals)
    }

    /// Write signed units (for PnL and sizes).
    pub fn format_signed_units(&self, units: i128) -> String {
        let text = format_fixed(units.unsigned_abs(), self.decimals);
        if units < 0 { format!("-{text}") } else { text }
    }
}

impl fmt::Display for Scale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.format_steps(1))
    }
}

fn format_fixed(units: u128, decimals: u8) -> String {
    if decimals == 0 {
        return units.to_string();
    }
    let divisor = 10u128.pow(decimals as u32);
    format!("{}.{:0width$}", units / divisor, units % divisor, width = decimals as usize)
}

/// Split "123.45" into (12345, 2). Strict grammar, see the module docs.
fn split_decimal(text: &str) -> Result<(u64, u8), DecimalError> {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) {
        return Err(DecimalError::Malformed);
    }
    let fraction = fraction.unwrap_or("");
    if text.ends_with('.') || !all_digits(fraction) {
        return Err(DecimalError::Malformed);
    }
    if fraction.len() > DECIMALS_MAX as usize || whole.len() > 20 {
        return Err(if fraction.len() > DECIMALS_MAX as usize {
            DecimalError::TooPrecise
        } else {
            DecimalError::Overflow
        });
    }
    let mut value: u64 = 0;
    for byte in whole.bytes().chain(fraction.bytes()) {
        value =
            value.checked_mul(10).and_then(|v| v.checked_add((byte - b'0') as u64)).ok_or(DecimalError::Overflow)?;
    }
    Ok((value, fraction.len() as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_from_decimal_strings() {
        let tick = Scale::from_step("0.5").unwrap();
        assert_eq!(tick, Scale { decimals: 1, step_units: 5 });
        assert_eq!(tick.parse_steps("27350.5"), Ok(54_701));
        assert_eq!(tick.parse_steps("27350"), Ok(54_700));
        assert_eq!(tick.parse_steps("27350.50"), Ok(54_701));
        assert_eq!(tick.format_steps(54_701), "27350.5");
        assert_eq!(Scale::from_step("0.010").unwrap(), Scale { decimals: 2, step_units: 1 });
        assert_eq!(Scale::from_step("5").unwrap(), Scale { decimals: 0, step_units: 5 });
    }

    #[test]
    fn refusals_are_precise() {
        let lot = Scale::from_step("0.001").unwrap();
        assert_eq!(lot.parse_steps("0.0015"), Err(DecimalError::TooPrecise));
        assert_eq!(lot.parse_steps("0"), Err(DecimalError::NotPositive));
        assert_eq!(lot.parse_steps("0.000"), Err(DecimalError::NotPositive));
        for bad in ["", "-1", "+1", "1e3", " 1", "1 ", "1.", ".5", "1.2.3", "0x10", "１"] {
            assert_eq!(lot.parse_steps(bad), Err(DecimalError::Malformed), "{bad:?}");
        }
        assert_eq!(lot.parse_steps("99999999999999999999"), Err(DecimalError::Overflow));
        let tick = Scale::from_step("0.5").unwrap();
        assert_eq!(tick.parse_steps("27350.3"), Err(DecimalError::OffStep));
        assert_eq!(Scale::from_step("0"), Err(DecimalError::NotPositive));
    }

    #[test]
    fn formatting_round_trips() {
        let scale = Scale { decimals: 3, step_units: 1 };
        for steps in [1u64, 9, 10, 999, 1000, 123_456_789] {
            assert_eq!(scale.parse_steps(&scale.format_steps(steps)), Ok(steps));
        }
        assert_eq!(scale.format_signed_units(-1500), "-1.500");
        assert_eq!(Scale { decimals: 0, step_units: 1 }.format_steps(42), "42");
    }
}
