//! Running `ip` and `nft`, with errors that say which command failed and why.

use std::fmt;
use std::io::{self, Write as _};
use std::process::{Command, Stdio};

/// A failed OS operation.
#[derive(Debug)]
pub enum OsError {
    /// A system call failed.
    Io {
        /// What we were doing.
        context: String,
        /// The error from the kernel.
        source: io::Error,
    },
    /// An external tool exited unsuccessfully.
    Command {
        /// The command line.
        command: String,
        /// What it wrote on stderr (trimmed), or its exit status.
        message: String,
    },
}

impl OsError {
    /// Wraps an I/O error with what we were doing.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        OsError::Io {
            context: context.into(),
            source,
        }
    }
}

impl fmt::Display for OsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OsError::Io { context, source } => write!(f, "{context}: {source}"),
            OsError::Command { command, message } => write!(f, "`{command}` failed: {message}"),
        }
    }
}

impl std::error::Error for OsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OsError::Io { source, .. } => Some(source),
            OsError::Command { .. } => None,
        }
    }
}

/// Runs `program args...`, feeding `stdin` if given; returns its stdout.
pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, OsError> {
    let command = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| OsError::io(format!("cannot run `{program}` (is it installed?)"), e))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(input.as_bytes())
            .map_err(|e| OsError::io(format!("writing to `{command}`"), e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| OsError::io(format!("waiting for `{command}`"), e))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Err(OsError::Command {
        command,
        message: if stderr.is_empty() {
            out.status.to_string()
        } else {
            stderr
        },
    })
}

/// Runs `ip args...`.
pub fn ip(args: &[&str]) -> Result<String, OsError> {
    run("ip", args, None)
}

/// Loads an nftables script atomically with `nft -f -`.
pub fn nft_script(script: &str) -> Result<(), OsError> {
    run("nft", &["-f", "-"], Some(script)).map(|_| ())
}
