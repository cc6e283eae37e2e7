//! Cron expressions of scheduled actions (`Recurrence`, five fields in
//! UTC: minute, hour, day of month, month, day of week), parsed into sets
//! and asked for the next matching minute.
//!
//! Fields take `*`, numbers, ranges `a-b`, steps `*/n` and `a-b/n`, and
//! comma lists; months `JAN`-`DEC` and days `SUN`-`SAT` by name; day of
//! week 0 and 7 are Sunday. As in cron, when both day of month and day of
//! week are restricted a day matching either one matches.

use time::{Date, OffsetDateTime, Time};

use crate::error::{Error, Result};

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    days_restricted: bool,
    weekdays_restricted: bool,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

fn bad(expr: &str, why: &str) -> Error {
    Error::invalid_code(
        "ValidationError",
        format!("Recurrence '{expr}' is not a valid cron expression (minute hour day-of-month month day-of-week, UTC): {why}"),
    )
}

/// Parses one field into a bit set of the values in `lo..=hi`.
fn field(expr: &str, f: &str, lo: u32, hi: u32, names: &[&str]) -> Result<(u64, bool)> {
    let value = |s: &str| -> Result<u32> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(lo + i as u32);
        }
        let v: u32 = s
            .parse()
            .map_err(|_| bad(expr, &format!("'{s}' is not a number")))?;
        if v < lo || v > hi {
            return Err(bad(expr, &format!("{v} is outside {lo}-{hi}")));
        }
        Ok(v)
    };
    let mut set = 0u64;
    let mut restricted = false;
    for part in f.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let s: u32 = s
                    .parse()
                    .map_err(|_| bad(expr, &format!("step '{s}' is not a number")))?;
                if s == 0 {
                    return Err(bad(expr, "a step must be at least 1"));
                }
                (r, s)
            }
            None => (part, 1),
        };
        let (a, b) = if range == "*" {
            if step == 1 && f == "*" {
                // Unrestricted.
            } else {
                restricted = true;
            }
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            restricted = true;
            (value(a)?, value(b)?)
        } else {
            restricted = true;
            let v = value(range)?;
            (v, if part.contains('/') { hi } else { v })
        };
        if a > b {
            return Err(bad(expr, &format!("range {a}-{b} is reversed")));
        }
        let mut v = a;
        while v <= b {
            set |= 1u64 << v;
            v += step;
        }
    }
    Ok((set, restricted))
}

impl Cron {
    /// Parses a five-field expression.
    pub fn parse(expr: &str) -> Result<Self> {
        if expr.len() > 256 {
            return Err(bad(&expr[..32], "too long"));
        }
        let f: Vec<&str> = expr.split_whitespace().collect();
        if f.len() != 5 {
            return Err(bad(expr, "it must have five fields"));
        }
        let (minutes, _) = field(expr, f[0], 0, 59, &[])?;
        let (hours, _) = field(expr, f[1], 0, 23, &[])?;
        let (days, days_restricted) = field(expr, f[2], 1, 31, &[])?;
        let (months, _) = field(expr, f[3], 1, 12, &MONTHS)?;
        let (mut weekdays, weekdays_restricted) = field(expr, f[4], 0, 7, &WEEKDAYS)?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1;
        }
        Ok(Self {
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays: (weekdays & 0x7f) as u8,
            days_restricted,
            weekdays_restricted,
        })
    }

    fn day_matches(&self, d: Date) -> bool {
        if self.months & (1 << u8::from(d.month())) == 0 {
            return false;
        }
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().number_days_from_sunday()) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => dom || dow,
            (true, false) => dom,
            (false, true) => dow,
            (false, false) => true,
        }
    }

    /// The first matching minute strictly after `after_ms` (ms since the
    /// epoch, UTC), within eight years; `None` if there is none (e.g.
    /// February 30th).
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let start_min = after_ms.div_euclid(60_000) + 1;
        let t = OffsetDateTime::from_unix_timestamp(start_min * 60).ok()?;
        let mut date = t.date();
        let mut from = (t.hour(), t.minute());
        for _ in 0..(366 * 8) {
            if self.day_matches(date) {
                for h in from.0..24 {
                    if self.hours & (1 << h) == 0 {
                        continue;
                    }
                    let m0 = if h == from.0 { from.1 } else { 0 };
                    if let Some(m) = (m0..60).find(|m| self.minutes & (1u64 << m) != 0) {
                        let time = Time::from_hms(h, m, 0).ok()?;
                        let at = date.with_time(time).assume_utc();
                        return Some(at.unix_timestamp() * 1000);
                    }
                }
            }
            date = date.next_day()?;
            from = (0, 0);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        let t =
            OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).expect("time");
        t.unix_timestamp() * 1000
    }

    #[test]
    fn next_occurrences() {
        let c = Cron::parse("30 9 * * MON-FRI").expect("parse");
        // Sunday 2026-12-06 -> Monday 09:30.
        assert_eq!(
            c.next_after(ms("2026-12-06T12:00:00Z")),
            Some(ms("2026-12-07T09:30:00Z"))
        );
        // Exactly at an occurrence: the next one.
        assert_eq!(
            c.next_after(ms("2026-12-07T09:30:00Z")),
            Some(ms("2026-12-08T09:30:00Z"))
        );
        let every5 = Cron::parse("*/5 * * * *").expect("parse");
        assert_eq!(
            every5.next_after(ms("2026-12-06T12:03:10Z")),
            Some(ms("2026-12-06T12:05:00Z"))
        );
        let yearly = Cron::parse("0 0 1 jan *").expect("parse");
        assert_eq!(
            yearly.next_after(ms("2026-12-06T12:00:00Z")),
            Some(ms("2027-01-01T00:00:00Z"))
        );
        // Sunday as 7; day of month OR day of week.
        let sun = Cron::parse("0 12 * * 7").expect("parse");
        assert_eq!(
            sun.next_after(ms("2026-12-06T12:00:00Z")),
            Some(ms("2026-12-13T12:00:00Z"))
        );
        let either = Cron::parse("0 0 15 * SUN").expect("parse");
        assert_eq!(
            either.next_after(ms("2026-12-06T12:00:00Z")),
            Some(ms("2026-12-13T00:00:00Z"))
        );
        assert_eq!(
            either.next_after(ms("2026-12-13T00:00:00Z")),
            Some(ms("2026-12-15T00:00:00Z"))
        );
        // Never.
        assert_eq!(
            Cron::parse("0 0 30 2 *").expect("parse").next_after(0),
            None
        );
    }

    #[test]
    fn bad_expressions_are_refused() {
        for bad in [
            "",
            "* * * *",
            "* * * * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 8",
            "*/0 * * * *",
            "5-1 * * * *",
            "x * * * *",
            "* * * FOO *",
        ] {
            let e = Cron::parse(bad).expect_err(bad);
            assert_eq!(e.code(), "ValidationError", "{bad}");
        }
    }
}
