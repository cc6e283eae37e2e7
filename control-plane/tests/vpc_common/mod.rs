//! Shared by the VPC tests: an EC2 caller going through the gateway's
//! parser and backend, and XML text extraction.

#![allow(dead_code, clippy::unwrap_used)]

pub mod enis;

use std::collections::BTreeMap;

use nubis_control_plane::domain::{Caller, Domain};
use nubis_control_plane::ec2::error::Ec2Error;
use nubis_control_plane::ec2::requests::Request;
use nubis_control_plane::ec2::{Backend, DomainBackend};

pub struct Ec2 {
    pub backend: DomainBackend,
    pub account: String,
}

impl Ec2 {
    pub async fn new(d: &std::sync::Arc<Domain>, name: &str) -> Self {
        let (a, _, _) = d.create_account(&Caller::Operator, name).await.unwrap();
        Self {
            backend: DomainBackend::new(d.clone()),
            account: a.id.to_string(),
        }
    }

    pub async fn call(&self, action: &str, params: &[(&str, &str)]) -> Result<String, Ec2Error> {
        let mut form = BTreeMap::new();
        form.insert("Action".to_string(), action.to_string());
        form.insert("Version".to_string(), "2016-11-15".to_string());
        for (k, v) in params {
            form.insert((*k).to_string(), (*v).to_string());
        }
        let req = Request::parse(form)?;
        self.backend.dispatch(&self.account, "rid", req).await
    }

    pub async fn ok(&self, action: &str, params: &[(&str, &str)]) -> String {
        match self.call(action, params).await {
            Ok(x) => x,
            Err(e) => panic!("{action} {params:?} failed: {e}"),
        }
    }

    /// Asserts the call fails with `code`.
    pub async fn fails(&self, action: &str, params: &[(&str, &str)], code: &str) {
        match self.call(action, params).await {
            Ok(x) => panic!("{action} {params:?} succeeded, expected {code}: {x}"),
            Err(e) => assert_eq!(e.code.as_str(), code, "{action} {params:?}: {e}"),
        }
    }
}

/// Every text of `<tag>` elements in `xml`, in order.
pub fn texts(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(after[..j].to_string());
        rest = &after[j + close.len()..];
    }
    out
}

pub fn text(xml: &str, tag: &str) -> String {
    texts(xml, tag).into_iter().next().unwrap_or_default()
}
