//! The microVM's runtime state machine, owned by the VMM event loop (the
//! only place that changes it).
//!
//! ```text
//!   Booting ──vcpus started──▶ Running ◀──resume── Paused
//!      │                        │  └────pause────▶   │
//!      │                        │                    │
//!      └────── stop / guest reset / fault ───────────┴──▶ Stopping ──▶ Stopped
//! ```
//!
//! `Stopping` is entered once, with the reason the VM ends; the exit status
//! follows from that reason.

use serde::Serialize;

/// Where the VM is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Devices and vCPUs being set up.
    Booting,
    /// vCPUs running guest code.
    Running,
    /// vCPUs parked on request.
    Paused,
    /// Shutting down; no more requests change anything.
    Stopping,
    /// All threads finished.
    Stopped,
}

/// Why the VM ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The guest reset the machine (i8042 0xFE, triple fault, KVM reset event).
    GuestReset,
    /// The `stop` API request.
    Requested,
    /// SIGTERM or SIGINT.
    Signal(i32),
    /// A vCPU hit an error the guest cannot recover from.
    VcpuFault(String),
}

impl StopReason {
    /// Process exit status for this reason (0 graceful, 1 fault).
    pub fn exit_code(&self) -> i32 {
        match self {
            StopReason::VcpuFault(_) => nubis_vmm_api::exit_code::INTERNAL,
            _ => nubis_vmm_api::exit_code::OK,
        }
    }

    /// The reason in words (the exit-status record's `reason`).
    pub fn describe(&self) -> String {
        match self {
            StopReason::GuestReset => "guest reset".into(),
            StopReason::Requested => "stopped on request".into(),
            StopReason::Signal(sig) => format!("stopped by signal {sig}"),
            StopReason::VcpuFault(msg) => format!("vCPU fault: {msg}"),
        }
    }
}

/// An event that may change the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// All vCPU threads run.
    Started,
    /// Pause requested.
    Pause,
    /// Resume requested.
    Resume,
    /// The VM must end.
    Stop(StopReason),
    /// Every thread has finished.
    Finished,
}

/// An event that makes no sense in the current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {event} while {state}")]
pub struct InvalidTransition {
    /// The state the VM was in.
    pub state: VmState,
    /// What was attempted.
    pub event: &'static str,
}

impl VmState {
    /// Lower-case name, as used by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Booting => "booting",
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Stopping => "stopping",
            VmState::Stopped => "stopped",
        }
    }

    /// The state after `event`, or why `event` is refused here.
    pub fn next(self, event: &Event) -> Result<VmState, InvalidTransition> {
        use VmState::*;
        let refuse = |name| {
            Err(InvalidTransition {
                state: self,
                event: name,
            })
        };
        match (self, event) {
            (Booting, Event::Started) => Ok(Running),
            (Running, Event::Pause) => Ok(Paused),
            (Paused, Event::Resume) => Ok(Running),
            (Booting | Running | Paused, Event::Stop(_)) => Ok(Stopping),
            (Stopping, Event::Finished) => Ok(Stopped),
            (_, Event::Started) => refuse("start"),
            (_, Event::Pause) => refuse("pause"),
            (_, Event::Resume) => refuse("resume"),
            (_, Event::Stop(_)) => refuse("stop"),
            (_, Event::Finished) => refuse("finish"),
        }
    }
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use VmState::*;

    const ALL: [VmState; 5] = [Booting, Running, Paused, Stopping, Stopped];

    fn events() -> Vec<Event> {
        vec![
            Event::Started,
            Event::Pause,
            Event::Resume,
            Event::Stop(StopReason::Requested),
            Event::Finished,
        ]
    }

    #[test]
    fn legal_transitions() {
        assert_eq!(Booting.next(&Event::Started), Ok(Running));
        assert_eq!(Running.next(&Event::Pause), Ok(Paused));
        assert_eq!(Paused.next(&Event::Resume), Ok(Running));
        for s in [Booting, Running, Paused] {
            assert_eq!(s.next(&Event::Stop(StopReason::GuestReset)), Ok(Stopping));
        }
        assert_eq!(Stopping.next(&Event::Finished), Ok(Stopped));
    }

    #[test]
    fn everything_else_is_refused() {
        let legal = [
            (Booting, 0),
            (Running, 1),
            (Paused, 2),
            (Booting, 3),
            (Running, 3),
            (Paused, 3),
            (Stopping, 4),
        ];
        for s in ALL {
            for (i, e) in events().iter().enumerate() {
                let ok = legal.contains(&(s, i));
                assert_eq!(s.next(e).is_ok(), ok, "{s:?} on {e:?}");
                if let Err(err) = s.next(e) {
                    assert_eq!(err.state, s);
                }
            }
        }
    }

    #[test]
    fn state_names_are_the_api_contract() {
        use nubis_vmm_api::vm_state;
        for (state, name) in [
            (VmState::Booting, vm_state::BOOTING),
            (VmState::Running, vm_state::RUNNING),
            (VmState::Paused, vm_state::PAUSED),
            (VmState::Stopping, vm_state::STOPPING),
            (VmState::Stopped, vm_state::STOPPED),
        ] {
            assert_eq!(state.as_str(), name);
        }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(StopReason::GuestReset.exit_code(), 0);
        assert_eq!(StopReason::Requested.exit_code(), 0);
        assert_eq!(StopReason::Signal(15).exit_code(), 0);
        assert_eq!(StopReason::VcpuFault("x".into()).exit_code(), 1);
        assert_eq!(
            Paused.next(&Event::Pause).unwrap_err().to_string(),
            "cannot pause while paused"
        );
    }
}
