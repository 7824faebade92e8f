//! Processes started inside a namespace; killed when their handle is dropped.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::Error;
use crate::netns;

/// A process running in a namespace. Its stdout and stderr go to a log file in the run
/// directory. Dropping the handle kills it (SIGKILL) and reaps it.
pub struct Process {
    child: Child,
    label: String,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Process {
    /// Starts `argv` in `ns`, logging to `log`.
    pub(crate) fn spawn(ns: &str, argv: &[&str], log: PathBuf) -> Result<Process, Error> {
        let label = format!("`{}` in {ns}", argv.join(" "));
        if argv.is_empty() {
            return Err(Error::new("spawn: empty command"));
        }
        let out = File::create(&log)
            .map_err(|e| Error::new(format!("{}: cannot create log: {e}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::new(format!("{}: {e}", log.display())))?;
        let child = netns::ns_command(ns, argv)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| Error::new(format!("cannot start {label}: {e}")))?;
        Ok(Process {
            child,
            label,
            log,
            status: None,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where its output goes.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Its output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until its log contains `needle` (e.g. a daemon's "ready" line). Fails with
    /// the log when it exits first or the timeout passes.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return Ok(());
            }
            if let Ok(Some(status)) = self.try_wait() {
                return Err(Error::new(format!(
                    "{} exited ({status}) before logging `{needle}`; log:\n{log}",
                    self.label
                )));
            }
            if Instant::now() >= deadline {
                return Err(Error::new(format!(
                    "{} did not log `{needle}` within {timeout:?}; log:\n{log}",
                    self.label
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (e.g. `libc::SIGHUP`).
    pub fn signal(&self, signal: i32) -> io::Result<()> {
        // SAFETY: plain kill(2) on our child's pid.
        if unsafe { libc::kill(self.child.id() as i32, signal) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Its exit status if it has exited.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    /// Waits up to `timeout` for it to exit by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM, waits up to `grace`, then SIGKILLs. Returns the exit status.
    pub fn stop(&mut self, grace: Duration) -> Result<ExitStatus, Error> {
        if self.try_wait().ok().flatten().is_none() {
            let _ = self.signal(libc::SIGTERM);
        }
        if let Some(status) = self.wait_timeout(grace).ok().flatten() {
            return Ok(status);
        }
        self.kill()
    }

    /// Kills it (SIGKILL) and reaps it.
    pub fn kill(&mut self) -> Result<ExitStatus, Error> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .map_err(|e| Error::new(format!("waiting for {}: {e}", self.label)))?;
        self.status = Some(status);
        Ok(status)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Process({} pid {})", self.label, self.child.id())
    }
}

/// User + system CPU seconds a process has used so far (from `/proc/PID/stat`; 0 when it
/// is gone).
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz.max(1.0)
}
