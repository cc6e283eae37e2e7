//! Metering and billing: usage by the second from the lifecycle event
//! outbox ([`super::events`]), rated with the operator's price table
//! (`[billing]`), read by tenants for their own account and by the operator
//! for any or all accounts, and exported hourly as FOCUS-style CSV.
//!
//! The ledger is computed on read, not materialised: the events are the
//! ledger's only input, they are written in the same etcd transaction as the
//! state change they record (no change without its event, none twice), and
//! [`ledger`] is a pure function of them. So a control plane killed at any
//! point loses no interval and doubles none, and there is no second copy of
//! usage to keep consistent (docs/billing.md has the reasoning and costs).
//!
//! - [`ledger`]: events -> running intervals -> billed seconds in a window;
//! - [`rating`]: integer money (nano-units; exact cost numerators);
//! - [`focus`]: the hourly CSV lines and their file.

pub mod focus;
pub mod ledger;
pub mod rating;

use std::collections::{BTreeMap, HashMap};

use crate::domain::events::InstanceEvent;
use crate::domain::{Caller, Domain};
use crate::error::{Error, Result};
use crate::ids::{AccountId, InstanceId};
use crate::store::prefix_end;

use ledger::Interval;
use rating::{Cost, HourlyPrice};

/// The window end of a usage read without one (seconds; far beyond any
/// billed second).
const OPEN_END_S: i64 = 1 << 40;

/// How usage lines are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupBy {
    /// One line per instance (and type, zone).
    #[default]
    Instance,
    /// One line per instance type.
    Type,
    /// One line per availability zone.
    Zone,
}

impl GroupBy {
    /// Parses `instance` | `type` | `zone` (empty = instance).
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "" | "instance" => Ok(GroupBy::Instance),
            "type" => Ok(GroupBy::Type),
            "zone" => Ok(GroupBy::Zone),
            other => Err(Error::invalid(format!(
                "group by must be instance, type or zone, not {other:?}"
            ))),
        }
    }
}

/// Whose usage a call reads.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// One account (empty: the caller's). Another account: operator only.
    pub account: Option<String>,
    /// Every account (operator only).
    pub all_accounts: bool,
}

/// One usage line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageLine {
    /// Owner.
    pub account: AccountId,
    /// Set when grouped by instance.
    pub instance_id: Option<InstanceId>,
    /// Set when grouped by instance or type.
    pub instance_type: Option<String>,
    /// Set when grouped by instance or zone.
    pub availability_zone: Option<String>,
    /// Billed seconds.
    pub seconds: i64,
    /// The hourly price (lines of one instance type only).
    pub unit_price: Option<HourlyPrice>,
    /// Exact cost.
    pub cost: Cost,
}

/// Usage in a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// Currency of the costs.
    pub currency: String,
    /// Window start (seconds, inclusive).
    pub from_s: i64,
    /// Window end (seconds, exclusive).
    pub to_s: i64,
    /// Lines in (account, group) order.
    pub lines: Vec<UsageLine>,
    /// Sum of the lines' seconds.
    pub total_seconds: i64,
    /// Exact sum of the lines' costs.
    pub total: Cost,
}

/// One account's invoice for a month: a line per instance type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoice {
    /// The month, `YYYY-MM`.
    pub month: String,
    /// The usage of the month grouped by type (per account).
    pub usage: Usage,
}

/// `[from, to)` in seconds of a month `YYYY-MM` (UTC).
pub fn month_window(month: &str) -> Result<(i64, i64)> {
    let bad = || Error::invalid(format!("month must be YYYY-MM, not {month:?}"));
    let (y, m) = month.split_once('-').ok_or_else(bad)?;
    if y.len() != 4 || m.len() != 2 {
        return Err(bad());
    }
    let y: i32 = y.parse().map_err(|_| bad())?;
    let m: u8 = m.parse().map_err(|_| bad())?;
    let start = |y: i32, m: u8| -> Result<i64> {
        let month = time::Month::try_from(m).map_err(|_| bad())?;
        let d = time::Date::from_calendar_date(y, month, 1).map_err(|_| bad())?;
        Ok(d.midnight().assume_utc().unix_timestamp())
    };
    let from = start(y, m)?;
    let to = if m == 12 {
        start(y + 1, 1)?
    } else {
        start(y, m + 1)?
    };
    Ok((from, to))
}

/// The price table of a configuration (validated at load; a type without a
/// price rates at 0).
pub fn price_table(cfg: &crate::config::BillingConfig) -> HashMap<String, HourlyPrice> {
    cfg.prices
        .iter()
        .filter_map(|(t, p)| HourlyPrice::parse(p).ok().map(|p| (t.clone(), p)))
        .collect()
}

/// Rates the intervals inside `[from_s, to_s)`, grouped.
pub fn rate(
    intervals: &[Interval],
    prices: &HashMap<String, HourlyPrice>,
    currency: &str,
    (from_s, to_s): (i64, i64),
    now_s: i64,
    group: GroupBy,
) -> Usage {
    type Key = (AccountId, String, String, String);
    let mut acc: BTreeMap<Key, (i64, Cost, Option<HourlyPrice>)> = BTreeMap::new();
    for iv in intervals {
        let s = iv.seconds_in(from_s, to_s, now_s);
        if s == 0 {
            continue;
        }
        let price = prices.get(&iv.instance_type).copied().unwrap_or_default();
        let key = match group {
            GroupBy::Instance => (
                iv.account.clone(),
                iv.instance_id.to_string(),
                iv.instance_type.clone(),
                iv.availability_zone.clone(),
            ),
            GroupBy::Type => (
                iv.account.clone(),
                String::new(),
                iv.instance_type.clone(),
                String::new(),
            ),
            GroupBy::Zone => (
                iv.account.clone(),
                String::new(),
                String::new(),
                iv.availability_zone.clone(),
            ),
        };
        let e = acc.entry(key).or_insert((0, Cost::default(), None));
        e.0 += s;
        e.1 += price.cost(s);
        if group != GroupBy::Zone {
            e.2 = Some(price);
        }
    }
    let some = |s: String| (!s.is_empty()).then_some(s);
    let lines: Vec<UsageLine> = acc
        .into_iter()
        .map(
            |((account, id, ty, zone), (seconds, cost, unit_price))| UsageLine {
                account,
                instance_id: some(id).and_then(|i| InstanceId::parse(&i).ok()),
                instance_type: some(ty),
                availability_zone: some(zone),
                seconds,
                unit_price,
                cost,
            },
        )
        .collect();
    Usage {
        currency: currency.to_string(),
        from_s,
        to_s,
        total_seconds: lines.iter().map(|l| l.seconds).sum(),
        total: lines.iter().map(|l| l.cost).sum(),
        lines,
    }
}

impl Domain {
    /// Which account(s) `caller` may read: `None` = all (operator only).
    fn billing_scope(&self, caller: &Caller, scope: &Scope) -> Result<Option<AccountId>> {
        let own = caller.account()?;
        if scope.all_accounts {
            caller.require_operator()?;
            if scope.account.as_deref().is_some_and(|a| !a.is_empty()) {
                return Err(Error::invalid(
                    "give either an account or all accounts, not both",
                ));
            }
            return Ok(None);
        }
        match scope.account.as_deref() {
            None | Some("") => Ok(Some(own)),
            Some(a) => {
                let a = AccountId::parse(a)?;
                if a != own && !caller.is_operator() {
                    return Err(Error::Unauthorized(
                        "usage of another account can be read only by the operator".into(),
                    ));
                }
                Ok(Some(a))
            }
        }
    }

    /// Every stored event of one account (or all), in key order. The ledger
    /// needs an instance's events from its start, which may be long before
    /// the window, so the whole retained history is read.
    pub async fn billing_events(&self, account: Option<&AccountId>) -> Result<Vec<InstanceEvent>> {
        let repo = self.store.events();
        let prefix = match account {
            Some(a) => repo.account_prefix(a),
            None => repo.all_prefix(),
        };
        let end = String::from_utf8(prefix_end(&prefix))
            .map_err(|_| Error::Internal("event prefix end is not UTF-8".into()))?;
        let got = self
            .store
            .list_range::<InstanceEvent>(&prefix, &end, i64::MAX)
            .await?;
        Ok(got.into_iter().map(|(_, v)| v.value).collect())
    }

    /// The intervals of one account (or all) from the stored events.
    pub async fn billing_intervals(&self, account: Option<&AccountId>) -> Result<Vec<Interval>> {
        let events = self.billing_events(account).await?;
        let horizon_ms =
            crate::domain::model::now_ms() - i64::from(self.cfg.events.retention_days) * 86_400_000;
        Ok(ledger::intervals(&events, ledger::seconds_of(horizon_ms)))
    }

    /// Usage in `[from_ms, to_ms)`, grouped. Without an end: all usage
    /// billed so far (running instances up to now, and the whole 60 s
    /// minimum of runs that just ended; the answer's end is the last billed
    /// second).
    pub async fn usage(
        &self,
        caller: &Caller,
        scope: &Scope,
        from_ms: i64,
        to_ms: Option<i64>,
        group: GroupBy,
    ) -> Result<Usage> {
        let account = self.billing_scope(caller, scope)?;
        let now_ms = crate::domain::model::now_ms();
        let now_s = ledger::seconds_of(now_ms);
        let given_to = to_ms.filter(|t| *t != 0);
        // No end: everything billed so far, including the minimum seconds
        // of runs that ended less than 60 s ago.
        let to_ms = given_to.unwrap_or(OPEN_END_S * 1000);
        if from_ms < 0 || to_ms < 0 {
            return Err(Error::invalid("times must not be negative"));
        }
        if from_ms >= to_ms {
            return Err(Error::invalid(
                "the start of the time range must be before its end",
            ));
        }
        let window = (ledger::seconds_of(from_ms), ledger::seconds_of(to_ms));
        let intervals = self.billing_intervals(account.as_ref()).await?;
        let b = &self.cfg.billing;
        let mut usage = rate(
            &intervals,
            &price_table(b),
            &b.currency,
            window,
            now_s,
            group,
        );
        if given_to.is_none() {
            usage.to_s = intervals
                .iter()
                .map(|i| i.billed_end(now_s))
                .fold(now_s, i64::max);
        }
        Ok(usage)
    }

    /// The invoice of a month (`YYYY-MM`, UTC): usage by instance type.
    /// A month not over yet is invoiced up to now.
    pub async fn invoice(&self, caller: &Caller, scope: &Scope, month: &str) -> Result<Invoice> {
        let account = self.billing_scope(caller, scope)?;
        let window = month_window(month)?;
        let intervals = self.billing_intervals(account.as_ref()).await?;
        let b = &self.cfg.billing;
        let now_s = ledger::seconds_of(crate::domain::model::now_ms());
        Ok(Invoice {
            month: month.to_string(),
            usage: rate(
                &intervals,
                &price_table(b),
                &b.currency,
                window,
                now_s,
                GroupBy::Type,
            ),
        })
    }
}

/// What one export run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Hour files written (start seconds).
    pub written: Vec<i64>,
}

impl Domain {
    /// The hourly export (`billing-export` task): every hour of the last
    /// `export_backfill_hours` that ended at least `export_delay_seconds`
    /// before `now_ms` and has no file yet in `export_dir` is written
    /// ([`focus::write_atomic`]). Idempotent: a file is a function of the
    /// events, so a repeated or concurrent run writes the same bytes, and an
    /// interrupted one leaves no partial file under the final name.
    pub async fn export_usage(&self, now_ms: i64) -> Result<ExportReport> {
        let b = &self.cfg.billing;
        let Some(dir) = &b.export_dir else {
            return Ok(ExportReport::default());
        };
        let now_s = ledger::seconds_of(now_ms);
        let delay = i64::try_from(b.export_delay_seconds).unwrap_or(i64::MAX / 2);
        let last_end = (now_s - delay).div_euclid(3600) * 3600;
        let first = last_end - i64::from(b.export_backfill_hours) * 3600;
        let missing: Vec<i64> = (0..b.export_backfill_hours)
            .map(|i| first + i64::from(i) * 3600)
            .filter(|h| !dir.join(focus::file_name(*h)).exists())
            .collect();
        if missing.is_empty() {
            return Ok(ExportReport::default());
        }
        let intervals = self.billing_intervals(None).await?;
        let prices = price_table(b);
        let mut report = ExportReport::default();
        for h in missing {
            let csv = focus::hour_csv(&intervals, &prices, &b.currency, &self.cfg.region, h, now_s);
            focus::write_atomic(dir, &focus::file_name(h), &csv)?;
            report.written.push(h);
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_calendar_months() {
        assert_eq!(
            month_window("2026-12").ok(),
            Some((1_796_083_200, 1_798_761_600))
        );
        assert_eq!(
            month_window("2024-02").map(|(a, b)| b - a).ok(),
            Some(29 * 86_400)
        );
        for bad in ["2026-13", "2026-00", "2026", "26-01", "2026-1", "x"] {
            assert!(month_window(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn group_names_parse() {
        assert_eq!(GroupBy::parse("zone").ok(), Some(GroupBy::Zone));
        assert_eq!(GroupBy::parse("").ok(), Some(GroupBy::Instance));
        assert!(GroupBy::parse("region").is_err());
    }

    #[test]
    fn the_issue_example_is_rated_exactly_and_the_total_is_the_sum_of_its_intervals() {
        let id = InstanceId::generate();
        let evs = ledger::tests::issue_sequence(&id, 1_780_000_000_000);
        let ivs = ledger::intervals(&evs, 0);
        let mut prices = HashMap::new();
        prices.insert("t3.micro".to_string(), HourlyPrice(10_400_000));
        let now = 1_780_000_000 + 10_000;
        for group in [GroupBy::Instance, GroupBy::Type, GroupBy::Zone] {
            let u = rate(&ivs, &prices, "USD", (0, now), now, group);
            assert_eq!(u.lines.len(), 1);
            assert_eq!(u.total_seconds, 121);
            assert_eq!(u.total.nanos(), 349_556);
        }
        let exact: Cost = ivs
            .iter()
            .map(|i| HourlyPrice(10_400_000).cost(i.seconds_in(0, now, now)))
            .sum();
        assert_eq!(
            exact,
            rate(&ivs, &prices, "USD", (0, now), now, GroupBy::Type).total
        );
        // An unpriced type is metered at 0.
        let u = rate(&ivs, &HashMap::new(), "USD", (0, now), now, GroupBy::Type);
        assert_eq!((u.total_seconds, u.total.nanos()), (121, 0));
    }
}
