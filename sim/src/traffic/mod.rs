//! Traffic models: sources and sinks of inner packets at both sides of the simulator,
//! each keeping its own statistics.
//!
//! A model is one object with two halves, one at each [`Side`]: a source at one side and
//! its sink (or its echo, or the TCP receiver) at the other. It sends real IPv4 packets
//! through [`Emit`] (which knows the flow's addresses and ports) and receives the packets
//! of its flow that come out of either endpoint. Times are offsets from the simulation's
//! start ([`crate::Sim::elapsed`]).
//!
//! * [`UdpStream`]: paced UDP at a given rate and packet size (`bulk` or `cbr`), with a
//!   sink counting order, duplicates, losses, one-way delay and goodput over time;
//! * [`Ping`]: small packets every 20 ms, echoed by the far side: RTT samples and losses;
//! * [`TcpFlow`]: a TCP (NewReno) sender and receiver as inner IPv4/TCP packets.

use std::any::Any;
use std::collections::VecDeque;
use std::net::SocketAddrV4;
use std::time::Duration;

use crate::Side;
use crate::packet::{self, Parsed, Proto, TcpHeader};

mod ping;
mod tcp;
mod udp;

pub use ping::Ping;
pub use tcp::{TcpConfig, TcpEvent, TcpFlow, TcpStats};
pub use udp::UdpStream;

/// A traffic model attached to the simulator ([`crate::Sim::add`]).
pub trait Traffic: Any {
    /// The transport protocol of the flow's packets.
    fn proto(&self) -> Proto;
    /// The flow's port at the Internet side (its gateway-side port is allocated by the
    /// simulator unless given).
    fn internet_port(&self) -> u16;
    /// When the model next wants [`handle_timeout`](Self::handle_timeout) (elapsed time).
    fn poll_timeout(&self) -> Option<Duration>;
    /// Runs what is due at `now`: a model sends everything due, so that it is not due
    /// again at the same instant.
    fn handle_timeout(&mut self, now: Duration, out: &mut Emit<'_>);
    /// A packet of this flow came out of the endpoint at side `at` (for the gateway: to
    /// its LAN; for the proxy: to the Internet).
    fn handle_packet(&mut self, now: Duration, at: Side, packet: &Parsed<'_>, out: &mut Emit<'_>);
}

/// The addresses of one flow: its gateway-side (LAN) and Internet-side ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowAddr {
    /// Transport protocol.
    pub proto: Proto,
    /// The LAN host's address and port (10.77.0.2 by default).
    pub gateway: SocketAddrV4,
    /// The Internet host's address and port (198.51.100.7 by default).
    pub internet: SocketAddrV4,
}

impl FlowAddr {
    /// (source, destination) of a packet that enters at side `from`.
    pub fn from(&self, from: Side) -> (SocketAddrV4, SocketAddrV4) {
        match from {
            Side::Gateway => (self.gateway, self.internet),
            Side::Proxy => (self.internet, self.gateway),
        }
    }
}

/// Where a model's packets go: into the endpoint of the side they enter at, in order,
/// before the simulator drains the endpoints again.
pub struct Emit<'a> {
    pub(crate) addr: FlowAddr,
    pub(crate) ip_id: &'a mut u16,
    pub(crate) out: &'a mut VecDeque<(Side, Vec<u8>)>,
    pub(crate) spare: &'a mut Vec<Vec<u8>>,
}

impl Emit<'_> {
    /// The flow's addresses.
    pub fn addr(&self) -> &FlowAddr {
        &self.addr
    }

    fn buffer(&mut self) -> (Vec<u8>, u16) {
        let id = *self.ip_id;
        *self.ip_id = id.wrapping_add(1);
        (self.spare.pop().unwrap_or_default(), id)
    }

    /// Sends a UDP packet with `payload` into the endpoint at side `from`.
    pub fn udp(&mut self, from: Side, payload: &[u8]) {
        let (src, dst) = self.addr.from(from);
        let (mut p, id) = self.buffer();
        packet::build_udp(&mut p, src, dst, id, payload);
        self.out.push_back((from, p));
    }

    /// Sends a TCP segment into the endpoint at side `from`.
    pub fn tcp(&mut self, from: Side, header: &TcpHeader, payload: &[u8]) {
        let (src, dst) = self.addr.from(from);
        let (mut p, id) = self.buffer();
        packet::build_tcp(&mut p, src, dst, id, header, payload);
        self.out.push_back((from, p));
    }

    /// Sends any bytes as an inner packet (e.g. a malformed one, for tests).
    pub fn raw(&mut self, from: Side, packet: &[u8]) {
        let (mut p, _) = self.buffer();
        p.clear();
        p.extend_from_slice(packet);
        self.out.push_back((from, p));
    }
}

/// The width of the goodput bins.
pub const BIN: Duration = Duration::from_millis(10);
/// Gaps between deliveries at least this long are kept ([`DeliveryLog::stalls`]).
pub const STALL_RECORDED: Duration = Duration::from_millis(50);

/// A gap in deliveries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stall {
    /// When the last delivery before the gap happened.
    pub start: Duration,
    /// How long until the next one.
    pub len: Duration,
}

/// What a sink received over time: bytes per 10 ms bin, and the gaps between deliveries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryLog {
    bins: Vec<u64>,
    packets: u64,
    bytes: u64,
    first: Option<Duration>,
    last: Option<Duration>,
    longest: Stall,
    stalls: Vec<Stall>,
}

impl DeliveryLog {
    /// Records `bytes` delivered at `at`.
    pub fn record(&mut self, at: Duration, bytes: u64) {
        let bin = (at.as_nanos() / BIN.as_nanos()) as usize;
        if self.bins.len() <= bin {
            self.bins.resize(bin + 1, 0);
        }
        self.bins[bin] += bytes;
        self.packets += 1;
        self.bytes += bytes;
        if let Some(last) = self.last {
            let gap = Stall {
                start: last,
                len: at.saturating_sub(last),
            };
            if gap.len > self.longest.len {
                self.longest = gap;
            }
            if gap.len >= STALL_RECORDED {
                self.stalls.push(gap);
            }
        }
        self.first.get_or_insert(at);
        self.last = Some(at);
    }

    /// Deliveries recorded.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Bytes recorded.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The first delivery.
    pub fn first(&self) -> Option<Duration> {
        self.first
    }

    /// The last delivery.
    pub fn last(&self) -> Option<Duration> {
        self.last
    }

    /// Bytes per 10 ms ([`BIN`]) since the start: bin `i` covers `[i·10 ms, (i+1)·10 ms)`.
    pub fn bins(&self) -> &[u64] {
        &self.bins
    }

    /// Bytes delivered in `[from, to)`, both rounded down to whole bins.
    pub fn bytes_between(&self, from: Duration, to: Duration) -> u64 {
        let bin = |t: Duration| ((t.as_nanos() / BIN.as_nanos()) as usize).min(self.bins.len());
        let (a, b) = (bin(from), bin(to));
        if a >= b {
            return 0;
        }
        self.bins[a..b].iter().sum()
    }

    /// Goodput in bits per second over `[from, to)` (bin-rounded, as [`bytes_between`](Self::bytes_between)).
    pub fn rate_bps(&self, from: Duration, to: Duration) -> f64 {
        let secs = to.saturating_sub(from).as_secs_f64();
        if secs == 0.0 {
            return 0.0;
        }
        self.bytes_between(from, to) as f64 * 8.0 / secs
    }

    /// The longest gap between consecutive deliveries (zero before two deliveries).
    pub fn longest_stall(&self) -> Stall {
        self.longest
    }

    /// The longest gap between consecutive deliveries that started in `[from, to)`
    /// (only gaps of at least [`STALL_RECORDED`] are kept).
    pub fn longest_stall_between(&self, from: Duration, to: Duration) -> Option<Stall> {
        self.stalls
            .iter()
            .filter(|s| s.start >= from && s.start < to)
            .max_by_key(|s| s.len)
            .copied()
    }

    /// Every gap of at least [`STALL_RECORDED`], in order.
    pub fn stalls(&self) -> &[Stall] {
        &self.stalls
    }
}

/// The `q` quantile (`0.0..=1.0`, nearest rank) of `samples`; `None` without samples.
pub fn percentile(samples: &[Duration], q: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize).max(1);
    Some(sorted[rank - 1])
}

/// Elapsed time carried in a payload, as nanoseconds.
/// A paced source's next send time `t`, unless it is at or past `stop`.
pub(crate) fn before_stop(t: Duration, stop: Option<Duration>) -> Option<Duration> {
    match stop {
        Some(stop) if t >= stop => None,
        _ => Some(t),
    }
}

pub(crate) fn put_time(buf: &mut [u8], t: Duration) {
    buf.copy_from_slice(&(t.as_nanos() as u64).to_be_bytes());
}

pub(crate) fn get_u64(buf: &[u8]) -> u64 {
    u64::from_be_bytes(buf[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn delivery_log_bins_and_stalls() {
        let mut log = DeliveryLog::default();
        for k in 0..100 {
            log.record(ms(k), 1000);
        }
        log.record(ms(600), 1000);
        log.record(ms(601), 1000);
        assert_eq!(log.bytes(), 102_000);
        assert_eq!(log.bytes_between(ms(0), ms(100)), 100_000);
        assert_eq!(log.rate_bps(ms(0), ms(100)), 8e6);
        assert_eq!(log.bytes_between(ms(100), ms(600)), 0);
        assert_eq!(
            log.longest_stall(),
            Stall {
                start: ms(99),
                len: ms(501)
            }
        );
        assert_eq!(log.stalls().len(), 1);
        assert_eq!(log.longest_stall_between(ms(200), ms(700)), None);
        assert_eq!(log.first(), Some(ms(0)));
        assert_eq!(log.last(), Some(ms(601)));
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let s: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&s, 0.5), Some(ms(50)));
        assert_eq!(percentile(&s, 0.99), Some(ms(99)));
        assert_eq!(percentile(&s, 1.0), Some(ms(100)));
        assert_eq!(percentile(&s, 0.0), Some(ms(1)));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
