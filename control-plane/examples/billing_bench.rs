//! Ledger benchmark (not a test): N instances (default 10,000) in 100
//! accounts, each created at the start of a 30-day month and stopped and
//! started once a day (about 122 events each; one in ten terminated
//! half-way), then the pure ledger: events -> intervals -> the month rated
//! per instance, and one hour's FOCUS CSV. Prints the times.
//!
//! Usage: cargo run --release -p nubis-control-plane --example billing_bench [-- N]

use std::collections::HashMap;
use std::time::Instant;

use nubis_control_plane::domain::billing::rating::HourlyPrice;
use nubis_control_plane::domain::billing::{focus, ledger, rate, GroupBy};
use nubis_control_plane::domain::events::{EventKind, InstanceEvent};
use nubis_control_plane::domain::lifecycle::State;
use nubis_control_plane::ids::{AccountId, InstanceId};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let month_start_ms: i64 = 1_796_083_200_000; // 2026-12-01
    let day = 86_400_000;
    let accounts: Vec<AccountId> = (0..100)
        .map(|i| {
            AccountId::parse(&format!("{:012}", 100_000_000_000u64 + i))
                .unwrap_or_else(|_| AccountId::operator())
        })
        .collect();
    let mut events = Vec::with_capacity(n * 124);
    for i in 0..n {
        let account = accounts[i % accounts.len()].clone();
        let id = InstanceId::generate();
        let mut seq = 0;
        let mut push = |old: Option<State>, new: State, t: i64| {
            events.push(InstanceEvent {
                account: account.clone(),
                instance_id: id.clone(),
                seq,
                kind: match (seq, new) {
                    (0, _) => EventKind::Created,
                    (_, State::Terminated) => EventKind::Terminated,
                    _ => EventKind::StateChange,
                },
                old_state: old,
                new_state: new,
                instance_type: if i % 2 == 0 { "t3.micro" } else { "m5.large" }.into(),
                vcpus: 2,
                memory_mib: 1024,
                availability_zone: ["z-a", "z-b", "z-c"][i % 3].into(),
                node_id: None,
                time_ms: t,
                reason: None,
            });
            seq += 1;
        };
        let t0 = month_start_ms + (i as i64 * 7_919) % 3_600_000;
        push(None, State::Pending, t0);
        push(Some(State::Pending), State::Running, t0 + 1_500);
        let days = if i % 10 == 0 { 15 } else { 30 };
        for d in 1..days {
            let t = t0 + d * day;
            push(Some(State::Running), State::Stopping, t - 3_600_000);
            push(Some(State::Stopping), State::Stopped, t - 3_590_000);
            push(Some(State::Stopped), State::Pending, t);
            push(Some(State::Pending), State::Running, t + 2_000);
        }
        if i % 10 == 0 {
            let t = t0 + days * day;
            push(Some(State::Running), State::ShuttingDown, t);
            push(Some(State::ShuttingDown), State::Terminated, t + 1_000);
        }
    }
    let mut prices = HashMap::new();
    prices.insert("t3.micro".to_string(), HourlyPrice(10_400_000));
    prices.insert("m5.large".to_string(), HourlyPrice(96_000_000));
    let (from, to) = (month_start_ms / 1000, month_start_ms / 1000 + 30 * 86_400);

    let t = Instant::now();
    let ivs = ledger::intervals(&events, 0);
    let t_iv = t.elapsed();
    let t = Instant::now();
    let usage = rate(&ivs, &prices, "USD", (from, to), to, GroupBy::Instance);
    let t_rate = t.elapsed();
    let t = Instant::now();
    let csv = focus::hour_csv(&ivs, &prices, "USD", "r", from + 3600 * 100, to);
    let t_hour = t.elapsed();
    println!(
        "{n} instances, {} events, {} intervals: intervals {:.0} ms, month rated per instance {:.0} ms \
         ({} lines, {} s, total {}), total ledger {:.0} ms; one hour's CSV {:.0} ms ({} lines)",
        events.len(),
        ivs.len(),
        t_iv.as_secs_f64() * 1e3,
        t_rate.as_secs_f64() * 1e3,
        usage.lines.len(),
        usage.total_seconds,
        usage.total,
        (t_iv + t_rate).as_secs_f64() * 1e3,
        t_hour.as_secs_f64() * 1e3,
        csv.lines().count() - 1,
    );
}
