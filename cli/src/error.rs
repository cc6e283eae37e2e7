//! The CLI's one error type, its exit codes and its "what to do" hints.
//!
//! Exit codes (stable, documented in docs/cli.md):
//!
//! | code | meaning                                                        |
//! |------|----------------------------------------------------------------|
//! | 0    | success                                                        |
//! | 1    | internal or unexpected error                                   |
//! | 2    | bad usage (unknown flag, invalid argument value)               |
//! | 3    | configuration problem (profile file, missing credentials)      |
//! | 4    | control plane unreachable or unavailable                       |
//! | 5    | authentication or authorization refused                        |
//! | 6    | resource not found                                             |
//! | 7    | request rejected as invalid or in the wrong state              |
//! | 8    | insufficient capacity or quota                                 |
//! | 9    | `--wait`/`wait` ended without reaching the wanted state        |
//! | 10   | conflict: the resource already exists                          |

use std::path::PathBuf;

use thiserror::Error;

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: internal error.
pub const EXIT_INTERNAL: i32 = 1;
/// Exit code: bad usage.
pub const EXIT_USAGE: i32 = 2;
/// Exit code: configuration problem.
pub const EXIT_CONFIG: i32 = 3;
/// Exit code: control plane unreachable.
pub const EXIT_UNAVAILABLE: i32 = 4;
/// Exit code: authentication/authorization refused.
pub const EXIT_AUTH: i32 = 5;
/// Exit code: not found.
pub const EXIT_NOT_FOUND: i32 = 6;
/// Exit code: invalid request or wrong state.
pub const EXIT_INVALID: i32 = 7;
/// Exit code: insufficient capacity.
pub const EXIT_CAPACITY: i32 = 8;
/// Exit code: wait failed or timed out.
pub const EXIT_WAIT: i32 = 9;
/// Exit code: already exists.
pub const EXIT_CONFLICT: i32 = 10;

/// Everything that can make a `nubis` command fail.
#[derive(Debug, Error)]
pub enum CliError {
    /// The profile file could not be read or written.
    #[error("cannot access config file {path}")]
    ConfigIo {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The profile file is not valid.
    #[error("config file {path} is invalid")]
    ConfigParse {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: toml::de::Error,
    },
    /// A profile was named that the file does not hold.
    #[error("profile {profile:?} not found in {config_path}")]
    UnknownProfile {
        /// Requested profile.
        profile: String,
        /// File searched.
        config_path: PathBuf,
        /// Profiles that exist.
        known: Vec<String>,
    },
    /// No access key / secret anywhere.
    #[error("no credentials for profile {profile:?}")]
    MissingCredentials {
        /// Profile in use.
        profile: String,
        /// File searched.
        config_path: PathBuf,
    },
    /// The endpoint is not a URL.
    #[error("endpoint {endpoint:?} is not an http://, https:// or unix:/ URL")]
    BadEndpoint {
        /// The endpoint given.
        endpoint: String,
    },
    /// A command-line value failed validation beyond what clap checks.
    #[error("{0}")]
    Usage(String),
    /// A local file (user data, public key) could not be read.
    #[error("cannot read {path}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Could not connect to the control plane at all.
    #[error("cannot connect to the control plane at {endpoint}")]
    Connect {
        /// Endpoint tried.
        endpoint: String,
        /// Cause.
        #[source]
        source: tonic::transport::Error,
    },
    /// Connecting took too long.
    #[error("no answer from the control plane at {endpoint} within {after:?}")]
    ConnectTimeout {
        /// Endpoint tried.
        endpoint: String,
        /// How long we waited.
        after: std::time::Duration,
    },
    /// The control plane answered with an error status (shown as its EC2
    /// error code and message; the status is the error itself, not a cause).
    #[error("{}", status_text(.0))]
    Api(tonic::Status),
    /// Something the user named does not exist (found out locally).
    #[error("{0}")]
    NotFound(String),
    /// A wait ended without the wanted state.
    #[error("{0}")]
    Wait(String),
    /// Writing output failed.
    #[error("cannot write output")]
    Output(#[source] std::io::Error),
}

/// The EC2-style error code the control plane attaches to a status
/// (`x-nubis-error-code`), if any.
pub fn ec2_code(s: &tonic::Status) -> Option<&str> {
    s.metadata()
        .get(nubis_proto::ERROR_CODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

fn status_text(s: &tonic::Status) -> String {
    let msg = s.message();
    let code = ec2_code(s).unwrap_or_else(|| code_name(s.code()));
    if msg.is_empty() {
        code.to_string()
    } else {
        format!("{code}: {msg}")
    }
}

/// A short name for a gRPC code, as printed to users.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Cancelled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "InsufficientCapacity",
        FailedPrecondition => "IncorrectState",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> Self {
        CliError::Api(s)
    }
}

impl CliError {
    /// The process exit code for this error (see the module docs).
    pub fn exit_code(&self) -> i32 {
        use tonic::Code;
        match self {
            CliError::ConfigIo { .. }
            | CliError::ConfigParse { .. }
            | CliError::UnknownProfile { .. }
            | CliError::MissingCredentials { .. }
            | CliError::BadEndpoint { .. } => EXIT_CONFIG,
            CliError::Usage(_) | CliError::ReadFile { .. } => EXIT_USAGE,
            CliError::Connect { .. } | CliError::ConnectTimeout { .. } => EXIT_UNAVAILABLE,
            CliError::Wait(_) => EXIT_WAIT,
            CliError::NotFound(_) => EXIT_NOT_FOUND,
            CliError::Output(_) => EXIT_INTERNAL,
            CliError::Api(s) => match s.code() {
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => EXIT_UNAVAILABLE,
                Code::Unauthenticated | Code::PermissionDenied => EXIT_AUTH,
                Code::NotFound => EXIT_NOT_FOUND,
                Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => EXIT_INVALID,
                Code::ResourceExhausted => EXIT_CAPACITY,
                Code::AlreadyExists | Code::Aborted => EXIT_CONFLICT,
                _ => EXIT_INTERNAL,
            },
        }
    }

    /// A hint that tells the user what to do next, when there is one.
    pub fn hint(&self) -> Option<String> {
        use tonic::Code;
        match self {
            CliError::UnknownProfile { known, .. } => Some(if known.is_empty() {
                "no profiles exist yet; create one with `nubis configure --profile NAME`".into()
            } else {
                format!(
                    "known profiles: {}; create a new one with `nubis configure --profile NAME`",
                    known.join(", ")
                )
            }),
            CliError::MissingCredentials { profile, .. } => Some(format!(
                "run `nubis configure --profile {profile}`, or set NUBIS_ACCESS_KEY_ID and \
                 NUBIS_SECRET_ACCESS_KEY (an operator creates keys with `nubis admin accounts create`)"
            )),
            CliError::ConfigParse { .. } => {
                Some("fix the file or recreate it with `nubis configure`".into())
            }
            CliError::BadEndpoint { .. } => {
                Some("use a URL such as http://127.0.0.1:50051 (--endpoint or NUBIS_ENDPOINT)".into())
            }
            CliError::Connect { .. } | CliError::ConnectTimeout { .. } => Some(
                "check that nubis-control-plane is running and that --endpoint/NUBIS_ENDPOINT \
                 or the profile's endpoint points at its gRPC address"
                    .into(),
            ),
            CliError::Api(s) => match s.code() {
                Code::Unauthenticated => Some(
                    "check the profile's access key and secret (`nubis configure list`)".into(),
                ),
                Code::PermissionDenied => Some(
                    "this account may not do that; operator commands need an admin account".into(),
                ),
                Code::ResourceExhausted => Some(
                    "try fewer instances, a smaller type, another zone, or omit --zone".into(),
                ),
                Code::Unavailable => {
                    Some("the control plane is unavailable; retry in a moment".into())
                }
                Code::Unimplemented => {
                    Some("the control plane is older than this CLI; upgrade it".into())
                }
                _ => None,
            },
            CliError::Wait(_) => Some(
                "inspect it with `nubis instances describe ID` and `nubis instances console ID`"
                    .into(),
            ),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_codes_map_to_documented_exit_codes() {
        let cases = [
            (tonic::Code::NotFound, EXIT_NOT_FOUND),
            (tonic::Code::ResourceExhausted, EXIT_CAPACITY),
            (tonic::Code::Unauthenticated, EXIT_AUTH),
            (tonic::Code::PermissionDenied, EXIT_AUTH),
            (tonic::Code::InvalidArgument, EXIT_INVALID),
            (tonic::Code::FailedPrecondition, EXIT_INVALID),
            (tonic::Code::Unavailable, EXIT_UNAVAILABLE),
            (tonic::Code::AlreadyExists, EXIT_CONFLICT),
            (tonic::Code::Internal, EXIT_INTERNAL),
        ];
        for (code, exit) in cases {
            assert_eq!(
                CliError::Api(tonic::Status::new(code, "x")).exit_code(),
                exit
            );
        }
    }

    #[test]
    fn capacity_error_names_ec2_code_and_hints() {
        let mut st = tonic::Status::resource_exhausted("not enough capacity in nubis-local-1a");
        st.metadata_mut().insert(
            nubis_proto::ERROR_CODE_HEADER,
            "InsufficientInstanceCapacity".parse().unwrap(),
        );
        let e = CliError::Api(st);
        assert_eq!(
            e.to_string(),
            "InsufficientInstanceCapacity: not enough capacity in nubis-local-1a"
        );
        assert!(e.hint().unwrap().contains("fewer"));
    }
}
