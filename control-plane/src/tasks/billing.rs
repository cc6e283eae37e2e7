//! `billing-export` (leader-only, every 60 s): writes the FOCUS CSV file of
//! each completed hour that has none yet ([`Domain::export_usage`]). Only
//! the leader writes, and a file is a function of the events, so a leader
//! change mid-run rewrites the same bytes.

use std::sync::Arc;
use std::time::Duration;

use crate::domain::model::now_ms;
use crate::domain::Domain;
use crate::tasks::{Mode, RunContext, RunFuture, Task};

/// `billing-export`.
#[derive(Debug)]
pub struct BillingExport(pub Arc<Domain>);

impl Task for BillingExport {
    fn name(&self) -> &'static str {
        "billing-export"
    }
    fn period(&self) -> Duration {
        Duration::from_secs(60)
    }
    fn mode(&self) -> Mode {
        Mode::LeaderOnly
    }
    fn run<'a>(&'a self, _: &'a RunContext) -> RunFuture<'a> {
        Box::pin(async move {
            let r = self.0.export_usage(now_ms()).await?;
            if !r.written.is_empty() {
                tracing::info!(hours = r.written.len(), "usage export written");
            }
            Ok(format!("wrote {} hour files", r.written.len()))
        })
    }
}
