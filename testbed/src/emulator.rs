//! Link emulation without netem: delay, jitter, loss, rate and outages in userspace.
//!
//! An emulated link between node A and node B is two veth pairs that meet in the emulator
//! namespace: `A:dev_a <-> emu:side_a` and `emu:side_b <-> B:dev_b`. For each direction a
//! thread of this process reads whole Ethernet frames from one side's AF_PACKET socket,
//! asks the link model ([`linkpool_sim::link::LinkModel`], shared with the in-process
//! simulator: loss by a seeded PRNG, a serialising bottleneck with a tail-drop queue for
//! the rate, then delay ± jitter) when each is due, keeps them in a FIFO ordered by that
//! time, and writes them to the other side when due. Arrival times come from the kernel's receive
//! timestamps, so a frame that waited in the socket buffer is not delayed twice.
//!
//! The threads live in the `linkpool-testbed` process, so the emulation dies with it.

use std::collections::VecDeque;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use linkpool_sim::link::{DropReason, LinkModel, Verdict};

use crate::netns;
use crate::params::{LinkParams, LinkSpec};

pub use linkpool_sim::link::Direction;

/// `PACKET_IGNORE_OUTGOING` from linux/if_packet.h (not in every libc version).
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
/// Largest frame we accept: offloads are off on emulated links, but a jumbo or a stray
/// GSO frame must not overflow the buffer (it is counted as too big and dropped).
const MAX_FRAME: usize = 65536;
/// Frames in flight per direction; beyond this the link drops (a memory bound, not a model).
const MAX_IN_FLIGHT: usize = 65536;
/// Frame buffers kept for reuse; after a burst the rest is freed.
const MAX_SPARE: usize = 4096;
/// Socket buffers big enough for a burst of 100 ms at 1 Gbit/s.
const SOCKET_BUFFER: libc::c_int = 16 << 20;
/// Longest sleep, so that stop requests and parameter changes are seen promptly.
const MAX_WAIT: Duration = Duration::from_millis(100);
/// Frames read per turn before due frames are sent again.
const RECEIVE_BATCH: usize = 64;
/// Histogram resolution for the scheduling lateness.
const LATENESS_BUCKET_US: u64 = 10;
const LATENESS_BUCKETS: usize = 10_000;

/// Counters of one direction of a link (since the link was created).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Frames read from the sending side.
    pub frames_in: u64,
    /// Bytes of those frames (Ethernet header included).
    pub bytes_in: u64,
    /// Frames delivered to the receiving side.
    pub frames_out: u64,
    /// Bytes delivered.
    pub bytes_out: u64,
    /// Frames dropped by the loss model.
    pub dropped_loss: u64,
    /// Frames dropped because the bottleneck queue (or the in-flight bound) was full.
    pub dropped_queue: u64,
    /// Frames dropped during an outage.
    pub dropped_outage: u64,
    /// Frames the kernel refused to send or that were too big.
    pub dropped_other: u64,
}

#[derive(Default)]
struct Counters {
    frames_in: AtomicU64,
    bytes_in: AtomicU64,
    frames_out: AtomicU64,
    bytes_out: AtomicU64,
    dropped_loss: AtomicU64,
    dropped_queue: AtomicU64,
    dropped_outage: AtomicU64,
    dropped_other: AtomicU64,
}

struct DirectionState {
    params: Mutex<LinkParams>,
    generation: AtomicU64,
    counters: Counters,
    /// How late frames left compared with their due time, in 10 µs buckets.
    lateness: Box<[AtomicU64]>,
}

struct LinkState {
    name: String,
    directions: [DirectionState; 2],
}

/// Handle to one emulated link; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Link {
    state: Arc<LinkState>,
}

impl Link {
    /// The link's name (e.g. `r1-wan`).
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Sets both directions to `params`.
    pub fn set(&self, params: LinkParams) {
        for dir in Direction::BOTH {
            self.set_direction(dir, params);
        }
    }

    /// Sets one direction to `params`.
    pub fn set_direction(&self, dir: Direction, params: LinkParams) {
        let d = &self.state.directions[dir as usize];
        *d.params.lock().unwrap_or_else(|e| e.into_inner()) = params;
        d.generation.fetch_add(1, Ordering::Release);
    }

    /// Applies text settings (`delay=20ms loss=1% down`, see [`LinkParams::apply`]) to both
    /// directions, keeping what they do not mention.
    pub fn apply(&self, settings: &[&str]) -> Result<(), String> {
        let mut new = [
            self.params(Direction::Upstream),
            self.params(Direction::Downstream),
        ];
        for p in &mut new {
            p.apply(settings.iter().copied())?;
        }
        self.set_direction(Direction::Upstream, new[0]);
        self.set_direction(Direction::Downstream, new[1]);
        Ok(())
    }

    /// Applies text settings to one direction only.
    pub fn apply_direction(&self, dir: Direction, settings: &[&str]) -> Result<(), String> {
        let mut p = self.params(dir);
        p.apply(settings.iter().copied())?;
        self.set_direction(dir, p);
        Ok(())
    }

    /// Starts an outage: every frame in both directions is dropped, including those in flight.
    pub fn down(&self) {
        self.change(|p| p.up = false);
    }

    /// Ends an outage.
    pub fn up(&self) {
        self.change(|p| p.up = true);
    }

    fn change(&self, f: impl Fn(&mut LinkParams)) {
        for dir in Direction::BOTH {
            let mut p = self.params(dir);
            f(&mut p);
            self.set_direction(dir, p);
        }
    }

    /// The current parameters of one direction.
    pub fn params(&self, dir: Direction) -> LinkParams {
        *self.state.directions[dir as usize]
            .params
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Counters of one direction.
    pub fn stats(&self, dir: Direction) -> DirectionStats {
        let c = &self.state.directions[dir as usize].counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DirectionStats {
            frames_in: get(&c.frames_in),
            bytes_in: get(&c.bytes_in),
            frames_out: get(&c.frames_out),
            bytes_out: get(&c.bytes_out),
            dropped_loss: get(&c.dropped_loss),
            dropped_queue: get(&c.dropped_queue),
            dropped_outage: get(&c.dropped_outage),
            dropped_other: get(&c.dropped_other),
        }
    }

    /// Two lines: parameters, then per-direction traffic and drops (for reports).
    pub fn summary(&self) -> String {
        let dir = |d: Direction| {
            let p = self.params(d);
            let s = self.stats(d);
            format!(
                "{p}; {} frames {} bytes delivered, dropped: loss {} queue {} outage {} other {}",
                s.frames_out,
                s.bytes_out,
                s.dropped_loss,
                s.dropped_queue,
                s.dropped_outage,
                s.dropped_other
            )
        };
        format!(
            "{:<9} up:   {}
          down: {}
",
            self.name(),
            dir(Direction::Upstream),
            dir(Direction::Downstream)
        )
    }

    /// The parameters of both directions.
    pub fn spec(&self) -> LinkSpec {
        LinkSpec {
            upstream: self.params(Direction::Upstream),
            downstream: self.params(Direction::Downstream),
        }
    }

    /// Percentiles (`0.0..=1.0`) of how late frames of `dir` left compared with their due
    /// time: the emulator's own scheduling error. `None` before any frame left.
    pub fn lateness_percentiles(&self, dir: Direction, quantiles: &[f64]) -> Option<Vec<Duration>> {
        let buckets: Vec<u64> = self.state.directions[dir as usize]
            .lateness
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = buckets.iter().sum();
        if total == 0 {
            return None;
        }
        Some(
            quantiles
                .iter()
                .map(|q| {
                    let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
                    let mut seen = 0;
                    let index = buckets
                        .iter()
                        .position(|&n| {
                            seen += n;
                            seen >= rank
                        })
                        .unwrap_or(LATENESS_BUCKETS - 1);
                    Duration::from_micros((index as u64 + 1) * LATENESS_BUCKET_US)
                })
                .collect(),
        )
    }

    /// Forgets the lateness recorded so far (e.g. after a warm-up).
    pub fn reset_lateness(&self) {
        for d in &self.state.directions {
            for b in d.lateness.iter() {
                b.store(0, Ordering::Relaxed);
            }
        }
    }
}

/// The emulator: owns the forwarding threads of all links; stopping (or dropping) it ends them.
pub struct Emulator {
    stop: Arc<AtomicBool>,
    wake: Arc<OwnedFd>,
    threads: Vec<JoinHandle<()>>,
}

impl Emulator {
    /// A new emulator without links.
    pub fn new() -> io::Result<Emulator> {
        // SAFETY: eventfd with valid flags; the fd is owned right away.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Emulator {
            stop: Arc::new(AtomicBool::new(false)),
            // SAFETY: fd was just created and is owned by nobody else.
            wake: Arc::new(unsafe { OwnedFd::from_raw_fd(fd) }),
            threads: Vec::new(),
        })
    }

    /// Starts emulating a link between interfaces `side_a` and `side_b` of namespace `ns`
    /// (both must exist and be up). `seed` makes loss and jitter reproducible.
    pub fn add_link(
        &mut self,
        name: &str,
        ns: &str,
        side_a: &str,
        side_b: &str,
        spec: LinkSpec,
        seed: u64,
    ) -> io::Result<Link> {
        let (a, b) = netns::within(ns, || Ok((open_socket(side_a)?, open_socket(side_b)?)))?;
        let (a, b) = (Arc::new(a), Arc::new(b));
        let direction = |params| DirectionState {
            params: Mutex::new(params),
            generation: AtomicU64::new(0),
            counters: Counters::default(),
            lateness: (0..LATENESS_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        };
        let state = Arc::new(LinkState {
            name: name.to_string(),
            directions: [direction(spec.upstream), direction(spec.downstream)],
        });
        for (dir, rx, tx) in [
            (Direction::Upstream, a.clone(), b.clone()),
            (Direction::Downstream, b, a),
        ] {
            let forwarder = Forwarder {
                state: state.clone(),
                dir,
                rx,
                tx,
                wake: self.wake.clone(),
                stop: self.stop.clone(),
                seed: seed ^ (dir as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            };
            let handle = std::thread::Builder::new()
                .name(format!("emu-{name}-{}", dir as u8))
                .spawn(move || forwarder.run())?;
            self.threads.push(handle);
        }
        Ok(Link { state })
    }

    /// Stops all forwarding threads and waits for them.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let one: u64 = 1;
        // SAFETY: writing 8 bytes to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: pointer and length describe a live c_int.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An AF_PACKET socket bound to `ifname` in the calling thread's namespace, seeing every
/// frame the interface receives but none it sends.
fn open_socket(ifname: &str) -> io::Result<OwnedFd> {
    let c_name = CString::new(ifname).map_err(|_| io::Error::other("interface name has a NUL"))?;
    // SAFETY: plain syscalls on values we own; protocol 0 so nothing is queued before bind.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: c_name is NUL-terminated.
    let ifindex = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::other(format!(
            "no interface `{ifname}` in the emulator namespace"
        )));
    }
    setsockopt_int(fd, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)?;
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, SOCKET_BUFFER)?;
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, SOCKET_BUFFER)?;
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)?;
    bind_packet_socket(fd, ifindex)?;
    Ok(sock)
}

/// Binds packet socket `fd` to interface `ifindex`, for frames of every protocol.
pub(crate) fn bind_packet_socket(fd: libc::c_int, ifindex: libc::c_uint) -> io::Result<()> {
    // SAFETY: zeroed sockaddr_ll is valid; we fill the fields bind needs.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: addr is a valid sockaddr_ll of the given size.
    let rc = unsafe {
        libc::bind(
            fd,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

struct Frame {
    due: Instant,
    data: Vec<u8>,
}

/// One direction of one link.
struct Forwarder {
    state: Arc<LinkState>,
    dir: Direction,
    rx: Arc<OwnedFd>,
    tx: Arc<OwnedFd>,
    wake: Arc<OwnedFd>,
    stop: Arc<AtomicBool>,
    /// Seeds this direction's link model (loss and jitter).
    seed: u64,
}

/// Scheduling state of one direction.
struct Schedule {
    /// Decides every frame's fate and due time.
    model: LinkModel,
    generation: u64,
    /// The frames the model delivers, in due order, until they are sent.
    queue: VecDeque<Frame>,
    spare: Vec<Vec<u8>>,
}

impl Forwarder {
    fn d(&self) -> &DirectionState {
        &self.state.directions[self.dir as usize]
    }

    fn run(mut self) {
        // Wake-ups within a microsecond of the due time rather than the default 50 µs slack.
        // SAFETY: prctl with an integer argument.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
        // A real-time priority keeps compilers and test tools on the same cores from
        // delaying frames by milliseconds. The thread sleeps between frames, and the
        // kernel's RT throttling bounds it anyway; without the privilege we go on as we are.
        let param = libc::sched_param { sched_priority: 10 };
        // SAFETY: setting our own thread's policy with a valid sched_param.
        unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
        let mut s = Schedule {
            model: LinkModel::new(LinkParams::default(), self.seed),
            generation: u64::MAX,
            queue: VecDeque::new(),
            spare: Vec::new(),
        };
        let mut buf = vec![0u8; MAX_FRAME];
        while !self.stop.load(Ordering::Acquire) {
            self.refresh_params(&mut s);
            self.send_due(&mut s);
            let timeout = match s.queue.front() {
                Some(f) => f
                    .due
                    .saturating_duration_since(Instant::now())
                    .min(MAX_WAIT),
                None => MAX_WAIT,
            };
            if !timeout.is_zero() && !self.wait_readable(timeout) {
                continue;
            }
            self.refresh_params(&mut s);
            self.receive(&mut s, &mut buf);
        }
    }

    fn refresh_params(&self, s: &mut Schedule) {
        let d = self.d();
        let generation = d.generation.load(Ordering::Acquire);
        if generation == s.generation {
            return;
        }
        s.generation = generation;
        let params = *d.params.lock().unwrap_or_else(|e| e.into_inner());
        // An outage also loses what is on the wire: the model forgets it, and so do we
        // (counting what had not left yet, also what was due but not sent).
        s.model.set_params(Instant::now(), params);
        if !params.up {
            let lost = s.queue.len() as u64;
            d.counters.dropped_outage.fetch_add(lost, Ordering::Relaxed);
            s.queue.clear();
        }
    }

    /// Waits until the receive socket is readable (true) or the timeout passed (false).
    fn wait_readable(&self, timeout: Duration) -> bool {
        let mut fds = [
            libc::pollfd {
                fd: self.rx.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: fds and ts are valid for the call.
        let n = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, &ts, std::ptr::null()) };
        n > 0 && fds[0].revents & libc::POLLIN != 0
    }

    fn send_due(&self, s: &mut Schedule) {
        let d = self.d();
        let now = Instant::now();
        while let Some(front) = s.queue.front() {
            if front.due > now {
                break;
            }
            let frame = s.queue.pop_front().expect("front exists");
            let late_us = now.duration_since(frame.due).as_micros() as u64;
            let bucket = ((late_us / LATENESS_BUCKET_US) as usize).min(LATENESS_BUCKETS - 1);
            d.lateness[bucket].fetch_add(1, Ordering::Relaxed);
            // SAFETY: sending an initialised buffer on our bound packet socket.
            let rc = unsafe {
                libc::send(
                    self.tx.as_raw_fd(),
                    frame.data.as_ptr().cast(),
                    frame.data.len(),
                    0,
                )
            };
            if rc < 0 {
                d.counters.dropped_other.fetch_add(1, Ordering::Relaxed);
            } else {
                d.counters.frames_out.fetch_add(1, Ordering::Relaxed);
                d.counters
                    .bytes_out
                    .fetch_add(frame.data.len() as u64, Ordering::Relaxed);
            }
            if s.spare.len() < MAX_SPARE {
                s.spare.push(frame.data);
            }
        }
    }

    /// Reads the frames waiting on the receive socket (a bounded batch, so that a backlog
    /// does not hold back frames that are due) and schedules them.
    fn receive(&mut self, s: &mut Schedule, buf: &mut [u8]) {
        for _ in 0..RECEIVE_BATCH {
            let mut control = [0u64; 16];
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: zeroed msghdr is valid; we point it at live buffers.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control);
            // SAFETY: msg describes valid buffers for the duration of the call.
            let n = unsafe {
                libc::recvmsg(
                    self.rx.as_raw_fd(),
                    &mut msg,
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                return; // EAGAIN (drained) or a transient error: back to the loop.
            }
            let now = Instant::now();
            let arrival = now.checked_sub(receive_lag(&msg)).unwrap_or(now);
            let len = n as usize;
            let d = self.d();
            d.counters.frames_in.fetch_add(1, Ordering::Relaxed);
            d.counters.bytes_in.fetch_add(len as u64, Ordering::Relaxed);
            if len > buf.len() {
                d.counters.dropped_other.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.schedule(s, arrival, &buf[..len]);
        }
    }

    fn schedule(&mut self, s: &mut Schedule, arrival: Instant, frame: &[u8]) {
        let counters = &self.state.directions[self.dir as usize].counters;
        let room = s.queue.len() < MAX_IN_FLIGHT;
        let due = match s.model.offer_if(arrival, frame.len(), room) {
            Verdict::Deliver(due) => due,
            Verdict::Dropped(why) => {
                let counter = match why {
                    DropReason::Loss => &counters.dropped_loss,
                    DropReason::Queue => &counters.dropped_queue,
                    DropReason::Outage => &counters.dropped_outage,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let mut data = s.spare.pop().unwrap_or_default();
        data.clear();
        data.extend_from_slice(frame);
        s.queue.push_back(Frame { due, data });
    }
}

/// How long ago the kernel received the frame, from its SO_TIMESTAMPNS control message.
fn receive_lag(msg: &libc::msghdr) -> Duration {
    // SAFETY: walking the control messages the kernel wrote into msg's buffer.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                let mut now: libc::timespec = std::mem::zeroed();
                libc::clock_gettime(libc::CLOCK_REALTIME, &mut now);
                let lag_ns = (now.tv_sec - ts.tv_sec) as i128 * 1_000_000_000
                    + (now.tv_nsec - ts.tv_nsec) as i128;
                // A clock step makes the lag meaningless; ignore it then.
                if (0..1_000_000_000).contains(&lag_ns) {
                    return Duration::from_nanos(lag_ns as u64);
                }
                return Duration::ZERO;
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    Duration::ZERO
}
