//! The instance lifecycle: EC2's six states and every legal transition, in
//! one place. Nothing else in the crate changes `Instance::state`.
//!
//! ```text
//!            RunInstances / Start (placed)
//!                 |
//!                 v        agent: running/ready
//!             [pending 0] -----------------------> [running 16]
//!               |   |  \                              |   |  \
//!        Stop   |   |   \ agent: stopped/failed,      |   |   \ Reboot (stays running,
//!               |   |    \ node lost                  |   |    \  generation + 1)
//!               v   |     \                           |   |
//!        [stopping 64] <---+------- Stop -------------+   |
//!               |   |      \                              |
//!  agent stopped|   |       +-----> [stopped 80] <--------+ agent: stopped/failed, node lost
//!  /failed, node|   |                  |    ^
//!  lost         +---+----------------->+    | Start -> pending (on the same node)
//!                   |                       |
//!        Terminate  v      Terminate        |
//!   (from pending, running, stopping) -> [shutting-down 32] --agent: terminated/failed,
//!                                               |               node lost--> [terminated 48]
//!   Terminate from stopped (nothing on a host) -------------------------> [terminated 48]
//! ```
//!
//! Placement follows the EC2 root-volume model with the disk on the host:
//! - leaving a state that holds vCPU/memory ([`State::is_placed`]) gives
//!   them back (`release`); a `stopped` instance keeps its node, its address
//!   and its assignment (desired `stopped`), so the agent keeps its
//!   directory, disk and TAP;
//! - Start re-claims vCPU/memory on that same node (`place`); it fails with
//!   `InsufficientInstanceCapacity` when the node has no room or is not
//!   alive (no migration: the disk is there);
//! - only `terminated` leaves the node (`unassign`: the address is freed
//!   and the assignment deleted, and the agent removes everything).
//!
//! Every involuntary change carries a `StateReason`.

use serde::{Deserialize, Serialize};

use crate::domain::model::{ShutdownBehavior, StateReason};
use crate::error::{Error, Result};

/// EC2 instance state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// 0
    Pending,
    /// 16
    Running,
    /// 32
    ShuttingDown,
    /// 48
    Terminated,
    /// 64
    Stopping,
    /// 80
    Stopped,
}

impl State {
    /// All states.
    pub const ALL: [State; 6] = [
        State::Pending,
        State::Running,
        State::ShuttingDown,
        State::Terminated,
        State::Stopping,
        State::Stopped,
    ];

    /// EC2 state code.
    pub fn code(self) -> i32 {
        match self {
            State::Pending => 0,
            State::Running => 16,
            State::ShuttingDown => 32,
            State::Terminated => 48,
            State::Stopping => 64,
            State::Stopped => 80,
        }
    }

    /// EC2 state name.
    pub fn name(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Running => "running",
            State::ShuttingDown => "shutting-down",
            State::Terminated => "terminated",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
        }
    }

    /// True while the instance holds vCPU/memory on a node.
    pub fn is_placed(self) -> bool {
        matches!(
            self,
            State::Pending | State::Running | State::Stopping | State::ShuttingDown
        )
    }
}

/// What the node is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Desired {
    /// Run.
    Running,
    /// Stop.
    Stopped,
    /// Remove.
    Terminated,
    /// Reboot once for this generation, then run.
    Rebooting,
}

/// What the agent observes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Preparing.
    Pending,
    /// VMM started.
    Booting,
    /// VMM running.
    Running,
    /// Guest ready.
    Ready,
    /// Stopping.
    Stopping,
    /// Stopped.
    Stopped,
    /// Removed.
    Terminated,
    /// Crashed / could not start.
    Failed,
}

/// Something that happens to an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// StartInstances.
    Start,
    /// StopInstances.
    Stop,
    /// RebootInstances.
    Reboot,
    /// TerminateInstances.
    Terminate,
    /// An agent report for the current generation.
    Observed {
        /// Phase.
        phase: Phase,
        /// Agent's reason, if any.
        reason: Option<StateReason>,
    },
    /// The node's lease expired (and the node-loss rules judged it lost).
    /// The desired state is left alone: no agent is told to stop a VM
    /// because a lease expired.
    NodeLost,
    /// The node of an instance stopped by node loss registered again and
    /// reports its VM running: back to `running` on the same VMM.
    Recovered,
    /// The node of an instance stopped by node loss registered again
    /// without its VM running: it stays stopped (desired `stopped`).
    HostReturnedWithout,
}

/// The effect of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// New state.
    pub to: State,
    /// New desired state for the node (bumps the generation), if changed.
    pub desired: Option<Desired>,
    /// Give the node's vCPU/memory back (the address and assignment stay).
    pub release: bool,
    /// Leave the node: free the address and delete the assignment.
    pub unassign: bool,
    /// Re-claim vCPU/memory on the instance's node first (start of a
    /// stopped instance).
    pub place: bool,
    /// New state reason (None = keep).
    pub reason: Option<StateReason>,
    /// User-visible transition reason (None = keep).
    pub transition_reason: Option<String>,
}

/// Result of applying an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to do (already there, or not relevant in this state).
    Unchanged,
    /// Apply this transition.
    Change(Transition),
}

fn user_reason(what: &str) -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "User initiated {what}({:04}-{:02}-{:02} {:02}:{:02}:{:02} GMT)",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn change(to: State) -> Transition {
    Transition {
        to,
        desired: None,
        release: false,
        unassign: false,
        place: false,
        reason: None,
        transition_reason: None,
    }
}

fn incorrect(state: State, action: &str) -> Error {
    Error::incorrect_state(
        "IncorrectInstanceState",
        format!(
            "the instance is in state '{}' and cannot be {action}",
            state.name()
        ),
    )
}

/// [`apply`] for an instance whose `InstanceInitiatedShutdownBehavior` is
/// `shutdown`: a guest that powers itself off while pending or running (the
/// agent reports `stopped` though `running` is desired) is stopped, or with
/// `terminate` shut down and terminated — the agent is told `terminated`,
/// removes the stopped VM's files and reports it, as for TerminateInstances.
pub fn apply_with(state: State, event: &Event, shutdown: ShutdownBehavior) -> Result<Outcome> {
    let guest_poweroff = matches!(state, State::Pending | State::Running)
        && matches!(
            event,
            Event::Observed {
                phase: Phase::Stopped,
                ..
            }
        );
    if guest_poweroff && shutdown == ShutdownBehavior::Terminate {
        return Ok(Outcome::Change(Transition {
            desired: Some(Desired::Terminated),
            reason: Some(StateReason::new(
                "Client.InstanceInitiatedShutdown",
                "Client.InstanceInitiatedShutdown: Instance initiated shutdown",
            )),
            transition_reason: Some("Instance initiated shutdown".into()),
            ..change(State::ShuttingDown)
        }));
    }
    apply(state, event)
}

/// Applies `event` to an instance in `state`.
pub fn apply(state: State, event: &Event) -> Result<Outcome> {
    use State::*;
    let out = match (state, event) {
        (Stopped, Event::Start) => Transition {
            desired: Some(Desired::Running),
            place: true,
            reason: None,
            transition_reason: Some(String::new()),
            ..change(Pending)
        },
        (Pending | Running, Event::Start) => return Ok(Outcome::Unchanged),
        (Stopping | ShuttingDown | Terminated, Event::Start) => {
            return Err(incorrect(state, "started"))
        }

        (Pending | Running, Event::Stop) => Transition {
            desired: Some(Desired::Stopped),
            reason: Some(StateReason::new(
                "Client.UserInitiatedShutdown",
                "Client.UserInitiatedShutdown: User initiated shutdown",
            )),
            transition_reason: Some(user_reason("")),
            ..change(Stopping)
        },
        (Stopping | Stopped, Event::Stop) => return Ok(Outcome::Unchanged),
        (ShuttingDown | Terminated, Event::Stop) => return Err(incorrect(state, "stopped")),

        (Running, Event::Reboot) => Transition {
            desired: Some(Desired::Rebooting),
            ..change(Running)
        },
        (Pending | Stopping | Stopped | ShuttingDown | Terminated, Event::Reboot) => {
            return Err(incorrect(state, "rebooted"))
        }

        (Pending | Running | Stopping, Event::Terminate) => Transition {
            desired: Some(Desired::Terminated),
            reason: Some(StateReason::new(
                "Client.UserInitiatedShutdown",
                "Client.UserInitiatedShutdown: User initiated shutdown",
            )),
            transition_reason: Some(user_reason("")),
            ..change(ShuttingDown)
        },
        (Stopped, Event::Terminate) => Transition {
            unassign: true,
            reason: Some(StateReason::new(
                "Client.UserInitiatedShutdown",
                "Client.UserInitiatedShutdown: User initiated shutdown",
            )),
            transition_reason: Some(user_reason("")),
            ..change(Terminated)
        },
        (ShuttingDown | Terminated, Event::Terminate) => return Ok(Outcome::Unchanged),

        (
            Pending,
            Event::Observed {
                phase: Phase::Running | Phase::Ready,
                ..
            },
        ) => change(Running),
        (
            Pending | Running,
            Event::Observed {
                phase: Phase::Stopped,
                reason,
            },
        ) => Transition {
            release: true,
            desired: Some(Desired::Stopped),
            reason: Some(reason.clone().unwrap_or_else(|| {
                StateReason::new(
                    "Client.InstanceInitiatedShutdown",
                    "Client.InstanceInitiatedShutdown: Instance initiated shutdown",
                )
            })),
            transition_reason: Some("Instance initiated shutdown".into()),
            ..change(Stopped)
        },
        (
            Pending | Running,
            Event::Observed {
                phase: Phase::Failed | Phase::Terminated,
                reason,
            },
        ) => Transition {
            release: true,
            desired: Some(Desired::Stopped),
            reason: Some(reason.clone().unwrap_or_else(|| {
                StateReason::new(
                    "Server.InternalError",
                    "Server.InternalError: the instance failed on its host",
                )
            })),
            transition_reason: Some("Server error".into()),
            ..change(Stopped)
        },
        (
            Stopping,
            Event::Observed {
                phase: Phase::Stopped | Phase::Failed | Phase::Terminated,
                ..
            },
        ) => Transition {
            release: true,
            ..change(Stopped)
        },
        (
            ShuttingDown,
            Event::Observed {
                phase: Phase::Terminated | Phase::Failed,
                ..
            },
        ) => Transition {
            release: true,
            unassign: true,
            ..change(Terminated)
        },
        (_, Event::Observed { .. }) => return Ok(Outcome::Unchanged),

        (Pending | Running | Stopping, Event::NodeLost) => Transition {
            release: true,
            reason: Some(StateReason::new(
                "Server.InternalError",
                "Server.InternalError: node lost (host stopped heartbeating)",
            )),
            transition_reason: Some("Server error: node lost".into()),
            ..change(Stopped)
        },
        (ShuttingDown, Event::NodeLost) => Transition {
            release: true,
            unassign: true,
            ..change(Terminated)
        },
        (Stopped | Terminated, Event::NodeLost) => return Ok(Outcome::Unchanged),

        (Stopped, Event::Recovered) => Transition {
            place: true,
            transition_reason: Some(String::new()),
            ..change(Running)
        },
        (Stopped, Event::HostReturnedWithout) => Transition {
            desired: Some(Desired::Stopped),
            ..change(Stopped)
        },
        (_, Event::Recovered | Event::HostReturnedWithout) => return Ok(Outcome::Unchanged),
    };
    Ok(Outcome::Change(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use State::*;

    fn to(state: State, e: Event) -> Option<State> {
        match apply(state, &e) {
            Ok(Outcome::Change(t)) => Some(t.to),
            Ok(Outcome::Unchanged) => Some(state),
            Err(_) => None,
        }
    }

    fn obs(phase: Phase) -> Event {
        Event::Observed {
            phase,
            reason: None,
        }
    }

    #[test]
    fn codes_and_names_match_ec2() {
        let expected = [
            (Pending, 0, "pending"),
            (Running, 16, "running"),
            (ShuttingDown, 32, "shutting-down"),
            (Terminated, 48, "terminated"),
            (Stopping, 64, "stopping"),
            (Stopped, 80, "stopped"),
        ];
        for (s, c, n) in expected {
            assert_eq!(s.code(), c);
            assert_eq!(s.name(), n);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{n}\""));
        }
    }

    #[test]
    fn user_actions_table() {
        // (state, Start, Stop, Reboot, Terminate); None = IncorrectInstanceState.
        let table = [
            (
                Pending,
                Some(Pending),
                Some(Stopping),
                None,
                Some(ShuttingDown),
            ),
            (
                Running,
                Some(Running),
                Some(Stopping),
                Some(Running),
                Some(ShuttingDown),
            ),
            (ShuttingDown, None, None, None, Some(ShuttingDown)),
            (Terminated, None, None, None, Some(Terminated)),
            (Stopping, None, Some(Stopping), None, Some(ShuttingDown)),
            (
                Stopped,
                Some(Pending),
                Some(Stopped),
                None,
                Some(Terminated),
            ),
        ];
        for (s, start, stop, reboot, term) in table {
            assert_eq!(to(s, Event::Start), start, "{s:?} start");
            assert_eq!(to(s, Event::Stop), stop, "{s:?} stop");
            assert_eq!(to(s, Event::Reboot), reboot, "{s:?} reboot");
            assert_eq!(to(s, Event::Terminate), term, "{s:?} terminate");
        }
    }

    #[test]
    fn errors_are_incorrect_instance_state() {
        let e = apply(Terminated, &Event::Start).unwrap_err();
        assert_eq!(e.code(), "IncorrectInstanceState");
    }

    #[test]
    fn agent_observations() {
        assert_eq!(to(Pending, obs(Phase::Booting)), Some(Pending));
        assert_eq!(to(Pending, obs(Phase::Running)), Some(Running));
        assert_eq!(to(Pending, obs(Phase::Ready)), Some(Running));
        assert_eq!(to(Running, obs(Phase::Stopped)), Some(Stopped));
        assert_eq!(to(Running, obs(Phase::Failed)), Some(Stopped));
        assert_eq!(to(Stopping, obs(Phase::Running)), Some(Stopping));
        assert_eq!(to(Stopping, obs(Phase::Stopped)), Some(Stopped));
        assert_eq!(to(ShuttingDown, obs(Phase::Stopped)), Some(ShuttingDown));
        assert_eq!(to(ShuttingDown, obs(Phase::Terminated)), Some(Terminated));
        assert_eq!(to(Terminated, obs(Phase::Running)), Some(Terminated));
        assert_eq!(to(Stopped, obs(Phase::Running)), Some(Stopped));
    }

    #[test]
    fn guest_poweroff_follows_the_shutdown_behaviour() {
        let with = |s: State, e: Event, b: ShutdownBehavior| match apply_with(s, &e, b).unwrap() {
            Outcome::Unchanged => (s, None),
            Outcome::Change(t) => (t.to, t.desired),
        };
        for s in [Pending, Running] {
            // stop (the default): stopped, as `apply`.
            assert_eq!(
                with(s, obs(Phase::Stopped), ShutdownBehavior::Stop),
                (Stopped, Some(Desired::Stopped))
            );
            // terminate: shutting-down, the agent told to remove the VM.
            assert_eq!(
                with(s, obs(Phase::Stopped), ShutdownBehavior::Terminate),
                (ShuttingDown, Some(Desired::Terminated))
            );
        }
        // A user's stop completing, or a host failure, is not a guest poweroff.
        assert_eq!(
            with(Stopping, obs(Phase::Stopped), ShutdownBehavior::Terminate),
            (Stopped, None)
        );
        assert_eq!(
            with(Running, obs(Phase::Failed), ShutdownBehavior::Terminate),
            (Stopped, Some(Desired::Stopped))
        );
        // The agent's report of the terminated VM then ends it.
        assert_eq!(
            with(
                ShuttingDown,
                obs(Phase::Terminated),
                ShutdownBehavior::Terminate
            )
            .0,
            Terminated
        );
    }

    #[test]
    fn node_loss() {
        for s in [Pending, Running, Stopping] {
            assert_eq!(to(s, Event::NodeLost), Some(Stopped));
        }
        assert_eq!(to(ShuttingDown, Event::NodeLost), Some(Terminated));
        assert_eq!(to(Stopped, Event::NodeLost), Some(Stopped));
        assert_eq!(to(Terminated, Event::NodeLost), Some(Terminated));
    }

    #[test]
    fn a_returning_node_recovers_or_settles_its_lost_instances() {
        let Outcome::Change(t) = apply(Stopped, &Event::Recovered).unwrap() else {
            panic!()
        };
        assert_eq!(t.to, Running);
        assert!(t.place && t.desired.is_none(), "{t:?}");
        let Outcome::Change(t) = apply(Stopped, &Event::HostReturnedWithout).unwrap() else {
            panic!()
        };
        assert_eq!((t.to, t.desired), (Stopped, Some(Desired::Stopped)));
        for s in [Pending, Running, Stopping, ShuttingDown, Terminated] {
            assert_eq!(to(s, Event::Recovered), Some(s), "unchanged");
            assert_eq!(to(s, Event::HostReturnedWithout), Some(s), "unchanged");
        }
    }

    #[test]
    fn every_involuntary_change_has_a_reason_and_releases() {
        let events = [
            obs(Phase::Stopped),
            obs(Phase::Failed),
            obs(Phase::Terminated),
            Event::NodeLost,
        ];
        for s in [Pending, Running] {
            for e in &events {
                match apply(s, e).unwrap() {
                    Outcome::Change(t) => {
                        assert_eq!(t.to, Stopped);
                        assert!(t.release);
                        let r = t.reason.expect("reason");
                        assert!(r.code.starts_with("Client.") || r.code.starts_with("Server."));
                    }
                    Outcome::Unchanged => panic!("{s:?} {e:?} must change"),
                }
            }
        }
        // Failure carries the agent's reason through.
        let custom = StateReason::new("Server.InternalError", "vmm exited 3: kernel missing");
        match apply(
            Running,
            &Event::Observed {
                phase: Phase::Failed,
                reason: Some(custom.clone()),
            },
        )
        .unwrap()
        {
            Outcome::Change(t) => assert_eq!(t.reason, Some(custom)),
            Outcome::Unchanged => panic!(),
        }
    }

    #[test]
    fn placement_flags() {
        let Outcome::Change(t) = apply(Stopped, &Event::Start).unwrap() else {
            panic!()
        };
        assert!(t.place && !t.release && !t.unassign);
        assert_eq!(t.desired, Some(Desired::Running));
        let Outcome::Change(t) = apply(Stopped, &Event::Terminate).unwrap() else {
            panic!()
        };
        assert!(
            !t.release && t.unassign && t.desired.is_none(),
            "a stopped instance holds no vCPU/memory, only its address and assignment"
        );
        // A stop keeps the node, the address and the assignment (desired stopped).
        for (s, e) in [
            (Stopping, obs(Phase::Stopped)),
            (Running, obs(Phase::Stopped)),
            (Running, obs(Phase::Failed)),
            (Running, Event::NodeLost),
        ] {
            let Outcome::Change(t) = apply(s, &e).unwrap() else {
                panic!()
            };
            assert_eq!(t.to, Stopped);
            assert!(t.release && !t.unassign, "{s:?} {e:?}");
            if e == Event::NodeLost {
                // A lease expiry never tells the agent to stop the VM.
                assert_eq!(t.desired, None, "{s:?} {e:?}");
            } else if s != Stopping {
                assert_eq!(t.desired, Some(Desired::Stopped), "{s:?} {e:?}");
            }
        }
        // Every transition that leaves a placed state for an unplaced one
        // releases; only `terminated` leaves the node.
        for s in State::ALL {
            for e in [
                Event::Start,
                Event::Stop,
                Event::Reboot,
                Event::Terminate,
                obs(Phase::Stopped),
                obs(Phase::Terminated),
                Event::NodeLost,
            ] {
                if let Ok(Outcome::Change(t)) = apply(s, &e) {
                    if s.is_placed() && !t.to.is_placed() {
                        assert!(t.release, "{s:?} --{e:?}--> {:?} must release", t.to);
                    }
                    if !s.is_placed() && t.to.is_placed() {
                        assert!(t.place, "{s:?} --{e:?}--> {:?} must place", t.to);
                    }
                    assert_eq!(
                        t.unassign,
                        t.to == Terminated,
                        "{s:?} --{e:?}--> {:?}: only terminated unassigns",
                        t.to
                    );
                }
            }
        }
    }
}
