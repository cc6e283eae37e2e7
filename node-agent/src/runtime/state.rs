//! The VM runtime state machine: the one place that says which lifecycle
//! states exist, which transitions are legal, and which requests an instance
//! accepts in each state.
//!
//! ```text
//!            launch
//!   Absent ─────────► Preparing ──► Starting ──► Running ──► Stopping ──► Stopped
//!                        │             │            │  ▲          │          │  │
//!                        │             │            │  └─(reboot)─┘          │  │
//!                        ▼             ▼            ▼                start   │  │
//!                      Failed ◄────────┴──── (VMM exit ≠ 0) ◄─────── Starting ◄┘  │
//!                        │                                                        │
//!                        └──────────────► Terminating ◄─────────── terminate ─────┘
//!                                              │
//!                                              ▼
//!                                             Gone
//! ```
//!
//! `Running` exits to `Stopped` directly when the guest resets itself (VMM exit
//! 0 without a stop request). Every non-terminal state can go to `Terminating`
//! (after stopping the VMM) and `Failed` is left only by `start` or `terminate`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Lifecycle state of one instance on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Not known on this host.
    Absent,
    /// Directory, disk, TAP and cgroup being set up.
    Preparing,
    /// VMM spawned; waiting for its vCPUs to start.
    Starting,
    /// VMM reports running with vCPUs started.
    Running,
    /// Stop requested: Ctrl-Alt-Del, then `stop`, then SIGKILL.
    Stopping,
    /// No VMM; disk and network kept.
    Stopped,
    /// Stopping and removing everything.
    Terminating,
    /// Everything removed (EC2 "terminated").
    Gone,
    /// Set-up or the VMM failed; see the state reason.
    Failed,
}

impl State {
    /// Name used in reports and files.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Absent => "absent",
            State::Preparing => "preparing",
            State::Starting => "starting",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::Terminating => "terminating",
            State::Gone => "gone",
            State::Failed => "failed",
        }
    }

    /// True when a VMM process may exist in this state.
    pub fn has_vmm(self) -> bool {
        matches!(self, State::Starting | State::Running | State::Stopping)
    }

    /// Whether `self -> to` is a legal transition.
    pub fn can_transition_to(self, to: State) -> bool {
        use State::*;
        matches!(
            (self, to),
            (Absent, Preparing)
                | (Preparing, Starting)
                | (Preparing, Failed)
                | (Preparing, Terminating)
                | (Starting, Running)
                | (Starting, Stopping)
                | (Starting, Stopped)
                | (Starting, Failed)
                | (Starting, Terminating)
                | (Running, Stopping)
                | (Running, Stopped)
                | (Running, Failed)
                | (Running, Terminating)
                | (Stopping, Stopped)
                | (Stopping, Failed)
                | (Stopping, Terminating)
                | (Stopped, Starting)
                | (Stopped, Terminating)
                | (Failed, Starting)
                | (Failed, Terminating)
                | (Terminating, Gone)
        )
    }

    /// Checks a transition, returning the target state when legal.
    pub fn transition(self, to: State) -> Result<State, IllegalTransition> {
        if self.can_transition_to(to) {
            Ok(to)
        } else {
            Err(IllegalTransition { from: self, to })
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transition the state machine forbids (a bug in the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal transition {from} -> {to}")]
pub struct IllegalTransition {
    /// Current state.
    pub from: State,
    /// Requested state.
    pub to: State,
}

/// A request from the reconciler or an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Boot the instance (first launch or restart of a stopped one).
    Start,
    /// Stop the guest (graceful, then hard); keep the disk.
    Stop,
    /// Stop then start.
    Reboot,
    /// Stop and remove everything.
    Terminate,
}

impl Request {
    /// Name used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Request::Start => "start",
            Request::Stop => "stop",
            Request::Reboot => "reboot",
            Request::Terminate => "terminate",
        }
    }
}

/// What to do with a request in the current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Begin the work now.
    Proceed,
    /// The instance is already where the request leads (idempotent no-op).
    AlreadyDone,
}

/// Why a request was denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The instance is being terminated or is gone.
    #[error("instance is {0}; it cannot {1}")]
    Terminal(State, &'static str),
    /// Another transition is in progress; retry when it completes.
    #[error("instance is {0}; retry {1} when that completes")]
    Busy(State, &'static str),
    /// The request makes no sense in this state.
    #[error("instance is {0}; {1} is not possible")]
    InvalidState(State, &'static str),
}

/// Decides whether `req` is accepted in `state` (the request queue's policy).
pub fn admit(state: State, req: Request) -> Result<Admission, Denied> {
    use Admission::*;
    use State::*;
    let name = req.as_str();
    match (req, state) {
        (_, Gone) => Err(Denied::Terminal(state, name)),
        (Request::Terminate, Terminating | Absent) => Ok(AlreadyDone),
        (_, Terminating) => Err(Denied::Terminal(state, name)),
        (Request::Terminate, _) => Ok(Proceed),

        (Request::Start, Running | Starting) => Ok(AlreadyDone),
        (Request::Start, Stopped | Failed | Absent) => Ok(Proceed),
        (Request::Start, Preparing | Stopping) => Err(Denied::Busy(state, name)),

        // A failed or never-started instance has no VMM: "stopped" holds.
        (Request::Stop, Stopped | Stopping | Failed | Absent) => Ok(AlreadyDone),
        (Request::Stop, Running | Starting) => Ok(Proceed),
        (Request::Stop, Preparing) => Err(Denied::Busy(state, name)),

        (Request::Reboot, Running) => Ok(Proceed),
        (Request::Reboot, Starting | Preparing | Stopping) => Err(Denied::Busy(state, name)),
        (Request::Reboot, Stopped | Failed | Absent) => Err(Denied::InvalidState(state, name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [State; 9] = [
        State::Absent,
        State::Preparing,
        State::Starting,
        State::Running,
        State::Stopping,
        State::Stopped,
        State::Terminating,
        State::Gone,
        State::Failed,
    ];

    #[test]
    fn lifecycle_paths_are_legal() {
        let launch_stop_start_terminate = [
            State::Absent,
            State::Preparing,
            State::Starting,
            State::Running,
            State::Stopping,
            State::Stopped,
            State::Starting,
            State::Running,
            State::Terminating,
            State::Gone,
        ];
        for w in launch_stop_start_terminate.windows(2) {
            assert_eq!(w[0].transition(w[1]), Ok(w[1]), "{} -> {}", w[0], w[1]);
        }
        // Guest-initiated reset goes straight to Stopped.
        assert!(State::Running.can_transition_to(State::Stopped));
        // A failed instance can be restarted or terminated.
        assert!(State::Failed.can_transition_to(State::Starting));
        assert!(State::Failed.can_transition_to(State::Terminating));
    }

    #[test]
    fn terminal_and_backwards_transitions_are_illegal() {
        for s in ALL {
            assert!(!State::Gone.can_transition_to(s), "gone -> {s}");
            if s != State::Gone {
                assert!(
                    !State::Terminating.can_transition_to(s),
                    "terminating -> {s}"
                );
            }
            assert!(!s.can_transition_to(State::Absent), "{s} -> absent");
            assert!(!s.can_transition_to(s), "{s} -> itself");
        }
        assert!(!State::Stopped.can_transition_to(State::Running));
        assert!(!State::Absent.can_transition_to(State::Running));
        assert!(!State::Preparing.can_transition_to(State::Running));
        assert_eq!(
            State::Stopped.transition(State::Running),
            Err(IllegalTransition {
                from: State::Stopped,
                to: State::Running
            })
        );
    }

    #[test]
    fn every_state_except_gone_can_reach_gone() {
        for s in ALL {
            if s == State::Gone || s == State::Absent {
                continue;
            }
            let path_ok = s == State::Terminating || s.can_transition_to(State::Terminating);
            assert!(path_ok, "{s} cannot be terminated");
        }
    }

    #[test]
    fn admission_is_idempotent_and_typed() {
        assert_eq!(
            admit(State::Running, Request::Start),
            Ok(Admission::AlreadyDone)
        );
        assert_eq!(
            admit(State::Stopped, Request::Stop),
            Ok(Admission::AlreadyDone)
        );
        assert_eq!(
            admit(State::Stopping, Request::Stop),
            Ok(Admission::AlreadyDone)
        );
        assert_eq!(
            admit(State::Terminating, Request::Terminate),
            Ok(Admission::AlreadyDone)
        );
        assert_eq!(
            admit(State::Stopped, Request::Start),
            Ok(Admission::Proceed)
        );
        assert_eq!(admit(State::Failed, Request::Start), Ok(Admission::Proceed));
        assert_eq!(admit(State::Running, Request::Stop), Ok(Admission::Proceed));
        assert_eq!(
            admit(State::Running, Request::Reboot),
            Ok(Admission::Proceed)
        );
        for s in ALL {
            if !matches!(s, State::Gone | State::Terminating | State::Absent) {
                assert_eq!(admit(s, Request::Terminate), Ok(Admission::Proceed), "{s}");
            }
        }
        assert!(matches!(
            admit(State::Gone, Request::Start),
            Err(Denied::Terminal(State::Gone, "start"))
        ));
        assert!(matches!(
            admit(State::Terminating, Request::Stop),
            Err(Denied::Terminal(..))
        ));
        assert!(matches!(
            admit(State::Stopping, Request::Start),
            Err(Denied::Busy(State::Stopping, "start"))
        ));
        assert!(matches!(
            admit(State::Stopped, Request::Reboot),
            Err(Denied::InvalidState(..))
        ));
        assert_eq!(
            admit(State::Failed, Request::Stop),
            Ok(Admission::AlreadyDone)
        );
    }

    #[test]
    fn admitted_proceed_leads_to_a_legal_transition() {
        // Whenever a request is admitted with Proceed, the first state the
        // instance task moves to must be a legal transition.
        for s in ALL {
            for (req, next) in [
                (Request::Start, State::Starting),
                (Request::Stop, State::Stopping),
                (Request::Reboot, State::Stopping),
                (Request::Terminate, State::Terminating),
            ] {
                if admit(s, req) == Ok(Admission::Proceed) {
                    let next = if s == State::Absent && req == Request::Start {
                        State::Preparing
                    } else {
                        next
                    };
                    assert!(s.can_transition_to(next), "{s} --{req:?}--> {next}");
                }
            }
        }
    }
}
