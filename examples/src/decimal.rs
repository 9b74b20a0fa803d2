//! Decimal strings to integers at a fixed number of places, the way any API
//! client would read exhost's prices, quantities and money.

use anyhow::{Context, bail};

/// `text` (e.g. "-12.5") as an integer count of `10^-places`.
pub fn parse(text: &str, places: u32) -> anyhow::Result<i128> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if fraction.len() > places as usize {
        bail!("{text:?} has more than {places} decimals");
    }
    let scaled = format!("{whole}{fraction:0<width$}", width = places as usize);
    let value: i128 = scaled.parse().with_context(|| format!("{text:?} is not a decimal"))?;
    Ok(if negative { -value } else { value })
}

/// The number of decimal places of a step like "0.001".
pub fn places_of(step: &str) -> u32 {
    step.split_once('.').map_or(0, |(_, fraction)| fraction.len() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_at_fixed_places() {
        assert_eq!(parse("27350.5", 1).unwrap(), 273_505);
        assert_eq!(parse("-0.300", 3).unwrap(), -300);
        assert_eq!(parse("12", 6).unwrap(), 12_000_000);
        assert!(parse("1.2345", 3).is_err());
        assert_eq!(places_of("0.001"), 3);
    }
}
