//! The data path allocates nothing: once a session is up, sealing and opening packets in
//! both directions, with the probes, acks and receipts that go with them, makes no heap
//! allocation. Routers have little RAM and slow allocators; this is what keeps the daemons'
//! memory flat under load.
//!
//! A binary of its own, with one test, so that the counting allocator sees nothing else.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use linkpool_protocol::client::{Client, ClientConfig, Received, SEAL_OFFSET};
use linkpool_protocol::keys::SecretKey;
use linkpool_protocol::server::{MemberId, MemberKey, Server, ServerConfig, ServerEvent};
use linkpool_protocol::session::Limits;
use linkpool_protocol::wire::MAX_DATAGRAM;
use linkpool_protocol::{CipherSuite, PathId};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const P0: PathId = PathId(0);
const MEMBER: MemberId = MemberId(0);

/// A 1200-byte UDP/IPv4 packet between the member's tunnel address and the Internet.
fn packet(buf: &mut [u8], upstream: bool, seq: u32) -> usize {
    let len = 1200;
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

/// Runs both sides' timers and carries their control datagrams across (no delay).
fn exchange(client: &mut Client, server: &mut Server, now: Instant, from: SocketAddr) {
    let mut buf = [0u8; MAX_DATAGRAM];
    let mut reply = [0u8; MAX_DATAGRAM];
    if client.poll_timeout().is_some_and(|t| t <= now) {
        client.handle_timeout(now);
    }
    if server.poll_timeout().is_some_and(|t| t <= now) {
        server.handle_timeout(now);
    }
    while let Some(t) = client.poll_transmit(now, &mut buf) {
        if let Ok(ServerEvent::Reply { len, .. }) =
            server.handle_datagram(now, from, &mut buf[..t.len], &mut reply)
        {
            let _ = client.handle_datagram(now, P0, &mut reply[..len]);
        }
    }
}

#[test]
fn sealing_and_opening_allocate_nothing() {
    for suite in [CipherSuite::Aes256Gcm, CipherSuite::ChaCha20Poly1305] {
        let start = Instant::now();
        let proxy_key = SecretKey::generate().unwrap();
        let member_key = SecretKey::generate().unwrap();
        let limits = Limits::default();
        let mut server = Server::new(
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
        let from: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        let mut now = start;
        for _ in 0..10 {
            exchange(&mut client, &mut server, now, from);
            now += Duration::from_millis(1);
        }
        assert!(client.is_connected(), "{suite:?}: no session");

        let mut up = [0u8; MAX_DATAGRAM];
        let mut down = [0u8; MAX_DATAGRAM];
        let mut reply = [0u8; MAX_DATAGRAM];
        let mut delivered = (0, 0);
        let mut run = |now: Instant, seq: u32, delivered: &mut (usize, usize)| {
            let n = packet(&mut up, true, seq);
            let len = client.seal_packet(now, P0, &mut up, n).unwrap();
            if let Ok(ServerEvent::Packet { .. }) =
                server.handle_datagram(now, from, &mut up[..len], &mut reply)
            {
                delivered.0 += 1;
            }
            let n = packet(&mut down, false, seq);
            let (_, len) = server.seal_packet(now, MEMBER, &mut down, n).unwrap();
            if let Ok(Received::Packet(_)) = client.handle_datagram(now, P0, &mut down[..len]) {
                delivered.1 += 1;
            }
            exchange(&mut client, &mut server, now, from);
        };
        // Warm-up: the first packets on a path may set up per-path state once.
        for seq in 0..100 {
            run(now, seq, &mut delivered);
            now += Duration::from_millis(1);
        }
        // 3 s of traffic at 1000 packets/s each way: probes, acks and receipts included.
        ALLOCATIONS.store(0, Ordering::Relaxed);
        COUNTING.store(true, Ordering::Relaxed);
        for seq in 100..3_100 {
            run(now, seq, &mut delivered);
            now += Duration::from_millis(1);
        }
        COUNTING.store(false, Ordering::Relaxed);
        let allocations = ALLOCATIONS.load(Ordering::Relaxed);
        assert_eq!(delivered, (3_100, 3_100), "{suite:?}");
        assert_eq!(
            allocations, 0,
            "{suite:?}: {allocations} allocations for 6,000 packets"
        );
    }
}
