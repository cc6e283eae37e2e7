//! The EC2 actions over the domain layer ([`crate::domain::Domain`]), in
//! process: [`DomainBackend`] resolves access keys to callers and hands each
//! typed request to the noun's module, which calls the domain and writes the
//! XML. One module per noun: [`instances`], [`images`], [`keypairs`],
//! [`tags`], [`regions`] (zones, regions, instance types), [`launch_templates`],
//! [`vpcs`], [`vpc_groups`] and [`vpc_public`] (VPCs, subnets, security
//! groups, Elastic IPs, internet gateways, route tables).
//!
//! DryRun: the request is parsed, authenticated and checked as far as the
//! domain can without changing anything, then answered `DryRunOperation`.

pub mod attributes;
pub mod images;
pub mod instances;
pub mod keypairs;
pub mod launch_templates;
pub mod regions;
pub mod tags;
pub mod vpc_enis;
pub mod vpc_groups;
pub mod vpc_public;
pub mod vpcs;

use std::sync::Arc;

use axum::Router;

use super::error::Ec2Error;
use super::requests::Request;
use super::{BoxFuture, GatewayConfig, KeyInfo};
use crate::domain::{Caller, Domain};
use crate::ids::AccountId;

/// The gateway's backend: the domain layer of this replica.
#[derive(Debug, Clone)]
pub struct DomainBackend {
    domain: Arc<Domain>,
}

impl DomainBackend {
    /// A backend over `domain`.
    pub fn new(domain: Arc<Domain>) -> Self {
        Self { domain }
    }
}

/// The EC2 gateway over `domain`, with default limits. The control plane
/// mounts this on its HTTP listener (`[http] listen`).
pub fn router(domain: Arc<Domain>) -> Router {
    router_with_config(domain, GatewayConfig::default())
}

/// The EC2 gateway over `domain` with explicit limits, sharing its
/// listener with the CloudWatch endpoint ([`crate::cloudwatch`]).
pub fn router_with_config(domain: Arc<Domain>, cfg: GatewayConfig) -> Router {
    let cw = crate::cloudwatch::CloudWatch::new(domain.clone(), cfg.max_body, cfg.rate_limit);
    let ec2 = super::router_with(Arc::new(DomainBackend::new(domain)), cfg);
    crate::cloudwatch::route_by_service(ec2, Arc::new(cw))
}

fn caller_of(account: &str) -> Result<Caller, Ec2Error> {
    let id = AccountId::parse(account)?;
    Ok(if id == AccountId::operator() {
        Caller::Operator
    } else {
        Caller::Tenant(id)
    })
}

impl super::Backend for DomainBackend {
    fn region(&self) -> &str {
        &self.domain.config().region
    }

    fn credentials<'a>(
        &'a self,
        access_key_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<KeyInfo>, Ec2Error>> {
        Box::pin(async move {
            match self.domain.access_key_secret(access_key_id).await {
                Ok((Caller::Tenant(account), secret)) => Ok(Some(KeyInfo {
                    account: account.to_string(),
                    secret,
                })),
                Ok((Caller::Operator, secret)) => Ok(Some(KeyInfo {
                    account: AccountId::operator().to_string(),
                    secret,
                })),
                // Node and enrolment credentials have no EC2 access: as if unknown.
                Ok(_) => Ok(None),
                Err(crate::error::Error::UnknownAccessKey) => Ok(None),
                Err(e) => Err(e.into()),
            }
        })
    }

    fn first_use<'a>(&'a self, signature: &'a [u8]) -> BoxFuture<'a, Result<bool, Ec2Error>> {
        Box::pin(async move {
            if !self.domain.config().http.replay_cache {
                return Ok(true);
            }
            Ok(self.domain.first_use_of_sigv4(signature).await?)
        })
    }

    fn dispatch<'a>(
        &'a self,
        account: &'a str,
        request_id: &'a str,
        req: Request,
    ) -> BoxFuture<'a, Result<String, Ec2Error>> {
        Box::pin(async move {
            let caller = caller_of(account)?;
            let d = &*self.domain;
            let rid = request_id;
            match req {
                Request::RunInstances(r) => instances::run(d, &caller, rid, r).await,
                Request::DescribeInstances(r) => instances::describe(d, &caller, rid, r).await,
                Request::StartInstances(r) => {
                    instances::change(d, &caller, rid, "StartInstances", r).await
                }
                Request::StopInstances(r) => {
                    instances::change(d, &caller, rid, "StopInstances", r).await
                }
                Request::RebootInstances(r) => {
                    instances::change(d, &caller, rid, "RebootInstances", r).await
                }
                Request::TerminateInstances(r) => {
                    instances::change(d, &caller, rid, "TerminateInstances", r).await
                }
                Request::GetConsoleOutput(r) => instances::console(d, &caller, rid, r).await,
                Request::ModifyInstanceMetadataOptions(r) => {
                    instances::modify_metadata_options(d, &caller, rid, r).await
                }
                Request::DescribeInstanceStatus(r) => instances::status(d, &caller, rid, r).await,
                Request::DescribeAvailabilityZones(r) => regions::zones(d, rid, r).await,
                Request::DescribeRegions(r) => regions::regions(d, rid, r),
                Request::DescribeInstanceTypes(r) => regions::instance_types(d, rid, r),
                Request::DescribeImages(r) => images::describe(d, &caller, rid, r).await,
                Request::RegisterImage(r) => images::register(d, &caller, rid, r).await,
                Request::DeregisterImage(r) => images::deregister(d, &caller, rid, r).await,
                Request::CopyImage(r) => images::copy(d, &caller, rid, r).await,
                Request::DescribeImageAttribute(r) => {
                    images::describe_attribute(d, &caller, rid, r).await
                }
                Request::ModifyImageAttribute(r) => {
                    images::modify_attribute(d, &caller, rid, r).await
                }
                Request::CreateKeyPair(r) => keypairs::create(d, &caller, rid, r).await,
                Request::ImportKeyPair(r) => keypairs::import(d, &caller, rid, r).await,
                Request::DescribeKeyPairs(r) => keypairs::describe(d, &caller, rid, r).await,
                Request::DeleteKeyPair(r) => keypairs::delete(d, &caller, rid, r).await,
                Request::CreateTags(r) => tags::create(d, &caller, rid, r).await,
                Request::DeleteTags(r) => tags::delete(d, &caller, rid, r).await,
                Request::DescribeTags(r) => tags::describe(d, &caller, rid, r).await,
                Request::DescribeInstanceAttribute(r) => {
                    attributes::describe(d, &caller, rid, r).await
                }
                Request::ModifyInstanceAttribute(r) => attributes::modify(d, &caller, rid, r).await,
                Request::DescribeInstanceTypeOfferings(r) => regions::offerings(d, rid, r),
                Request::GetConsoleScreenshot(r) => {
                    attributes::screenshot(d, &caller, rid, r).await
                }
                Request::LaunchTemplate(r) => launch_templates::handle(d, &caller, rid, r).await,
                Request::Vpc(r) => vpcs::handle(d, &caller, rid, r).await,
            }
        })
    }

    fn dispatch_autoscaling<'a>(
        &'a self,
        account: &'a str,
        request_id: &'a str,
        form: std::collections::BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<String, Ec2Error>> {
        Box::pin(async move {
            let caller = caller_of(account)?;
            super::autoscaling::dispatch(&self.domain, &caller, request_id, form).await
        })
    }
}

/// Answers a dry run once the checks passed.
pub(crate) fn dry_run_ok() -> Result<String, Ec2Error> {
    Err(Ec2Error::dry_run())
}

/// A `<return>true</return>` response.
pub(crate) fn return_true(action: &'static str, rid: &str) -> String {
    let mut w = super::xml::XmlWriter::response(action, rid);
    w.bool("return", true);
    w.finish()
}

/// Domain tags as `(key, value)` pairs.
pub(crate) fn tag_pairs(tags: &[super::query::Tag]) -> Vec<(String, String)> {
    tags.iter()
        .map(|t| (t.key.clone(), t.value.clone()))
        .collect()
}

/// Gateway filters as domain filters.
pub(crate) fn domain_filters(
    filters: Vec<super::query::Filter>,
) -> Vec<crate::domain::filters::Filter> {
    filters
        .into_iter()
        .map(|f| crate::domain::filters::Filter {
            name: f.name,
            values: f.values,
        })
        .collect()
}

/// Milliseconds since the epoch as a timestamp (the epoch itself for
/// out-of-range values).
pub(crate) fn time_ms(ms: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests;
