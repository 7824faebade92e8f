//! A connected gateway/proxy pair over one lossless, instant path, and packets to send
//! through it: shared by the allocation test and the throughput benchmark.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use linkpool_protocol::client::{Client, ClientConfig, SEAL_OFFSET};
use linkpool_protocol::keys::SecretKey;
use linkpool_protocol::server::{MemberId, MemberKey, Server, ServerConfig, ServerEvent};
use linkpool_protocol::session::Limits;
use linkpool_protocol::wire::MAX_DATAGRAM;
use linkpool_protocol::{CipherSuite, PathId};

pub const P0: PathId = PathId(0);
pub const MEMBER: MemberId = MemberId(0);

pub struct Pair {
    pub client: Client,
    pub server: Server,
    /// The member's address as the proxy sees it.
    pub from: SocketAddr,
    pub now: Instant,
}

impl Pair {
    /// A pair with a session up, at `now`.
    pub fn connected(suite: CipherSuite) -> Pair {
        let start = Instant::now();
        let proxy_key = SecretKey::generate().unwrap();
        let member_key = SecretKey::generate().unwrap();
        let limits = Limits::default();
        let server = Server::new(
            ServerConfig {
                static_key: proxy_key.clone(),
                members: vec![MemberKey {
                    public_key: member_key.public_key(),
                    psk: None,
                }],
                limits,
                handshakes_per_second: 50,
            },
            start,
            [7; 32],
        );
        let mut client = Client::new(
            ClientConfig {
                static_key: member_key,
                proxy_key: proxy_key.public_key(),
                psk: None,
                suite,
                limits,
            },
            start,
            1_700_000_000_000_000,
            3,
        );
        client.add_path(P0, start);
        let mut pair = Pair {
            client,
            server,
            from: "198.51.100.7:40000".parse().unwrap(),
            now: start,
        };
        for _ in 0..10 {
            pair.exchange();
            pair.now += Duration::from_millis(1);
        }
        assert!(pair.client.is_connected(), "{suite:?}: no session");
        pair
    }

    /// Runs both sides' timers and carries their control datagrams across.
    pub fn exchange(&mut self) {
        let now = self.now;
        let mut buf = [0u8; MAX_DATAGRAM];
        let mut reply = [0u8; MAX_DATAGRAM];
        if self.client.poll_timeout().is_some_and(|t| t <= now) {
            self.client.handle_timeout(now);
        }
        if self.server.poll_timeout().is_some_and(|t| t <= now) {
            self.server.handle_timeout(now);
        }
        while let Some(t) = self.client.poll_transmit(now, &mut buf) {
            if let Ok(ServerEvent::Reply { len, .. }) =
                self.server
                    .handle_datagram(now, self.from, &mut buf[..t.len], &mut reply)
            {
                let _ = self.client.handle_datagram(now, P0, &mut reply[..len]);
            }
        }
    }
}

/// Writes a UDP/IPv4 packet of `len` bytes between the member's tunnel address and the
/// Internet at `SEAL_OFFSET` of `buf`; returns `len`.
pub fn packet(buf: &mut [u8], len: usize, upstream: bool, seq: u32) -> usize {
    let p = &mut buf[SEAL_OFFSET..SEAL_OFFSET + len];
    p.fill(0);
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    let (member, internet) = ([10, 77, 0, 2], [192, 0, 2, 1]);
    let (src, dst) = if upstream {
        (member, internet)
    } else {
        (internet, member)
    };
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[20..24].copy_from_slice(&seq.to_be_bytes());
    len
}
