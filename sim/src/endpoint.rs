//! What the simulator drives: an [`Endpoint`] at each end of the paths, and [`BareLink`]
//! / [`BareMultiLink`], endpoints without a protocol (the reference a tunnel is compared
//! with, and what the simulator's own tests use).

use std::collections::VecDeque;
use std::time::Instant;

/// One end of the tunnel, driven the way the protocol cores are (sans-IO): every call
/// takes `now`, and nothing happens between calls.
///
/// The simulator calls, at each instant: [`handle_datagram`](Self::handle_datagram) for
/// arrivals, [`handle_timeout`](Self::handle_timeout) when [`poll_timeout`](Self::poll_timeout)
/// is due, [`handle_packet`](Self::handle_packet) for the traffic models' packets, then
/// drains [`poll_transmit`](Self::poll_transmit) and [`poll_packet`](Self::poll_packet),
/// and repeats until nothing is left to do at that instant. A timeout at or before `now`
/// must be consumed by `handle_timeout` (the simulator reports an endpoint that stays due
/// as a spin).
pub trait Endpoint {
    /// An inner IP packet from this end's LAN (gateway) or from the Internet (proxy).
    fn handle_packet(&mut self, now: Instant, packet: &[u8]);
    /// A datagram that arrived on simulated path `path` (index 0..N).
    fn handle_datagram(&mut self, now: Instant, path: usize, datagram: &mut [u8]);
    /// Next datagram to send: writes it at the start of buf (65535 bytes), returns (path
    /// index, len).
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(usize, usize)>;
    /// Next inner packet for this end's LAN/Internet side: writes it into buf, returns len.
    fn poll_packet(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize>;
    /// When this end next wants [`handle_timeout`](Self::handle_timeout); `None`: never.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Runs the timers that are due at `now`.
    fn handle_timeout(&mut self, now: Instant);
}

impl<E: Endpoint + ?Sized> Endpoint for Box<E> {
    fn handle_packet(&mut self, now: Instant, packet: &[u8]) {
        (**self).handle_packet(now, packet)
    }
    fn handle_datagram(&mut self, now: Instant, path: usize, datagram: &mut [u8]) {
        (**self).handle_datagram(now, path, datagram)
    }
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(usize, usize)> {
        (**self).poll_transmit(now, buf)
    }
    fn poll_packet(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        (**self).poll_packet(now, buf)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        (**self).poll_timeout()
    }
    fn handle_timeout(&mut self, now: Instant) {
        (**self).handle_timeout(now)
    }
}

/// No protocol: each inner packet is sent as one datagram, without a header, on path 0;
/// each datagram that arrives (on any path) is handed out as an inner packet. No timers.
#[derive(Debug, Default)]
pub struct BareLink {
    inner: BareMultiLink,
}

impl BareLink {
    /// A bare link on path 0.
    pub fn new() -> BareLink {
        BareLink {
            inner: BareMultiLink::new(1),
        }
    }
}

impl Endpoint for BareLink {
    fn handle_packet(&mut self, now: Instant, packet: &[u8]) {
        self.inner.handle_packet(now, packet)
    }
    fn handle_datagram(&mut self, now: Instant, path: usize, datagram: &mut [u8]) {
        self.inner.handle_datagram(now, path, datagram)
    }
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(usize, usize)> {
        self.inner.poll_transmit(now, buf)
    }
    fn poll_packet(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        self.inner.poll_packet(now, buf)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn handle_timeout(&mut self, _now: Instant) {}
}

/// Like [`BareLink`], spreading the packets over `paths` paths in turn (round robin),
/// whatever they carry; the far end hands them out in arrival order (no reordering
/// buffer), so a flow spread over unequal paths sees reordering.
#[derive(Debug, Default)]
pub struct BareMultiLink {
    paths: usize,
    next: usize,
    outgoing: VecDeque<Vec<u8>>,
    incoming: VecDeque<Vec<u8>>,
    spare: Vec<Vec<u8>>,
}

impl BareMultiLink {
    /// Round robin over paths `0..paths`.
    pub fn new(paths: usize) -> BareMultiLink {
        assert!(paths > 0, "a bare link needs a path");
        BareMultiLink {
            paths,
            ..BareMultiLink::default()
        }
    }

    fn copy(&mut self, data: &[u8]) -> Vec<u8> {
        let mut v = self.spare.pop().unwrap_or_default();
        v.clear();
        v.extend_from_slice(data);
        v
    }

    fn recycle(&mut self, v: Vec<u8>) {
        if self.spare.len() < 256 {
            self.spare.push(v);
        }
    }
}

impl Endpoint for BareMultiLink {
    fn handle_packet(&mut self, _now: Instant, packet: &[u8]) {
        let v = self.copy(packet);
        self.outgoing.push_back(v);
    }

    fn handle_datagram(&mut self, _now: Instant, _path: usize, datagram: &mut [u8]) {
        let v = self.copy(datagram);
        self.incoming.push_back(v);
    }

    fn poll_transmit(&mut self, _now: Instant, buf: &mut [u8]) -> Option<(usize, usize)> {
        let v = self.outgoing.pop_front()?;
        let len = v.len();
        buf[..len].copy_from_slice(&v);
        self.recycle(v);
        let path = self.next;
        self.next = (self.next + 1) % self.paths;
        Some((path, len))
    }

    fn poll_packet(&mut self, _now: Instant, buf: &mut [u8]) -> Option<usize> {
        let v = self.incoming.pop_front()?;
        let len = v.len();
        buf[..len].copy_from_slice(&v);
        self.recycle(v);
        Some(len)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    fn handle_timeout(&mut self, _now: Instant) {}
}
