//! `mesh::Neighbours::handle_hello` with neighbour hellos, on gateways A and B that met
//! (`src/mesh.rs`): no panic; nothing that is not a hello A wrote for B is taken as one
//! (no forgery, replay, or hello from another address); what A sends B is taken; events
//! alternate as they should; no timer in the past survives.
//!
//! First byte even: the rest is a datagram to B from A's address; only A's discovery hello
//! or the very neighbour hello A writes next may pass. Odd: a script of
//! operations on the pair, one byte each (with one byte of argument):
//!
//! | op (byte % 6) | argument | what it does |
//! |---|---|---|
//! | 0 | t | time moves `10 * t` ms; A sends what it has, B must take all of it |
//! | 1 | t | the same from B to A |
//! | 2 | - | A's last neighbour hello to B, again: refused |
//! | 3 | bit | it again with one bit flipped (`bit * 7 % 352`): refused |
//! | 4 | how | it again from another address (port + 1, another IP, or B's): refused |
//! | 5 | t | time moves `50 * t` ms, both sides' timers run, what they send is lost |
#![no_main]

use std::net::SocketAddr;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use linkpool_fuzz::mesh::{self, T0, addresses, route};
use linkpool_protocol::DropReason;
use linkpool_protocol::mesh::{NEIGHBOUR_HELLO_INTERVAL, NeighbourEvent, Neighbours};
use linkpool_protocol::wire::{MAX_DATAGRAM, MESH_DISCOVERY_LEN, Message, NEIGHBOUR_HELLO_LEN};

/// Checks `t`'s events against whether its neighbour is usable; returns the new state.
fn events(t: &mut Neighbours, mut usable: bool) -> bool {
    while let Some(e) = t.poll_event() {
        match e {
            NeighbourEvent::Seen { .. } => {
                assert!(!usable, "seen twice");
                usable = true;
            }
            NeighbourEvent::Lost { .. } => {
                assert!(usable, "lost twice");
                usable = false;
            }
            NeighbourEvent::Moved { .. } | NeighbourEvent::OfferChanged { .. } => {
                assert!(usable, "{e:?} of a neighbour not usable");
            }
        }
    }
    let now = t.neighbours().next().is_some_and(|n| n.usable());
    assert_eq!(usable, now, "events and table disagree");
    usable
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut m = mesh::met();
    let (a_addr, b_addr) = addresses();
    if mode % 2 == 0 {
        let r = m.b.handle_hello(m.start, T0, a_addr, b_addr, rest);
        if r.is_ok() {
            // Only what A itself would send next passes: its discovery hello (its
            // credential is signed), or its next neighbour hello (nobody else has the key).
            match Message::parse(rest) {
                Ok(Message::MeshDiscovery(_)) => {
                    assert_eq!(rest.len(), MESH_DISCOVERY_LEN);
                    assert_eq!(&rest[16..], m.a.credential().as_bytes());
                }
                Ok(Message::NeighbourHello(_)) => {
                    let next = m.start + NEIGHBOUR_HELLO_INTERVAL;
                    let mut a = m.a.clone();
                    let mut buf = [0u8; MAX_DATAGRAM];
                    let mut found = false;
                    while let Some(t) = a.poll_hello(next, T0, &mut buf) {
                        found |= t.len == NEIGHBOUR_HELLO_LEN && buf[..t.len] == rest[..];
                    }
                    assert!(found, "a neighbour hello A did not write was taken");
                }
                other => panic!("taken: {other:?}"),
            }
        }
        return;
    }
    let (start, mut buf) = (m.start, [0u8; MAX_DATAGRAM]);
    let mut now = start;
    let proxy_now = |now: std::time::Instant| T0 + (now - start).as_secs();
    let mut last: Option<[u8; NEIGHBOUR_HELLO_LEN]> = None;
    let (mut a_sees_b, mut b_sees_a) = (true, true);
    for op in rest.chunks(2) {
        let arg = u64::from(op.get(1).copied().unwrap_or(0));
        match op[0] % 6 {
            0 | 1 => {
                now += Duration::from_millis(10 * arg);
                let pn = proxy_now(now);
                let a_to_b = op[0] % 6 == 0;
                let (from_addr, to_addr) = if a_to_b {
                    (a_addr, b_addr)
                } else {
                    (b_addr, a_addr)
                };
                let (tx, rx) = if a_to_b {
                    (&mut m.a, &mut m.b)
                } else {
                    (&mut m.b, &mut m.a)
                };
                while let Some(t) = tx.poll_hello(now, pn, &mut buf) {
                    let (from, to) = route(from_addr, to_addr, t.destination);
                    let r = rx.handle_hello(now, pn, from, to, &buf[..t.len]);
                    assert_eq!(
                        r,
                        Ok(()),
                        "a hello {} sent was refused",
                        if a_to_b { "A" } else { "B" }
                    );
                    if a_to_b && t.len == NEIGHBOUR_HELLO_LEN {
                        last = Some(buf[..t.len].try_into().expect("length"));
                    }
                }
            }
            2..=4 => {
                let Some(hello) = last else { continue };
                let mut hello = hello;
                let (mut from, mut to) = (a_addr, b_addr);
                match op[0] % 6 {
                    3 => {
                        let bit = (arg as usize * 7) % (NEIGHBOUR_HELLO_LEN * 8);
                        hello[bit / 8] ^= 1 << (bit % 8);
                    }
                    4 => match arg % 3 {
                        0 => from = SocketAddr::new(from.ip(), from.port() + 1),
                        1 => from = SocketAddr::new([192, 0, 2, 66].into(), from.port()),
                        _ => (from, to) = (b_addr, a_addr),
                    },
                    _ => {}
                }
                let r = m.b.handle_hello(now, proxy_now(now), from, to, &hello);
                assert!(r.is_err(), "op {}: taken again", op[0] % 6);
                if op[0] % 6 != 3 {
                    // Once B dropped A (its credential expired), A is unknown.
                    assert!(
                        matches!(
                            r,
                            Err(DropReason::ReplayedHello
                                | DropReason::BadHelloMac
                                | DropReason::ExpiredCredential
                                | DropReason::UnknownNeighbour)
                        ),
                        "{r:?}"
                    );
                }
            }
            _ => {
                now += Duration::from_millis(50 * arg);
                let pn = proxy_now(now);
                for t in [&mut m.a, &mut m.b] {
                    t.handle_timeout(now, pn);
                    let mut sent = 0;
                    while t.poll_hello(now, pn, &mut buf).is_some() {
                        sent += 1;
                        assert!(sent < 8, "hellos never stop");
                    }
                    assert!(
                        t.poll_timeout().is_none_or(|t| t > now),
                        "a timer in the past"
                    );
                }
            }
        }
        a_sees_b = events(&mut m.a, a_sees_b);
        b_sees_a = events(&mut m.b, b_sees_a);
    }
});
