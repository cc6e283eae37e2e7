//! Typed requests from the API thread to the VMM event loop, and their
//! typed outcomes. The wire format (JSON lines) is the API module's
//! business; this is what the VMM loop understands.

use std::sync::mpsc;

use nubis_vmm_api::error_kind;

use crate::state::InvalidTransition;

/// An action the VMM loop performs on behalf of an API client (the wire
/// type of nubis-vmm-api).
pub use nubis_vmm_api::Action as VmmAction;

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
            VmmActionError::InvalidState(_) => error_kind::INVALID_STATE,
            VmmActionError::BadRequest(_) => error_kind::BAD_REQUEST,
            VmmActionError::Internal(_) => error_kind::INTERNAL,
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
