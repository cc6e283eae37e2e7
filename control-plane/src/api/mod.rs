//! The gRPC edge: thin handlers that authenticate, convert proto <-> domain
//! types and map [`Error`] onto `tonic::Status` (with the EC2 error code in
//! the `x-nubis-error-code` metadata). No business logic lives here.

pub mod admin;
pub mod compute;
pub mod node;

use std::sync::Arc;

use nubis_proto::auth::SignedHeaders;
use tonic::{Request, Status};

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

/// Authenticates a request to `path` (the full gRPC method path).
pub async fn authenticate<T>(
    domain: &Domain,
    req: &Request<T>,
    path: &str,
) -> Result<Caller, Status> {
    let headers = SignedHeaders::from_metadata(req.metadata())
        .map_err(|e| to_status(Error::AuthFailure(e)))?;
    domain.authenticate(path, &headers).await.map_err(to_status)
}

/// All three services over one domain, ready for `tonic::transport::Server`.
pub fn routes(domain: Arc<Domain>) -> tonic::service::Routes {
    let max = 8 * 1024 * 1024;
    tonic::service::Routes::new(
        nubis_proto::compute::v1::compute_server::ComputeServer::new(compute::ComputeApi::new(
            domain.clone(),
        ))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max),
    )
    .add_service(nubis_proto::compute::v1::admin_server::AdminServer::new(
        admin::AdminApi::new(domain.clone()),
    ))
    .add_service(
        nubis_proto::node::v1::node_server::NodeServer::new(node::NodeApi::new(domain))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
    )
}
