//! CloudWatch error codes and their two wire forms: the JSON protocol's
//! `{"__type": ..., "message": ...}` with the `x-amzn-query-error` header
//! (CloudWatch is "awsQueryCompatible": botocore takes the code from that
//! header), and the Query protocol's `<ErrorResponse>` XML.

use http::StatusCode;

use crate::ec2::xml::escape_into;

/// The error codes the CloudWatch endpoint answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CwCode {
    /// A parameter has a bad value.
    InvalidParameterValue,
    /// Parameters that cannot be used together (or a result too large).
    InvalidParameterCombination,
    /// A required parameter is absent.
    MissingParameter,
    /// The action is unknown.
    InvalidAction,
    /// The JSON body does not parse.
    SerializationException,
    /// No Authorization header.
    MissingAuthenticationToken,
    /// Malformed signature or wrong credential scope.
    IncompleteSignature,
    /// Unknown access key.
    InvalidClientTokenId,
    /// The signature does not match.
    SignatureDoesNotMatch,
    /// The request is older than 15 minutes.
    RequestExpired,
    /// The body is too large.
    RequestEntityTooLarge,
    /// Per-account rate limit.
    Throttling,
    /// Our fault.
    InternalServiceError,
}

impl CwCode {
    /// The code string (`<Code>`, the query-error header).
    pub fn as_str(self) -> &'static str {
        match self {
            CwCode::InvalidParameterValue => "InvalidParameterValue",
            CwCode::InvalidParameterCombination => "InvalidParameterCombination",
            CwCode::MissingParameter => "MissingParameter",
            CwCode::InvalidAction => "InvalidAction",
            CwCode::SerializationException => "SerializationException",
            CwCode::MissingAuthenticationToken => "MissingAuthenticationToken",
            CwCode::IncompleteSignature => "IncompleteSignature",
            CwCode::InvalidClientTokenId => "InvalidClientTokenId",
            CwCode::SignatureDoesNotMatch => "SignatureDoesNotMatch",
            CwCode::RequestExpired => "RequestExpired",
            CwCode::RequestEntityTooLarge => "RequestEntityTooLarge",
            CwCode::Throttling => "Throttling",
            CwCode::InternalServiceError => "InternalServiceError",
        }
    }

    /// The JSON protocol's `__type` (the model's exception shape name for
    /// the modelled errors, the code otherwise).
    pub fn json_type(self) -> &'static str {
        match self {
            CwCode::InvalidParameterValue => "InvalidParameterValueException",
            CwCode::InvalidParameterCombination => "InvalidParameterCombinationException",
            CwCode::MissingParameter => "MissingRequiredParameterException",
            CwCode::InternalServiceError => "InternalServiceFault",
            other => other.as_str(),
        }
    }

    /// HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            CwCode::MissingAuthenticationToken
            | CwCode::IncompleteSignature
            | CwCode::InvalidClientTokenId
            | CwCode::SignatureDoesNotMatch
            | CwCode::RequestExpired => StatusCode::FORBIDDEN,
            CwCode::RequestEntityTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            CwCode::InternalServiceError => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn fault(self) -> &'static str {
        if self.status().is_server_error() {
            "Receiver"
        } else {
            "Sender"
        }
    }
}

/// A CloudWatch error answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct CwError {
    /// Code.
    pub code: CwCode,
    /// In words.
    pub message: String,
}

impl CwError {
    /// An error of `code`.
    pub fn new(code: CwCode, message: impl Into<String>) -> Self {
        CwError {
            code,
            message: message.into(),
        }
    }

    /// `InvalidParameterValue`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(CwCode::InvalidParameterValue, message)
    }

    /// `MissingParameter` naming `name`.
    pub fn missing(name: &str) -> Self {
        Self::new(
            CwCode::MissingParameter,
            format!("The parameter {name} is required."),
        )
    }

    /// The `x-amzn-query-error` header value.
    pub fn query_error_header(&self) -> String {
        format!("{};{}", self.code.as_str(), self.code.fault())
    }

    /// JSON protocol body.
    pub fn to_json(&self) -> String {
        serde_json::json!({"__type": self.code.json_type(), "message": self.message}).to_string()
    }

    /// Query protocol body.
    pub fn to_xml(&self, request_id: &str) -> String {
        let mut s = String::from(
            "<ErrorResponse xmlns=\"http://monitoring.amazonaws.com/doc/2010-08-01/\"><Error><Type>",
        );
        s.push_str(self.code.fault());
        s.push_str("</Type><Code>");
        s.push_str(self.code.as_str());
        s.push_str("</Code><Message>");
        escape_into(&mut s, &self.message);
        s.push_str("</Message></Error><RequestId>");
        escape_into(&mut s, request_id);
        s.push_str("</RequestId></ErrorResponse>");
        s
    }
}

impl From<crate::error::Error> for CwError {
    fn from(e: crate::error::Error) -> Self {
        use crate::error::ErrorKind;
        match e.kind() {
            ErrorKind::InvalidInput => CwError::invalid(e.to_string()),
            ErrorKind::Unauthenticated | ErrorKind::Forbidden => {
                CwError::new(CwCode::InvalidClientTokenId, e.to_string())
            }
            _ => {
                tracing::warn!(error = %e, "cloudwatch: internal error");
                CwError::new(CwCode::InternalServiceError, "internal error")
            }
        }
    }
}
