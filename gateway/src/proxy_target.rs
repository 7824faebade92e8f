//! Which of the proxy's addresses the gateway talks to.
//!
//! A bundle may name several endpoints, and a name may resolve to several addresses (A and
//! AAAA). The gateway tries them in order: while no session is up, an address that leaves
//! [`TRIES_PER_ADDRESS`] handshakes unanswered gives way to the next, and after the last
//! the names are resolved again (the proxy may have moved). With a session up, the
//! address in use stays. No I/O here: the daemon resolves and sends.

use std::net::SocketAddr;

/// Handshakes an address gets before the next one is tried: with the client's backoff
/// (1 s, 2 s, ...) that is about 3 s, plus up to one maintenance interval.
pub const TRIES_PER_ADDRESS: u64 = 3;

/// The candidate addresses and the one in use.
#[derive(Debug, Default)]
pub struct ProxyTarget {
    candidates: Vec<SocketAddr>,
    current: usize,
    /// `handshakes_sent` when the current address was picked (or last had a session).
    handshakes_at_pick: u64,
}

/// What [`ProxyTarget::on_tick`] asks of the daemon.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Keep talking to the current address.
    Stay,
    /// Moved on to the next address ([`ProxyTarget::current`]): start the handshake over.
    Moved,
    /// Every address was tried: resolve the endpoints again and call
    /// [`ProxyTarget::set_candidates`] (or, if that fails, [`ProxyTarget::restart`]).
    Resolve,
}

impl ProxyTarget {
    /// The address in use, if any was resolved.
    pub fn current(&self) -> Option<SocketAddr> {
        self.candidates.get(self.current).copied()
    }

    /// Takes freshly resolved addresses (in bundle order, duplicates dropped) and starts
    /// with the first. Returns it.
    pub fn set_candidates(
        &mut self,
        addrs: impl IntoIterator<Item = SocketAddr>,
        handshakes_sent: u64,
    ) -> Option<SocketAddr> {
        self.candidates.clear();
        for a in addrs {
            if !self.candidates.contains(&a) {
                self.candidates.push(a);
            }
        }
        self.restart(handshakes_sent)
    }

    /// Starts over at the first known address (when resolving again failed).
    pub fn restart(&mut self, handshakes_sent: u64) -> Option<SocketAddr> {
        self.current = 0;
        self.handshakes_at_pick = handshakes_sent;
        self.current()
    }

    /// Forgets every address (a new bundle).
    pub fn clear(&mut self) {
        self.candidates.clear();
        self.current = 0;
    }

    /// Called every maintenance tick with the session state and the client's count of
    /// handshakes sent so far.
    pub fn on_tick(&mut self, connected: bool, handshakes_sent: u64) -> Step {
        if connected || self.candidates.is_empty() {
            self.handshakes_at_pick = handshakes_sent;
            return Step::Stay;
        }
        if handshakes_sent < self.handshakes_at_pick + TRIES_PER_ADDRESS {
            return Step::Stay;
        }
        self.handshakes_at_pick = handshakes_sent;
        self.current += 1;
        if self.current().is_some() {
            Step::Moved
        } else {
            Step::Resolve
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn unanswered_addresses_give_way_in_order_then_names_are_resolved_again() {
        let mut t = ProxyTarget::default();
        assert_eq!(t.current(), None);
        assert_eq!(t.on_tick(false, 5), Step::Stay, "nothing resolved yet");
        let (a, b) = (addr("[2001:db8::1]:7117"), addr("192.0.2.1:7117"));
        assert_eq!(t.set_candidates([a, b, a], 0), Some(a));
        // Two handshakes out, no answer yet: still a.
        assert_eq!(t.on_tick(false, 2), Step::Stay);
        assert_eq!(t.on_tick(false, 3), Step::Moved);
        assert_eq!(t.current(), Some(b));
        assert_eq!(t.on_tick(false, 5), Step::Stay);
        assert_eq!(t.on_tick(false, 6), Step::Resolve);
        assert_eq!(t.set_candidates([b], 6), Some(b));
    }

    #[test]
    fn an_address_with_a_session_stays_and_gets_full_tries_when_it_goes_quiet() {
        let mut t = ProxyTarget::default();
        let (a, b) = (addr("192.0.2.1:7117"), addr("192.0.2.2:7117"));
        t.set_candidates([a, b], 0);
        assert_eq!(t.on_tick(false, 1), Step::Stay);
        // Connected; rekeys add handshakes, which must not count against it.
        assert_eq!(t.on_tick(true, 2), Step::Stay);
        assert_eq!(t.on_tick(true, 40), Step::Stay);
        // The proxy went quiet: a gets its tries from here.
        assert_eq!(t.on_tick(false, 42), Step::Stay);
        assert_eq!(t.on_tick(false, 43), Step::Moved);
        assert_eq!(t.current(), Some(b));
    }

    #[test]
    fn restart_after_a_failed_resolution_goes_back_to_the_first() {
        let mut t = ProxyTarget::default();
        let (a, b) = (addr("192.0.2.1:7117"), addr("192.0.2.2:7117"));
        t.set_candidates([a, b], 0);
        assert_eq!(t.on_tick(false, 3), Step::Moved);
        assert_eq!(t.current(), Some(b));
        assert_eq!(t.on_tick(false, 6), Step::Resolve);
        assert_eq!(t.restart(6), Some(a));
        t.clear();
        assert_eq!(t.current(), None);
    }
}
