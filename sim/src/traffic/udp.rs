use std::time::Duration;

use super::{DeliveryLog, Emit, Traffic, get_u64, put_time};
use crate::Side;
use crate::packet::{IPV4_HEADER, Parsed, Proto, UDP_HEADER};

/// Bytes of the payload the stream needs: sequence number and send time.
const STAMP: usize = 16;

/// A paced UDP stream from one side to the other: packets of `size` bytes (the whole IP
/// packet) at `rate_bps`, each carrying its sequence number and send time; the far side's
/// sink counts what arrives (order, duplicates, losses by sequence number), one-way
/// delays, and goodput over time (in inner IP bytes).
///
/// [`bulk`](Self::bulk) and [`cbr`](Self::cbr) are the same stream with different default
/// ports (5201, iperf3's; 5004, RTP's): a bulk transfer offered faster than the path
/// carries, or a constant bit rate below it, to count what it loses.
#[derive(Clone, Debug, PartialEq)]
pub struct UdpStream {
    from: Side,
    rate_bps: u64,
    size: usize,
    start: Duration,
    stop: Option<Duration>,
    port: u16,
    next_seq: u64,
    sent: u64,
    sent_bytes: u64,
    seen: Vec<u64>,
    unique: u64,
    duplicated: u64,
    reordered: u64,
    misrouted: u64,
    highest: Option<u64>,
    delivered: DeliveryLog,
    one_way: Vec<Duration>,
    payload: Vec<u8>,
}

impl UdpStream {
    /// `size`-byte IP packets (at least 44) at `rate_bps`, entering at side `from`, from
    /// the start of the simulation until it ends.
    pub fn new(from: Side, rate_bps: u64, size: usize) -> UdpStream {
        assert!(
            size >= IPV4_HEADER + UDP_HEADER + STAMP,
            "UDP stream packets carry at least {} bytes",
            IPV4_HEADER + UDP_HEADER + STAMP
        );
        assert!(
            size <= 65535 && rate_bps > 0,
            "size {size}, rate {rate_bps}"
        );
        UdpStream {
            from,
            rate_bps,
            size,
            start: Duration::ZERO,
            stop: None,
            port: 5201,
            next_seq: 0,
            sent: 0,
            sent_bytes: 0,
            seen: Vec::new(),
            unique: 0,
            duplicated: 0,
            reordered: 0,
            misrouted: 0,
            highest: None,
            delivered: DeliveryLog::default(),
            one_way: Vec::new(),
            payload: vec![0; size - IPV4_HEADER - UDP_HEADER],
        }
    }

    /// A bulk stream (port 5201).
    pub fn bulk(from: Side, rate_bps: u64, size: usize) -> UdpStream {
        UdpStream::new(from, rate_bps, size)
    }

    /// A constant bit rate stream (port 5004).
    pub fn cbr(from: Side, rate_bps: u64, size: usize) -> UdpStream {
        UdpStream::new(from, rate_bps, size).port(5004)
    }

    /// Starts sending at `t` (elapsed).
    pub fn start_at(mut self, t: Duration) -> UdpStream {
        self.start = t;
        self
    }

    /// Sends nothing at or after `t`.
    pub fn stop_at(mut self, t: Duration) -> UdpStream {
        self.stop = Some(t);
        self
    }

    /// The Internet-side port.
    pub fn port(mut self, port: u16) -> UdpStream {
        self.port = port;
        self
    }

    fn send_time(&self, seq: u64) -> Duration {
        let bits = u128::from(seq) * self.size as u128 * 8;
        self.start + Duration::from_nanos((bits * 1_000_000_000 / u128::from(self.rate_bps)) as u64)
    }

    /// The side packets enter at.
    pub fn source(&self) -> Side {
        self.from
    }

    /// Packets sent.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Bytes sent (IP packets).
    pub fn sent_bytes(&self) -> u64 {
        self.sent_bytes
    }

    /// Distinct packets received.
    pub fn received(&self) -> u64 {
        self.unique
    }

    /// Packets received more than once (each extra copy counts).
    pub fn duplicated(&self) -> u64 {
        self.duplicated
    }

    /// Packets that arrived after one with a higher sequence number.
    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    /// Packets sent and not received (yet: what is in flight counts).
    pub fn lost(&self) -> u64 {
        self.sent - self.unique
    }

    /// Packets sent in `[from, to)` and never received.
    pub fn lost_between(&self, from: Duration, to: Duration) -> u64 {
        (0..self.sent)
            .filter(|&seq| {
                let t = self.send_time(seq);
                t >= from && t < to && !self.was_seen(seq)
            })
            .count() as u64
    }

    /// Lost packets over packets sent (0 before any).
    pub fn loss_fraction(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        self.lost() as f64 / self.sent as f64
    }

    /// Packets of this flow that came out at the side they were sent from.
    pub fn misrouted(&self) -> u64 {
        self.misrouted
    }

    /// Deliveries over time (inner IP bytes).
    pub fn delivered(&self) -> &DeliveryLog {
        &self.delivered
    }

    /// One-way delay (inner packet in to inner packet out) of each delivery, in arrival
    /// order.
    pub fn one_way_delays(&self) -> &[Duration] {
        &self.one_way
    }

    fn was_seen(&self, seq: u64) -> bool {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        self.seen.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }
}

impl Traffic for UdpStream {
    fn proto(&self) -> Proto {
        Proto::Udp
    }

    fn internet_port(&self) -> u16 {
        self.port
    }

    fn poll_timeout(&self) -> Option<Duration> {
        super::before_stop(self.send_time(self.next_seq), self.stop)
    }

    fn handle_timeout(&mut self, now: Duration, out: &mut Emit<'_>) {
        while self.poll_timeout().is_some_and(|t| t <= now) {
            let seq = self.next_seq;
            self.payload[..8].copy_from_slice(&seq.to_be_bytes());
            put_time(&mut self.payload[8..16], now);
            out.udp(self.from, &self.payload);
            self.next_seq += 1;
            self.sent += 1;
            self.sent_bytes += self.size as u64;
        }
    }

    fn handle_packet(&mut self, now: Duration, at: Side, packet: &Parsed<'_>, _out: &mut Emit<'_>) {
        if at == self.from || packet.payload.len() < STAMP {
            self.misrouted += 1;
            return;
        }
        let seq = get_u64(packet.payload);
        let sent = Duration::from_nanos(get_u64(&packet.payload[8..]));
        if seq >= self.next_seq {
            self.misrouted += 1; // never sent: not ours
            return;
        }
        if self.was_seen(seq) {
            self.duplicated += 1;
            return;
        }
        let word = (seq / 64) as usize;
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        self.seen[word] |= 1 << (seq % 64);
        self.unique += 1;
        match self.highest {
            Some(h) if seq < h => self.reordered += 1,
            _ => self.highest = Some(seq),
        }
        self.one_way.push(now.saturating_sub(sent));
        self.delivered.record(now, packet.len as u64);
    }
}
