//! The gRPC edge: thin handlers over the domain. Every handler goes through
//! one [`Edge::call`], which owns what each call has in common:
//! authentication (signed request metadata and the body digest the
//! listener's `BodyDigestLayer` computed -> [`Caller`]; for the Node
//! service also the client-certificate rule of mutual TLS), running the
//! handler's domain work, and mapping a domain [`Error`] onto a
//! `tonic::Status` (with the EC2 error code in the `x-nubis-error-code`
//! metadata). A handler only converts proto <-> domain types and calls the
//! domain; no business logic lives here.

pub mod admin;
pub mod autoscaling;
pub mod billing;
pub mod compute;
pub mod node;
mod peer;
pub mod precheck;
pub mod vpc;
pub mod vpc_enis;
pub mod vpc_public;

use std::future::Future;
use std::sync::Arc;

use nubis_proto::auth::{AuthError, BodyDigest, SignedHeaders};
use tonic::{Request, Response, Status};

use crate::domain::{Caller, Domain};
use crate::error::{Error, ErrorKind};

/// Converts a domain error into a gRPC status.
pub fn to_status(e: Error) -> Status {
    let code = match e.kind() {
        ErrorKind::InvalidInput => tonic::Code::InvalidArgument,
        ErrorKind::NotFound => tonic::Code::NotFound,
        ErrorKind::IncorrectState => tonic::Code::FailedPrecondition,
        ErrorKind::AlreadyExists => tonic::Code::AlreadyExists,
        ErrorKind::Capacity => tonic::Code::ResourceExhausted,
        ErrorKind::Unauthenticated => tonic::Code::Unauthenticated,
        ErrorKind::Forbidden => tonic::Code::PermissionDenied,
        ErrorKind::Unavailable => tonic::Code::Unavailable,
        ErrorKind::Internal => tonic::Code::Internal,
    };
    if e.kind() == ErrorKind::Internal || e.kind() == ErrorKind::Unavailable {
        tracing::error!(error = ?e, "request failed");
    }
    let mut st = Status::new(code, e.client_message());
    if let Ok(v) = e.code().parse() {
        st.metadata_mut().insert(nubis_proto::ERROR_CODE_HEADER, v);
    }
    st
}

/// One gRPC service's edge over the domain.
#[derive(Debug, Clone)]
pub(crate) struct Edge {
    domain: Arc<Domain>,
    /// Full proto service name, e.g. `nubis.compute.v1.Compute`.
    service: &'static str,
    /// Whether, with mutual TLS configured, calls over TCP must carry a
    /// client certificate (the Node service: agents).
    node_certificates: bool,
}

impl Edge {
    /// The edge of `service` (its full proto name) over `domain`.
    pub(crate) fn new(domain: Arc<Domain>, service: &'static str) -> Self {
        Self {
            domain,
            service,
            node_certificates: false,
        }
    }

    /// With mutual TLS configured, a call over TCP (it has a peer address;
    /// Unix-socket calls have none) must come with a client certificate the
    /// node CA signed (rustls verified it in the handshake).
    pub(crate) fn requiring_node_certificates(mut self) -> Self {
        self.node_certificates = true;
        self
    }

    /// The domain the handlers call.
    pub(crate) fn domain(&self) -> &Domain {
        &self.domain
    }

    /// One call of `method`: authenticates the request, runs `work` with the
    /// caller and the request message, and maps its error onto a status.
    pub(crate) async fn call<T, R, F, Fut>(
        &self,
        req: Request<T>,
        method: &str,
        work: F,
    ) -> Result<Response<R>, Status>
    where
        F: FnOnce(Caller, T) -> Fut,
        Fut: Future<Output = Result<R, Error>>,
    {
        let started = std::time::Instant::now();
        let r = match self.authenticate(&req, method).await {
            Ok(caller) => work(caller, req.into_inner())
                .await
                .map(Response::new)
                .map_err(to_status),
            Err(st) => Err(st),
        };
        let code = r.as_ref().map_or_else(|s| s.code(), |_| tonic::Code::Ok);
        crate::metrics::global().grpc(self.service, method, code, started.elapsed());
        r
    }

    async fn authenticate<T>(&self, req: &Request<T>, method: &str) -> Result<Caller, Status> {
        if self.node_certificates {
            let mtls = self
                .domain
                .config()
                .grpc
                .tls
                .as_ref()
                .is_some_and(|t| t.requires_node_certificates());
            if mtls && req.remote_addr().is_some() && req.peer_certs().is_none_or(|c| c.is_empty())
            {
                return Err(to_status(Error::ClientCertificateRequired));
            }
        }
        let headers = SignedHeaders::from_metadata(req.metadata())
            .map_err(|e| to_status(Error::AuthFailure(e)))?;
        let digest = req
            .extensions()
            .get::<BodyDigest>()
            .ok_or(Error::AuthFailure(AuthError::NoBodyDigest))
            .map_err(to_status)?;
        let path = format!("/{}/{method}", self.service);
        self.domain
            .authenticate(&path, &headers, digest)
            .await
            .map_err(to_status)
    }
}

/// Largest decoded request message (and encoded response) of the Compute
/// and Node services (user data, large RunInstances and reports).
pub const MAX_MESSAGE: usize = 8 * 1024 * 1024;

/// Largest decoded request message of the Admin, AutoScaling, Billing and
/// Networking services (tonic's default, stated here so that it is a
/// decision: none of their requests comes near it). Beyond:
/// `OUT_OF_RANGE` from tonic's decoder.
pub const MAX_SMALL_MESSAGE: usize = 4 * 1024 * 1024;

/// Largest request body the listeners buffer and digest (one message and
/// its 5-byte gRPC frame header); put [`nubis_proto::auth::BodyDigestLayer`]
/// with it in front of [`routes`].
pub const MAX_BODY: usize = MAX_MESSAGE + 5;

/// Every service (Compute, Admin, AutoScaling, Billing, Networking, Node) over one domain, ready for
/// `tonic::transport::Server` behind a [`nubis_proto::auth::BodyDigestLayer`]
/// (without it every call fails authentication). Each service's largest
/// decoded message is set here: [`MAX_MESSAGE`] or [`MAX_SMALL_MESSAGE`];
/// the digest layer refuses bodies over [`MAX_BODY`] before any decoding.
pub fn routes(domain: Arc<Domain>) -> tonic::service::Routes {
    let max = MAX_MESSAGE;
    let small = MAX_SMALL_MESSAGE;
    tonic::service::Routes::new(
        nubis_proto::compute::v1::compute_server::ComputeServer::new(compute::ComputeApi::new(
            domain.clone(),
        ))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max),
    )
    .add_service(
        nubis_proto::compute::v1::admin_server::AdminServer::new(admin::AdminApi::new(
            domain.clone(),
        ))
        .max_decoding_message_size(small),
    )
    .add_service(
        nubis_proto::autoscaling::v1::auto_scaling_server::AutoScalingServer::new(
            autoscaling::AutoScalingApi::new(domain.clone()),
        )
        .max_decoding_message_size(small),
    )
    .add_service(
        nubis_proto::billing::v1::billing_server::BillingServer::new(billing::BillingApi::new(
            domain.clone(),
        ))
        .max_decoding_message_size(small),
    )
    .add_service(
        nubis_proto::vpc::v1::networking_server::NetworkingServer::new(vpc::NetworkingApi::new(
            domain.clone(),
        ))
        .max_decoding_message_size(small),
    )
    .add_service(
        nubis_proto::node::v1::node_server::NodeServer::new(node::NodeApi::new(domain))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(st: &Status) -> Option<&str> {
        st.metadata()
            .get(nubis_proto::ERROR_CODE_HEADER)
            .and_then(|v| v.to_str().ok())
    }

    #[test]
    fn domain_errors_map_to_codes_with_the_ec2_code_in_metadata() {
        let st = to_status(Error::invalid("bad count"));
        assert_eq!(st.code(), tonic::Code::InvalidArgument);
        assert_eq!(header(&st), Some("InvalidParameterValue"));
        assert!(st.message().contains("bad count"), "{}", st.message());

        let st = to_status(Error::not_found("InvalidInstanceID.NotFound", "i-1"));
        assert_eq!(st.code(), tonic::Code::NotFound);
        assert_eq!(header(&st), Some("InvalidInstanceID.NotFound"));

        let st = to_status(Error::ClientCertificateRequired);
        assert_eq!(st.code(), tonic::Code::Unauthenticated);
        assert_eq!(header(&st), Some("AuthFailure"));

        let st = to_status(Error::Unauthorized("admin only".into()));
        assert_eq!(st.code(), tonic::Code::PermissionDenied);
        assert_eq!(header(&st), Some("UnauthorizedOperation"));
    }
}
