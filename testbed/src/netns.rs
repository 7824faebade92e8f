//! Network namespaces: create, run commands inside, enter from a thread, find and remove.
//!
//! Namespaces are named (`ip netns add`), so they show up in `ip netns list` and a later
//! `linkpool-testbed cleanup` can find what a killed run left behind.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::Error;

/// Where iproute2 keeps the bind mounts of named namespaces.
const NETNS_RUN_DIR: &str = "/run/netns";
/// Per-namespace files (e.g. resolv.conf) that `ip netns exec` bind-mounts over /etc.
pub(crate) const NETNS_ETC_DIR: &str = "/etc/netns";

/// Runs a command and returns its stdout; a failure names the command and carries stderr.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String, Error> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::new(format!("cannot run `{program}`: {e} (is it installed?)")))?;
    check(program, args, output)
}

fn check(program: &str, args: &[&str], output: Output) -> Result<String, Error> {
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(Error::new(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// Runs `ip` with the given arguments.
pub(crate) fn ip(args: &[&str]) -> Result<String, Error> {
    run("ip", args)
}

/// Runs `argv` inside namespace `ns` and checks that it succeeded.
pub(crate) fn ns_run(ns: &str, argv: &[&str]) -> Result<String, Error> {
    let mut args = vec!["netns", "exec", ns];
    args.extend_from_slice(argv);
    ip(&args)
}

/// A command that runs `argv` inside namespace `ns` (via `ip netns exec`, which also
/// bind-mounts `/etc/netns/NS/*` over `/etc`).
pub fn ns_command(ns: &str, argv: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).args(argv);
    cmd
}

/// Creates the named namespace with loopback up.
pub(crate) fn create(ns: &str) -> Result<(), Error> {
    // The first `ip netns add` on a machine turns /run/netns into a shared mount; two at
    // once can stack that mount and hide each other's namespaces. One at a time.
    static CREATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    {
        let _one = CREATING.lock().unwrap_or_else(|e| e.into_inner());
        ip(&["netns", "add", ns])?;
    }
    ip(&["-n", ns, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Path of a named namespace's handle.
pub(crate) fn handle_path(ns: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(ns)
}

/// Moves the calling thread into namespace `ns` (only this thread; sockets it creates
/// afterwards belong to that namespace for their whole life).
pub(crate) fn enter(ns: &str) -> io::Result<()> {
    let file = File::open(handle_path(ns))?;
    // SAFETY: setns on a valid namespace fd; affects only the calling thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a short-lived thread inside namespace `ns` and returns its result.
pub fn within<T: Send>(ns: &str, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter(ns)?;
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("namespace helper thread panicked")))
    })
}

/// Names of all named namespaces.
pub fn list() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(NETNS_RUN_DIR) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// Process ids whose network namespace is `ns`.
pub fn pids(ns: &str) -> Vec<i32> {
    let Ok(out) = Command::new("ip")
        .args(["netns", "pids", ns])
        .stderr(Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Kills every process in `ns` (SIGKILL) and waits up to 10 s until none is left.
/// Returns how many processes were found.
pub(crate) fn kill_all(ns: &str) -> usize {
    let own = std::process::id() as i32;
    let mut found = 0;
    // A killed daemon that closes a TUN device waits for the kernel's rtnl lock, which
    // another namespace's teardown may hold for seconds: seen at over 2 s under load.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids: Vec<i32> = pids(ns).into_iter().filter(|&p| p != own).collect();
        if pids.is_empty() || Instant::now() > deadline {
            return found;
        }
        found = found.max(pids.len());
        for pid in pids {
            // SAFETY: plain kill(2).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills the processes in `ns`, deletes it and its `/etc/netns` directory.
pub(crate) fn destroy(ns: &str) -> Result<(), Error> {
    kill_all(ns);
    let _ = std::fs::remove_dir_all(Path::new(NETNS_ETC_DIR).join(ns));
    if handle_path(ns).exists() {
        if let Err(e) = ip(&["netns", "del", ns]) {
            // Someone else (a concurrent teardown) may have removed it meanwhile.
            if handle_path(ns).exists() {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Checks that we can create network namespaces; the error says why not.
pub fn require_root() -> Result<(), Error> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::new(
            "the testbed needs root (network namespaces, veth, AF_PACKET); run as root",
        ));
    }
    Ok(())
}
