//! Typed requests from the API thread to the VMM event loop, and their
//! typed outcomes. The wire format (JSON lines) is the API module's
//! business; this is what the VMM loop understands.

use std::sync::mpsc;

use serde::Deserialize;

use crate::state::InvalidTransition;

/// An action the VMM loop performs on behalf of an API client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmmAction {
    /// Report state and configuration.
    Describe,
    /// Park all vCPUs.
    Pause,
    /// Let parked vCPUs run again.
    Resume,
    /// Inject Ctrl-Alt-Del through the i8042 (the guest decides what to do).
    CtrlAltDel,
    /// Stop the VM gracefully (the VMM exits 0).
    Stop,
    /// Report counters.
    Metrics,
}

/// Why an action was not performed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VmmActionError {
    /// The action makes no sense in the VM's current state.
    #[error(transparent)]
    InvalidState(#[from] InvalidTransition),
    /// The request could not be understood.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The VMM failed while performing the action.
    #[error("internal error: {0}")]
    Internal(String),
}

impl VmmActionError {
    /// Stable machine-readable kind for the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            VmmActionError::InvalidState(_) => "invalid_state",
            VmmActionError::BadRequest(_) => "bad_request",
            VmmActionError::Internal(_) => "internal",
        }
    }
}

/// Outcome of an action: a JSON result or a typed error.
pub type VmmOutcome = Result<serde_json::Value, VmmActionError>;

/// One request in flight: the action and where to send its outcome.
#[derive(Debug)]
pub struct Request {
    /// What to do.
    pub action: VmmAction,
    /// Receives exactly one outcome.
    pub reply: mpsc::Sender<VmmOutcome>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::VmState;

    #[test]
    fn actions_parse_from_wire_names() {
        for (name, action) in [
            ("describe", VmmAction::Describe),
            ("pause", VmmAction::Pause),
            ("resume", VmmAction::Resume),
            ("ctrl_alt_del", VmmAction::CtrlAltDel),
            ("stop", VmmAction::Stop),
            ("metrics", VmmAction::Metrics),
        ] {
            let parsed: VmmAction = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert_eq!(parsed, action);
        }
        assert!(serde_json::from_value::<VmmAction>(serde_json::json!("reboot")).is_err());
    }

    #[test]
    fn error_kinds() {
        let e = VmmActionError::from(InvalidTransition {
            state: VmState::Paused,
            event: "pause",
        });
        assert_eq!(e.kind(), "invalid_state");
        assert_eq!(e.to_string(), "cannot pause while paused");
        assert_eq!(VmmActionError::BadRequest("x".into()).kind(), "bad_request");
        assert_eq!(VmmActionError::Internal("x".into()).kind(), "internal");
    }
}
