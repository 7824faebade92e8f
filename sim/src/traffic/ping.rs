use std::time::Duration;

use super::{Emit, Traffic, get_u64, percentile, put_time};
use crate::Side;
use crate::packet::{IPV4_HEADER, Parsed, Proto, UDP_HEADER};

const STAMP: usize = 16;

/// An interactive flow (ping, or VoIP-like): a small UDP packet every `interval` (20 ms
/// by default) from one side, echoed by the far side at once; the source records the
/// round-trip time of every answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Ping {
    from: Side,
    interval: Duration,
    size: usize,
    start: Duration,
    stop: Option<Duration>,
    port: u16,
    next_seq: u64,
    echoed: u64,
    answered: Vec<bool>,
    answers: u64,
    duplicates: u64,
    misrouted: u64,
    rtts: Vec<(Duration, Duration)>,
    payload: Vec<u8>,
}

impl Ping {
    /// 200-byte packets (IP) every 20 ms from side `from`, to port 7 (echo).
    pub fn new(from: Side) -> Ping {
        Ping {
            from,
            interval: Duration::from_millis(20),
            size: 200,
            start: Duration::ZERO,
            stop: None,
            port: 7,
            next_seq: 0,
            echoed: 0,
            answered: Vec::new(),
            answers: 0,
            duplicates: 0,
            misrouted: 0,
            rtts: Vec::new(),
            payload: vec![0; 200 - IPV4_HEADER - UDP_HEADER],
        }
    }

    /// Sends every `interval`.
    pub fn interval(mut self, interval: Duration) -> Ping {
        assert!(!interval.is_zero(), "a ping interval must not be zero");
        self.interval = interval;
        self
    }

    /// Packets of `size` bytes (the IP packet, at least 44).
    pub fn size(mut self, size: usize) -> Ping {
        assert!(
            (IPV4_HEADER + UDP_HEADER + STAMP..=65535).contains(&size),
            "ping size {size}"
        );
        self.size = size;
        self.payload = vec![0; size - IPV4_HEADER - UDP_HEADER];
        self
    }

    /// Starts at `t` (elapsed).
    pub fn start_at(mut self, t: Duration) -> Ping {
        self.start = t;
        self
    }

    /// Sends nothing at or after `t`.
    pub fn stop_at(mut self, t: Duration) -> Ping {
        self.stop = Some(t);
        self
    }

    /// The Internet-side port.
    pub fn port(mut self, port: u16) -> Ping {
        self.port = port;
        self
    }

    fn send_time(&self, seq: u64) -> Duration {
        self.start + self.interval * seq as u32
    }

    /// Pings sent.
    pub fn sent(&self) -> u64 {
        self.next_seq
    }

    /// Pings the far side echoed.
    pub fn echoed(&self) -> u64 {
        self.echoed
    }

    /// Distinct answers received.
    pub fn answers(&self) -> u64 {
        self.answers
    }

    /// Pings without an answer (yet: those in flight count).
    pub fn lost(&self) -> u64 {
        self.next_seq - self.answers
    }

    /// Pings sent in `[from, to)` without an answer.
    pub fn lost_between(&self, from: Duration, to: Duration) -> u64 {
        (0..self.next_seq)
            .filter(|&seq| {
                let t = self.send_time(seq);
                t >= from && t < to && !self.answered.get(seq as usize).copied().unwrap_or(false)
            })
            .count() as u64
    }

    /// Answers received more than once.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Packets of this flow that came out where they should not have.
    pub fn misrouted(&self) -> u64 {
        self.misrouted
    }

    /// (send time, round-trip time) of every answer, in arrival order.
    pub fn rtts(&self) -> &[(Duration, Duration)] {
        &self.rtts
    }

    /// The `q` quantile of the round-trip times of pings sent in `[from, to)`.
    pub fn rtt_percentile_between(&self, q: f64, from: Duration, to: Duration) -> Option<Duration> {
        let samples: Vec<Duration> = self
            .rtts
            .iter()
            .filter(|(sent, _)| *sent >= from && *sent < to)
            .map(|(_, rtt)| *rtt)
            .collect();
        percentile(&samples, q)
    }

    /// The `q` quantile of all round-trip times.
    pub fn rtt_percentile(&self, q: f64) -> Option<Duration> {
        self.rtt_percentile_between(q, Duration::ZERO, Duration::MAX)
    }
}

impl Traffic for Ping {
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
            self.payload[..8].copy_from_slice(&self.next_seq.to_be_bytes());
            put_time(&mut self.payload[8..16], now);
            out.udp(self.from, &self.payload);
            self.next_seq += 1;
        }
    }

    fn handle_packet(&mut self, now: Duration, at: Side, packet: &Parsed<'_>, out: &mut Emit<'_>) {
        if packet.payload.len() < STAMP {
            self.misrouted += 1;
            return;
        }
        let seq = get_u64(packet.payload);
        if seq >= self.next_seq {
            self.misrouted += 1;
            return;
        }
        if at != self.from {
            // The far side echoes.
            self.echoed += 1;
            out.udp(at, packet.payload);
            return;
        }
        let sent = Duration::from_nanos(get_u64(&packet.payload[8..]));
        let index = seq as usize;
        if self.answered.len() <= index {
            self.answered.resize(index + 1, false);
        }
        if self.answered[index] {
            self.duplicates += 1;
            return;
        }
        self.answered[index] = true;
        self.answers += 1;
        self.rtts.push((sent, now.saturating_sub(sent)));
    }
}
