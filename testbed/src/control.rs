//! The control socket of a running `linkpool-testbed up`: one request line, one reply.
//!
//! Requests: `link NAME [upstream|downstream] SETTING...` (see
//! [`crate::LinkParams::apply`]; without a direction both change), `links`,
//! `ns ROLE`, `describe`. Replies start with `ok` or `error:`.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::emulator::{Direction, Link};
use crate::{Error, RUN_ROOT};

pub(crate) struct ControlServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

struct State {
    links: BTreeMap<String, Link>,
    roles: Vec<(String, String)>,
    description: String,
}

impl ControlServer {
    pub(crate) fn start(
        path: &Path,
        links: BTreeMap<String, Link>,
        roles: Vec<(String, String)>,
        description: String,
    ) -> io::Result<ControlServer> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let state = State {
            links,
            roles,
            description,
        };
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                while !stop2.load(Ordering::Acquire) {
                    let mut fds = [libc::pollfd {
                        fd: listener.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    }];
                    // SAFETY: one valid pollfd.
                    if unsafe { libc::poll(fds.as_mut_ptr(), 1, 100) } <= 0 {
                        continue;
                    }
                    if let Ok((stream, _)) = listener.accept() {
                        let _ = handle(stream, &state);
                    }
                }
            })?;
        Ok(ControlServer {
            stop,
            thread: Some(thread),
            path: path.to_path_buf(),
        })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn handle(stream: UnixStream, state: &State) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let reply = match answer(&words, state) {
        Ok(text) => format!("ok\n{text}"),
        Err(e) => format!("error: {e}\n"),
    };
    (&stream).write_all(reply.as_bytes())
}

fn answer(words: &[&str], state: &State) -> Result<String, String> {
    match words {
        ["link", name, settings @ ..] => {
            let link = state.links.get(*name).ok_or_else(|| {
                format!(
                    "no link `{name}` (links: {})",
                    state.links.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })?;
            if settings.is_empty() {
                return Err("link: give settings, e.g. `delay=30ms loss=1%` or `down`".into());
            }
            match settings {
                ["upstream", rest @ ..] => link.apply_direction(Direction::Upstream, rest)?,
                ["downstream", rest @ ..] => link.apply_direction(Direction::Downstream, rest)?,
                _ => link.apply(settings)?,
            }
            Ok(link.summary())
        }
        ["links"] => Ok(state.links.values().map(Link::summary).collect()),
        ["ns", role] => state
            .roles
            .iter()
            .find(|(r, ns)| r == role || ns == role || (*role == "inet" && r == "internet"))
            .map(|(_, ns)| format!("{ns}\n"))
            .ok_or_else(|| {
                format!(
                    "no role `{role}` (roles: {})",
                    state
                        .roles
                        .iter()
                        .map(|(r, _)| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }),
        ["describe"] => Ok(state.description.clone()),
        _ => Err(format!(
            "unknown request `{}` (link NAME SETTINGS..., links, ns ROLE, describe)",
            words.join(" ")
        )),
    }
}

/// Finds the control socket: of run `prefix`, or the only running one.
pub fn find_socket(prefix: Option<&str>) -> Result<PathBuf, Error> {
    if let Some(p) = prefix {
        let path = Path::new(RUN_ROOT).join(p).join("control.sock");
        return if path.exists() {
            Ok(path)
        } else {
            Err(Error::new(format!(
                "no running testbed with prefix `{p}` ({} missing)",
                path.display()
            )))
        };
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(RUN_ROOT)
        .map(|d| {
            d.flatten()
                .map(|e| e.path().join("control.sock"))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default();
    match found.len() {
        0 => Err(Error::new(
            "no running testbed found (start one with `linkpool-testbed up TOPOLOGY`)",
        )),
        1 => Ok(found.remove(0)),
        _ => Err(Error::new(format!(
            "several testbeds are running; choose one with --prefix ({})",
            found
                .iter()
                .filter_map(|p| p.parent()?.file_name()?.to_str().map(String::from))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Sends one request to a control socket and returns the reply text (without `ok`).
pub fn request(socket: &Path, request: &str) -> Result<String, Error> {
    let mut stream = UnixStream::connect(socket)
        .map_err(|e| Error::new(format!("{}: cannot connect: {e}", socket.display())))?;
    stream
        .write_all(format!("{request}\n").as_bytes())
        .map_err(|e| Error::new(format!("{}: {e}", socket.display())))?;
    let mut reply = String::new();
    io::Read::read_to_string(&mut stream, &mut reply)
        .map_err(|e| Error::new(format!("{}: {e}", socket.display())))?;
    match reply.strip_prefix("ok\n") {
        Some(text) => Ok(text.to_string()),
        None => Err(Error::new(
            reply.trim().trim_start_matches("error: ").to_string(),
        )),
    }
}
