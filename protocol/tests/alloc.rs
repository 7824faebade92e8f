//! The data path allocates nothing: once a session is up, packets in both directions
//! (`handle_packet` → `poll_transmit` → `handle_datagram` → `poll_packet`), with the
//! acks, pings and receipts that go with them, make no heap allocation, however many are
//! in flight. Routers have little RAM and slow allocators; this is what keeps the
//! daemons' memory flat under load.
//!
//! Over two paths too: a bulk flow spread per packet over paths 30 ms apart (the reorder
//! buffer holding what arrives early) and a DNS flow copied onto both (redundancy and
//! its duplicates refused).
//!
//! A binary of its own, with one test, so that the counting allocator sees nothing else.
//! `LINKPOOL_ALLOC_TRACE=1` prints a backtrace of every allocation it counts.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::pair::{MEMBER, Pair, flow_packet, packet};
use linkpool_protocol::CipherSuite;
use linkpool_protocol::path::PathCounters;
use linkpool_protocol::wire::MAX_DATAGRAM;
use linkpool_sim::link::LinkParams;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
/// Print where each counted allocation comes from.
static TRACE: AtomicBool = AtomicBool::new(false);

fn counted() {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        if TRACE.load(Ordering::Relaxed) {
            // Capturing allocates: that is neither counted nor traced.
            COUNTING.store(false, Ordering::Relaxed);
            eprintln!(
                "allocation:\n{}",
                std::backtrace::Backtrace::force_capture()
            );
            COUNTING.store(true, Ordering::Relaxed);
        }
    }
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        counted();
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        counted();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn client_path(pair: &Pair) -> PathCounters {
    *pair.client.path(pair.paths[0]).unwrap().counters()
}

fn server_path(pair: &Pair) -> PathCounters {
    *pair.server.member(MEMBER).unwrap().paths[0].counters()
}

/// Datagrams without an inner packet (acks, pings, receipts) sent on a path since
/// `before`.
fn control(now: &PathCounters, before: &PathCounters) -> u64 {
    (now.tx_datagrams - before.tx_datagrams) - (now.tx_packets - before.tx_packets)
}

#[test]
fn the_data_path_allocates_nothing() {
    TRACE.store(
        std::env::var_os("LINKPOOL_ALLOC_TRACE").is_some(),
        Ordering::Relaxed,
    );
    for suite in [CipherSuite::Aes256Gcm, CipherSuite::ChaCha20Poly1305] {
        // Over a 50 ms round trip, so that packets stay in flight for a while.
        let mut pair = Pair::connected_over(suite, Duration::from_millis(25));
        let mut up = [0u8; MAX_DATAGRAM];
        let mut down = [0u8; MAX_DATAGRAM];
        // One millisecond: `burst` packets each way (none: idle), then the link and the
        // timers.
        let mut seq = 0u32;
        let mut run = |pair: &mut Pair, burst: u32| {
            let now = pair.now;
            for _ in 0..burst {
                let n = packet(&mut up, 1200, true, seq);
                pair.client.handle_packet(now, &up[..n]).unwrap();
                pair.up();
                let n = packet(&mut down, 1200, false, seq);
                assert_eq!(pair.server.handle_packet(now, &down[..n]), Ok(MEMBER));
                pair.down();
                seq += 1;
            }
            pair.exchange();
            pair.now += Duration::from_millis(1);
        };
        // Warm-up, light: the first packets on a path may set up per-path state once
        // (and the event queues grow to what a daemon that drains them needs).
        for _ in 0..1_000 {
            run(&mut pair, 1);
        }
        let (client_before, server_before) = (client_path(&pair), server_path(&pair));
        let before = pair.carried;
        ALLOCATIONS.store(0, Ordering::Relaxed);
        COUNTING.store(true, Ordering::Relaxed);
        // 3 s of traffic at 1000 packets/s each way (some 50 in flight each way), 1 s
        // idle (pings, their acks, receipts), then 2 s at 8 packets a millisecond each
        // way (96 Mbit/s, some 400 in flight, arriving in batches of 8), and idle long
        // enough for the last receipts.
        for _ in 0..3_000 {
            run(&mut pair, 1);
        }
        for _ in 0..1_000 {
            run(&mut pair, 0);
        }
        for _ in 0..2_000 {
            run(&mut pair, 8);
        }
        for _ in 0..1_200 {
            run(&mut pair, 0);
        }
        COUNTING.store(false, Ordering::Relaxed);
        let allocations = ALLOCATIONS.load(Ordering::Relaxed);
        let carried = pair.carried;
        assert_eq!(
            (carried.up_packets, carried.down_packets),
            (20_000, 20_000),
            "{suite:?}"
        );
        assert_eq!(carried.refused, 0, "{suite:?}");
        // What the window exercised besides packets: acks both ways, pings while idle,
        // receipts.
        let (c, s) = (client_path(&pair), server_path(&pair));
        let client_control = control(&c, &client_before);
        let server_control = control(&s, &server_before);
        assert!(
            client_control >= 10 && server_control >= 10,
            "{suite:?}: control datagrams {client_control} up, {server_control} down"
        );
        assert!(c.acked - client_before.acked >= 19_000, "{suite:?}: {c:?}");
        assert!(s.acked - server_before.acked >= 19_000, "{suite:?}: {s:?}");
        assert_eq!((c.suspected, s.suspected), (0, 0), "{suite:?}");
        // Receipts: each end reported every inner packet and byte it got.
        let receipt = pair.server.member(MEMBER).unwrap().paths[0].peer_receipt();
        assert_eq!(receipt, Some((20_000, 20_000 * 1200)), "{suite:?}");
        let receipt = pair.client.path(pair.paths[0]).unwrap().peer_receipt();
        assert_eq!(receipt, Some((20_000, 20_000 * 1200)), "{suite:?}");
        eprintln!(
            "{suite:?}: {} datagrams up, {} down, {client_control} and {server_control} \
             of them control, in 7.2 s",
            carried.up_datagrams - before.up_datagrams,
            carried.down_datagrams - before.down_datagrams,
        );
        assert_eq!(
            allocations, 0,
            "{suite:?}: {allocations} allocations for 38,000 packets"
        );
    }
    spread_over_two_paths();
}

/// A bulk flow and a DNS flow each way over two paths of 30 Mbit/s, 10 and 40 ms one
/// way.
fn spread_over_two_paths() {
    // 30 Mbit/s each: the bulk flow's 38 Mbit/s needs both.
    let link = |ms| {
        let p = LinkParams {
            delay: Duration::from_millis(ms),
            rate_bps: Some(30_000_000),
            ..LinkParams::default()
        };
        (p, p)
    };
    let mut pair = Pair::connected_over_paths(CipherSuite::Aes256Gcm, &[link(10), link(40)]);
    let mut buf = [0u8; MAX_DATAGRAM];
    let mut seq = 0u32;
    // One millisecond: `bulk` packets of the bulk flow each way, a DNS query and its
    // answer every 20 ms.
    let mut run = |pair: &mut Pair, bulk: u32| {
        let now = pair.now;
        for upstream in [true, false] {
            let mut send = |pair: &mut Pair, len, port| {
                let n = flow_packet(&mut buf, len, upstream, port, seq);
                if upstream {
                    pair.client.handle_packet(now, &buf[..n]).unwrap();
                    pair.up();
                } else {
                    assert_eq!(pair.server.handle_packet(now, &buf[..n]), Ok(MEMBER));
                    pair.down();
                }
            };
            for _ in 0..bulk {
                send(pair, 1200, 443);
            }
            if seq % 20 == 0 {
                send(pair, 120, 53);
            }
        }
        seq += 1;
        pair.exchange();
        pair.now += Duration::from_millis(1);
    };
    // Warm-up: the flows are classified (bulk after a sustained rate), the paths find
    // their rates.
    for _ in 0..3_000 {
        run(&mut pair, 4);
    }
    let before = pair.carried;
    let reorder_before = pair.client.reorder().counters().clone();
    let spread_before = *pair.client.spread_counters();
    ALLOCATIONS.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    for _ in 0..2_000 {
        run(&mut pair, 4);
    }
    for _ in 0..1_000 {
        run(&mut pair, 0);
    }
    COUNTING.store(false, Ordering::Relaxed);
    let allocations = ALLOCATIONS.load(Ordering::Relaxed);
    let carried = pair.carried;
    let reorder = pair.client.reorder().counters();
    let spread = pair.client.spread_counters();
    let on_each: Vec<u64> = pair
        .paths
        .iter()
        .map(|&p| pair.client.path(p).unwrap().counters().tx_packets)
        .collect();
    eprintln!(
        "two paths: {} packets up, {} down; the gateway held {} behind gaps, refused {} \
         copies, duplicated {} of its own; packets per path up {on_each:?}",
        carried.up_packets - before.up_packets,
        carried.down_packets - before.down_packets,
        reorder.released - reorder_before.released,
        reorder.duplicates - reorder_before.duplicates,
        spread.duplicated_packets - spread_before.duplicated_packets,
    );
    // Refused: only second arrivals of the copies each end sent on purpose: copies for
    // redundancy, repairs, and re-sends of what was in flight on a path it suspected (the
    // gateway suspects its 10 ms path once in the warm-up, when startup meets 38 Mbit/s
    // that nothing slows down).
    let member = pair.server.member(MEMBER).unwrap();
    let resent: u64 = pair
        .paths
        .iter()
        .map(|&p| pair.client.path(p).unwrap().counters().resent_elsewhere)
        .chain(member.paths.iter().map(|p| p.counters().resent_elsewhere))
        .sum();
    let copies = spread.duplicated_packets
        + spread.repaired
        + member.spread.duplicated_packets
        + member.spread.repaired
        + resent;
    assert!(carried.refused <= copies, "{} > {copies}", carried.refused);
    assert!(carried.up_packets - before.up_packets >= 8_000);
    assert!(carried.down_packets - before.down_packets >= 8_000);
    assert!(on_each.iter().all(|&n| n > 1_000), "{on_each:?}");
    assert!(reorder.released > reorder_before.released, "{reorder:?}");
    assert!(
        reorder.duplicates > reorder_before.duplicates,
        "{reorder:?}"
    );
    assert!(spread.duplicated_packets > spread_before.duplicated_packets);
    assert_eq!(
        allocations, 0,
        "{allocations} allocations spreading over two paths"
    );
}
