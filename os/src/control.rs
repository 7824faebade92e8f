//! The daemons' control socket: `linkpool status` and `linkpool-proxy status` connect to a
//! unix socket, say which format they want, and get one snapshot back.
//!
//! The accept loop runs as its own task; it asks the daemon's event loop for a snapshot
//! through a channel, so the event loop never blocks on a slow client.

use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};

/// What the client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Lines for a person.
    Text,
    /// One JSON object, for LuCI and scripts.
    Json,
}

/// A snapshot request for the event loop: answer on the sender.
pub type Request = (Format, oneshot::Sender<String>);

/// A listening control socket; the file is removed on drop.
#[derive(Debug)]
pub struct ControlSocket {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
    requests: mpsc::Sender<Request>,
}

impl ControlSocket {
    /// Another way in to the same receiver: for a server of the daemon's own (the proxy's
    /// admin HTTP API) that asks the event loop for snapshots as the socket's clients do.
    pub fn requests(&self) -> mpsc::Sender<Request> {
        self.requests.clone()
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// How long a client may take to send its one-line request.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

/// Listens on `path` (replacing a stale socket file) and hands requests to the returned
/// receiver. Must be called inside a tokio runtime.
pub fn serve(path: &Path) -> io::Result<(ControlSocket, mpsc::Receiver<Request>)> {
    if path.exists() {
        // A daemon that is still running answers; then this one must not steal its socket.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{}: another daemon is running", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let (tx, rx) = mpsc::channel(4);
    let requests = tx.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut line = String::new();
                let mut reader = BufReader::new(read);
                let got = tokio::time::timeout(CLIENT_TIMEOUT, reader.read_line(&mut line)).await;
                let format = match (got, line.trim()) {
                    (Ok(Ok(_)), "json") => Format::Json,
                    (Ok(Ok(_)), "text" | "") => Format::Text,
                    _ => return,
                };
                let (reply_tx, reply_rx) = oneshot::channel::<String>();
                if tx.send((format, reply_tx)).await.is_err() {
                    return;
                }
                if let Ok(answer) = reply_rx.await {
                    let _ = write.write_all(answer.as_bytes()).await;
                    let _ = write.shutdown().await;
                }
            });
        }
    });
    Ok((
        ControlSocket {
            path: path.to_path_buf(),
            task,
            requests,
        },
        rx,
    ))
}

/// How long `status` waits for the daemon: to be let in, and then for its whole answer.
/// A daemon busy with a flood may take a while; one that takes longer is reported as busy
/// or not answering, never as a bare `EAGAIN`.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks the daemon listening on `path` for a snapshot (blocking; for the CLI), waiting at
/// most [`QUERY_TIMEOUT`].
pub fn query(path: &Path, format: Format) -> io::Result<String> {
    query_within(path, format, QUERY_TIMEOUT)
}

/// [`query`] with its own time limit.
pub fn query_within(path: &Path, format: Format, timeout: Duration) -> io::Result<String> {
    let deadline = Instant::now() + timeout;
    let busy = |what: &str| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "{}: the daemon {what} within {:.0?}: it is busy (a flood?) or not answering; try again, and see its log",
                path.display(),
                timeout
            ),
        )
    };
    let mut stream = connect(path, deadline).map_err(|e| match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => busy("did not take the connection"),
        _ => io::Error::new(
            e.kind(),
            format!("{}: {e} (is the daemon running?)", path.display()),
        ),
    })?;
    let request = match format {
        Format::Text => "text\n",
        Format::Json => "json\n",
    };
    stream.set_write_timeout(Some(
        remaining(deadline).ok_or_else(|| busy("did not answer"))?,
    ))?;
    stream
        .write_all(request.as_bytes())
        .map_err(|e| match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => busy("did not read the request"),
            _ => e,
        })?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let Some(left) = remaining(deadline) else {
            return Err(busy("did not answer"));
        };
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // The read timeout: go round, the deadline decides.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    if answer.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "{}: the daemon closed the connection without answering (see its log)",
                path.display()
            ),
        ));
    }
    let mut answer = String::from_utf8_lossy(&answer).into_owned();
    if !answer.ends_with('\n') {
        answer.push('\n');
    }
    Ok(answer)
}

/// Time left until `deadline`, if any.
fn remaining(deadline: Instant) -> Option<Duration> {
    Some(deadline.saturating_duration_since(Instant::now())).filter(|d| !d.is_zero())
}

/// Connects to the unix socket at `path` by `deadline`. A blocking connect waits while the
/// daemon's backlog is full, up to the socket's send timeout, then fails with `EAGAIN`;
/// that is retried (briefly pausing) until the deadline, then reported as `TimedOut`.
fn connect(path: &Path, deadline: Instant) -> io::Result<std::os::unix::net::UnixStream> {
    let addr = SockAddr::unix(path)?;
    loop {
        let Some(left) = remaining(deadline) else {
            return Err(io::ErrorKind::TimedOut.into());
        };
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        socket.set_write_timeout(Some(left))?;
        match socket.connect(&addr) {
            Ok(()) => return Ok(socket.into()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20).min(left));
            }
            Err(e) => return Err(e),
        }
    }
}

/// What `status [--json]` does in both CLIs: asks the daemon and prints its answer.
pub fn print_status(path: &Path, json: bool) -> io::Result<()> {
    let format = if json { Format::Json } else { Format::Text };
    crate::cli::stdout_text(&query(path, format)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener as StdListener;

    fn socket_path(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("lp-control-{tag}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    /// A daemon that answers, but only after a while: the client waits for it.
    #[test]
    fn a_slow_answer_is_waited_for() {
        let path = socket_path("slow");
        let listener = StdListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut line = [0u8; 5];
            s.read_exact(&mut line).unwrap();
            assert_eq!(&line, b"json\n");
            std::thread::sleep(Duration::from_millis(700));
            s.write_all(b"{\"ok\":true}").unwrap();
        });
        let answer = query_within(&path, Format::Json, Duration::from_secs(5)).unwrap();
        assert_eq!(answer, "{\"ok\":true}\n");
        server.join().unwrap();
        let _ = std::fs::remove_file(&path);
    }

    /// What `status` met under a flood: the daemon takes the request but its answer does
    /// not come. Before: "Resource temporarily unavailable (os error 11)" after 5 s.
    #[test]
    fn no_answer_is_reported_as_busy_naming_the_socket() {
        let path = socket_path("mute");
        let listener = StdListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_millis(1500));
            drop(s);
        });
        let t0 = Instant::now();
        let e = query_within(&path, Format::Text, Duration::from_millis(600)).unwrap_err();
        let waited = t0.elapsed();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!(
                "{}: the daemon did not answer within 600ms",
                path.display()
            )),
            "{msg}"
        );
        assert!(msg.contains("busy") && !msg.contains("os error"), "{msg}");
        assert!(
            waited >= Duration::from_millis(550) && waited < Duration::from_millis(1400),
            "{waited:?}"
        );
        server.join().unwrap();
        let _ = std::fs::remove_file(&path);
    }

    /// A daemon that does not even accept (its backlog full): connecting gets `EAGAIN`,
    /// which is waited out, then reported as busy.
    #[test]
    fn a_full_backlog_is_waited_on_then_reported_as_busy() {
        let path = socket_path("full");
        let listener = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        listener.bind(&SockAddr::unix(&path).unwrap()).unwrap();
        listener.listen(0).unwrap();
        // Fill the backlog (with 0, one connection fits).
        let mut held = Vec::new();
        loop {
            let s = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
            s.set_nonblocking(true).unwrap();
            match s.connect(&SockAddr::unix(&path).unwrap()) {
                Ok(()) => held.push(s),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
            assert!(held.len() < 64, "the backlog does not fill");
        }
        let t0 = Instant::now();
        let e = query_within(&path, Format::Text, Duration::from_millis(500)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(
            e.to_string()
                .contains("did not take the connection within 500ms"),
            "{e}"
        );
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());

        // Once the daemon accepts again, the same query goes through.
        let path2 = path.clone();
        let server = std::thread::spawn(move || {
            let listener: StdListener = listener.into();
            for _ in 0..held.len() {
                drop(listener.accept().unwrap());
            }
            let (mut s, _) = listener.accept().unwrap();
            let mut line = [0u8; 5];
            s.read_exact(&mut line).unwrap();
            s.write_all(b"up\n").unwrap();
            drop(path2);
        });
        assert_eq!(
            query_within(&path, Format::Text, Duration::from_secs(5)).unwrap(),
            "up\n"
        );
        server.join().unwrap();
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn no_daemon_says_so() {
        let path = socket_path("none");
        let e = query_within(&path, Format::Text, Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().ends_with("(is the daemon running?)"), "{e}");
        // A socket file left behind by a dead daemon: refused, not waited on.
        drop(StdListener::bind(&path).unwrap());
        let t0 = Instant::now();
        let e = query_within(&path, Format::Text, Duration::from_secs(5)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
        assert!(t0.elapsed() < Duration::from_secs(1));
        let _ = std::fs::remove_file(&path);
    }
}
