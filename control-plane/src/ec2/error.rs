//! EC2 error codes and their wire form.
//!
//! Owns the set of error codes the gateway answers with, the HTTP status each
//! carries, and the rendering of `<Response><Errors>...` bodies. Domain errors
//! are mapped onto these codes at the edge (see [`super::backend::BackendError`]).

use std::borrow::Cow;
use std::fmt;

use http::StatusCode;

use super::xml::escape_into;

/// Declares [`ErrorCode`] from one table (variant => wire code, HTTP status),
/// so the enum, its code strings, its statuses and the reverse lookup cannot
/// drift apart.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $name:ident => $code:literal, $status:ident;)*) => {
        /// The EC2 error codes this gateway produces. Names and statuses follow
        /// EC2's published error-code list; botocore keys its `ClientError` on
        /// the code string.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $name,)*
            /// Any other EC2 code chosen by the domain layer, with its status.
            Other(Cow<'static, str>, StatusCode),
        }

        impl ErrorCode {
            /// The code string as it appears in `<Code>`.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$name => $code,)*
                    Self::Other(code, _) => code,
                }
            }

            /// The HTTP status EC2 answers this code with. Throttling and
            /// server-side conditions are 5xx, which botocore retries.
            pub fn status(&self) -> StatusCode {
                match self {
                    $(Self::$name => StatusCode::$status,)*
                    Self::Other(_, status) => *status,
                }
            }

            /// The variant for an EC2 code string, or [`ErrorCode::Other`] with `status`.
            pub fn from_code(code: &str, status: StatusCode) -> Self {
                match code {
                    $($code => Self::$name,)*
                    _ => Self::Other(Cow::Owned(code.to_owned()), status),
                }
            }
        }
    };
}

error_codes! {
    /// The access key is unknown or the credential scope is unacceptable.
    AuthFailure => "AuthFailure", UNAUTHORIZED;
    /// The computed signature differs from the one supplied.
    SignatureDoesNotMatch => "SignatureDoesNotMatch", FORBIDDEN;
    /// The request's timestamp is more than 5 minutes off.
    RequestExpired => "RequestExpired", BAD_REQUEST;
    /// No `Authorization` header (or no usable signature) was supplied.
    MissingAuthenticationToken => "MissingAuthenticationToken", UNAUTHORIZED;
    /// The caller may not perform the action.
    UnauthorizedOperation => "UnauthorizedOperation", FORBIDDEN;
    /// The account exceeded its request rate.
    RequestLimitExceeded => "RequestLimitExceeded", SERVICE_UNAVAILABLE;
    /// `DryRun=true` and the request would have succeeded.
    DryRunOperation => "DryRunOperation", PRECONDITION_FAILED;
    /// No `Action` parameter.
    MissingAction => "MissingAction", BAD_REQUEST;
    /// Unknown or unsupported `Action`.
    InvalidAction => "InvalidAction", BAD_REQUEST;
    /// A required parameter is absent.
    MissingParameter => "MissingParameter", BAD_REQUEST;
    /// A parameter this action does not accept.
    UnknownParameter => "UnknownParameter", BAD_REQUEST;
    /// A parameter's value is invalid.
    InvalidParameterValue => "InvalidParameterValue", BAD_REQUEST;
    /// Parameters that cannot be used together.
    InvalidParameterCombination => "InvalidParameterCombination", BAD_REQUEST;
    /// The request could not be understood (body, encoding, content type).
    InvalidRequest => "InvalidRequest", BAD_REQUEST;
    /// The request body exceeds the size limit.
    RequestEntityTooLarge => "RequestEntityTooLarge", PAYLOAD_TOO_LARGE;
    /// The request body did not arrive within `[http] body_timeout_seconds`.
    RequestTimeout => "RequestTimeout", REQUEST_TIMEOUT;
    /// A malformed instance ID.
    InvalidInstanceIdMalformed => "InvalidInstanceID.Malformed", BAD_REQUEST;
    /// An instance ID that does not exist (for this account).
    InvalidInstanceIdNotFound => "InvalidInstanceID.NotFound", BAD_REQUEST;
    /// A malformed image ID.
    InvalidAmiIdMalformed => "InvalidAMIID.Malformed", BAD_REQUEST;
    /// An image ID that does not exist (for this account).
    InvalidAmiIdNotFound => "InvalidAMIID.NotFound", BAD_REQUEST;
    /// A key pair with this name already exists.
    InvalidKeyPairDuplicate => "InvalidKeyPair.Duplicate", BAD_REQUEST;
    /// No key pair with this name.
    InvalidKeyPairNotFound => "InvalidKeyPair.NotFound", BAD_REQUEST;
    /// The public key material is not a supported format.
    InvalidKeyFormat => "InvalidKey.Format", BAD_REQUEST;
    /// A malformed account id in an image's launch permissions.
    InvalidUserIdMalformed => "InvalidUserID.Malformed", BAD_REQUEST;
    /// An image name already in use.
    InvalidAmiNameDuplicate => "InvalidAMIName.Duplicate", BAD_REQUEST;
    /// An unknown filter name.
    InvalidFilter => "InvalidFilter", BAD_REQUEST;
    /// A `NextToken` this gateway did not issue.
    InvalidPaginationToken => "InvalidPaginationToken", BAD_REQUEST;
    /// The instance is not in a state that allows the action.
    IncorrectInstanceState => "IncorrectInstanceState", BAD_REQUEST;
    /// No capacity in the requested zone or for the requested type.
    InsufficientInstanceCapacity => "InsufficientInstanceCapacity", INTERNAL_SERVER_ERROR;
    /// A feature EC2 defines that this endpoint does not provide.
    Unsupported => "Unsupported", BAD_REQUEST;
    /// The resource's attributes forbid the action (e.g. termination protection).
    OperationNotPermitted => "OperationNotPermitted", BAD_REQUEST;
    /// Hibernation was requested where it is unavailable.
    UnsupportedHibernationConfiguration => "UnsupportedHibernationConfiguration", BAD_REQUEST;
    /// A block device mapping that cannot be honoured.
    InvalidBlockDeviceMapping => "InvalidBlockDeviceMapping", BAD_REQUEST;
    /// An unknown subnet (or another account's).
    InvalidSubnetIdNotFound => "InvalidSubnetID.NotFound", BAD_REQUEST;
    /// An unknown security group (or another account's).
    InvalidGroupNotFound => "InvalidGroup.NotFound", BAD_REQUEST;
    /// An unknown placement group (Nubis has none).
    InvalidPlacementGroupUnknown => "InvalidPlacementGroup.Unknown", BAD_REQUEST;
    /// An unexpected server-side failure.
    InternalError => "InternalError", INTERNAL_SERVER_ERROR;
    /// The service is temporarily unavailable (e.g. the store is unreachable).
    Unavailable => "Unavailable", SERVICE_UNAVAILABLE;
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answered to an EC2 client: a code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ec2Error {
    /// The EC2 error code.
    pub code: ErrorCode,
    /// The message shown to the user (`<Message>`).
    pub message: String,
}

impl fmt::Display for Ec2Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Ec2Error {}

impl Ec2Error {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// `InvalidParameterValue` with `message`.
    pub fn invalid_value(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParameterValue, message)
    }

    /// `MissingParameter` for the parameter `name`.
    pub fn missing(name: &str) -> Self {
        Self::new(
            ErrorCode::MissingParameter,
            format!("The request must contain the parameter {name}"),
        )
    }

    /// `DryRunOperation`: the request would have succeeded.
    pub fn dry_run() -> Self {
        Self::new(
            ErrorCode::DryRunOperation,
            "Request would have succeeded, but DryRun flag is set.",
        )
    }

    /// `InvalidInstanceID.NotFound` for the given IDs.
    pub fn instances_not_found(ids: &[String]) -> Self {
        let message = if ids.len() == 1 {
            format!("The instance ID '{}' does not exist", ids[0])
        } else {
            format!("The instance IDs '{}' do not exist", ids.join(", "))
        };
        Self::new(ErrorCode::InvalidInstanceIdNotFound, message)
    }

    /// The HTTP status to answer with.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// The XML error document EC2 clients parse.
    pub fn to_xml(&self, request_id: &str) -> String {
        let mut s = String::with_capacity(160 + self.message.len());
        s.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>");
        escape_into(&mut s, self.code.as_str());
        s.push_str("</Code><Message>");
        escape_into(&mut s, &self.message);
        s.push_str("</Message></Error></Errors><RequestID>");
        escape_into(&mut s, request_id);
        s.push_str("</RequestID></Response>");
        s
    }
}

/// The edge mapping of the domain's error: its EC2 code, a status from its
/// kind, and the client-safe message (internal detail stays in the logs).
impl From<crate::error::Error> for Ec2Error {
    fn from(e: crate::error::Error) -> Self {
        use crate::error::ErrorKind;
        let status = match e.kind() {
            ErrorKind::InvalidInput
            | ErrorKind::NotFound
            | ErrorKind::IncorrectState
            | ErrorKind::AlreadyExists => StatusCode::BAD_REQUEST,
            ErrorKind::Capacity | ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        if e.kind() == ErrorKind::Internal {
            tracing::error!(error = %e, "ec2: internal error");
        }
        Ec2Error::new(ErrorCode::from_code(e.code(), status), e.client_message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_document_has_the_shape_botocore_parses() {
        let e = Ec2Error::new(
            ErrorCode::InvalidKeyPairDuplicate,
            "The keypair 'a<b>&\"' already exists.",
        );
        assert_eq!(
            e.to_xml("req-1"),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>\
             <Code>InvalidKeyPair.Duplicate</Code>\
             <Message>The keypair 'a&lt;b&gt;&amp;\"' already exists.</Message>\
             </Error></Errors><RequestID>req-1</RequestID></Response>"
        );
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn statuses_match_ec2() {
        assert_eq!(ErrorCode::DryRunOperation.status().as_u16(), 412);
        assert_eq!(ErrorCode::RequestLimitExceeded.status().as_u16(), 503);
        assert_eq!(ErrorCode::SignatureDoesNotMatch.status().as_u16(), 403);
        assert_eq!(ErrorCode::AuthFailure.status().as_u16(), 401);
        assert_eq!(ErrorCode::UnauthorizedOperation.status().as_u16(), 403);
        assert_eq!(ErrorCode::RequestExpired.status().as_u16(), 400);
        assert_eq!(
            ErrorCode::InvalidInstanceIdMalformed.as_str(),
            "InvalidInstanceID.Malformed"
        );
        assert_eq!(
            ErrorCode::InvalidAmiIdNotFound.as_str(),
            "InvalidAMIID.NotFound"
        );
    }

    #[test]
    fn domain_errors_keep_their_codes() {
        let e: Ec2Error =
            crate::error::Error::not_found("InvalidInstanceID.NotFound", "gone").into();
        assert_eq!(e.code, ErrorCode::InvalidInstanceIdNotFound);
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let e: Ec2Error = crate::error::Error::invalid_code("InstanceLimitExceeded", "x").into();
        assert_eq!(e.code.as_str(), "InstanceLimitExceeded");
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let e: Ec2Error = crate::error::Error::InsufficientCapacity {
            zone: "z".into(),
            message: "full".into(),
        }
        .into();
        assert_eq!(e.code, ErrorCode::InsufficientInstanceCapacity);
        let e: Ec2Error = crate::error::Error::Internal("secret detail".into()).into();
        assert_eq!(e.code, ErrorCode::InternalError);
        assert!(!e.message.contains("secret"));
    }

    #[test]
    fn not_found_message_names_every_id() {
        let e = Ec2Error::instances_not_found(&["i-1".into(), "i-2".into()]);
        assert_eq!(e.code, ErrorCode::InvalidInstanceIdNotFound);
        assert!(e.message.contains("i-1, i-2"));
    }
}
