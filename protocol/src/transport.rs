//! The data plane both ends share: a session's paths, its send queue and re-sends, the
//! inner packets waiting for the TUN, and what goes into each sealed packet.
//!
//! The client ([`crate::client`]) and the server ([`crate::server`]) own the keys and the
//! handshakes; everything that is sent once a session is up is decided here.

use std::collections::VecDeque;
use std::time::Instant;

use crate::DropReason;
use crate::frame::{self, Frame, Frames, Writer};
use crate::path::{Endpoint, Path, PathSettings, PathState};
use crate::queue::PacketRing;
use crate::session::{Keypair, Limits};
use crate::wire::{PathId, TRANSPORT_HEADER_LEN};

/// Bound on paths per session: memory stays fixed whatever a peer sends.
pub const MAX_PATHS: usize = 16;
/// Path events kept for [`crate::client::Client::poll_event`] and the server's; older
/// ones are dropped first.
const MAX_EVENTS: usize = 64;
/// A path heard nothing from for this long is forgotten where paths are forgotten (the
/// proxy): longer than the slowest idle probing a member may configure (60 s).
const FORGET_SILENT: std::time::Duration = std::time::Duration::from_secs(150);
/// Inner packets waiting for the TUN.
const INBOUND_SLOTS: usize = 64;

/// A path changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathEvent {
    /// Which path.
    pub path: PathId,
    /// Its new state.
    pub state: PathState,
}

/// A datagram written by a `poll_transmit`: send `buf[..len]` on `path`, to `remote`,
/// from `local` (when given).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// The path it belongs to. The proxy's handshake and cookie answers belong to no path
    /// yet: theirs is `PathId(0)` and means nothing; `remote` and `local` say where.
    pub path: PathId,
    /// Where it goes.
    pub remote: std::net::SocketAddr,
    /// The local address to send it from, when it matters.
    pub local: Option<std::net::SocketAddr>,
    /// Its length at the start of the caller's buffer.
    pub len: usize,
}

pub(crate) struct Transport {
    origin: Instant,
    mtu: usize,
    paths: Vec<Path>,
    queue: PacketRing,
    /// Slots of `queue` to re-send, from paths that turned suspect.
    resend: VecDeque<u64>,
    resend_capacity: usize,
    inbound: PacketRing,
    events: VecDeque<PathEvent>,
    /// Where the search for due acks and pings starts, so no path starves the others.
    cursor: usize,
    /// New paths are passive ([`Transport::passive_paths`]).
    passive: bool,
    /// Paths dead this long are removed (at the proxy: a member that restarted numbers its
    /// paths afresh, and the old ones would be pinged for ever).
    forget_dead_after: Option<std::time::Duration>,
}

impl Transport {
    /// `mtu` is the largest inner packet; `slots` how many the send queue holds (sent
    /// ones are kept in the same ring for re-sends).
    pub(crate) fn new(origin: Instant, mtu: usize, slots: usize) -> Transport {
        Transport {
            origin,
            mtu,
            paths: Vec::new(),
            queue: PacketRing::new(slots, mtu),
            resend: VecDeque::with_capacity(slots.min(1024)),
            resend_capacity: slots.min(1024),
            inbound: PacketRing::new(INBOUND_SLOTS, mtu),
            events: VecDeque::new(),
            cursor: 0,
            passive: false,
            forget_dead_after: None,
        }
    }

    /// Paths from now on ping only when suspect or along with answers (the proxy's side).
    pub(crate) fn passive_paths(&mut self) {
        self.passive = true;
    }

    /// Removes paths that stay dead for `after`.
    pub(crate) fn forget_dead_paths_after(&mut self, after: std::time::Duration) {
        self.forget_dead_after = Some(after);
    }

    pub(crate) fn paths(&self) -> &[Path] {
        &self.paths
    }

    pub(crate) fn path(&self, id: PathId) -> Option<&Path> {
        self.paths.iter().find(|p| p.id() == id)
    }

    pub(crate) fn path_mut(&mut self, id: PathId) -> Option<&mut Path> {
        self.paths.iter_mut().find(|p| p.id() == id)
    }

    /// Adds a path; with [`MAX_PATHS`] already, the one heard from least recently goes.
    pub(crate) fn add_path(
        &mut self,
        now: Instant,
        id: PathId,
        endpoint: Endpoint,
        settings: PathSettings,
    ) -> &mut Path {
        if let Some(i) = self.paths.iter().position(|p| p.id() == id) {
            return &mut self.paths[i];
        }
        if self.paths.len() == MAX_PATHS {
            let oldest = (0..self.paths.len())
                .min_by_key(|&i| (self.paths[i].usable(), self.paths[i].state_since()))
                .expect("full");
            self.paths.remove(oldest);
        }
        let max_sent = self.queue.capacity();
        let mut path = Path::new(id, endpoint, settings, now, self.origin, max_sent);
        if self.passive {
            path.set_passive();
        }
        self.paths.push(path);
        self.paths.last_mut().expect("just pushed")
    }

    pub(crate) fn remove_path(&mut self, id: PathId) {
        self.paths.retain(|p| p.id() != id);
    }

    pub(crate) fn poll_event(&mut self) -> Option<PathEvent> {
        self.events.pop_front()
    }

    fn note(&mut self, i: usize, was: PathState) {
        let p = &self.paths[i];
        if p.state() != was {
            if self.events.len() == MAX_EVENTS {
                self.events.pop_front();
            }
            self.events.push_back(PathEvent {
                path: p.id(),
                state: p.state(),
            });
        }
    }

    /// Queues an inner packet for sending.
    pub(crate) fn push_packet(&mut self, packet: &[u8]) -> Result<(), DropReason> {
        crate::ip::check(packet)?;
        self.queue.push(packet).map(|_| ())
    }

    /// Packets waiting to be sent.
    pub(crate) fn waiting(&self) -> usize {
        self.queue.waiting() + self.resend.len()
    }

    /// Inner packets waiting for the TUN.
    pub(crate) fn waiting_inbound(&self) -> usize {
        self.inbound.waiting()
    }

    /// Forgets everything queued (the session is gone).
    pub(crate) fn clear_queue(&mut self) {
        self.queue.clear();
        self.resend.clear();
    }

    /// The next inner packet for the TUN.
    pub(crate) fn poll_packet(&mut self, buf: &mut [u8]) -> Option<usize> {
        let (_, packet) = self.inbound.pop()?;
        let n = packet.len().min(buf.len());
        buf[..n].copy_from_slice(&packet[..n]);
        Some(n)
    }

    /// Handles the opened plaintext `buf[range]` of a transport packet that arrived on
    /// path `id` from `from`, opened with our keys `keys`. An inner packet goes to the TUN
    /// queue if `accept` takes it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_packet(
        &mut self,
        now: Instant,
        id: PathId,
        keys: u32,
        from: Option<Endpoint>,
        buf: &[u8],
        range: std::ops::Range<usize>,
        accept: impl Fn(&[u8]) -> Result<(), DropReason>,
    ) -> Result<(), DropReason> {
        let plain = &buf[range.clone()];
        let (truncated, frames) = Frames::parse(plain)?;
        // All frames are checked before any is acted on: a malformed packet changes nothing.
        let (mut eliciting, mut ping) = (false, false);
        for f in frames {
            let f = f?;
            eliciting |= f.is_ack_eliciting();
            ping |= f == Frame::Ping;
        }
        let i = self
            .paths
            .iter()
            .position(|p| p.id() == id)
            .ok_or(DropReason::UnknownSession)?;
        let pn = frame::expand_packet_number(self.paths[i].largest_received(), truncated);
        self.paths[i].on_keys(keys, pn);
        if !self.paths[i].on_received(now, pn, eliciting, ping) {
            return Err(DropReason::Replay);
        }
        if let Some(from) = from {
            self.paths[i].on_authenticated_from(pn, from);
        }
        let (_, frames) = Frames::parse(plain)?;
        for f in frames {
            match f? {
                Frame::Ping => {}
                Frame::Ack(ack) => {
                    if let Some(j) = self.paths.iter().position(|p| p.id() == ack.path) {
                        let was = self.paths[j].state();
                        self.paths[j].on_ack(now, &ack);
                        self.note(j, was);
                    }
                }
                Frame::Receipt {
                    path,
                    packets,
                    bytes,
                } => {
                    if let Some(p) = self.path_mut(path) {
                        p.on_receipt(packets, bytes);
                    }
                }
                Frame::Packet { range: r, .. } => {
                    let packet = &plain[r.0..r.1];
                    crate::ip::check(packet)?;
                    accept(packet)?;
                    self.paths[i].on_inner_received(packet.len());
                    // Full means the TUN side is not keeping up: the newest is dropped.
                    self.inbound.push(packet)?;
                }
            }
        }
        Ok(())
    }

    /// Pings every path now (new keys: each path confirms them and is measured).
    pub(crate) fn ping_all(&mut self, now: Instant) {
        for p in &mut self.paths {
            p.ping_now(now);
        }
    }

    /// Runs the paths' timers; queues re-sends from paths that just turned suspect.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        for i in 0..self.paths.len() {
            let was = self.paths[i].state();
            let resend = &mut self.resend;
            let capacity = self.resend_capacity;
            self.paths[i].on_timeout(now, &mut |slot| {
                if resend.len() == capacity {
                    resend.pop_front();
                }
                resend.push_back(slot);
            });
            self.note(i, was);
        }
        if let Some(after) = self.forget_dead_after {
            // Dead for long, or silent for longer than any member pings an idle path: a
            // passive path never pings, so one the member closed would stay active.
            self.paths.retain(|p| {
                let dead = p.state() == PathState::Dead
                    && now.saturating_duration_since(p.state_since()) >= after;
                let silent = p
                    .last_received()
                    .is_some_and(|t| now.saturating_duration_since(t) >= FORGET_SILENT);
                !dead && !silent
            });
        }
    }

    /// The earliest time a path needs attention (pings, acks, silence).
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.paths.iter().filter_map(|p| p.next_timeout()).min()
    }

    /// The path new traffic goes on: the active one with the lowest RTT; without one, the
    /// one most likely to deliver (probing before suspect before dead). The RTT compared
    /// is the least seen: a path's own traffic queues in its ISP's buffer and raises its
    /// smoothed RTT, which would send the traffic to and fro between paths.
    pub(crate) fn best_path(&self, exclude: Option<PathId>) -> Option<usize> {
        let rank = |p: &Path| match p.state() {
            PathState::Active => 0,
            PathState::Probing => 1,
            PathState::Suspect => 2,
            PathState::Dead => 3,
        };
        (0..self.paths.len())
            .filter(|&i| Some(self.paths[i].id()) != exclude)
            .min_by_key(|&i| {
                let p = &self.paths[i];
                (rank(p), p.min_rtt().unwrap_or(std::time::Duration::MAX))
            })
    }

    /// Writes the next datagram, sealed with `keys`: due acks and pings first (round robin
    /// over paths), then re-sends, then queued packets on the best path.
    pub(crate) fn poll_transmit(
        &mut self,
        now: Instant,
        keys: &mut Keypair,
        limits: &Limits,
        buf: &mut [u8],
    ) -> Result<Option<Transmit>, DropReason> {
        let n = self.paths.len();
        for k in 0..n {
            let i = (self.cursor + k) % n;
            let p = &self.paths[i];
            let ping = p.ping_due(now);
            let ack = p.ack_due(now) || (ping && p.has_unacked());
            let receipt = p.receipt_due(now);
            if ping || ack || receipt {
                self.cursor = (i + 1) % n;
                return self.send_control(now, i, ping, ack, receipt, keys, limits, buf);
            }
        }
        while let Some(&slot) = self.resend.front() {
            let Some(len) = self.queue.get(slot).map(|p| p.len()) else {
                // Its copy was overwritten by newer traffic: too old to matter.
                self.resend.pop_front();
                continue;
            };
            // Only to a path that answers; none does: the packet had its one chance.
            let Some(i) = self.best_path(None).filter(|&i| self.paths[i].usable()) else {
                self.resend.pop_front();
                continue;
            };
            if !self.paths[i].resend_room() {
                // Its acks open the window again. New packets wait too: the flows need
                // the holes filled first.
                return Ok(None);
            }
            self.resend.pop_front();
            return self
                .send_data(now, i, slot, len, true, keys, limits, buf)
                .map(Some);
        }
        let Some(i) = self.best_path(None) else {
            return Ok(None);
        };
        let Some((slot, packet)) = self.queue.pop() else {
            return Ok(None);
        };
        let len = packet.len();
        self.send_data(now, i, slot, len, false, keys, limits, buf)
            .map(Some)
    }

    #[allow(clippy::too_many_arguments)]
    fn send_control(
        &mut self,
        now: Instant,
        i: usize,
        ping: bool,
        ack: bool,
        receipt: bool,
        keys: &mut Keypair,
        limits: &Limits,
        buf: &mut [u8],
    ) -> Result<Option<Transmit>, DropReason> {
        let p = &mut self.paths[i];
        let plain = buf
            .get_mut(TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + frame::MAX_ACK_LEN + 64)
            .ok_or(DropReason::PacketTooLarge)?;
        let mut w = Writer::new(plain, p.next_packet_number()).ok_or(DropReason::PacketTooLarge)?;
        // An answer that is due anyway asks for one back when our own ping is half due
        // (or the path is not confirmed): one round trip then measures both directions.
        let ping = ping || (ack && p.ping_along(now));
        if ack {
            if let Some(a) = p.ack(now) {
                w.ack(&a).ok_or(DropReason::PacketTooLarge)?;
                p.on_ack_sent();
            }
        }
        if ping {
            w.ping();
        }
        if receipt {
            let (packets, bytes) = p.take_receipt(now);
            w.receipt(p.id(), packets, bytes);
        }
        let len = w.len();
        let total = keys.seal(p.id(), buf, len, limits)?;
        let p = &mut self.paths[i];
        p.on_sent(now, total, ping, None);
        if ping {
            p.on_ping_sent(now);
        }
        Ok(Some(self.transmit(i, total)))
    }

    #[allow(clippy::too_many_arguments)]
    fn send_data(
        &mut self,
        now: Instant,
        i: usize,
        slot: u64,
        len: usize,
        resent: bool,
        keys: &mut Keypair,
        limits: &Limits,
        buf: &mut [u8],
    ) -> Result<Transmit, DropReason> {
        let p = &mut self.paths[i];
        // Room for the packet number, an ack and the packet frame within the largest
        // datagram a full-size packet makes: acks ride along only on smaller packets.
        let room = frame::PACKET_NUMBER_LEN + frame::SPREAD_PACKET_FRAME_LEN + self.mtu;
        let plain = buf
            .get_mut(TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + room)
            .ok_or(DropReason::PacketTooLarge)?;
        let (head, _) = plain.split_at_mut(room - frame::PACKET_FRAME_LEN - len);
        let mut w = Writer::new(head, p.next_packet_number()).ok_or(DropReason::PacketTooLarge)?;
        if let Some(a) = p.ack(now).filter(|_| p.has_unacked()) {
            // Without room it is sent on its own when due.
            if w.ack(&a).is_some() {
                p.on_ack_sent();
            }
        }
        let at = w.len();
        let header =
            frame::write_packet_header(&mut plain[at..], None).ok_or(DropReason::PacketTooLarge)?;
        let packet = self.queue.get(slot).ok_or(DropReason::PacketTooLarge)?;
        plain[at + header..at + header + len].copy_from_slice(packet);
        let plain_len = at + header + len;
        let p = &mut self.paths[i];
        let total = keys.seal(p.id(), buf, plain_len, limits)?;
        p.on_sent_with(now, total, true, Some((slot, len)), resent);
        Ok(self.transmit(i, total))
    }

    fn transmit(&self, i: usize, len: usize) -> Transmit {
        let e = self.paths[i].endpoint();
        Transmit {
            path: self.paths[i].id(),
            remote: e.remote,
            local: e.local,
            len,
        }
    }
}
