//! Running the host tools the agent drives in batches (`nft`, `ip`,
//! `bridge`): a child process fed on stdin, bounded in time, its failure
//! returned with the command and its stderr.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::error::{Error, Result};

/// Runs `program args`, feeding `stdin`, for at most `timeout`; returns
/// stdout. `missing` is the context of a failure to start it (e.g. how to
/// install it).
pub async fn run(
    program: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
    timeout: Duration,
    missing: &str,
) -> Result<String> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| Error::io(missing, e))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input)
            .await
            .map_err(|e| Error::io(format!("writing to {program}"), e))?;
        drop(pipe);
    }
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| {
            Error::io(
                format!("{program} {} did not finish in {timeout:?}", args.join(" ")),
                std::io::ErrorKind::TimedOut.into(),
            )
        })?
        .map_err(|e| Error::io(format!("waiting for {program}"), e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command {
            command: format!("{program} {}", args.join(" ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}
