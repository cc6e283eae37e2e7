//! The Billing service: thin handlers over [`crate::domain::billing`].

use std::sync::Arc;

use nubis_proto::billing::v1 as pb;
use nubis_proto::billing::v1::billing_server::Billing;
use tonic::{Request, Response, Status};

use super::Edge;
use crate::domain::billing::{GroupBy, Scope, Usage};
use crate::domain::Domain;

/// gRPC implementation of `nubis.billing.v1.Billing`.
#[derive(Debug, Clone)]
pub struct BillingApi {
    edge: Edge,
}

impl BillingApi {
    /// Over a domain.
    pub fn new(domain: Arc<Domain>) -> Self {
        Self {
            edge: Edge::new(domain, "nubis.billing.v1.Billing"),
        }
    }

    fn domain(&self) -> &Domain {
        self.edge.domain()
    }
}

fn usage_out(u: Usage) -> pb::GetUsageResponse {
    pb::GetUsageResponse {
        currency: u.currency,
        from_ms: u.from_s * 1000,
        to_ms: u.to_s * 1000,
        total_seconds: u.total_seconds,
        total: u.total.to_string(),
        lines: u
            .lines
            .into_iter()
            .map(|l| pb::UsageLine {
                account_id: l.account.to_string(),
                instance_id: l.instance_id.map(|i| i.to_string()).unwrap_or_default(),
                instance_type: l.instance_type.unwrap_or_default(),
                availability_zone: l.availability_zone.unwrap_or_default(),
                seconds: l.seconds,
                unit_price: l.unit_price.map(|p| p.to_string()).unwrap_or_default(),
                cost: l.cost.to_string(),
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl Billing for BillingApi {
    async fn get_usage(
        &self,
        req: Request<pb::GetUsageRequest>,
    ) -> Result<Response<pb::GetUsageResponse>, Status> {
        self.edge
            .call(req, "GetUsage", |caller, r| async move {
                let scope = Scope {
                    account: Some(r.account_id),
                    all_accounts: r.all_accounts,
                };
                let group = GroupBy::parse(&r.group_by)?;
                let to = (r.to_ms != 0).then_some(r.to_ms);
                let u = self
                    .domain()
                    .usage(&caller, &scope, r.from_ms, to, group)
                    .await?;
                Ok(usage_out(u))
            })
            .await
    }

    async fn get_invoice(
        &self,
        req: Request<pb::GetInvoiceRequest>,
    ) -> Result<Response<pb::GetInvoiceResponse>, Status> {
        self.edge
            .call(req, "GetInvoice", |caller, r| async move {
                let scope = Scope {
                    account: Some(r.account_id),
                    all_accounts: r.all_accounts,
                };
                let inv = self.domain().invoice(&caller, &scope, &r.month).await?;
                Ok(pb::GetInvoiceResponse {
                    month: inv.month,
                    usage: Some(usage_out(inv.usage)),
                })
            })
            .await
    }
}
