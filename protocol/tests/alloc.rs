//! The data path allocates nothing: once a session is up, sealing and opening packets in
//! both directions, with the probes, acks and receipts that go with them, makes no heap
//! allocation. Routers have little RAM and slow allocators; this is what keeps the daemons'
//! memory flat under load.
//!
//! A binary of its own, with one test, so that the counting allocator sees nothing else.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::pair::{MEMBER, P0, Pair, packet};
use linkpool_protocol::CipherSuite;
use linkpool_protocol::client::Received;
use linkpool_protocol::server::ServerEvent;
use linkpool_protocol::wire::MAX_DATAGRAM;

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

#[test]
fn sealing_and_opening_allocate_nothing() {
    for suite in [CipherSuite::Aes256Gcm, CipherSuite::ChaCha20Poly1305] {
        let mut pair = Pair::connected(suite);
        let mut up = [0u8; MAX_DATAGRAM];
        let mut down = [0u8; MAX_DATAGRAM];
        let mut reply = [0u8; MAX_DATAGRAM];
        let mut delivered = (0, 0);
        let mut run = |pair: &mut Pair, seq: u32| {
            let now = pair.now;
            let n = packet(&mut up, 1200, true, seq);
            let len = pair.client.seal_packet(now, P0, &mut up, n).unwrap();
            if let Ok(ServerEvent::Packet { .. }) =
                pair.server
                    .handle_datagram(now, pair.from, &mut up[..len], &mut reply)
            {
                delivered.0 += 1;
            }
            let n = packet(&mut down, 1200, false, seq);
            let (_, len) = pair.server.seal_packet(now, MEMBER, &mut down, n).unwrap();
            if let Ok(Received::Packet(_)) = pair.client.handle_datagram(now, P0, &mut down[..len])
            {
                delivered.1 += 1;
            }
            pair.exchange();
            pair.now += Duration::from_millis(1);
        };
        // Warm-up: the first packets on a path may set up per-path state once.
        for seq in 0..100 {
            run(&mut pair, seq);
        }
        // 3 s of traffic at 1000 packets/s each way: probes, acks and receipts included.
        ALLOCATIONS.store(0, Ordering::Relaxed);
        COUNTING.store(true, Ordering::Relaxed);
        for seq in 100..3_100 {
            run(&mut pair, seq);
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
