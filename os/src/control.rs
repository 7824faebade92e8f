//! The daemons' control socket: `linkpool status` and `linkpool-proxy status` connect to a
//! unix socket, say which format they want, and get one snapshot back.
//!
//! The accept loop runs as its own task; it asks the daemon's event loop for a snapshot
//! through a channel, so the event loop never blocks on a slow client.

use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

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
        },
        rx,
    ))
}

/// Asks the daemon listening on `path` for a snapshot (blocking; for the CLI).
pub fn query(path: &Path, format: Format) -> io::Result<String> {
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{}: {e} (is the daemon running?)", path.display()),
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let request = match format {
        Format::Text => "text\n",
        Format::Json => "json\n",
    };
    stream.write_all(request.as_bytes())?;
    let mut answer = String::new();
    for line in io::BufReader::new(stream).lines() {
        answer.push_str(&line?);
        answer.push('\n');
    }
    Ok(answer)
}

/// What `status [--json]` does in both CLIs: asks the daemon and prints its answer.
pub fn print_status(path: &Path, json: bool) -> io::Result<()> {
    let format = if json { Format::Json } else { Format::Text };
    print!("{}", query(path, format)?);
    Ok(())
}
