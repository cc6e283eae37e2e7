//! The hourly usage export: one CSV file per hour with FOCUS-style columns
//! (FinOps Open Cost and Usage Specification names), one line per
//! (account, instance, type, zone) that ran in the hour.
//!
//! A file is a pure function of the events and the price table, and is
//! written to a temporary name in the same directory, synced and renamed
//! over its final name: writing an hour again (a retried or repeated run,
//! a new leader) replaces the file with the same content, never appends.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::ledger::{self, Interval};
use super::rating::{Cost, HourlyPrice};
use crate::error::{Error, Result};

/// The header line.
pub const HEADER: &str = "ChargePeriodStart,ChargePeriodEnd,SubAccountId,ResourceId,ResourceType,\
SkuId,ConsumedQuantity,ConsumedUnit,ListUnitPrice,PricingUnit,BilledCost,BillingCurrency,\
RegionId,AvailabilityZone";

/// `YYYY-MM-DDTHH:MM:SSZ` of a Unix time in seconds.
pub fn iso(s: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::from_unix_timestamp(s)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_default()
}

/// The file name of the hour starting at `hour_s`.
pub fn file_name(hour_s: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]");
    let stamp = time::OffsetDateTime::from_unix_timestamp(hour_s)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_default();
    format!("nubis-usage-{stamp}Z.csv")
}

/// The CSV text of the hour starting at `hour_s` (a multiple of 3600).
pub fn hour_csv(
    intervals: &[Interval],
    prices: &HashMap<String, HourlyPrice>,
    currency: &str,
    region: &str,
    hour_s: i64,
    now_s: i64,
) -> String {
    let to_s = hour_s + 3600;
    let usage = super::rate(
        intervals,
        prices,
        currency,
        (hour_s, to_s),
        now_s,
        super::GroupBy::Instance,
    );
    let mut out = String::with_capacity(64 + usage.lines.len() * 200);
    out.push_str(HEADER);
    out.push('\n');
    let (start, end) = (iso(hour_s), iso(to_s));
    for l in &usage.lines {
        let id = l
            .instance_id
            .as_ref()
            .map(|i| i.to_string())
            .unwrap_or_default();
        let price = l.unit_price.unwrap_or_default();
        out.push_str(&format!(
            "{start},{end},{},{id},instance,{},{},Seconds,{price},Hours,{},{currency},{region},{}\n",
            l.account,
            l.instance_type.as_deref().unwrap_or(""),
            l.seconds,
            l.cost,
            l.availability_zone.as_deref().unwrap_or(""),
        ));
    }
    out
}

/// The exact total of an hour (for checks against the invoice).
pub fn hour_total(
    intervals: &[Interval],
    prices: &HashMap<String, HourlyPrice>,
    hour_s: i64,
    now_s: i64,
) -> Cost {
    intervals
        .iter()
        .map(|iv| {
            let s = ledger::hours(iv, hour_s, hour_s + 3600, now_s)
                .iter()
                .map(|h| h.1)
                .sum::<i64>();
            prices
                .get(&iv.instance_type)
                .copied()
                .unwrap_or_default()
                .cost(s)
        })
        .sum()
}

/// Writes `text` as `dir/name` atomically (temporary file, fsync, rename).
pub fn write_atomic(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    let io = |what: &'static str| move |e: std::io::Error| Error::Io(what, e);
    std::fs::create_dir_all(dir).map_err(io("create the export directory"))?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp).map_err(io("create an export file"))?;
        f.write_all(text.as_bytes())
            .map_err(io("write an export file"))?;
        f.sync_all().map_err(io("sync an export file"))?;
    }
    std::fs::rename(&tmp, &path).map_err(io("rename an export file"))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{AccountId, InstanceId};

    #[test]
    fn names_and_times_are_utc() {
        assert_eq!(iso(0), "1970-01-01T00:00:00Z");
        assert_eq!(file_name(3600 * 25), "nubis-usage-1970-01-02T01Z.csv");
    }

    #[test]
    fn an_hour_has_a_line_per_instance_and_rewrites_identically() {
        let a = AccountId::parse("111122223333").unwrap_or_else(|_| AccountId::operator());
        let iv = |start_s, end_s| Interval {
            account: a.clone(),
            instance_id: InstanceId::generate(),
            instance_type: "t3.micro".into(),
            availability_zone: "nubis-local-1a".into(),
            start_s,
            end_s,
        };
        let ivs = vec![iv(3590, Some(3605)), iv(100, None), iv(8000, Some(9000))];
        let mut prices = HashMap::new();
        prices.insert("t3.micro".to_string(), HourlyPrice(10_400_000));
        let csv = hour_csv(&ivs, &prices, "USD", "nubis-local-1", 3600, 20_000);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], HEADER);
        // 3590..3650 (minimum) -> 50 s; 100..open -> 3600 s; 8000.. not in hour.
        assert_eq!(lines.len(), 3, "{csv}");
        let secs: Vec<&str> = lines[1..]
            .iter()
            .map(|l| l.split(',').nth(6).unwrap_or(""))
            .collect();
        let mut secs = secs.clone();
        secs.sort();
        assert_eq!(secs, vec!["3600", "50"]);
        assert!(lines[1].starts_with("1970-01-01T01:00:00Z,1970-01-01T02:00:00Z,111122223333,i-"));
        assert_eq!(
            hour_total(&ivs, &prices, 3600, 20_000),
            HourlyPrice(10_400_000).cost(3650)
        );
        let dir = tempfile::tempdir().map_err(|e| e.to_string());
        let Ok(dir) = dir else {
            panic!("tempdir");
        };
        let p1 = write_atomic(dir.path(), &file_name(3600), &csv).map_err(|e| e.to_string());
        let p2 = write_atomic(dir.path(), &file_name(3600), &csv).map_err(|e| e.to_string());
        assert_eq!(p1, p2);
        let n = std::fs::read_dir(dir.path())
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(n, 1, "no temporary file left, one file per hour");
        let back = p1.ok().and_then(|p| std::fs::read_to_string(p).ok());
        assert_eq!(back.as_deref(), Some(csv.as_str()));
    }
}
