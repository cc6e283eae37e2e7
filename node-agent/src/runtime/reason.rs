//! Typed state reasons (EC2's `stateReason`): why an instance is stopped or
//! failed, and how `nubis-vmm` exit statuses map onto them.

use serde::{Deserialize, Serialize};

/// Why an instance reached its current state. `code` strings are stable and
/// follow EC2's `Server.*` / `Client.*` convention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ReasonCode {
    /// Stopped or terminated on request.
    UserInitiatedShutdown,
    /// The guest reset or shut itself down (VMM exit 0 without a request).
    InstanceInitiatedShutdown,
    /// The image is not on this host.
    ImageNotFound,
    /// An image file's sha256 differs from its manifest, or the manifest is invalid.
    ImageInvalid,
    /// The root disk could not be created.
    DiskSetupFailed,
    /// Bridge, TAP or address set-up failed.
    NetworkSetupFailed,
    /// cgroup v2 (with cpu and memory controllers) is unavailable or failed.
    CgroupSetupFailed,
    /// The VMM could not be started at all.
    VmmSpawnFailed,
    /// VMM exit 1: internal error or vCPU fault.
    VmmInternalError,
    /// VMM exit 2: bad usage or configuration.
    VmmInvalidConfig,
    /// VMM exit 3: kernel missing or malformed.
    KernelInvalid,
    /// VMM exit 4: initrd missing or too large.
    InitrdInvalid,
    /// VMM exit 5: memory size out of range.
    MemoryInvalid,
    /// VMM exit 6: TAP missing or unusable.
    NetworkUnavailable,
    /// VMM exit 7: disk missing or unreadable.
    DiskUnavailable,
    /// VMM exit 8: KVM unavailable.
    KvmUnavailable,
    /// VMM exit 9: API socket problem.
    ApiSocketFailed,
    /// The VMM was killed by a signal or exited with an unknown status.
    VmmCrashed,
    /// The VMM exited while no agent was watching; its exit status is unknown.
    VmmExitedUnobserved,
    /// The VMM did not report running in time.
    StartTimeout,
    /// Any other agent-side failure.
    InternalError,
}

impl From<ReasonCode> for String {
    fn from(c: ReasonCode) -> String {
        c.code().to_string()
    }
}

impl TryFrom<String> for ReasonCode {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        ReasonCode::ALL
            .iter()
            .copied()
            .find(|c| c.code() == s)
            .ok_or_else(|| format!("unknown reason code {s:?}"))
    }
}

impl ReasonCode {
    /// Every code.
    pub const ALL: [ReasonCode; 21] = {
        use ReasonCode::*;
        [
            UserInitiatedShutdown,
            InstanceInitiatedShutdown,
            ImageNotFound,
            ImageInvalid,
            DiskSetupFailed,
            NetworkSetupFailed,
            CgroupSetupFailed,
            VmmSpawnFailed,
            VmmInternalError,
            VmmInvalidConfig,
            KernelInvalid,
            InitrdInvalid,
            MemoryInvalid,
            NetworkUnavailable,
            DiskUnavailable,
            KvmUnavailable,
            ApiSocketFailed,
            VmmCrashed,
            VmmExitedUnobserved,
            StartTimeout,
            InternalError,
        ]
    };

    /// The wire code (EC2 style).
    pub fn code(self) -> &'static str {
        use ReasonCode::*;
        match self {
            UserInitiatedShutdown => "Client.UserInitiatedShutdown",
            InstanceInitiatedShutdown => "Client.InstanceInitiatedShutdown",
            ImageNotFound => "Server.ImageNotFound",
            ImageInvalid => "Server.ImageInvalid",
            DiskSetupFailed => "Server.DiskSetupFailed",
            NetworkSetupFailed => "Server.NetworkSetupFailed",
            CgroupSetupFailed => "Server.CgroupSetupFailed",
            VmmSpawnFailed => "Server.VmmSpawnFailed",
            VmmInternalError => "Server.InternalError",
            VmmInvalidConfig => "Server.InvalidVmmConfig",
            KernelInvalid => "Client.InvalidImage.Kernel",
            InitrdInvalid => "Client.InvalidImage.Initrd",
            MemoryInvalid => "Client.InvalidInstanceType.Memory",
            NetworkUnavailable => "Server.NetworkUnavailable",
            DiskUnavailable => "Server.DiskUnavailable",
            KvmUnavailable => "Server.KvmUnavailable",
            ApiSocketFailed => "Server.VmmApiSocket",
            VmmCrashed => "Server.VmmCrashed",
            VmmExitedUnobserved => "Server.VmmExitedUnobserved",
            StartTimeout => "Server.StartTimeout",
            InternalError => "Server.AgentError",
        }
    }

    /// Maps a `nubis-vmm` exit code (brief's table) to a reason. Exit 0 is
    /// not a failure and is classified by the caller (requested or not).
    pub fn from_vmm_exit_code(code: i32) -> ReasonCode {
        use nubis_vmm_api::exit_code;
        use ReasonCode::*;
        match code {
            exit_code::INTERNAL => VmmInternalError,
            exit_code::CONFIG => VmmInvalidConfig,
            exit_code::KERNEL => KernelInvalid,
            exit_code::INITRD => InitrdInvalid,
            exit_code::MEMORY => MemoryInvalid,
            exit_code::NETWORK => NetworkUnavailable,
            exit_code::DISK => DiskUnavailable,
            exit_code::KVM => KvmUnavailable,
            exit_code::API_SOCKET => ApiSocketFailed,
            _ => VmmCrashed,
        }
    }
}

/// A state reason: typed code plus a human message with the details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateReason {
    /// The typed code.
    pub code: ReasonCode,
    /// Details for operators.
    pub message: String,
}

impl StateReason {
    /// Builds a reason.
    pub fn new(code: ReasonCode, message: impl Into<String>) -> Self {
        StateReason {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip_through_json() {
        let mut seen = std::collections::BTreeSet::new();
        for c in ReasonCode::ALL {
            assert!(seen.insert(c.code()), "duplicate {}", c.code());
            let j = serde_json::to_string(&c).unwrap();
            assert_eq!(j, format!("\"{}\"", c.code()));
            assert_eq!(serde_json::from_str::<ReasonCode>(&j).unwrap(), c);
        }
        assert!(serde_json::from_str::<ReasonCode>("\"Bogus\"").is_err());
    }

    #[test]
    fn every_exit_code_of_the_contract_has_its_own_reason() {
        let mut codes: Vec<&str> = (1..=9)
            .map(|c| ReasonCode::from_vmm_exit_code(c).code())
            .collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), 9);
        assert_eq!(ReasonCode::from_vmm_exit_code(42), ReasonCode::VmmCrashed);
        assert_eq!(
            ReasonCode::from_vmm_exit_code(6).code(),
            "Server.NetworkUnavailable"
        );
        assert_eq!(
            ReasonCode::InstanceInitiatedShutdown.code(),
            "Client.InstanceInitiatedShutdown"
        );
    }
}
