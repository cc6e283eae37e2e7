//! The VM runtime model: lifecycle states, legal transitions, request
//! admission ([`state`]) and typed state reasons ([`reason`]).

pub mod reason;
pub mod state;

pub use reason::{ReasonCode, StateReason};
pub use state::{admit, Admission, Denied, Request, State};
