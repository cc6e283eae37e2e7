//! The control plane's one error type. It knows nothing of gRPC or HTTP: the
//! edges ([`crate::api`] and [`crate::ec2`]) convert it, using [`Error::code`]
//! (the EC2 error code) and [`Error::kind`].

use std::borrow::Cow;

/// Result alias for the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Coarse class of an error, for mapping onto gRPC codes / HTTP statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or names something invalid (400 / INVALID_ARGUMENT).
    InvalidInput,
    /// A named resource does not exist (400 / NOT_FOUND).
    NotFound,
    /// The resource exists but is in the wrong state (400 / FAILED_PRECONDITION).
    IncorrectState,
    /// The resource already exists (400 / ALREADY_EXISTS).
    AlreadyExists,
    /// Not enough capacity (500 / RESOURCE_EXHAUSTED).
    Capacity,
    /// Authentication failed (401 / UNAUTHENTICATED).
    Unauthenticated,
    /// Authenticated but not allowed (403 / PERMISSION_DENIED).
    Forbidden,
    /// A transient failure worth retrying (503 / UNAVAILABLE).
    Unavailable,
    /// A bug or corrupt state (500 / INTERNAL).
    Internal,
}

/// Everything that can go wrong in the control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input. `code` is the EC2 code (e.g. `InvalidParameterValue`).
    #[error("{message}")]
    InvalidInput {
        /// EC2 error code.
        code: Cow<'static, str>,
        /// Human-readable detail.
        message: String,
    },
    /// A named resource does not exist (e.g. `InvalidInstanceID.NotFound`).
    #[error("{message}")]
    NotFound {
        /// EC2 error code.
        code: Cow<'static, str>,
        /// Human-readable detail.
        message: String,
    },
    /// The resource is in a state that forbids the request.
    #[error("{message}")]
    IncorrectState {
        /// EC2 error code (e.g. `IncorrectInstanceState`).
        code: Cow<'static, str>,
        /// Human-readable detail.
        message: String,
    },
    /// The resource already exists (e.g. `InvalidKeyPair.Duplicate`).
    #[error("{message}")]
    AlreadyExists {
        /// EC2 error code.
        code: Cow<'static, str>,
        /// Human-readable detail.
        message: String,
    },
    /// No node can take the request (`InsufficientInstanceCapacity`).
    #[error("insufficient capacity in availability zone {zone}: {message}")]
    InsufficientCapacity {
        /// The zone asked for, or `any` when none was given.
        zone: String,
        /// What was missing.
        message: String,
    },
    /// The signature or credentials were not accepted (`AuthFailure`).
    #[error("authentication failed")]
    AuthFailure(#[source] nubis_proto::auth::AuthError),
    /// Unknown access key (`AuthFailure`).
    #[error("unknown access key")]
    UnknownAccessKey,
    /// A Node API call's client certificate does not name the host it acts
    /// for (`AuthFailure`; api/peer.rs).
    #[error("the client certificate does not name host {0:?} in its subject alternative names")]
    CertificateMismatch(String),
    /// The access key's account is disabled by the operator (`AuthFailure`).
    #[error("the account is disabled")]
    AccountDisabled,
    /// A Node API call over TCP without a client certificate from the node CA
    /// while mutual TLS is configured (`AuthFailure`).
    #[error("Node API calls over TCP need a client certificate issued by the node CA (grpc.tls.client_ca_file)")]
    ClientCertificateRequired,
    /// The caller may not do this (`UnauthorizedOperation`).
    #[error("not authorized: {0}")]
    Unauthorized(String),
    /// The caller's account is over its gRPC request rate
    /// (`RequestLimitExceeded`, `RESOURCE_EXHAUSTED`).
    #[error("request limit exceeded: slow down and retry")]
    RateLimited,
    /// Optimistic concurrency lost too many times (`RequestLimitExceeded`).
    #[error("too much concurrent modification of {0}, retry")]
    Contention(String),
    /// etcd failed or is unreachable (`ServiceUnavailable`).
    #[error("etcd request failed")]
    Etcd(#[source] etcd_client::Error),
    /// A stored record does not decode (`InternalError`).
    #[error("stored record {key} is corrupt")]
    Corrupt {
        /// The etcd key.
        key: String,
        /// The decode error.
        #[source]
        source: serde_json::Error,
    },
    /// A stored value is larger than `store::record::MAX_VALUE_BYTES`
    /// (`InternalError`): not decoded.
    #[error("stored record {key} is too large ({bytes} bytes)")]
    TooLarge {
        /// The etcd key.
        key: String,
        /// Its size.
        bytes: usize,
    },
    /// A fenced write of a reconciler leader that has lost its election key
    /// (`store::Fence`): nothing was written, and nothing will be.
    #[error("leadership lost: the write was fenced off")]
    Fenced,
    /// A local file operation failed, e.g. writing the usage export
    /// (`InternalError`).
    #[error("cannot {0}")]
    Io(&'static str, #[source] std::io::Error),
    /// Generating or encoding key material failed (`InternalError`).
    #[error("cannot {0} key material")]
    KeyMaterial(
        &'static str,
        #[source] Box<dyn std::error::Error + Send + Sync>,
    ),
    /// A condition that should not happen (`InternalError`).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<etcd_client::Error> for Error {
    fn from(e: etcd_client::Error) -> Self {
        Error::Etcd(e)
    }
}

impl Error {
    /// `InvalidParameterValue` with a message.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidInput {
            code: Cow::Borrowed("InvalidParameterValue"),
            message: message.into(),
        }
    }

    /// Bad input with a specific EC2 code.
    pub fn invalid_code(code: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidInput {
            code: Cow::Borrowed(code),
            message: message.into(),
        }
    }

    /// `MissingParameter`.
    pub fn missing(name: &str) -> Self {
        Self::invalid_code(
            "MissingParameter",
            format!("the request must contain the parameter {name}"),
        )
    }

    /// A not-found error with an EC2 code.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::NotFound {
            code: Cow::Borrowed(code),
            message: message.into(),
        }
    }

    /// An incorrect-state error with an EC2 code.
    pub fn incorrect_state(code: &'static str, message: impl Into<String>) -> Self {
        Self::IncorrectState {
            code: Cow::Borrowed(code),
            message: message.into(),
        }
    }

    /// The EC2 error code for this error.
    pub fn code(&self) -> &str {
        match self {
            Error::InvalidInput { code, .. }
            | Error::NotFound { code, .. }
            | Error::IncorrectState { code, .. }
            | Error::AlreadyExists { code, .. } => code,
            Error::InsufficientCapacity { .. } => "InsufficientInstanceCapacity",
            Error::AuthFailure(_)
            | Error::UnknownAccessKey
            | Error::AccountDisabled
            | Error::CertificateMismatch(_)
            | Error::ClientCertificateRequired => "AuthFailure",
            Error::Unauthorized(_) => "UnauthorizedOperation",
            Error::Contention(_) | Error::RateLimited => "RequestLimitExceeded",
            Error::Etcd(_) | Error::Fenced => "ServiceUnavailable",
            Error::Corrupt { .. }
            | Error::TooLarge { .. }
            | Error::Io(..)
            | Error::KeyMaterial(..)
            | Error::Internal(_) => "InternalError",
        }
    }

    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidInput { .. } => ErrorKind::InvalidInput,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::IncorrectState { .. } => ErrorKind::IncorrectState,
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::InsufficientCapacity { .. } | Error::RateLimited => ErrorKind::Capacity,
            Error::AuthFailure(_)
            | Error::UnknownAccessKey
            | Error::AccountDisabled
            | Error::CertificateMismatch(_)
            | Error::ClientCertificateRequired => ErrorKind::Unauthenticated,
            Error::Unauthorized(_) => ErrorKind::Forbidden,
            Error::Contention(_) | Error::Etcd(_) | Error::Fenced => ErrorKind::Unavailable,
            Error::Corrupt { .. }
            | Error::TooLarge { .. }
            | Error::Io(..)
            | Error::KeyMaterial(..)
            | Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The message to show a client: the error and its causes, except for
    /// internal errors whose detail stays in the logs.
    pub fn client_message(&self) -> String {
        match self.kind() {
            ErrorKind::Internal => "an internal error occurred".to_string(),
            _ => {
                let mut s = self.to_string();
                let mut src = std::error::Error::source(self);
                while let Some(e) = src {
                    s.push_str(": ");
                    s.push_str(&e.to_string());
                    src = e.source();
                }
                s
            }
        }
    }
}
