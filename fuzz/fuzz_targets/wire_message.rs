//! `wire::Message::parse` on anything: no panic, and every accessor of a parsed message
//! stays inside the datagram it borrows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use linkpool_protocol::wire::{
    self, MAC_LEN, MAX_DATAGRAM, MIN_TRANSPORT_LEN, Message, RELAY_HEADER_LEN, RELAY_OVERHEAD,
    TRANSPORT_HEADER_LEN,
};

fn check(data: &[u8], depth: u8) {
    let Ok(msg) = Message::parse(data) else {
        return;
    };
    assert!(data.len() <= MAX_DATAGRAM);
    assert_eq!(data[0], wire::VERSION);
    match msg {
        Message::HandshakeInit(m) => {
            assert_eq!(data.len(), wire::HANDSHAKE_INIT_LEN);
            let _ = (m.suite(), m.sender_index(), m.noise());
            assert_eq!(m.mac1().len(), MAC_LEN);
            assert_eq!(m.mac2().len(), MAC_LEN);
            assert_eq!(m.mac1_input().len() + 2 * MAC_LEN, data.len());
            assert_eq!(m.mac2_input().len() + MAC_LEN, data.len());
        }
        Message::HandshakeResponse(m) => {
            assert_eq!(data.len(), wire::HANDSHAKE_RESPONSE_LEN);
            let _ = (m.sender_index(), m.receiver_index(), m.noise());
            assert_eq!(m.mac1().len(), MAC_LEN);
            assert_eq!(m.mac1_input().len() + 2 * MAC_LEN, data.len());
        }
        Message::CookieReply(m) => {
            assert_eq!(data.len(), wire::COOKIE_REPLY_LEN);
            let _ = (m.receiver_index(), m.nonce());
            assert_eq!(m.sealed_cookie().len(), 32);
        }
        Message::Transport(h) => {
            // Header, packet number and tag at least.
            assert!(data.len() >= MIN_TRANSPORT_LEN);
            // The header as parsed (path, receiver index, counter), written back, is the
            // header received: version 2 has no reserved bytes in it.
            let mut out = [0u8; TRANSPORT_HEADER_LEN];
            h.write(&mut out);
            assert_eq!(out[..], data[..TRANSPORT_HEADER_LEN]);
        }
        Message::Relay(env) => {
            assert!(data.len() >= RELAY_OVERHEAD + 4);
            let _ = (env.kind(), env.relay_index(), env.slot());
            assert_eq!(env.tag().len(), MAC_LEN);
            assert_eq!(env.tag_input().len() + MAC_LEN, data.len());
            assert_eq!(RELAY_HEADER_LEN + env.inner().len() + MAC_LEN, data.len());
            // What a relay carries is parsed by the receiver in turn.
            if depth < 4 {
                check(env.inner(), depth + 1);
            }
        }
        Message::MeshDiscovery(d) => {
            let rated = data[2] & 2 != 0;
            let len = if rated {
                wire::MESH_DISCOVERY_RATED_LEN
            } else {
                wire::MESH_DISCOVERY_LEN
            };
            assert_eq!(data.len(), len);
            assert_eq!(d.rating().is_some(), rated);
            let mut out = [0u8; wire::MESH_DISCOVERY_RATED_LEN];
            let written = wire::write_mesh_discovery(
                d.relay_port(),
                &d.offer(),
                d.credential(),
                d.rating(),
                &mut out,
            );
            assert_eq!(written, Some(len));
            let out = &out[..len];
            // Equal but for the flags' unused bits and the reserved bytes 3, 6 and 7.
            assert_eq!(out[..2], data[..2]);
            assert_eq!(out[2], data[2] & 3);
            assert_eq!(out[4..6], data[4..6]);
            assert_eq!(out[8..], data[8..]);
        }
        Message::NeighbourHello(h) => {
            assert_eq!(data.len(), wire::NEIGHBOUR_HELLO_LEN);
            assert_eq!(h.mac().len(), MAC_LEN);
            assert_eq!(h.mac_input().len() + MAC_LEN, data.len());
            let mut out = [0u8; wire::NEIGHBOUR_HELLO_LEN - MAC_LEN];
            let offer = h.offer();
            wire::write_neighbour_hello(h.sender(), h.counter(), h.relay_port(), &offer, &mut out);
            // Equal but for the flags' unused bits and the reserved bytes 3, 18 and 19.
            assert_eq!(out[..2], data[..2]);
            assert_eq!(out[2], data[2] & 1);
            assert_eq!(out[4..18], data[4..18]);
            assert_eq!(out[20..], h.mac_input()[20..]);
        }
    }
}

fuzz_target!(|data: &[u8]| check(data, 0));
