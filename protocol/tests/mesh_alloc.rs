//! Mesh hellos allocate nothing: once two gateways know each other, their discovery and
//! neighbour hellos both ways (`poll_hello` → `handle_hello`), the timers and the events
//! make no heap allocation, and neither do refused hellos (replays, forgeries, garbage).
//! A router says hello to 20 neighbours four times a second for as long as it runs.
//!
//! A binary of its own, with one test, so that the counting allocator sees nothing else;
//! it counts on the test's own thread only (libtest's main thread allocates as it likes).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use linkpool_protocol::keys::SecretKey;
use linkpool_protocol::mesh::{
    CredentialIssuer, DEFAULT_CREDENTIAL_LIFETIME_S, HelloDestination, MeshConfig, Neighbours,
    Offer,
};
use linkpool_protocol::wire::MAX_DATAGRAM;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

fn counted() {
    // `try_with`: a thread being torn down has no thread-locals left.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
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

const T0: u64 = 1_800_000_000;

fn table(issuer: &CredentialIssuer, member: u32, now: Instant) -> Neighbours {
    let key = SecretKey::from_bytes([member as u8; 32]);
    let credential = issuer.issue(member, &key.public_key(), T0, DEFAULT_CREDENTIAL_LIFETIME_S);
    Neighbours::new(
        MeshConfig {
            static_key: key,
            credential,
            issuers: vec![issuer.issuer_key()],
            relay_port: 7118,
            offer: Offer::default(),
            hello_counter_start: T0 * 1_000_000,
        },
        now,
    )
    .unwrap()
}

#[test]
fn hellos_allocate_nothing() {
    let issuer = CredentialIssuer::from_proxy_key(&SecretKey::from_bytes([0x50; 32]));
    let start = Instant::now();
    let mut nodes = [table(&issuer, 1, start), table(&issuer, 2, start)];
    let addrs: [SocketAddr; 2] = [
        "10.9.0.1:7117".parse().unwrap(),
        "10.9.0.2:7117".parse().unwrap(),
    ];
    let mut buf = [0u8; MAX_DATAGRAM];
    let mut last = [0u8; MAX_DATAGRAM];
    let mut last_len = 0;
    let mut refused = 0u64;
    let mut hellos = 0u64;
    // 2 s to meet (credentials checked, pair keys derived), then 60 s counted.
    for step in 0..62_000u64 {
        let now = start + Duration::from_millis(step);
        let proxy_now = T0 + step / 1000;
        if step == 2000 {
            assert!(nodes.iter().all(|n| n.neighbours().all(|e| e.usable())));
            COUNTING.set(true);
        }
        for i in 0..2 {
            if nodes[i].poll_timeout().is_some_and(|t| t <= now) {
                nodes[i].handle_timeout(now, proxy_now);
            }
            while let Some(t) = nodes[i].poll_hello(now, proxy_now, &mut buf) {
                let (from, to) = match t.destination {
                    HelloDestination::Mesh => (addrs[i], addrs[1 - i]),
                    HelloDestination::Neighbour { remote, local, .. } => (local, remote),
                };
                nodes[1 - i]
                    .handle_hello(now, proxy_now, from, to, &buf[..t.len])
                    .unwrap();
                hellos += 1;
                if hellos % 5 == 0 {
                    // Refusals are on the hot path too: a replay, a forgery, garbage.
                    for bad in [&last[..last_len], &buf[..t.len - 1], &[2u8, 9, 0][..]] {
                        if nodes[1 - i]
                            .handle_hello(now, proxy_now, from, to, bad)
                            .is_err()
                        {
                            refused += 1;
                        }
                    }
                    let mut forged = buf;
                    forged[t.len - 1] ^= 1;
                    assert!(
                        nodes[1 - i]
                            .handle_hello(now, proxy_now, from, to, &forged[..t.len])
                            .is_err()
                    );
                }
                last[..t.len].copy_from_slice(&buf[..t.len]);
                last_len = t.len;
            }
            while nodes[i].poll_event().is_some() {}
        }
    }
    COUNTING.set(false);
    let sent: u64 = nodes.iter().map(|n| n.stats().neighbour_hellos_sent).sum();
    assert!(sent > 400, "{sent} neighbour hellos");
    assert!(refused > 100, "{refused} refused");
    assert_eq!(ALLOCATIONS.load(Ordering::Relaxed), 0);
}
