//! The proxy's admin HTTP API and Prometheus metrics (`[admin]`; docs/admin-api.md).
//!
//! A small HTTP/1.1 server of its own on the daemon's runtime: one request per connection,
//! `GET` and `POST`, bodies up to 64 kB sent with a `Content-Length`, heads up to 16 kB, at
//! most 8 connections at a time, 5 s for a client to send its request. Every request must
//! carry the bearer token (compared in constant time); one that does not gets 401 before
//! its body is read, and is counted.
//!
//! Live figures are the event loop's own status snapshot (`linkpool-proxy status --json`),
//! asked for through the control socket's channel, which the event loop answers first on
//! each turn; the ledger is read on a blocking thread. Nothing here ever blocks the event
//! loop, and nothing an unauthenticated client sends reaches it.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use linkpool_os::control::{Format, Request as StatusRequest};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Semaphore, mpsc, oneshot};
use tracing::{debug, info};

use crate::config::AdminConfig;
use crate::ledger;

/// The API's version: the `version` of every JSON answer, and the `v1` in its paths.
pub const API_VERSION: u32 = 1;

/// What a connection may take: sizes, counts and times.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Connections served at once; one more gets 503 at once.
    connections: usize,
    /// Request line and headers.
    head_bytes: usize,
    /// Header lines.
    headers: usize,
    /// A body (only with `Content-Length`).
    body_bytes: usize,
    /// For the whole request to arrive, from the connection's start.
    read: Duration,
    /// For the answer to be taken.
    write: Duration,
    /// For the event loop to answer a status request.
    status: Duration,
}

const LIMITS: Limits = Limits {
    connections: 8,
    head_bytes: 16 * 1024,
    headers: 32,
    body_bytes: 64 * 1024,
    read: Duration::from_secs(5),
    write: Duration::from_secs(10),
    status: Duration::from_secs(5),
};

/// The running admin API; it stops listening when dropped (requests being answered are
/// finished).
#[derive(Debug)]
pub struct AdminApi {
    local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl AdminApi {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for AdminApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the admin API as `config` says: live figures are asked of the event loop through
/// `status` (the control socket's channel: `ControlSocket::requests`), the ledger read from
/// `ledger_file`. Must be called inside the tokio runtime; spawns its tasks there.
pub fn spawn(
    config: &AdminConfig,
    status: mpsc::Sender<StatusRequest>,
    ledger_file: PathBuf,
) -> io::Result<AdminApi> {
    spawn_with(config, status, ledger_file, LIMITS)
}

fn spawn_with(
    config: &AdminConfig,
    status: mpsc::Sender<StatusRequest>,
    ledger_file: PathBuf,
    limits: Limits,
) -> io::Result<AdminApi> {
    let cannot = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("admin API: cannot listen on {}: {e}", config.listen),
        )
    };
    let listener = std::net::TcpListener::bind(config.listen).map_err(cannot)?;
    listener.set_nonblocking(true).map_err(cannot)?;
    let listener = TcpListener::from_std(listener).map_err(cannot)?;
    let local = listener.local_addr()?;
    let shared = Arc::new(Shared {
        token: Sha256::digest(config.token.as_bytes()).into(),
        status,
        ledger_file,
        limits,
        responses: ResponseCounts::default(),
        totals: Mutex::new(ByteTotals::default()),
        connections: Arc::new(Semaphore::new(limits.connections)),
    });
    let task = tokio::spawn(accept(listener, shared));
    info!(listen = %local, "admin API listening");
    Ok(AdminApi { local, task })
}

/// What every connection's task shares.
struct Shared {
    /// SHA-256 of the token: compared with the presented one's, in constant time.
    token: [u8; 32],
    status: mpsc::Sender<StatusRequest>,
    ledger_file: PathBuf,
    limits: Limits,
    responses: ResponseCounts,
    /// Members' byte totals, kept across scrapes; the lock also keeps the snapshots in
    /// the order the event loop took them.
    totals: Mutex<ByteTotals>,
    connections: Arc<Semaphore>,
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                debug!("admin API: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
            let busy = Response::error(
                Code::Unavailable,
                format!(
                    "{} connections are being served: try again",
                    shared.limits.connections
                ),
            );
            shared.responses.note(busy.code);
            // A fresh socket's buffer takes it whole; no task waits on a client.
            let _ = stream.try_write(&busy.to_bytes());
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            serve(stream, &shared).await;
            drop(permit);
        });
    }
}

/// Reads one request, answers it, and closes.
async fn serve(mut stream: TcpStream, shared: &Shared) {
    let read = tokio::time::timeout(shared.limits.read, read_request(&mut stream, shared)).await;
    let response = match read {
        Ok(Incoming::Request(request)) => handle(request, shared).await,
        Ok(Incoming::Refused(response)) => response,
        Ok(Incoming::Gone) => return,
        Err(_) => Response::error(
            Code::Timeout,
            format!("the request did not arrive within {:?}", shared.limits.read),
        ),
    };
    shared.responses.note(response.code);
    let bytes = response.to_bytes();
    let _ = tokio::time::timeout(shared.limits.write, async {
        stream.write_all(&bytes).await?;
        stream.shutdown().await
    })
    .await;
}

/// An authenticated request.
#[derive(Debug)]
struct Request {
    method: String,
    path: String,
    query: String,
    /// For `POST /api/v1/credits`.
    body: Vec<u8>,
}

enum Incoming {
    Request(Request),
    /// Answered without looking further: malformed, too large, not authenticated.
    Refused(Response),
    /// The client left before sending a request.
    Gone,
}

/// The interim answer to `Expect: 100-continue`: send the body.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// What of a request's head is needed once its buffer is reused.
struct Head {
    method: String,
    target: String,
    len: usize,
    authorized: bool,
    content_length: Result<usize, Response>,
    expects_continue: bool,
}

async fn read_request(stream: &mut TcpStream, shared: &Shared) -> Incoming {
    let limits = shared.limits;
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    let head = loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Incoming::Gone,
            Ok(n) => n,
        };
        // Parsed again only once a blank line may have come: a client sending a byte at a
        // time costs no more than one sending it all.
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        let ended = buf[from..].windows(2).any(|w| w == b"\n\n")
            || buf[from..].windows(3).any(|w| w == b"\n\r\n");
        let parsed = if ended {
            parse_head(&buf, shared)
        } else {
            Ok(None)
        };
        match parsed {
            Ok(Some(head)) if head.len <= limits.head_bytes => break head,
            Ok(None) if buf.len() <= limits.head_bytes => {}
            Ok(_) | Err(httparse::Error::TooManyHeaders) => {
                return Incoming::Refused(Response::error(
                    Code::HeadTooLarge,
                    format!(
                        "the request's head is over {} bytes or {} headers",
                        limits.head_bytes, limits.headers
                    ),
                ));
            }
            Err(e) => {
                return Incoming::Refused(Response::error(
                    Code::BadRequest,
                    format!("not an HTTP/1.1 request: {e}"),
                ));
            }
        }
    };
    // Nothing more is read, nor said, for a client without the token.
    if !head.authorized {
        return Incoming::Refused(Response::unauthorized());
    }
    let length = match head.content_length {
        Ok(n) => n,
        Err(response) => return Incoming::Refused(response),
    };
    if length > limits.body_bytes {
        return Incoming::Refused(Response::error(
            Code::TooLarge,
            format!(
                "a body of {length} bytes: at most {} are taken",
                limits.body_bytes
            ),
        ));
    }
    let mut body = buf.split_off(head.len);
    let continues = head.expects_continue && length > body.len();
    if continues && stream.write_all(CONTINUE).await.is_err() {
        return Incoming::Gone;
    }
    while body.len() < length {
        let want = (length - body.len()).min(chunk.len());
        match stream.read(&mut chunk[..want]).await {
            Ok(0) | Err(_) => return Incoming::Gone,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    // One request per connection: anything after the body is not read.
    body.truncate(length);
    let (path, query) = match head.target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (head.target, String::new()),
    };
    Incoming::Request(Request {
        method: head.method,
        path,
        query,
        body,
    })
}

/// Parses the head in `buf` once it is all there (`None` until then).
fn parse_head(buf: &[u8], shared: &Shared) -> Result<Option<Head>, httparse::Error> {
    let mut headers = vec![httparse::EMPTY_HEADER; shared.limits.headers];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf)? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(None),
    };
    let mut authorizations = 0;
    let mut authorized = false;
    let mut lengths = Vec::new();
    let mut chunked = false;
    let mut expects_continue = false;
    for h in request.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("authorization") {
            authorizations += 1;
            authorized = bearer(h.value).is_some_and(|t| shared.token_matches(t));
        } else if name.eq_ignore_ascii_case("content-length") {
            lengths.push(h.value);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
        } else if name.eq_ignore_ascii_case("expect") {
            expects_continue = h.value.eq_ignore_ascii_case(b"100-continue");
        }
    }
    let content_length = if chunked {
        Err(Response::error(
            Code::LengthRequired,
            "send the body with a Content-Length (Transfer-Encoding is not taken)",
        ))
    } else {
        match lengths.as_slice() {
            [] => Ok(0),
            [one] => std::str::from_utf8(one)
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or_else(|| Response::error(Code::BadRequest, "Content-Length is not a number")),
            _ => Err(Response::error(
                Code::BadRequest,
                "Content-Length is given more than once",
            )),
        }
    };
    Ok(Some(Head {
        method: request.method.unwrap_or_default().to_string(),
        target: request.path.unwrap_or_default().to_string(),
        len,
        // Two Authorization headers: one of them is not the token's.
        authorized: authorized && authorizations == 1,
        content_length,
        expects_continue,
    }))
}

/// The token of an `Authorization: Bearer TOKEN` header value.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().as_bytes())
}

impl Shared {
    /// Whether `presented` is the token: their SHA-256s compared in constant time (which
    /// also hides the token's length).
    fn token_matches(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        digest.ct_eq(&self.token).into()
    }

    /// The event loop's status snapshot, parsed.
    async fn status(&self) -> Result<Value, Response> {
        let (reply, answer) = oneshot::channel();
        let asked = async {
            self.status.send((Format::Json, reply)).await.ok()?;
            answer.await.ok()
        };
        match tokio::time::timeout(self.limits.status, asked).await {
            Ok(Some(text)) => serde_json::from_str(&text).map_err(|e| {
                Response::error(
                    Code::Internal,
                    format!("the proxy's status is not JSON: {e}"),
                )
            }),
            Ok(None) => Err(Response::error(
                Code::Unavailable,
                "the proxy's event loop is not answering (stopping?)",
            )),
            Err(_) => Err(Response::error(
                Code::Unavailable,
                format!(
                    "the proxy did not answer within {:?}: it is busy (a flood?); try again, and see its log",
                    self.limits.status
                ),
            )),
        }
    }
}

/// The endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Members,
    Sessions,
    Ledger,
    Credits,
    Metrics,
}

impl Route {
    const ALL: [(&'static str, Route); 5] = [
        ("/api/v1/members", Route::Members),
        ("/api/v1/sessions", Route::Sessions),
        ("/api/v1/ledger", Route::Ledger),
        ("/api/v1/credits", Route::Credits),
        ("/metrics", Route::Metrics),
    ];

    fn find(path: &str) -> Option<Route> {
        Route::ALL.iter().find(|(p, _)| *p == path).map(|(_, r)| *r)
    }

    /// The methods it takes.
    fn methods(self) -> &'static [&'static str] {
        match self {
            Route::Members | Route::Sessions | Route::Ledger | Route::Metrics => &["GET"],
            Route::Credits => &["GET", "POST"],
        }
    }
}

/// Answers an authenticated request.
async fn handle(request: Request, shared: &Shared) -> Response {
    let path = request.path.as_str();
    let Some(route) = Route::find(path) else {
        let known: Vec<&str> = Route::ALL.iter().map(|(p, _)| *p).collect();
        return Response::error(
            Code::NotFound,
            format!("no such endpoint `{path}` (there are {})", known.join(", ")),
        );
    };
    if !route.methods().contains(&request.method.as_str()) {
        let allowed = route.methods().join(", ");
        let mut r = Response::error(
            Code::MethodNotAllowed,
            format!("{path} takes {allowed}, not {}", request.method),
        );
        r.allow = Some(allowed);
        return r;
    }
    let result = match route {
        Route::Members => members(&request, shared).await,
        Route::Sessions => sessions(&request, shared).await,
        Route::Ledger => ledger_rows(&request, shared).await,
        Route::Credits if request.method == "POST" => adjust_credits(&request, shared).await,
        Route::Credits => credits(&request, shared).await,
        Route::Metrics => metrics(&request, shared).await,
    };
    result.unwrap_or_else(|e| e)
}

/// `GET /api/v1/members`: who is configured, and who is connected.
async fn members(request: &Request, shared: &Shared) -> Result<Response, Response> {
    parse_query(&request.query, &[])?;
    let status = shared.status().await?;
    let members: Vec<Value> = list(&status["members"])
        .iter()
        .map(|m| {
            let paths = list(&m["paths"]);
            json!({
                "name": m["name"],
                "addresses": m["addresses"],
                "connected": m["connected"],
                "session_age_s": m["session_age_s"],
                "last_received_s_ago": m["last_received_s_ago"],
                "paths": paths.len(),
                "active_paths": paths.iter().filter(|p| p["state"] == "active").count(),
            })
        })
        .collect();
    Ok(Response::json(
        &json!({"version": API_VERSION, "members": members}),
    ))
}

/// `GET /api/v1/sessions`: the status snapshot, whole.
async fn sessions(request: &Request, shared: &Shared) -> Result<Response, Response> {
    parse_query(&request.query, &[])?;
    let status = shared.status().await?;
    Ok(Response::json(
        &json!({"version": API_VERSION, "status": status}),
    ))
}

/// `GET /api/v1/ledger?member=&since=&until=`: what `linkpool-proxy ledger --json` gives.
async fn ledger_rows(request: &Request, shared: &Shared) -> Result<Response, Response> {
    let query = parse_query(&request.query, &["member", "since", "until"])?;
    let mut filter = ledger::Filter::all();
    for (key, value) in query {
        let bad = |reason: String| Response::error(Code::BadRequest, format!("{key}: {reason}"));
        match key {
            "member" => {
                linkpool_protocol::bundle::check_member_name(&value).map_err(bad)?;
                filter.member = Some(value);
            }
            "since" => filter.since = ledger::parse_time(&value).map_err(bad)?,
            _ => filter.until = ledger::parse_time(&value).map_err(bad)?,
        }
    }
    if filter.since >= filter.until {
        return Err(Response::error(
            Code::BadRequest,
            format!(
                "since ({}) is not before until ({})",
                ledger::format_time(filter.since),
                ledger::format_time(filter.until)
            ),
        ));
    }
    let text = with_ledger(shared, move |file| {
        ledger::Ledger::open_read_only(file)
            .and_then(|l| ledger::report(&l, &filter, ledger::Report::Json))
    })
    .await?;
    Ok(Response::json_text(text))
}

/// Runs `f` on the ledger on a blocking thread: the event loop never waits for the disk.
async fn with_ledger<T: Send + 'static>(
    shared: &Shared,
    f: impl FnOnce(&std::path::Path) -> Result<T, ledger::LedgerError> + Send + 'static,
) -> Result<T, Response> {
    let file = shared.ledger_file.clone();
    match tokio::task::spawn_blocking(move || f(&file)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Response::error(Code::Internal, e.to_string())),
        Err(e) => Err(Response::error(
            Code::Internal,
            format!("the ledger failed: {e}"),
        )),
    }
}

/// `GET /api/v1/credits?member=`: what `linkpool-proxy credits --json` gives.
async fn credits(request: &Request, shared: &Shared) -> Result<Response, Response> {
    let mut filter = ledger::Filter::all();
    for (_, value) in parse_query(&request.query, &["member"])? {
        linkpool_protocol::bundle::check_member_name(&value)
            .map_err(|e| Response::error(Code::BadRequest, format!("member: {e}")))?;
        filter.member = Some(value);
    }
    let text = with_ledger(shared, move |file| {
        ledger::Ledger::open_read_only(file).and_then(|l| ledger::credits_report(&l, &filter, true))
    })
    .await?;
    Ok(Response::json_text(text))
}

/// `POST /api/v1/credits` with `{"member": NAME, "amount": "2.5", "reason": TEXT}`:
/// grants credits (takes them with a negative amount), as `linkpool-proxy credits grant`.
async fn adjust_credits(request: &Request, shared: &Shared) -> Result<Response, Response> {
    parse_query(&request.query, &[])?;
    let bad = |reason: String| Response::error(Code::BadRequest, reason);
    let body: Value = serde_json::from_slice(&request.body)
        .map_err(|e| bad(format!("the body is not JSON: {e}")))?;
    let field = |k: &str| {
        body[k]
            .as_str()
            .map(str::to_string)
            .or_else(|| body[k].as_f64().map(|n| n.to_string()))
            .ok_or_else(|| bad(format!("`{k}` is missing (a string)")))
    };
    let (member, amount, reason) = (field("member")?, field("amount")?, field("reason")?);
    let amount = ledger::parse_credits(&amount).map_err(|e| bad(format!("amount: {e}")))?;
    if amount == 0 || reason.trim().is_empty() {
        return Err(bad("amount must not be 0, and reason not empty".into()));
    }
    let status = shared.status().await?;
    if !list(&status["members"])
        .iter()
        .any(|m| m["name"] == member.as_str())
    {
        return Err(Response::error(
            Code::NotFound,
            format!("no member `{member}`"),
        ));
    }
    let at = ledger::unix_now();
    let (who, why) = (member.clone(), reason.clone());
    with_ledger(shared, move |file| {
        ledger::Ledger::open(file)?.adjust(at, &who, amount, &why)
    })
    .await?;
    Ok(Response::json(&json!({
        "version": API_VERSION,
        "adjusted": {"member": member, "amount": amount, "reason": reason, "at": at},
    })))
}

/// `GET /metrics`: the Prometheus text format, 0.0.4.
async fn metrics(request: &Request, shared: &Shared) -> Result<Response, Response> {
    parse_query(&request.query, &[])?;
    // Held from the request to the update: snapshots are applied in the order taken.
    let mut totals = shared.totals.lock().await;
    let status = shared.status().await?;
    totals.update(&status);
    let scrape = Scrape {
        members: totals.members.clone(),
        responses: shared.responses.snapshot(),
        status,
    };
    drop(totals);
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
        .map_err(|_| Response::error(Code::Internal, "the metrics could not be written"))?;
    Ok(Response {
        code: Code::Ok,
        content_type: prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        body: text.into_bytes(),
        allow: None,
    })
}

/// The entries of a JSON array (none for anything else).
fn list(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

/// A query string's parameters, percent-decoded; each of `known` at most once, no others.
fn parse_query<'k>(query: &str, known: &[&'k str]) -> Result<Vec<(&'k str, String)>, Response> {
    let bad = |reason: String| Response::error(Code::BadRequest, reason);
    let mut out: Vec<(&'k str, String)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key).map_err(&bad)?;
        let Some(&known_key) = known.iter().find(|k| **k == key) else {
            return Err(bad(if known.is_empty() {
                format!("unknown parameter `{key}`: this endpoint takes none")
            } else {
                format!("unknown parameter `{key}` (known: {})", known.join(", "))
            }));
        };
        if out.iter().any(|(k, _)| *k == known_key) {
            return Err(bad(format!("`{key}` is given more than once")));
        }
        out.push((known_key, percent_decode(value).map_err(&bad)?));
    }
    Ok(out)
}

/// `%XX` escapes and `+` (a space) decoded; the result must be UTF-8.
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("`{s}` has a bad %-escape"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("`{s}` is not UTF-8"))
}

/// The status codes the API answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Code {
    Ok,
    BadRequest,
    Unauthorized,
    NotFound,
    MethodNotAllowed,
    Timeout,
    LengthRequired,
    TooLarge,
    HeadTooLarge,
    Internal,
    Unavailable,
}

impl Code {
    const ALL: [Code; 11] = [
        Code::Ok,
        Code::BadRequest,
        Code::Unauthorized,
        Code::NotFound,
        Code::MethodNotAllowed,
        Code::Timeout,
        Code::LengthRequired,
        Code::TooLarge,
        Code::HeadTooLarge,
        Code::Internal,
        Code::Unavailable,
    ];

    fn number(self) -> u16 {
        match self {
            Code::Ok => 200,
            Code::BadRequest => 400,
            Code::Unauthorized => 401,
            Code::NotFound => 404,
            Code::MethodNotAllowed => 405,
            Code::Timeout => 408,
            Code::LengthRequired => 411,
            Code::TooLarge => 413,
            Code::HeadTooLarge => 431,
            Code::Internal => 500,
            Code::Unavailable => 503,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::BadRequest => "Bad Request",
            Code::Unauthorized => "Unauthorized",
            Code::NotFound => "Not Found",
            Code::MethodNotAllowed => "Method Not Allowed",
            Code::Timeout => "Request Timeout",
            Code::LengthRequired => "Length Required",
            Code::TooLarge => "Content Too Large",
            Code::HeadTooLarge => "Request Header Fields Too Large",
            Code::Internal => "Internal Server Error",
            Code::Unavailable => "Service Unavailable",
        }
    }
}

/// Responses sent, by status code. 32 bits: the proxy also runs where 64-bit atomics do
/// not exist (32-bit MIPS); a wrap after 4 billion answers reads as a counter reset.
#[derive(Default)]
struct ResponseCounts([AtomicU32; Code::ALL.len()]);

impl ResponseCounts {
    fn note(&self, code: Code) {
        if let Some(i) = Code::ALL.iter().position(|c| *c == code) {
            self.0[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> Vec<(u16, u32)> {
        Code::ALL
            .iter()
            .zip(&self.0)
            .map(|(c, n)| (c.number(), n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// An answer: JSON, or the metrics' text.
#[derive(Debug)]
struct Response {
    code: Code,
    content_type: &'static str,
    body: Vec<u8>,
    /// The methods a path takes, for 405.
    allow: Option<String>,
}

impl Response {
    fn json(v: &Value) -> Response {
        Response::json_text(format!("{v}\n"))
    }

    fn json_text(mut text: String) -> Response {
        if !text.ends_with('\n') {
            text.push('\n');
        }
        Response {
            code: Code::Ok,
            content_type: "application/json",
            body: text.into_bytes(),
            allow: None,
        }
    }

    fn error(code: Code, reason: impl fmt::Display) -> Response {
        let mut r = Response::json(&json!({
            "version": API_VERSION,
            "error": reason.to_string(),
        }));
        r.code = code;
        r
    }

    fn unauthorized() -> Response {
        Response::error(
            Code::Unauthorized,
            "send the admin token: Authorization: Bearer TOKEN",
        )
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n",
            self.code.number(),
            self.code.reason(),
            self.content_type,
            self.body.len()
        );
        if self.code == Code::Unauthorized {
            head.push_str("WWW-Authenticate: Bearer realm=\"linkpool-proxy\"\r\n");
        }
        if let Some(allow) = &self.allow {
            head.push_str(&format!("Allow: {allow}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// Each member's bytes over all its paths since the proxy started, kept across scrapes: a
/// path's own counters go when the path does (60 s after it died, or when its member
/// reconnects), and a member's counter must never go down.
#[derive(Debug, Default)]
struct ByteTotals {
    /// Per member: (received from it, sent to it).
    members: BTreeMap<String, (u64, u64)>,
    /// Per member and path id: the counters last seen.
    paths: BTreeMap<(String, u64), (u64, u64)>,
}

impl ByteTotals {
    /// Adds what each path counted since the last snapshot; members no longer configured
    /// are forgotten.
    fn update(&mut self, status: &Value) {
        let mut members = BTreeMap::new();
        let mut paths = BTreeMap::new();
        for m in list(&status["members"]) {
            let Some(name) = m["name"].as_str() else {
                continue;
            };
            let mut total = self.members.get(name).copied().unwrap_or_default();
            for p in list(&m["paths"]) {
                let Some(id) = p["path"].as_u64() else {
                    continue;
                };
                let key = (name.to_string(), id);
                let now = (
                    p["rx_bytes"].as_u64().unwrap_or(0),
                    p["tx_bytes"].as_u64().unwrap_or(0),
                );
                let seen = self.paths.get(&key).copied().unwrap_or_default();
                // Path ids are not reused in a session; a counter never goes down.
                total.0 += now.0.saturating_sub(seen.0);
                total.1 += now.1.saturating_sub(seen.1);
                paths.insert(key, (now.0.max(seen.0), now.1.max(seen.1)));
            }
            members.insert(name.to_string(), total);
        }
        self.members = members;
        self.paths = paths;
    }
}

/// One scrape's figures, written out by prometheus-client.
#[derive(Debug)]
struct Scrape {
    status: Value,
    members: BTreeMap<String, (u64, u64)>,
    responses: Vec<(u16, u32)>,
}

/// Writes a metric family's descriptor and its series.
fn family<L: EncodeLabelSet, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, M)>,
) -> fmt::Result {
    let mut series = series.into_iter().peekable();
    let Some((_, first)) = series.peek() else {
        return Ok(());
    };
    let mut metric = encoder.encode_descriptor(name, help, None, first.metric_type())?;
    for (labels, value) in series {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A metric without labels.
fn single<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: M,
) -> fmt::Result {
    let metric = encoder.encode_descriptor(name, help, None, value.metric_type())?;
    value.encode(metric)
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let s = &self.status;
        let members = list(&s["members"]);
        let counter = |v: &Value| ConstCounter::new(v.as_u64().unwrap_or(0));
        let name = |m: &Value| m["name"].as_str().unwrap_or("?").to_string();

        single(
            &mut e,
            "linkpool_uptime_seconds",
            "Seconds since the proxy started.",
            ConstGauge::new(s["uptime_s"].as_i64().unwrap_or(0)),
        )?;
        single(
            &mut e,
            "linkpool_members",
            "Members configured.",
            ConstGauge::new(members.len() as i64),
        )?;
        single(
            &mut e,
            "linkpool_sessions_connected",
            "Members with a session now.",
            ConstGauge::new(members.iter().filter(|m| m["connected"] == true).count() as i64),
        )?;
        family(
            &mut e,
            "linkpool_member_connected",
            "1 while the member has a session.",
            members.iter().map(|m| {
                (
                    [("member", name(m))],
                    ConstGauge::new(i64::from(m["connected"] == true)),
                )
            }),
        )?;
        family(
            &mut e,
            "linkpool_member_balance_credits",
            "The member's credit balance, as the ledger last told the proxy.",
            members
                .iter()
                .filter_map(|m| Some(([("member", name(m))], m["balance"].as_i64()?)))
                .map(|(l, b)| (l, ConstGauge::new(b as f64 / 1e3))),
        )?;
        let rated = |key: &'static str| {
            members.iter().filter_map(move |m| {
                let permille = m["relay_rating"][key].as_u64()?;
                Some((
                    [("member", name(m))],
                    ConstGauge::new(permille as f64 / 1e3),
                ))
            })
        };
        family(
            &mut e,
            "linkpool_relay_delivered_ratio",
            "Of what the member's relay was offered for neighbours over the last 10-20 minutes \
             (wire bytes), the share it delivered; absent when nothing was offered.",
            rated("delivered_permille"),
        )?;
        family(
            &mut e,
            "linkpool_relay_uptime_ratio",
            "The share of the last 10-20 minutes the member was connected (its relay's uptime).",
            rated("uptime_permille"),
        )?;
        family(
            &mut e,
            "linkpool_member_rx_bytes",
            "Inner bytes received from the member over all its paths since the proxy started.",
            self.members
                .iter()
                .map(|(m, t)| ([("member", m.clone())], ConstCounter::new(t.0))),
        )?;
        family(
            &mut e,
            "linkpool_member_tx_bytes",
            "Inner bytes sent to the member over all its paths since the proxy started.",
            self.members
                .iter()
                .map(|(m, t)| ([("member", m.clone())], ConstCounter::new(t.1))),
        )?;

        let paths: Vec<(&Value, &Value)> = members
            .iter()
            .flat_map(|m| list(&m["paths"]).iter().map(move |p| (m, p)))
            .collect();
        let labels = |m: &Value, p: &Value| [("member", name(m)), ("path", p["path"].to_string())];
        family(
            &mut e,
            "linkpool_path_rx_bytes",
            "Inner bytes received on the path.",
            paths
                .iter()
                .map(|(m, p)| (labels(m, p), counter(&p["rx_bytes"]))),
        )?;
        family(
            &mut e,
            "linkpool_path_tx_bytes",
            "Inner bytes sent on the path.",
            paths
                .iter()
                .map(|(m, p)| (labels(m, p), counter(&p["tx_bytes"]))),
        )?;
        family(
            &mut e,
            "linkpool_path_delivery_rate_bits_per_second",
            "The most the path delivered per second lately (status: delivery_rate_bps).",
            paths.iter().filter_map(|(m, p)| {
                let bps = p["delivery_rate_bps"].as_f64()?;
                Some((labels(m, p), ConstGauge::new(bps)))
            }),
        )?;
        family(
            &mut e,
            "linkpool_path_srtt_seconds",
            "Smoothed round-trip time of the path (status: srtt_ms); none before a sample.",
            paths.iter().filter_map(|(m, p)| {
                let ms = p["srtt_ms"].as_f64()?;
                Some((labels(m, p), ConstGauge::new(ms / 1e3)))
            }),
        )?;
        family(
            &mut e,
            "linkpool_path_loss_ratio",
            "Recent share of the path's packets lost, 0 to 1.",
            paths.iter().filter_map(|(m, p)| {
                let loss = p["loss"].as_f64()?;
                Some((labels(m, p), ConstGauge::new(loss)))
            }),
        )?;

        let drops: Vec<(&String, &Value)> = s["drops"]
            .as_object()
            .map(|d| d.iter().collect())
            .unwrap_or_default();
        family(
            &mut e,
            "linkpool_drops",
            "Packets dropped, by reason (docs/status.md lists them).",
            drops
                .iter()
                .map(|(reason, n)| ([("reason", reason.to_string())], counter(n))),
        )?;
        single(
            &mut e,
            "linkpool_handshakes",
            "Handshakes completed with members.",
            counter(&s["handshakes"]),
        )?;
        single(
            &mut e,
            "linkpool_cookies_sent",
            "Cookie replies sent under handshake load.",
            counter(&s["cookies_sent"]),
        )?;
        if let Some(ms) = s["ledger"]["flush_lag_ms"].as_f64() {
            single(
                &mut e,
                "linkpool_ledger_flush_lag_seconds",
                "How old the counts in the ledger's last written batch were when written.",
                ConstGauge::new(ms / 1e3),
            )?;
        }
        family(
            &mut e,
            "linkpool_admin_responses",
            "Admin API responses, by HTTP status code (401: requests without the token).",
            self.responses
                .iter()
                .map(|(code, n)| ([("code", code.to_string())], ConstCounter::new(*n))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AdminToken, ProxyConfig};
    use crate::ledger::{Batch, Ledger};
    use linkpool_protocol::usage::{UpDown, Usage};
    use std::path::Path;
    use std::sync::Mutex as StdMutex;
    use std::time::Instant;

    const TOKEN: &str = "s3cret-token-for-tests-0123456789";

    /// Two members: alice connected with two paths (123 bytes from her, 1005 to her),
    /// bob offline; two kinds of drops; the ledger's lag.
    const STATUS: &str = r#"{"uptime_s": 60, "handshakes": 3, "handshakes_processed": 4,
        "cookies_sent": 0,
        "members": [
            {"name": "alice", "addresses": ["10.77.0.2", "fd77::2"], "connected": true,
                          "session_age_s": 30, "last_received_s_ago": 0, "queued": 0, "balance": -1500,
             "relay_rating": {"delivered_permille": 985, "uptime_permille": 1000},
             "paths": [
                {"path": 7, "state": "active", "srtt_ms": 20.5, "loss": 0.01,
                 "delivery_rate_bps": 8000000, "rx_bytes": 100, "tx_bytes": 1000},
                {"path": 9, "state": "probing", "srtt_ms": null, "loss": 0.0,
                 "delivery_rate_bps": 0, "rx_bytes": 23, "tx_bytes": 5}]},
            {"name": "bob", "addresses": ["10.77.0.3"], "connected": false,
             "session_age_s": null, "last_received_s_ago": null, "queued": 0, "paths": []}],
        "drops": {"replay": 2, "bad_tag": 1},
        "local_multicast_ignored": 0,
        "ledger": {"flush_lag_ms": 250}}"#;

    use crate::test_dir::TempDir;

    /// A status provider standing in for the event loop: answers with whatever `text`
    /// holds then.
    fn fake_event_loop(text: Arc<StdMutex<String>>) -> mpsc::Sender<StatusRequest> {
        let (tx, mut rx) = mpsc::channel::<StatusRequest>(4);
        tokio::spawn(async move {
            while let Some((format, reply)) = rx.recv().await {
                assert_eq!(format, Format::Json);
                let _ = reply.send(text.lock().unwrap().clone());
            }
        });
        tx
    }

    /// A ledger with alice in two hours and bob in one.
    fn ledger_file(dir: &Path) -> PathBuf {
        let file = dir.join("ledger.sqlite");
        let mut ledger = Ledger::open(&file).unwrap();
        let usage = |n: u64| Usage {
            inner: UpDown { up: n, down: 2 * n },
            own: UpDown { up: n, down: n },
            ..Usage::default()
        };
        let names = |id: u32| ["alice", "bob"][id as usize].to_string();
        let mut batch = Batch::default();
        batch.add(Instant::now(), 3600, "alice", &usage(10), names);
        batch.add(Instant::now(), 7200, "alice", &usage(20), names);
        batch.add(Instant::now(), 3600, "bob", &usage(30), names);
        ledger.apply(&batch).unwrap();
        file
    }

    struct Api {
        api: AdminApi,
        status: Arc<StdMutex<String>>,
        _dir: TempDir,
    }

    async fn start(tag: &str, limits: Limits) -> Api {
        let dir = TempDir::new(tag);
        let status = Arc::new(StdMutex::new(STATUS.to_string()));
        let config = AdminConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            allow_remote: false,
            token_file: dir.0.join("admin.token"),
            token: AdminToken::new(TOKEN).unwrap(),
        };
        let api = spawn_with(
            &config,
            fake_event_loop(status.clone()),
            ledger_file(&dir.0),
            limits,
        )
        .unwrap();
        Api {
            api,
            status,
            _dir: dir,
        }
    }

    /// Limits with short times, for the tests of time-outs.
    fn quick() -> Limits {
        Limits {
            read: Duration::from_millis(300),
            status: Duration::from_millis(300),
            ..LIMITS
        }
    }

    /// What a real client gets: status code, head, body.
    struct Got {
        code: u16,
        head: String,
        body: String,
    }

    impl Got {
        fn json(&self) -> Value {
            serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
        }
    }

    /// Sends `request` as is over a fresh TCP connection and reads the answer until the
    /// server closes.
    async fn exchange(addr: SocketAddr, request: &[u8]) -> Got {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(request).await;
        read_answer(&mut s).await
    }

    async fn read_answer(s: &mut TcpStream) -> Got {
        let mut out = Vec::new();
        // A reset after the answer (the server closing on bytes it did not read) keeps
        // what was read.
        let _ = s.read_to_end(&mut out).await;
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let code = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {text:?}"));
        Got {
            code,
            head: head.to_string(),
            body: body.to_string(),
        }
    }

    async fn get(api: &Api, target: &str, token: Option<&str>) -> Got {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let request = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n{auth}\r\n");
        exchange(api.api.local_addr(), request.as_bytes()).await
    }

    fn content_length(got: &Got) -> usize {
        got.head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|n| n.parse().ok())
            .unwrap()
    }

    #[tokio::test]
    async fn every_request_needs_the_token_and_refusals_are_counted() {
        let api = start("auth", LIMITS).await;
        let none = get(&api, "/api/v1/members", None).await;
        assert_eq!(none.code, 401, "{}", none.body);
        assert!(
            none.head
                .contains("WWW-Authenticate: Bearer realm=\"linkpool-proxy\""),
            "{}",
            none.head
        );
        assert_eq!(none.json()["version"], 1);
        assert!(none.json()["error"].as_str().unwrap().contains("Bearer"));
        for wrong in [
            "s3cret-token-for-tests-012345678",
            "s3cret-token-for-tests-0123456789x",
            "",
        ] {
            let got = get(&api, "/metrics", Some(wrong)).await;
            assert_eq!(got.code, 401, "{wrong:?}");
            assert!(!got.body.contains("linkpool_"), "{}", got.body);
        }
        // Another scheme, or the token twice (once wrong): refused too.
        let basic = format!("GET /metrics HTTP/1.1\r\nAuthorization: Basic {TOKEN}\r\n\r\n");
        assert_eq!(
            exchange(api.api.local_addr(), basic.as_bytes()).await.code,
            401
        );
        let twice = format!(
            "GET /metrics HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\
             Authorization: Bearer nope\r\n\r\n"
        );
        assert_eq!(
            exchange(api.api.local_addr(), twice.as_bytes()).await.code,
            401
        );
        // The scheme is case-insensitive; the token is not.
        let lower =
            format!("GET /api/v1/members HTTP/1.1\r\nauthorization: bearer {TOKEN}\r\n\r\n");
        assert_eq!(
            exchange(api.api.local_addr(), lower.as_bytes()).await.code,
            200
        );
        let upper = TOKEN.to_uppercase();
        assert_eq!(get(&api, "/metrics", Some(&upper)).await.code, 401);

        let metrics = get(&api, "/metrics", Some(TOKEN)).await;
        assert_eq!(metrics.code, 200, "{}", metrics.body);
        assert!(
            metrics
                .body
                .lines()
                .any(|l| l == "linkpool_admin_responses_total{code=\"401\"} 7"),
            "{}",
            metrics.body
        );
        assert!(
            metrics
                .body
                .lines()
                .any(|l| l == "linkpool_admin_responses_total{code=\"200\"} 1"),
            "{}",
            metrics.body
        );
    }

    #[tokio::test]
    async fn unknown_paths_wrong_methods_and_bad_queries_say_what_is_wrong() {
        let api = start("errors", LIMITS).await;
        let got = get(&api, "/api/v1/nothing", Some(TOKEN)).await;
        assert_eq!(got.code, 404);
        assert_eq!(got.json()["version"], 1);
        assert!(
            got.json()["error"]
                .as_str()
                .unwrap()
                .contains("no such endpoint `/api/v1/nothing`"),
            "{}",
            got.body
        );
        assert_eq!(content_length(&got), got.body.len());
        assert!(got.head.contains("Content-Type: application/json"));
        assert_eq!(get(&api, "/api/v1/credits", Some(TOKEN)).await.code, 200);

        let post = format!(
            "POST /metrics HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 5\r\n\r\nhello"
        );
        let got = exchange(api.api.local_addr(), post.as_bytes()).await;
        assert_eq!(got.code, 405, "{}", got.body);
        assert!(got.head.contains("Allow: GET"), "{}", got.head);

        for (target, says) in [
            (
                "/api/v1/ledger?since=yesterday",
                "since: `yesterday` is not a time",
            ),
            (
                "/api/v1/ledger?until=2026-02-30",
                "until: `2026-02-30`: there is no such day",
            ),
            ("/api/v1/ledger?member=no%20spaces", "member: "),
            (
                "/api/v1/ledger?hour=1",
                "unknown parameter `hour` (known: member, since, until)",
            ),
            (
                "/api/v1/ledger?since=0&since=1",
                "`since` is given more than once",
            ),
            (
                "/api/v1/ledger?since=7200&until=3600",
                "is not before until",
            ),
            ("/api/v1/ledger?member=%zz", "bad %-escape"),
            (
                "/metrics?x",
                "unknown parameter `x`: this endpoint takes none",
            ),
        ] {
            let got = get(&api, target, Some(TOKEN)).await;
            assert_eq!(got.code, 400, "{target}: {}", got.body);
            let error = got.json()["error"].as_str().unwrap().to_string();
            assert!(error.contains(says), "{target}: {error}");
        }
    }

    #[tokio::test]
    async fn members_and_sessions_come_from_the_event_loops_status() {
        let api = start("members", LIMITS).await;
        let got = get(&api, "/api/v1/members", Some(TOKEN)).await;
        assert_eq!(got.code, 200, "{}", got.body);
        let v = got.json();
        assert_eq!(v["version"], 1);
        let alice = &v["members"][0];
        assert_eq!(alice["name"], "alice");
        assert_eq!(alice["addresses"], json!(["10.77.0.2", "fd77::2"]));
        assert_eq!(alice["connected"], true);
        assert_eq!(alice["session_age_s"], 30);
        assert_eq!(alice["paths"], 2);
        assert_eq!(alice["active_paths"], 1);
        assert_eq!(v["members"][1]["connected"], false);
        assert_eq!(v["members"][1]["session_age_s"], Value::Null);

        let got = get(&api, "/api/v1/sessions", Some(TOKEN)).await;
        assert_eq!(got.code, 200);
        let v = got.json();
        assert_eq!(v["version"], 1);
        assert_eq!(v["status"], serde_json::from_str::<Value>(STATUS).unwrap());
    }

    /// As the daemon wires it: the control socket's own channel serves both the socket's
    /// clients and the API, and a client sending its request a byte at a time is served.
    #[tokio::test]
    async fn the_api_shares_the_control_sockets_channel() {
        let dir = TempDir::new("control");
        let path = dir.0.join("proxy.sock");
        let (control, mut requests) = linkpool_os::control::serve(&path).unwrap();
        let config = AdminConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            allow_remote: false,
            token_file: dir.0.join("admin.token"),
            token: AdminToken::new(TOKEN).unwrap(),
        };
        let api = spawn(&config, control.requests(), ledger_file(&dir.0)).unwrap();
        // The event loop's part.
        tokio::spawn(async move {
            while let Some((format, reply)) = requests.recv().await {
                let _ = reply.send(match format {
                    Format::Json => STATUS.to_string(),
                    Format::Text => "up\n".to_string(),
                });
            }
        });
        let addr = api.local_addr();
        let mut s = TcpStream::connect(addr).await.unwrap();
        let request =
            format!("GET /api/v1/members HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n");
        for b in request.as_bytes() {
            s.write_all(&[*b]).await.unwrap();
            tokio::task::yield_now().await;
        }
        let got = read_answer(&mut s).await;
        assert_eq!(got.code, 200, "{}", got.body);
        assert_eq!(got.json()["members"][0]["name"], "alice");
        let cli =
            tokio::task::spawn_blocking(move || linkpool_os::control::query(&path, Format::Text));
        assert_eq!(cli.await.unwrap().unwrap(), "up\n");
        drop(control);
    }

    #[tokio::test]
    async fn the_ledger_is_read_as_the_cli_reads_it() {
        let api = start("ledger", LIMITS).await;
        let got = get(&api, "/api/v1/ledger", Some(TOKEN)).await;
        assert_eq!(got.code, 200, "{}", got.body);
        let v = got.json();
        assert_eq!(v["version"], 1);
        assert_eq!(v["usage"].as_array().unwrap().len(), 3);
        let got = get(
            &api,
            "/api/v1/ledger?member=alice&since=1970-01-01T01:00&until=7200",
            Some(TOKEN),
        )
        .await;
        let v = got.json();
        let rows = v["usage"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "{v}");
        assert_eq!(rows[0]["member"], "alice");
        assert_eq!(rows[0]["hour"], 3600);
        assert_eq!(rows[0]["inner"], json!({"up": 10, "down": 20}));
        // %-escapes and `+` for a space in a time.
        let got = get(&api, "/api/v1/ledger?since=1970-01-01+02%3A00", Some(TOKEN)).await;
        assert_eq!(
            got.json()["usage"].as_array().unwrap().len(),
            1,
            "{}",
            got.body
        );
    }

    async fn post(api: &Api, target: &str, body: &str) -> Got {
        let request = format!(
            "POST {target} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        exchange(api.api.local_addr(), request.as_bytes()).await
    }

    #[tokio::test]
    async fn credits_are_read_and_granted_with_a_reason() {
        let api = start("credits", LIMITS).await;
        let grant = r#"{"member": "alice", "amount": "2.5", "reason": "welcome"}"#;
        let got = post(&api, "/api/v1/credits", grant).await;
        assert_eq!(got.code, 200, "{}", got.body);
        assert_eq!(got.json()["adjusted"]["amount"], 2500);
        let take = r#"{"member": "alice", "amount": -1, "reason": "refund"}"#;
        assert_eq!(post(&api, "/api/v1/credits", take).await.code, 200);
        let got = get(&api, "/api/v1/credits?member=alice", Some(TOKEN)).await;
        assert_eq!(got.code, 200, "{}", got.body);
        let v = got.json();
        let alice = &v["balances"][0];
        assert_eq!(
            (alice["member"].as_str(), alice["adjusted"].as_i64()),
            (Some("alice"), Some(1500))
        );
        assert_eq!(v["adjustments"][1]["reason"], "refund");
        for (body, says) in [
            ("not json", "not JSON"),
            (
                r#"{"member": "alice", "amount": "2"}"#,
                "`reason` is missing",
            ),
            (
                r#"{"member": "alice", "amount": "x", "reason": "r"}"#,
                "amount",
            ),
            (
                r#"{"member": "alice", "amount": "0", "reason": "r"}"#,
                "must not be 0",
            ),
        ] {
            let got = post(&api, "/api/v1/credits", body).await;
            assert_eq!(got.code, 400, "{body}: {}", got.body);
            assert!(got.body.contains(says), "{body}: {}", got.body);
        }
        let nobody = r#"{"member": "mallory", "amount": "1", "reason": "r"}"#;
        assert_eq!(post(&api, "/api/v1/credits", nobody).await.code, 404);
    }

    /// A metrics line: name, labels as written, value.
    fn sample(line: &str) -> Option<(&str, &str, f64)> {
        let (series, value) = line.rsplit_once(' ')?;
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.strip_suffix('}')?),
            None => (series, ""),
        };
        let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
        (!name.is_empty() && name.chars().all(valid)).then_some(())?;
        Some((name, labels, value.parse().ok()?))
    }

    #[tokio::test]
    async fn metrics_are_prometheus_text_and_members_bytes_never_go_down() {
        let api = start("metrics", LIMITS).await;
        let got = get(&api, "/metrics", Some(TOKEN)).await;
        assert_eq!(got.code, 200, "{}", got.body);
        assert!(
            got.head
                .contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"),
            "{}",
            got.head
        );
        // Every line is a comment or a sample of a family whose TYPE came before it.
        let mut typed = Vec::new();
        for line in got.body.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(["counter", "gauge"].contains(&kind), "{line}");
                typed.push(name.to_string());
            } else if !line.starts_with("# HELP ") {
                let (name, _, _) = sample(line).unwrap_or_else(|| panic!("bad line {line:?}"));
                assert_eq!(typed.last().map(String::as_str), Some(name), "{line}");
            }
        }
        assert!(!got.body.contains("# EOF"), "OpenMetrics, not 0.0.4");
        let lines: Vec<&str> = got.body.lines().collect();
        for want in [
            "linkpool_member_rx_bytes_total{member=\"alice\"} 123",
            "linkpool_member_tx_bytes_total{member=\"alice\"} 1005",
            "linkpool_member_rx_bytes_total{member=\"bob\"} 0",
            "# TYPE linkpool_member_rx_bytes_total counter",
            "linkpool_member_connected{member=\"alice\"} 1",
            "linkpool_member_connected{member=\"bob\"} 0",
            "linkpool_member_balance_credits{member=\"alice\"} -1.5",
            "linkpool_relay_delivered_ratio{member=\"alice\"} 0.985",
            "linkpool_relay_uptime_ratio{member=\"alice\"} 1.0",
            "linkpool_sessions_connected 1",
            "linkpool_members 2",
            "linkpool_path_rx_bytes_total{member=\"alice\",path=\"7\"} 100",
            "linkpool_path_delivery_rate_bits_per_second{member=\"alice\",path=\"7\"} 8000000.0",
            "linkpool_path_srtt_seconds{member=\"alice\",path=\"7\"} 0.0205",
            "linkpool_drops_total{reason=\"replay\"} 2",
            "linkpool_drops_total{reason=\"bad_tag\"} 1",
            "linkpool_ledger_flush_lag_seconds 0.25",
            "linkpool_handshakes_total 3",
        ] {
            assert!(lines.contains(&want), "no `{want}` in\n{}", got.body);
        }
        // No sample for a path without a round-trip time yet.
        assert!(
            !got.body
                .contains("srtt_seconds{member=\"alice\",path=\"9\"}")
        );

        // Path 7 is gone (forgotten), path 9 carried more, path 11 is new; the ledger's
        // lag is not in this status.
        *api.status.lock().unwrap() = STATUS
            .replace(
                r#"{"path": 7, "state": "active", "srtt_ms": 20.5, "loss": 0.01,
                 "delivery_rate_bps": 8000000, "rx_bytes": 100, "tx_bytes": 1000}"#,
                r#"{"path": 11, "state": "active", "rx_bytes": 4, "tx_bytes": 0}"#,
            )
            .replace(r#""rx_bytes": 23"#, r#""rx_bytes": 50"#)
            .replace(r#", "ledger": {"flush_lag_ms": 250}"#, "")
            .replace("\"ledger\": {\"flush_lag_ms\": 250}", "\"x\": 0");
        let got = get(&api, "/metrics", Some(TOKEN)).await;
        assert!(
            got.body
                .lines()
                .any(|l| l == "linkpool_member_rx_bytes_total{member=\"alice\"} 154"),
            "100 + 50 + 4:\n{}",
            got.body
        );
        assert!(!got.body.contains("path=\"7\""), "{}", got.body);
        assert!(!got.body.contains("flush_lag"), "{}", got.body);
    }

    #[tokio::test]
    async fn oversized_slow_and_excess_requests_are_refused() {
        let api = start(
            "limits",
            Limits {
                connections: 2,
                ..quick()
            },
        )
        .await;
        let addr = api.api.local_addr();
        // Heads over 16 kB.
        let big = format!(
            "GET /metrics HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nX-Pad: {}\r\n",
            "a".repeat(LIMITS.head_bytes)
        );
        assert_eq!(exchange(addr, big.as_bytes()).await.code, 431);
        let many: String = (0..40).map(|i| format!("X-{i}: 1\r\n")).collect();
        let many = format!("GET /metrics HTTP/1.1\r\n{many}\r\n");
        assert_eq!(exchange(addr, many.as_bytes()).await.code, 431);
        // Bodies over 64 kB, without a length, or not HTTP at all.
        let huge = format!(
            "POST /api/v1/credits HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 70000\r\n\r\n"
        );
        assert_eq!(exchange(addr, huge.as_bytes()).await.code, 413);
        let chunked = format!(
            "POST /api/v1/credits HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        );
        assert_eq!(exchange(addr, chunked.as_bytes()).await.code, 411);
        assert_eq!(exchange(addr, b"HELLO\x01 there\r\n\r\n").await.code, 400);
        // A body that takes `Expect: 100-continue` is read, then the path answered.
        let mut s = TcpStream::connect(addr).await.unwrap();
        let post = format!(
            "POST /api/v1/nothing HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
        );
        s.write_all(post.as_bytes()).await.unwrap();
        let mut cont = [0u8; 25];
        s.read_exact(&mut cont).await.unwrap();
        assert_eq!(&cont, b"HTTP/1.1 100 Continue\r\n\r\n");
        s.write_all(b"abc").await.unwrap();
        assert_eq!(read_answer(&mut s).await.code, 404);

        // Two clients that say nothing hold both connections: a third is turned away at
        // once; the two are closed with 408 when their time is up.
        let mut idle = Vec::new();
        for _ in 0..2 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t0 = Instant::now();
        let got = get(&api, "/metrics", Some(TOKEN)).await;
        assert_eq!(got.code, 503, "{}", got.body);
        assert!(
            got.body.contains("2 connections are being served"),
            "{}",
            got.body
        );
        assert!(t0.elapsed() < Duration::from_millis(200));
        for mut s in idle {
            let got = read_answer(&mut s).await;
            assert_eq!(got.code, 408, "{}", got.body);
        }
        assert_eq!(get(&api, "/metrics", Some(TOKEN)).await.code, 200);
    }

    #[tokio::test]
    async fn an_event_loop_that_does_not_answer_is_reported_not_waited_on() {
        let dir = TempDir::new("mute");
        let (tx, rx) = mpsc::channel::<StatusRequest>(1);
        let config = AdminConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            allow_remote: false,
            token_file: dir.0.join("t"),
            token: AdminToken::new(TOKEN).unwrap(),
        };
        let api = Api {
            api: spawn_with(&config, tx, dir.0.join("none.sqlite"), quick()).unwrap(),
            status: Arc::new(StdMutex::new(String::new())),
            _dir: dir,
        };
        // Requests are taken but never answered: busy.
        let got = get(&api, "/api/v1/sessions", Some(TOKEN)).await;
        assert_eq!(got.code, 503);
        assert!(
            got.body.contains("did not answer within 300ms"),
            "{}",
            got.body
        );
        // The ledger does not exist: said, with its path.
        let got = get(&api, "/api/v1/ledger", Some(TOKEN)).await;
        assert_eq!(got.code, 500);
        assert!(
            got.body.contains("none.sqlite: does not exist"),
            "{}",
            got.body
        );
        // The event loop is gone.
        drop(rx);
        let got = get(&api, "/metrics", Some(TOKEN)).await;
        assert_eq!(got.code, 503);
        assert!(got.body.contains("not answering"), "{}", got.body);
    }

    // The `[admin]` table of the configuration.

    const KEY: &str = "BQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQU=";

    fn config(dir: &TempDir, admin: &str, token: &str, mode: u32) -> Result<ProxyConfig, String> {
        use std::os::unix::fs::PermissionsExt as _;
        let key = dir.0.join("proxy.key");
        std::fs::write(&key, format!("{KEY}\n")).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let token_file = dir.0.join("admin.token");
        std::fs::write(&token_file, token).unwrap();
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(mode)).unwrap();
        let text = format!(
            "endpoints = [\"203.0.113.10:7117\"]\nprivate_key_file = \"proxy.key\"\n\n[admin]\n{admin}"
        );
        ProxyConfig::from_toml_str(&dir.0.join("proxy.toml"), &text).map_err(|e| e.to_string())
    }

    /// The example configuration's `[admin]` table, commented out there, taken as is.
    #[test]
    fn the_examples_admin_table_is_valid() {
        let dir = TempDir::new("example");
        config(&dir, "", TOKEN, 0o600).unwrap();
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("linkpool-proxy.example.toml");
        let text = std::fs::read_to_string(&example).unwrap();
        let token_file = dir.0.join("admin.token");
        let text: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(key) if key == "[admin]" || key.starts_with("listen = ") => key.to_string(),
                Some(key) if key.starts_with("token_file = ") => {
                    format!("token_file = {token_file:?}")
                }
                Some(key) if key.starts_with("allow_remote = ") => key.to_string(),
                _ => l.to_string(),
            } + "\n")
            .collect::<String>()
            .replace("/etc/linkpool-proxy/proxy.key", dir.0.join("proxy.key").to_str().unwrap());
        let c = ProxyConfig::from_toml_str(&example, &text).unwrap();
        let admin = c.admin.unwrap();
        assert_eq!(admin.listen, "127.0.0.1:7119".parse().unwrap());
        assert!(!admin.allow_remote);
    }

    #[test]
    fn the_admin_table_is_off_by_default_loopback_only_and_needs_a_good_token() {
        let dir = TempDir::new("config");
        let token = format!("{TOKEN}\n");
        let c = config(&dir, "", &token, 0o600).unwrap();
        assert!(c.admin.is_none());
        let c = config(&dir, "token_file = \"admin.token\"\n", &token, 0o600).unwrap();
        assert!(c.admin.is_none());
        assert!(
            c.warnings[0].contains("admin API is off"),
            "{:?}",
            c.warnings
        );

        let on = "listen = \"127.0.0.1:7119\"\ntoken_file = \"admin.token\"\n";
        let c = config(&dir, on, &token, 0o600).unwrap();
        let admin = c.admin.unwrap();
        assert_eq!(admin.listen, "127.0.0.1:7119".parse().unwrap());
        assert_eq!(admin.token, AdminToken::new(TOKEN).unwrap());
        assert_eq!(admin.token_file, dir.0.join("admin.token"));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert!(
            !format!("{admin:?}").contains(TOKEN),
            "the token is not shown"
        );
        let v6 = on.replace("127.0.0.1:7119", "[::1]:7119");
        assert!(config(&dir, &v6, &token, 0o600).unwrap().admin.is_some());

        // Others may read the token: a warning.
        let c = config(&dir, on, &token, 0o644).unwrap();
        assert!(
            c.warnings[0].contains("other users can read or change it (mode 0644): chmod 600"),
            "{:?}",
            c.warnings
        );

        let remote = on.replace("127.0.0.1", "0.0.0.0");
        let e = config(&dir, &remote, &token, 0o600).unwrap_err();
        assert!(
            e.contains(":5: key `admin.listen`: `0.0.0.0:7119` is not a loopback address")
                && e.contains("allow_remote = true"),
            "{e}"
        );
        let allowed = format!("{remote}allow_remote = true\n");
        let c = config(&dir, &allowed, &token, 0o600).unwrap();
        assert!(c.admin.unwrap().allow_remote);

        for (admin, token, says) in [
            (
                "listen = \"127.0.0.1:7119\"\n",
                TOKEN,
                ":5: key `admin.token_file`: is required when admin.listen is set",
            ),
            (
                "listen = \"localhost:7119\"\ntoken_file = \"admin.token\"\n",
                TOKEN,
                "key `admin.listen`: `localhost:7119` is not an address:port",
            ),
            (on, "short\n", "key `admin.token_file`: the token in "),
            (on, "has a space in it 0123456789", "visible ASCII"),
            (on, "\n", "is empty"),
            (
                "listen = \"127.0.0.1:7119\"\ntoken_file = \"missing\"\n",
                TOKEN,
                "cannot read",
            ),
            ("port = 1\n", TOKEN, ":5: key `admin.port`: unknown key"),
        ] {
            let e = config(&dir, admin, token, 0o600).unwrap_err();
            assert!(e.contains(says), "{admin:?} {token:?}: {e}");
        }
    }
}
