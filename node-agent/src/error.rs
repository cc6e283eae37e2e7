//! The agent's one error type. Causes go in `#[source]` and are never repeated
//! in the message; conversion to wire formats happens at the edges
//! (`client.rs`, the standalone status file).

use std::path::PathBuf;

/// Everything that can go wrong inside the agent library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file could not be read.
    #[error("cannot read config file {path}")]
    ConfigRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML for our schema.
    #[error("invalid config file {path}")]
    ConfigParse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    /// A configuration value is out of range or inconsistent.
    #[error("invalid config: {0}")]
    ConfigInvalid(String),
    /// A filesystem or syscall operation failed.
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A JSON file or message did not parse.
    #[error("invalid JSON in {context}")]
    Json {
        context: String,
        #[source]
        source: serde_json::Error,
    },
    /// An identifier from outside failed validation.
    #[error("invalid {kind} {value:?}: {why}")]
    InvalidId {
        kind: &'static str,
        value: String,
        why: &'static str,
    },
    /// An image is missing or malformed.
    #[error("image {name:?}: {problem}")]
    Image { name: String, problem: String },
    /// An image file's sha256 differs from its manifest.
    #[error("image {name:?}: sha256 of {file} is {actual}, manifest says {expected}")]
    ImageChecksum {
        name: String,
        file: String,
        expected: String,
        actual: String,
    },
    /// A host command (e.g. `ip`) failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    /// cgroup v2 cannot be used as configured.
    #[error("cgroup v2 unavailable: {0}")]
    CgroupUnavailable(String),
    /// The instance IP range has no free address.
    #[error("no free address in the instance range")]
    AddressesExhausted,
    /// The VMM API answered with an error.
    #[error("VMM API {op}: {kind}: {message}")]
    VmmApi {
        op: String,
        kind: String,
        message: String,
    },
    /// The VMM API socket could not be used.
    #[error("VMM API socket {path}")]
    VmmSocket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The VMM did not answer in time.
    #[error("VMM API {op} timed out")]
    VmmTimeout { op: String },
    /// A recorded VMM process is not (or no longer) that VMM.
    #[error("pid {pid} is not the recorded VMM: {why}")]
    NotOurVmm { pid: i32, why: String },
    /// The control plane answered with an error.
    #[error("control plane {rpc}")]
    Rpc {
        rpc: &'static str,
        #[source]
        source: tonic::Status,
    },
    /// The control-plane endpoint could not be reached.
    #[error("cannot connect to control plane at {endpoint}")]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// A message from the control plane is invalid.
    #[error("invalid message from control plane: {0}")]
    Protocol(String),
    /// The instance task is gone (agent shutting down).
    #[error("instance task for {0} has stopped")]
    TaskGone(String),
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// The agent's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
