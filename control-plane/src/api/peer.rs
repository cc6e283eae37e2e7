//! Binding a node's identity to its TLS client certificate.
//!
//! With mutual TLS (`[grpc.tls] client_ca_file`), a Node API call over TCP
//! must carry a certificate the node CA signed ([`super::Edge`] checks that
//! one is present; rustls checked the chain). That alone lets any host with
//! a certificate act for any other host id. Here the certificate must also
//! name the host: its subject alternative names (DNS, or IP for a host id
//! that is an address) must cover the host id the call is for — the
//! `host_id` of Register, or the host of the node a later call names. Calls
//! over the Unix socket (agents sharing the control plane's host) and
//! deployments without mutual TLS have no certificate to bind.

use std::sync::Arc;

use rustls_pki_types::{CertificateDer, ServerName};
use tonic::Request;

use crate::domain::Domain;
use crate::error::Error;
use crate::ids::NodeId;

/// The client certificate of one call, when the binding applies to it.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    certs: Option<Arc<Vec<CertificateDer<'static>>>>,
}

impl Peer {
    /// The peer of `req`: bound when mutual TLS is configured and the call
    /// came over TCP.
    pub(crate) fn of<T>(domain: &Domain, req: &Request<T>) -> Self {
        let mtls = domain
            .config()
            .grpc
            .tls
            .as_ref()
            .is_some_and(|t| t.requires_node_certificates());
        let certs = if mtls && req.remote_addr().is_some() {
            // Absent certificates are refused by the edge before any handler.
            Some(req.peer_certs().unwrap_or_default())
        } else {
            None
        };
        Self { certs }
    }

    /// Refuses the call unless the certificate names `host_id`.
    pub(crate) fn check_host(&self, host_id: &str) -> Result<(), Error> {
        let Some(certs) = &self.certs else {
            return Ok(());
        };
        if names_host(certs.first(), host_id) {
            Ok(())
        } else {
            Err(Error::CertificateMismatch(host_id.to_string()))
        }
    }

    /// Refuses the call unless the certificate names the host of `node`.
    /// An unknown node passes here: the domain refuses it with its own error.
    pub(crate) fn check_node(&self, domain: &Domain, node: &str) -> Result<(), Error> {
        if self.certs.is_none() {
            return Ok(());
        }
        let Ok(id) = NodeId::parse(node) else {
            return Ok(());
        };
        match domain.node_host_id(&id) {
            Some(host) => self.check_host(&host),
            None => Ok(()),
        }
    }
}

/// Whether the end-entity certificate `cert` is valid for `host_id`.
fn names_host(cert: Option<&CertificateDer<'_>>, host_id: &str) -> bool {
    let Some(cert) = cert else { return false };
    let Ok(name) = ServerName::try_from(host_id) else {
        return false;
    };
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else {
        return false;
    };
    ee.verify_is_valid_for_subject_name(&name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_for(sans: &[&str]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let p =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        p.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn a_certificate_names_only_its_own_hosts() {
        let c = cert_for(&["host-a", "10.0.0.7"]);
        assert!(names_host(Some(&c), "host-a"));
        assert!(names_host(Some(&c), "10.0.0.7"));
        assert!(!names_host(Some(&c), "host-b"));
        assert!(!names_host(Some(&c), "host-a.evil"));
        assert!(!names_host(Some(&c), "10.0.0.8"));
        // Host ids that are no DNS name or address cannot be bound.
        assert!(!names_host(Some(&c), "host a"));
        assert!(!names_host(None, "host-a"));
        let wild = cert_for(&["*.rack1.example"]);
        assert!(names_host(Some(&wild), "h1.rack1.example"));
        assert!(!names_host(Some(&wild), "h1.rack2.example"));
    }
}
