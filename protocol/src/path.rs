//! Per-path state and live estimates: RTT, loss, one-way-delay trend, traffic counters.
//!
//! The scheduler (a later stage) reads these; today they already drive probing and the
//! receipts the proxy's ledger will credit from.

use std::time::{Duration, Instant};

use crate::wire::{Control, PathId};

/// How many probes back the loss estimate looks.
const LOSS_WINDOW: u32 = 32;

/// One path as its sender sees it.
#[derive(Debug, Clone)]
pub struct PathState {
    /// Its id on the wire.
    pub id: PathId,
    pub(crate) next_probe: Instant,
    probe_seq: u32,
    /// Bit i set: probe `probe_seq - 1 - i` was acknowledged.
    acked_bits: u32,
    srtt: Option<Duration>,
    rttvar: Duration,
    /// Smallest (receiver clock - sender clock) seen: the base one-way delay plus the
    /// clock offset. Only differences to it mean anything (clocks are not synchronised).
    base_owd_offset_us: Option<i64>,
    queue_delay_us: u64,
    /// Data sent on this path.
    pub tx_packets: u64,
    /// Inner bytes sent on this path.
    pub tx_bytes: u64,
    /// Data received on this path.
    pub rx_packets: u64,
    /// Inner bytes received on this path.
    pub rx_bytes: u64,
    highest_rx_counter: u64,
    reported_rx_packets: u64,
    /// A receipt goes out after each probe when data arrived since the last one: once
    /// per probe interval, not per packet.
    receipt_pending: bool,
    /// Last time anything authenticated arrived on this path.
    pub last_received: Option<Instant>,
    /// What the peer last reported receiving from us on this path (packets, bytes).
    pub peer_receipt: Option<(u64, u64)>,
    pub(crate) pending_ack: Option<Control>,
}

impl PathState {
    pub(crate) fn new(id: PathId, now: Instant) -> Self {
        PathState {
            id,
            next_probe: now,
            probe_seq: 0,
            acked_bits: 0,
            srtt: None,
            rttvar: Duration::ZERO,
            base_owd_offset_us: None,
            queue_delay_us: 0,
            tx_packets: 0,
            tx_bytes: 0,
            rx_packets: 0,
            rx_bytes: 0,
            highest_rx_counter: 0,
            reported_rx_packets: 0,
            receipt_pending: false,
            last_received: None,
            peer_receipt: None,
            pending_ack: None,
        }
    }

    /// Smoothed round-trip time (RFC 6298), once a probe was answered.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// RTT variation (RFC 6298).
    pub fn rttvar(&self) -> Duration {
        self.rttvar
    }

    /// Fraction of the last probes that went unanswered (0.0 ..= 1.0), counting only
    /// probes old enough to have been answered.
    pub fn probe_loss(&self) -> f32 {
        // The newest probe may still be in flight: look at the ones before it.
        let considered = self.probe_seq.saturating_sub(1).min(LOSS_WINDOW - 1);
        if considered == 0 {
            return 0.0;
        }
        let mask = (1u32 << considered) - 1;
        let acked = ((self.acked_bits >> 1) & mask).count_ones();
        1.0 - acked as f32 / considered as f32
    }

    /// Current queueing delay estimate from the one-way-delay trend (LEDBAT style).
    pub fn queue_delay(&self) -> Duration {
        Duration::from_micros(self.queue_delay_us)
    }

    pub(crate) fn probe(&mut self, now_us: u64) -> Control {
        self.probe_seq = self.probe_seq.wrapping_add(1);
        self.acked_bits <<= 1;
        self.receipt_pending = self.rx_packets != self.reported_rx_packets;
        Control::Probe {
            seq: self.probe_seq,
            sent_at_us: now_us,
        }
    }

    pub(crate) fn receipt_due(&self) -> bool {
        self.receipt_pending
    }

    pub(crate) fn receipt(&mut self) -> Control {
        self.receipt_pending = false;
        self.reported_rx_packets = self.rx_packets;
        Control::Receipt {
            path: self.id,
            packets: self.rx_packets,
            bytes: self.rx_bytes,
            highest_counter: self.highest_rx_counter,
        }
    }

    pub(crate) fn on_data_sent(&mut self, len: usize) {
        self.tx_packets += 1;
        self.tx_bytes += len as u64;
    }

    pub(crate) fn on_data_received(&mut self, now: Instant, len: usize, counter: u64) {
        self.rx_packets += 1;
        self.rx_bytes += len as u64;
        self.highest_rx_counter = self.highest_rx_counter.max(counter);
        self.last_received = Some(now);
    }

    pub(crate) fn on_control(&mut self, now: Instant, control: Control, now_us: u64) {
        self.last_received = Some(now);
        match control {
            Control::ProbeAck {
                seq,
                echo_sent_at_us,
                received_at_us,
            } => {
                let age = self.probe_seq.wrapping_sub(seq);
                if age < LOSS_WINDOW {
                    self.acked_bits |= 1 << age;
                }
                let rtt = Duration::from_micros(now_us.saturating_sub(echo_sent_at_us));
                self.on_rtt_sample(rtt);
                let offset = received_at_us as i64 - echo_sent_at_us as i64;
                let base = self.base_owd_offset_us.map_or(offset, |b| b.min(offset));
                self.base_owd_offset_us = Some(base);
                self.queue_delay_us = (offset - base) as u64;
            }
            Control::Probe { seq, sent_at_us } => {
                self.pending_ack = Some(Control::ProbeAck {
                    seq,
                    echo_sent_at_us: sent_at_us,
                    received_at_us: now_us,
                });
            }
            Control::Receipt { packets, bytes, .. } => {
                self.peer_receipt = Some((packets, bytes));
            }
            Control::Keepalive => {}
        }
    }

    fn on_rtt_sample(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let diff = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_loss_and_queue_delay() {
        let t0 = Instant::now();
        let mut p = PathState::new(PathId(0), t0);
        // Four probes; the second is lost; each answered 20 ms later with a growing
        // one-way delay on the way out.
        for i in 0..4u64 {
            let sent = i * 1_000_000;
            let Control::Probe { seq, sent_at_us } = p.probe(sent) else {
                panic!()
            };
            if i == 1 {
                continue;
            }
            let ack = Control::ProbeAck {
                seq,
                echo_sent_at_us: sent_at_us,
                received_at_us: 5_000_000 + sent + i * 3_000,
            };
            p.on_control(t0, ack, sent + 20_000);
        }
        assert_eq!(p.srtt(), Some(Duration::from_millis(20)));
        // Of the 3 probes before the newest, one was lost.
        assert!(
            (p.probe_loss() - 1.0 / 3.0).abs() < 1e-6,
            "{}",
            p.probe_loss()
        );
        assert_eq!(p.queue_delay(), Duration::from_millis(9));
    }
}
