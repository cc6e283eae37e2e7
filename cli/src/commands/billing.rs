//! `nubis billing usage|invoice`: usage lines and invoices as a table (with
//! a total row) or `-o json`.

use nubis_proto::billing::v1 as pb;
use serde::Serialize;

use super::Ctx;
use crate::cli::{BillingCmd, GroupBy};
use crate::error::CliError;
use crate::output::{emit, render_table, rfc3339_ms, Format};

/// One usage line.
#[derive(Debug, Serialize)]
pub struct LineView {
    /// Owner.
    pub account_id: String,
    /// Instance (grouped by instance).
    pub instance_id: String,
    /// Instance type (grouped by instance or type).
    pub instance_type: String,
    /// Zone (grouped by instance or zone).
    pub availability_zone: String,
    /// Billed seconds.
    pub seconds: i64,
    /// Price per hour.
    pub unit_price: String,
    /// Cost.
    pub cost: String,
}

/// Usage or an invoice.
#[derive(Debug, Serialize)]
pub struct UsageView {
    /// The invoice's month (empty for usage).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub month: String,
    /// Currency.
    pub currency: String,
    /// Window start (RFC 3339).
    pub from: String,
    /// Window end (RFC 3339).
    pub to: String,
    /// Lines.
    pub lines: Vec<LineView>,
    /// Sum of seconds.
    pub total_seconds: i64,
    /// Exact total.
    pub total: String,
}

fn view(month: String, u: pb::GetUsageResponse) -> UsageView {
    UsageView {
        month,
        currency: u.currency,
        from: rfc3339_ms(u.from_ms),
        to: rfc3339_ms(u.to_ms),
        total_seconds: u.total_seconds,
        total: u.total,
        lines: u
            .lines
            .into_iter()
            .map(|l| LineView {
                account_id: l.account_id,
                instance_id: l.instance_id,
                instance_type: l.instance_type,
                availability_zone: l.availability_zone,
                seconds: l.seconds,
                unit_price: l.unit_price,
                cost: l.cost,
            })
            .collect(),
    }
}

/// The text of a usage view.
pub fn render(format: Format, v: &UsageView) -> Result<String, CliError> {
    if format == Format::Json {
        let mut s = serde_json::to_string_pretty(v)
            .map_err(|e| CliError::Output(std::io::Error::other(e)))?;
        s.push('\n');
        return Ok(s);
    }
    let mut rows: Vec<Vec<String>> = v
        .lines
        .iter()
        .map(|l| {
            vec![
                l.account_id.clone(),
                l.instance_id.clone(),
                l.instance_type.clone(),
                l.availability_zone.clone(),
                l.seconds.to_string(),
                l.unit_price.clone(),
                l.cost.clone(),
            ]
        })
        .collect();
    rows.push(vec![
        "TOTAL".into(),
        String::new(),
        String::new(),
        String::new(),
        v.total_seconds.to_string(),
        v.currency.clone(),
        v.total.clone(),
    ]);
    Ok(render_table(
        &[
            "ACCOUNT", "INSTANCE", "TYPE", "ZONE", "SECONDS", "PRICE/H", "COST",
        ],
        &rows,
    ))
}

/// Runs `nubis billing ...`.
pub async fn run(ctx: &Ctx, cmd: BillingCmd) -> Result<(), CliError> {
    let mut client = ctx.client().await?;
    let v = match cmd {
        BillingCmd::Usage {
            from,
            to,
            group_by,
            scope,
        } => {
            if to.is_some_and(|t| from >= t) {
                return Err(CliError::Usage("--from must be before --to".to_string()));
            }
            let group_by = match group_by {
                GroupBy::Instance => "instance",
                GroupBy::Type => "type",
                GroupBy::Zone => "zone",
            };
            let u = client
                .billing
                .get_usage(pb::GetUsageRequest {
                    account_id: scope.account.unwrap_or_default(),
                    all_accounts: scope.all_accounts,
                    from_ms: from,
                    to_ms: to.unwrap_or(0),
                    group_by: group_by.into(),
                })
                .await?
                .into_inner();
            view(String::new(), u)
        }
        BillingCmd::Invoice { month, scope } => {
            let r = client
                .billing
                .get_invoice(pb::GetInvoiceRequest {
                    account_id: scope.account.unwrap_or_default(),
                    all_accounts: scope.all_accounts,
                    month,
                })
                .await?
                .into_inner();
            view(r.month, r.usage.unwrap_or_default())
        }
    };
    emit(&render(ctx.format, &v)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_end_with_the_total_and_json_keeps_exact_strings() {
        let v = view(
            "2026-12".into(),
            pb::GetUsageResponse {
                currency: "USD".into(),
                from_ms: 1_796_083_200_000,
                to_ms: 1_798_761_600_000,
                lines: vec![pb::UsageLine {
                    account_id: "111122223333".into(),
                    instance_type: "t3.micro".into(),
                    seconds: 121,
                    unit_price: "0.010400000".into(),
                    cost: "0.000349556".into(),
                    ..Default::default()
                }],
                total_seconds: 121,
                total: "0.000349556".into(),
            },
        );
        let t = render(Format::Table, &v).unwrap_or_default();
        let last = t.lines().last().unwrap_or_default();
        assert!(last.starts_with("TOTAL"), "{t}");
        assert!(last.contains("121") && last.ends_with("0.000349556"), "{t}");
        let j = render(Format::Json, &v).unwrap_or_default();
        let back: serde_json::Value = serde_json::from_str(&j).unwrap_or_default();
        assert_eq!(back["total"], "0.000349556");
        assert_eq!(back["month"], "2026-12");
        assert_eq!(back["lines"][0]["seconds"], 121);
    }
}
