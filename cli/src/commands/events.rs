//! `nubis events list`: the lifecycle event outbox, by time range.

use nubis_proto::compute::v1 as pb;
use serde::Serialize;

use super::Ctx;
use crate::cli::EventsCmd;
use crate::error::CliError;
use crate::output::{emit, render_list, rfc3339_ms, Tabular};

/// One lifecycle event.
#[derive(Debug, Serialize)]
pub struct EventView {
    /// When (RFC 3339).
    pub time: String,
    /// When (ms since the epoch).
    pub time_ms: i64,
    /// Instance.
    pub instance_id: String,
    /// Owner.
    pub account_id: String,
    /// The instance's event sequence number.
    pub seq: u64,
    /// created | state-change | terminated | rolled-back.
    pub kind: String,
    /// State before (empty for created).
    pub old_state: String,
    /// State after.
    pub new_state: String,
    /// Instance type.
    pub instance_type: String,
    /// vCPUs.
    pub vcpus: u32,
    /// MiB.
    pub memory_mib: u32,
    /// Zone.
    pub availability_zone: String,
    /// Node (empty if none).
    pub node_id: String,
    /// State reason code.
    pub reason_code: String,
    /// State reason message.
    pub reason_message: String,
    /// etcd revision (global commit order).
    pub revision: i64,
}

impl Tabular for EventView {
    fn headers() -> &'static [&'static str] {
        &[
            "TIME", "INSTANCE", "KIND", "OLD", "NEW", "TYPE", "ZONE", "NODE", "REASON",
        ]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.time.clone(),
            self.instance_id.clone(),
            self.kind.clone(),
            self.old_state.clone(),
            self.new_state.clone(),
            self.instance_type.clone(),
            self.availability_zone.clone(),
            self.node_id.clone(),
            self.reason_code.clone(),
        ]
    }
}

fn view(e: pb::InstanceEvent) -> EventView {
    EventView {
        time: rfc3339_ms(e.time_ms),
        time_ms: e.time_ms,
        instance_id: e.instance_id,
        account_id: e.account_id,
        seq: e.seq,
        kind: e.kind,
        old_state: e.old_state,
        new_state: e.new_state,
        instance_type: e.instance_type,
        vcpus: e.vcpus,
        memory_mib: e.memory_mib,
        availability_zone: e.availability_zone,
        node_id: e.node_id,
        reason_code: e.reason_code,
        reason_message: e.reason_message,
        revision: e.revision,
    }
}

/// Runs `nubis events ...`.
pub async fn run(ctx: &Ctx, cmd: EventsCmd) -> Result<(), CliError> {
    let EventsCmd::List { from, to, account } = cmd;
    if from > to {
        return Err(CliError::Usage("--from must not be after --to".to_string()));
    }
    let mut client = ctx.client().await?;
    let mut views = Vec::new();
    let mut next_token = String::new();
    loop {
        let resp = client
            .compute
            .describe_instance_events(pb::DescribeInstanceEventsRequest {
                account_id: account.clone().unwrap_or_default(),
                from_ms: from,
                to_ms: to,
                max_results: 1000,
                next_token: next_token.clone(),
            })
            .await?
            .into_inner();
        views.extend(resp.events.into_iter().map(view));
        if resp.next_token.is_empty() || resp.next_token == next_token {
            break;
        }
        next_token = resp.next_token;
    }
    emit(&render_list(ctx.format, "events", &views)?)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Parses a point in time (see `--from`) into ms since the epoch.
pub fn parse_time(s: &str) -> Result<i64, String> {
    parse_time_at(s, now_ms())
}

fn parse_time_at(s: &str, now: i64) -> Result<i64, String> {
    let bad = || {
        format!(
            "{s:?} is not a time (examples: 2026-12-01T00:00:00Z, 2026-12-01, now, -24h, -7d, \
             1764547200000)"
        )
    };
    if s == "now" {
        return Ok(now);
    }
    if let Some(age) = s.strip_prefix('-') {
        let (num, unit) = age.split_at(age.len().saturating_sub(1));
        let mult: i64 = match unit {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        let n: i64 = num.parse().map_err(|_| bad())?;
        return n
            .checked_mul(mult)
            .map(|d| (now - d).max(0))
            .ok_or_else(bad);
    }
    if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() {
        return s.parse().map_err(|_| bad());
    }
    // YYYY-MM-DD[THH:MM:SS[.fff]Z]
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t.strip_suffix('Z').ok_or_else(bad)?)),
        None => (s, None),
    };
    let num = |x: &str, len: usize| -> Result<i64, String> {
        if x.len() != len || !x.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        x.parse().map_err(|_| bad())
    };
    let d: Vec<&str> = date.split('-').collect();
    let [y, mo, da] = d.as_slice() else {
        return Err(bad());
    };
    let (y, mo, da) = (num(y, 4)?, num(mo, 2)?, num(da, 2)?);
    if !(1..=12).contains(&mo) || !(1..=days_in_month(y, mo)).contains(&da) {
        return Err(bad());
    }
    let mut ms = days_from_civil(y, mo, da) * 86_400_000;
    if let Some(t) = time {
        let (hms, frac) = match t.split_once('.') {
            Some((h, f)) => (h, Some(f)),
            None => (t, None),
        };
        let p: Vec<&str> = hms.split(':').collect();
        let [h, mi, se] = p.as_slice() else {
            return Err(bad());
        };
        let (h, mi, se) = (num(h, 2)?, num(mi, 2)?, num(se, 2)?);
        if h > 23 || mi > 59 || se > 59 {
            return Err(bad());
        }
        ms += ((h * 60 + mi) * 60 + se) * 1000;
        if let Some(f) = frac {
            ms += num(f, 3)?;
        }
    }
    Ok(ms)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// (year, month, day) to days since 1970-01-01, proleptic Gregorian
/// (H. Hinnant's algorithm, the inverse of `output::civil_from_days`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse() {
        let now = 1_795_000_000_123;
        assert_eq!(parse_time_at("now", now), Ok(now));
        assert_eq!(parse_time_at("-24h", now), Ok(now - 86_400_000));
        assert_eq!(parse_time_at("-30m", now), Ok(now - 1_800_000));
        assert_eq!(parse_time_at("-7d", now), Ok(now - 7 * 86_400_000));
        assert_eq!(parse_time_at("1000", now), Ok(1000));
        assert_eq!(parse_time_at("1970-01-01", now), Ok(0));
        assert_eq!(parse_time_at("2000-02-29", now), Ok(951_782_400_000));
        assert_eq!(
            parse_time_at("2026-11-18T11:06:40.123Z", now),
            Ok(1_795_000_000_123)
        );
        assert_eq!(
            rfc3339_ms(parse_time_at("2026-11-18T11:06:40Z", now).unwrap_or(0)),
            "2026-11-18T11:06:40Z"
        );
        for bad in [
            "",
            "-",
            "-5",
            "-5y",
            "yesterday",
            "2026-13-01",
            "2026-02-29",
            "2026-1-01",
            "2026-11-18T11:06:40",
            "2026-11-18T24:00:00Z",
            "2026-11-18T11:06Z",
        ] {
            assert!(parse_time_at(bad, now).is_err(), "{bad}");
        }
    }
}
