//! What the ledger counts: the bytes a member's traffic took, and on whose line.
//!
//! The proxy's core adds to each member's [`Usage`] as datagrams pass, and the shell takes
//! it (which zeroes it) once per ledger flush. Wire bytes are what a line really carried:
//! the UDP payload, a relay's envelope included, plus the IP and UDP headers. A ledger of
//! inner bytes would underpay relays by the tunnel's overhead.
//!
//! Only what the proxy can verify is counted on a neighbour's line: upstream, a datagram
//! whose relay tag, AEAD and packet number all passed; downstream, a datagram the member's
//! own (authenticated) acknowledgements confirm. A relay that drops, replays or forges
//! earns nothing for it.

use std::net::SocketAddr;

use crate::frame::PACKET_FRAME_LEN;
use crate::path::Endpoint;
use crate::wire::{MIN_TRANSPORT_LEN, RELAY_OVERHEAD};

/// IPv4 and UDP headers.
pub const IPV4_UDP_HEADERS: u64 = 20 + 8;
/// IPv6 and UDP headers.
pub const IPV6_UDP_HEADERS: u64 = 40 + 8;
/// Relays one member's usage names at most between two takes; beyond, the bytes count
/// as the member's own line (never lost, only unattributed). A member has at most
/// [`crate::MAX_PATHS`] paths at once.
const MAX_RELAYS: usize = 2 * crate::MAX_PATHS;

/// IP and UDP header bytes of a datagram to or from `a`.
pub fn ip_udp_headers(a: SocketAddr) -> u64 {
    match a {
        SocketAddr::V4(_) => IPV4_UDP_HEADERS,
        // A dual-stack socket names IPv4 peers as mapped addresses.
        SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_some() => IPV4_UDP_HEADERS,
        SocketAddr::V6(_) => IPV6_UDP_HEADERS,
    }
}

/// Wire bytes of a transport datagram of `len` bytes on a path to `endpoint`: with the
/// relay's envelope when it goes through one, and the headers of the line it crosses.
pub fn wire_bytes(len: usize, endpoint: &Endpoint) -> u64 {
    let envelope = if endpoint.relay.is_some() {
        RELAY_OVERHEAD as u64
    } else {
        0
    };
    len as u64 + envelope + ip_udp_headers(endpoint.remote)
}

/// Bytes each way: up is from the member towards the Internet, down is to the member.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpDown {
    /// From the member.
    pub up: u64,
    /// To the member.
    pub down: u64,
}

impl UpDown {
    /// Adds `other` to these.
    pub fn add(&mut self, other: UpDown) {
        self.up += other.up;
        self.down += other.down;
    }

    /// Whether both are zero.
    pub fn is_zero(&self) -> bool {
        self.up == 0 && self.down == 0
    }
}

/// What one member's traffic took since the ledger last took it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Inner bytes (the IP packets themselves): up as they arrived at the proxy, down as
    /// first sent to the member (re-sends and redundant copies not counted again).
    pub inner: UpDown,
    /// Wire bytes over the member's own line: up as they arrived, down as sent.
    pub own: UpDown,
    /// Wire bytes over neighbours' lines, by relay (member id at the proxy): up as they
    /// arrived verified, down as the member acknowledged them.
    pub borrowed: Vec<(u32, UpDown)>,
    /// Wire bytes offered to each relay, for its rating ([`crate::rating`]): down as
    /// sent through it, up as arrived through it plus the datagrams the member's packet
    /// numbers skipped (each counted at the size of the one that came after the gap).
    pub offered: Vec<(u32, UpDown)>,
    /// Of the bytes down through each relay, those carried while its line was auctioned
    /// ([`crate::credits::auction`]): charged at the price the member's award paid instead
    /// of the tariff.
    pub auctioned: Vec<(u32, Auctioned)>,
}

/// What the ledger paid so far for one path through a relay, downstream: wire bytes the
/// member's acknowledgements confirmed, and those its receipts do; it is paid the larger,
/// once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DownPay {
    acked: u64,
    receipted: u64,
    paid: u64,
}

impl DownPay {
    /// What is due now beyond what was paid, marked paid.
    fn settle(&mut self) -> u64 {
        let due = self.acked.max(self.receipted).saturating_sub(self.paid);
        self.paid += due;
        due
    }
}

/// Bytes bought at a relay line's auction, and what they cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Auctioned {
    /// Wire bytes (also counted in [`Usage::borrowed`]).
    pub bytes: u64,
    /// Their cost: the sum of bytes × price per GB (milli-credits), so milli-credits
    /// times 10^9; exact, whatever the prices.
    pub value: u128,
}

impl Auctioned {
    fn add(&mut self, o: Auctioned) {
        self.bytes += o.bytes;
        self.value += o.value;
    }
}

impl Usage {
    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.inner.is_zero()
            && self.own.is_zero()
            && self.borrowed.is_empty()
            && self.offered.is_empty()
            && self.auctioned.is_empty()
    }

    /// Zeroes it, keeping its memory.
    pub fn clear(&mut self) {
        self.inner = UpDown::default();
        self.own = UpDown::default();
        self.borrowed.clear();
        self.offered.clear();
        self.auctioned.clear();
    }

    /// Adds `other` to this one.
    pub fn merge(&mut self, other: &Usage) {
        self.inner.add(other.inner);
        self.own.add(other.own);
        for &(relay, bytes) in &other.borrowed {
            self.add_line(Some(relay), bytes);
        }
        for &(relay, bytes) in &other.offered {
            add_relay(&mut self.offered, relay, bytes);
        }
        for &(relay, a) in &other.auctioned {
            self.add_auctioned(relay, a);
        }
    }

    /// Wire bytes over all lines.
    pub fn wire(&self) -> UpDown {
        let mut all = self.own;
        for (_, b) in &self.borrowed {
            all.add(*b);
        }
        all
    }

    /// Adds `bytes` carried by `relay`'s line, or by the member's own (`None`).
    pub(crate) fn add_line(&mut self, relay: Option<u32>, bytes: UpDown) {
        let Some(relay) = relay else {
            self.own.add(bytes);
            return;
        };
        if !add_relay(&mut self.borrowed, relay, bytes) {
            self.own.add(bytes);
        }
    }

    /// A datagram of `len` bytes arrived, verified, from `from`, after `skipped` packet
    /// numbers of the path that never came (so far), each taken to be `typical` bytes
    /// (the path's usual datagram: their sizes are unknown).
    pub(crate) fn on_received(
        &mut self,
        len: usize,
        from: &Endpoint,
        skipped: u64,
        typical: usize,
    ) {
        let up = wire_bytes(len, from);
        let relay = from.relay.map(|h| h.relay);
        self.add_line(relay, UpDown { up, down: 0 });
        if let Some(relay) = relay {
            let lost = skipped.saturating_mul(wire_bytes(typical, from));
            let up = up.saturating_add(lost);
            add_relay(&mut self.offered, relay, UpDown { up, down: 0 });
        }
    }

    /// A datagram of `len` bytes went to the member: on its own line, counted now;
    /// through a relay, offered to it, and counted once the member acknowledges it
    /// ([`Usage::on_acknowledged`]).
    pub(crate) fn on_sent(&mut self, len: usize, to: &Endpoint) {
        match to.relay {
            None => self.own.down += wire_bytes(len, to),
            Some(hop) => {
                let down = wire_bytes(len, to);
                add_relay(&mut self.offered, hop.relay, UpDown { up: 0, down });
            }
        }
    }

    /// The member acknowledged `datagrams` datagrams of `bytes` bytes in all, sent to `to`
    /// (on the path whose pay so far is `pay`); `price_per_gb` if the relay's line was
    /// auctioned (milli-credits).
    pub(crate) fn on_acknowledged(
        &mut self,
        datagrams: u64,
        bytes: u64,
        to: &Endpoint,
        price_per_gb: Option<i64>,
        pay: &mut DownPay,
    ) {
        let Some(hop) = to.relay else {
            return;
        };
        let per_datagram = RELAY_OVERHEAD as u64 + ip_udp_headers(to.remote);
        let down = bytes + datagrams * per_datagram;
        pay.acked += down;
        let due = pay.settle();
        self.add_line(Some(hop.relay), UpDown { up: 0, down: due });
        if let Some(price) = price_per_gb {
            let value = u128::from(down) * u128::from(price.max(0) as u64);
            self.add_auctioned(hop.relay, Auctioned { bytes: down, value });
        }
    }

    /// The member's receipt for a path through a relay to `to`: `packets` inner packets of
    /// `bytes` bytes received on it since it opened, of the `sent` (packets, bytes) the
    /// proxy sent on it. What the acknowledgements did not confirm (lost, or naming more
    /// gaps than an ack frame holds) is paid from it, each packet at the least a datagram
    /// with it took on the relay's line; never more than was sent.
    pub(crate) fn on_receipt(
        &mut self,
        (packets, bytes): (u64, u64),
        sent: (u64, u64),
        to: &Endpoint,
        pay: &mut DownPay,
    ) {
        let Some(hop) = to.relay else {
            return;
        };
        let per_packet = (MIN_TRANSPORT_LEN + PACKET_FRAME_LEN + RELAY_OVERHEAD) as u64
            + ip_udp_headers(to.remote);
        let wire = bytes.min(sent.1) + packets.min(sent.0) * per_packet;
        pay.receipted = pay.receipted.max(wire);
        let due = pay.settle();
        if due > 0 {
            self.add_line(Some(hop.relay), UpDown { up: 0, down: due });
        }
    }

    fn add_auctioned(&mut self, relay: u32, a: Auctioned) {
        if let Some((_, b)) = self.auctioned.iter_mut().find(|(r, _)| *r == relay) {
            b.add(a);
        } else if self.auctioned.len() < MAX_RELAYS {
            self.auctioned.push((relay, a));
        }
        // Full: charged at the tariff, as the bytes are still borrowed.
    }
}

/// Adds `bytes` to `relay`'s entry in `per_relay`; false if it is full without one.
fn add_relay(per_relay: &mut Vec<(u32, UpDown)>, relay: u32, bytes: UpDown) -> bool {
    if let Some((_, b)) = per_relay.iter_mut().find(|(r, _)| *r == relay) {
        b.add(bytes);
    } else if per_relay.len() < MAX_RELAYS {
        // At most once per relay between two takes: not per packet.
        per_relay.push((relay, bytes));
    } else {
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::RelayHop;

    fn relayed(remote: &str, relay: u32) -> Endpoint {
        Endpoint {
            remote: remote.parse().unwrap(),
            local: None,
            relay: Some(RelayHop { relay, slot: 1 }),
        }
    }

    #[test]
    fn wire_bytes_count_every_header_the_line_carried() {
        let direct = Endpoint::direct("192.0.2.1:7117".parse().unwrap(), None);
        assert_eq!(wire_bytes(1000, &direct), 1028);
        let mapped = Endpoint::direct("[::ffff:192.0.2.1]:7117".parse().unwrap(), None);
        assert_eq!(wire_bytes(1000, &mapped), 1028);
        let v6 = Endpoint::direct("[2001:db8::1]:7117".parse().unwrap(), None);
        assert_eq!(wire_bytes(1000, &v6), 1048);
        // Through a relay: its envelope (header and tag) crossed its line too.
        assert_eq!(
            wire_bytes(1000, &relayed("192.0.2.9:7118", 3)),
            1000 + RELAY_OVERHEAD as u64 + 28
        );
    }

    #[test]
    fn relayed_bytes_go_to_their_relay_and_own_bytes_to_the_member() {
        let mut u = Usage::default();
        let own = Endpoint::direct("192.0.2.1:7117".parse().unwrap(), None);
        u.on_received(972, &own, 0, 972);
        u.on_sent(972, &own);
        u.on_received(972, &relayed("192.0.2.9:7118", 3), 0, 972);
        // Sending through a relay counts nothing until the member confirms it.
        u.on_sent(972, &relayed("192.0.2.9:7118", 3));
        let mut pay = DownPay::default();
        u.on_acknowledged(2, 2000, &relayed("192.0.2.9:7118", 3), None, &mut pay);
        // Relay 4's line is auctioned: its bytes carry their price.
        let mut pay4 = DownPay::default();
        u.on_acknowledged(
            1,
            500,
            &relayed("192.0.2.8:7118", 4),
            Some(3_000),
            &mut pay4,
        );
        assert_eq!(
            u.own,
            UpDown {
                up: 1000,
                down: 1000
            }
        );
        let env = RELAY_OVERHEAD as u64 + 28;
        assert_eq!(
            u.borrowed,
            vec![
                (
                    3,
                    UpDown {
                        up: 972 + env,
                        down: 2000 + 2 * env
                    }
                ),
                (
                    4,
                    UpDown {
                        up: 0,
                        down: 500 + env
                    }
                ),
            ]
        );
        assert_eq!(u.wire().up, 1000 + 972 + env);
        let auctioned = Auctioned {
            bytes: 500 + env,
            value: u128::from(500 + env) * 3_000,
        };
        assert_eq!(u.auctioned, vec![(4, auctioned)]);
        // What was offered to each relay: down as sent, up as arrived.
        assert_eq!(
            u.offered[0],
            (
                3,
                UpDown {
                    up: 972 + env,
                    down: 972 + env
                }
            )
        );
        let mut all = Usage::default();
        all.merge(&u);
        all.merge(&u);
        assert_eq!(all.borrowed[0].1.down, 2 * (2000 + 2 * env));
        assert_eq!(all.auctioned[0].1.value, 2 * auctioned.value);
        u.clear();
        assert!(u.is_empty());
    }

    /// Up, a relay was offered what arrived through it and the datagrams the member's
    /// packet numbers passed over, each at the path's typical size; only what arrived is
    /// paid.
    #[test]
    fn a_relay_is_offered_what_arrived_and_what_it_lost() {
        let to = relayed("192.0.2.9:7118", 3);
        let mut u = Usage::default();
        u.on_received(100, &to, 3, 500);
        assert_eq!(u.borrowed[0].1.up, wire_bytes(100, &to));
        assert_eq!(
            u.offered[0].1.up,
            wire_bytes(100, &to) + 3 * wire_bytes(500, &to)
        );
    }

    /// What acks left unconfirmed, receipts pay; nothing is paid twice, and never more
    /// than was sent.
    #[test]
    fn receipts_pay_what_acks_did_not_confirm_once() {
        let to = relayed("192.0.2.9:7118", 3);
        let env = RELAY_OVERHEAD as u64 + 28;
        let per_packet = (MIN_TRANSPORT_LEN + PACKET_FRAME_LEN) as u64 + env;
        let mut u = Usage::default();
        let mut pay = DownPay::default();
        // Ten datagrams of 1100 bytes acked (each an inner packet of 1000 bytes).
        u.on_acknowledged(10, 11_000, &to, None, &mut pay);
        let acked = 11_000 + 10 * env;
        assert_eq!(u.borrowed[0].1.down, acked);
        // A receipt for those ten: nothing more.
        u.on_receipt((10, 10_000), (12, 12_000), &to, &mut pay);
        assert_eq!(u.borrowed[0].1.down, acked);
        // Two more arrived; their acks were lost: the receipt pays them, at the least a
        // datagram with each took.
        u.on_receipt((12, 12_000), (12, 12_000), &to, &mut pay);
        let receipted = 12_000 + 12 * per_packet;
        assert!(receipted > acked);
        assert_eq!(u.borrowed[0].1.down, receipted);
        // Their acks come late: paid once.
        u.on_acknowledged(2, 2_200, &to, None, &mut pay);
        assert_eq!(u.borrowed[0].1.down, acked + 2_200 + 2 * env);
        // A receipt for more than was sent pays only what was.
        u.on_receipt((1_000, 1_000_000), (12, 12_000), &to, &mut pay);
        assert_eq!(u.borrowed[0].1.down, acked + 2_200 + 2 * env);
    }

    #[test]
    fn more_relays_than_a_member_can_use_at_once_still_count_every_byte() {
        let mut u = Usage::default();
        for relay in 0..(MAX_RELAYS as u32 + 5) {
            u.on_received(100, &relayed("192.0.2.9:7118", relay), 0, 100);
        }
        assert_eq!(u.borrowed.len(), MAX_RELAYS);
        assert_eq!(u.wire().up, (MAX_RELAYS as u64 + 5) * (100 + 28 + 28));
    }
}
