//! The internet host's servers: HTTP (in this process), DNS (dnsmasq) and iperf3.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::netns;

/// A file the HTTP server serves, with what a download must match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedFile {
    /// File name; the URL path is `/files/NAME`.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content, lower-case hex.
    pub sha256: String,
}

impl ServedFile {
    /// The URL path of the file.
    pub fn path(&self) -> String {
        format!("/files/{}", self.name)
    }
}

/// One request the HTTP server answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    /// The client's address as the internet host saw it (v4-mapped addresses shown as v4).
    pub peer: IpAddr,
    /// The request path.
    pub path: String,
    /// The status sent.
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
}

/// Writes `size` bytes of deterministic pseudo-random content to `dir/name`; returns its
/// description with the SHA-256.
pub(crate) fn generate_file(dir: &Path, name: &str, size: u64) -> io::Result<ServedFile> {
    if !valid_file_name(name) {
        return Err(io::Error::other(format!(
            "`{name}`: file names may use letters, digits, '.', '-' and '_'"
        )));
    }
    let mut out = BufWriter::new(File::create(dir.join(name))?);
    let mut hash = Sha256::new();
    let mut state = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let mut chunk = vec![0u8; 64 * 1024];
    let mut left = size;
    while left > 0 {
        for word in chunk.chunks_mut(8) {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            word.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes()[..word.len()]);
        }
        let n = left.min(chunk.len() as u64) as usize;
        out.write_all(&chunk[..n])?;
        hash.update(&chunk[..n]);
        left -= n as u64;
    }
    out.flush()?;
    Ok(ServedFile {
        name: name.to_string(),
        size,
        sha256: hex(&hash.finalize()),
    })
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// A small HTTP/1.1 server (GET and HEAD, one request per connection) listening on port 80
/// of a namespace, IPv4 and IPv6. Paths: `/files/NAME` from its directory, `/ip` (the
/// client's address as seen by the server), `/`.
pub(crate) struct HttpServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    log: Arc<Mutex<Vec<HttpRequest>>>,
}

impl HttpServer {
    pub(crate) fn start(ns: &str, dir: PathBuf) -> io::Result<HttpServer> {
        let listener = netns::within(ns, || {
            let l = TcpListener::bind("[::]:80")?;
            l.set_nonblocking(true)?;
            Ok(l)
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stop2, log2) = (stop.clone(), log.clone());
        let thread = std::thread::Builder::new()
            .name("http-server".into())
            .spawn(move || accept_loop(listener, dir, stop2, log2))?;
        Ok(HttpServer {
            stop,
            thread: Some(thread),
            log,
        })
    }

    pub(crate) fn requests(&self) -> Vec<HttpRequest> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    dir: PathBuf,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<HttpRequest>>>,
) {
    let dir = Arc::new(dir);
    while !stop.load(Ordering::Acquire) {
        let mut fds = [libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(fds.as_mut_ptr(), 1, 100) } <= 0 {
            continue;
        }
        let Ok((stream, peer)) = listener.accept() else {
            continue;
        };
        let (dir, log, stop) = (dir.clone(), log.clone(), stop.clone());
        let peer = match peer.ip() {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        let _ = std::thread::Builder::new()
            .name("http-conn".into())
            .spawn(move || {
                if let Some(entry) = serve(stream, peer, &dir, &stop) {
                    log.lock().unwrap_or_else(|e| e.into_inner()).push(entry);
                }
            });
    }
}

fn serve(
    mut stream: TcpStream,
    peer: IpAddr,
    dir: &Path,
    stop: &AtomicBool,
) -> Option<HttpRequest> {
    stream.set_nonblocking(false).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 || head.len() > 16 * 1024 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut words = head.split_whitespace();
    let (method, path) = (words.next()?.to_string(), words.next()?.to_string());
    let mut respond = |status: u16, reason: &str, body_len: u64, body: &mut dyn Read| -> u64 {
        let header = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Length: {body_len}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\nServer: linkpool-testbed\r\n\r\n"
        );
        if stream.write_all(header.as_bytes()).is_err() || method == "HEAD" {
            return 0;
        }
        let mut sent = 0;
        let mut chunk = vec![0u8; 64 * 1024];
        while let Ok(n) = body.read(&mut chunk) {
            if n == 0 || stop.load(Ordering::Relaxed) || stream.write_all(&chunk[..n]).is_err() {
                break;
            }
            sent += n as u64;
        }
        sent
    };
    let (status, bytes) = if method != "GET" && method != "HEAD" {
        (405, respond(405, "Method Not Allowed", 0, &mut io::empty()))
    } else if path == "/ip" {
        let text = format!("{peer}\n");
        (
            200,
            respond(200, "OK", text.len() as u64, &mut text.as_bytes()),
        )
    } else if path == "/" {
        let text = "linkpool testbed internet host\n";
        (
            200,
            respond(200, "OK", text.len() as u64, &mut text.as_bytes()),
        )
    } else if let Some(file) = path
        .strip_prefix("/files/")
        .filter(|n| valid_file_name(n))
        .and_then(|n| File::open(dir.join(n)).ok())
    {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        (200, respond(200, "OK", len, &mut io::BufReader::new(file)))
    } else {
        let text = "not found\n";
        (
            404,
            respond(404, "Not Found", text.len() as u64, &mut text.as_bytes()),
        )
    };
    Some(HttpRequest {
        peer,
        path,
        status,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_files_are_deterministic_and_hashed() {
        let dir = std::env::temp_dir().join(format!("lpt-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = generate_file(&dir, "a.bin", 100_003).unwrap();
        let content = std::fs::read(dir.join("a.bin")).unwrap();
        assert_eq!(content.len(), 100_003);
        assert_eq!(a.sha256, hex(&Sha256::digest(&content)));
        let again = generate_file(&dir, "a.bin", 100_003).unwrap();
        assert_eq!(a, again);
        assert!(generate_file(&dir, "../x", 1).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
