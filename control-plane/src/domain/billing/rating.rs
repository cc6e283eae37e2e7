//! Money as integers: prices and costs in nano-units of the currency
//! (1e-9), never floats.
//!
//! A price is configured per instance type per hour as a decimal string
//! (`"0.0104"`, at most 9 decimals) and held as nano-units per hour. The
//! cost of `s` seconds at `p` nano-units per hour is `s * p / 3600`
//! nano-units: that quotient is kept exact as its numerator ([`Cost`],
//! nano-unit-seconds per hour), costs add as numerators, and a cost is
//! rounded to whole nano-units (half to even) only when it is shown. So a
//! total (an invoice) is the exact sum of its intervals rounded once, never
//! a sum of rounded parts.

use std::fmt;

use crate::error::{Error, Result};

/// Nano-units in one unit of the currency.
pub const NANOS: u128 = 1_000_000_000;

/// A price in nano-units of the currency per hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct HourlyPrice(pub u64);

impl HourlyPrice {
    /// Parses a non-negative decimal with at most 9 decimals (`"0.0104"`,
    /// `"2"`, `"1.5"`).
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(format!(
                "price {s:?} is not a decimal with at most 9 decimals"
            ))
        };
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        let digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(frac) || frac.len() > 9 {
            return Err(bad());
        }
        if s.ends_with('.') {
            return Err(bad());
        }
        let w: u64 = whole.parse().map_err(|_| bad())?;
        let mut f: u64 = if frac.is_empty() {
            0
        } else {
            frac.parse().map_err(|_| bad())?
        };
        for _ in frac.len()..9 {
            f *= 10;
        }
        w.checked_mul(1_000_000_000)
            .and_then(|x| x.checked_add(f))
            .map(HourlyPrice)
            .ok_or_else(bad)
    }

    /// The cost of `seconds` at this price.
    pub fn cost(self, seconds: i64) -> Cost {
        Cost(u128::from(self.0) * u128::try_from(seconds.max(0)).unwrap_or(0))
    }
}

impl fmt::Display for HourlyPrice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_nanos(u128::from(self.0), f)
    }
}

/// An exact cost: nano-units times 3600 (seconds × nano-units per hour).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Cost(pub u128);

impl Cost {
    /// Rounded to whole nano-units, half to even.
    pub fn nanos(self) -> u128 {
        let (q, r) = (self.0 / 3600, self.0 % 3600);
        if r > 1800 || (r == 1800 && q % 2 == 1) {
            q + 1
        } else {
            q
        }
    }
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost(self.0.saturating_add(o.0))
    }
}

impl std::ops::AddAssign for Cost {
    fn add_assign(&mut self, o: Cost) {
        *self = *self + o;
    }
}

impl std::iter::Sum for Cost {
    fn sum<I: Iterator<Item = Cost>>(it: I) -> Cost {
        it.fold(Cost::default(), |a, b| a + b)
    }
}

impl fmt::Display for Cost {
    /// The rounded cost as a decimal with 9 decimals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_nanos(self.nanos(), f)
    }
}

fn fmt_nanos(n: u128, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    write!(f, "{}.{:09}", n / NANOS, n % NANOS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_parse_exactly() {
        assert_eq!(
            HourlyPrice::parse("0.0104").ok(),
            Some(HourlyPrice(10_400_000))
        );
        assert_eq!(
            HourlyPrice::parse("2").ok(),
            Some(HourlyPrice(2_000_000_000))
        );
        assert_eq!(
            HourlyPrice::parse("1.000000001").ok(),
            Some(HourlyPrice(1_000_000_001))
        );
        for bad in [
            "",
            ".5",
            "1.",
            "-1",
            "1e3",
            "0.0000000001",
            "a",
            "1.2.3",
            "99999999999999",
        ] {
            assert!(HourlyPrice::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(HourlyPrice(10_400_000).to_string(), "0.010400000");
    }

    #[test]
    fn costs_round_half_even_and_add_exactly() {
        // 121 s at 0.0104/h = 0.000349555.. -> 349556 nano.
        let p = HourlyPrice::parse("0.0104").unwrap_or_default();
        assert_eq!(p.cost(121).nanos(), 349_556);
        assert_eq!(p.cost(121).to_string(), "0.000349556");
        // Half to even.
        assert_eq!(Cost(1800).nanos(), 0);
        assert_eq!(Cost(5400).nanos(), 2);
        assert_eq!(Cost(1801).nanos(), 1);
        // A total is the exact sum rounded once: 61 s + 60 s.
        let total = p.cost(61) + p.cost(60);
        assert_eq!(total, p.cost(121));
        // ... which is why parts are not rounded before they are added:
        // 176222.2 + 173333.3 would lose a nano-unit.
        assert_eq!(p.cost(61).nanos() + p.cost(60).nanos(), 349_555);
        // Whole hours are exact.
        assert_eq!(p.cost(3600).nanos(), 10_400_000);
    }
}
