//! Runs `session_pair` inputs through the harness without libFuzzer, one after another on
//! one pair (as the fuzzer does), printing what each one cost: time, handshake messages
//! that cost Diffie-Hellmans (in the input, and after it to bring the pair back), timer
//! wake-ups, simulated time, and which budget stopped it. For reading a crash or a slow
//! input, and for checking what a corpus spends: `cargo run --release --example replay
//! -- artifacts/session_pair/crash-*` (or `corpus/session_pair/*`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use linkpool_fuzz::session::Pair;
use linkpool_protocol::DropCounters;

/// Counts allocations, as libFuzzer does: an input that allocates more often than it
/// frees is run a second time, and checked for leaks (expensive), by the fuzzer.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static FREES: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        FREES.fetch_add(1, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn main() {
    let mut pair = Pair::new();
    let (mut n, mut total_ms, mut dh, mut with_dh) = (0u64, 0.0f64, 0u64, 0u64);
    for f in std::env::args_os().skip(1) {
        let input = std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.to_string_lossy()));
        let (gw0, px0) = {
            let (g, p) = pair.drops();
            (g.clone(), p.clone())
        };
        let (a0, f0) = (
            ALLOCS.load(Ordering::Relaxed),
            FREES.load(Ordering::Relaxed),
        );
        let t = Instant::now();
        pair.run(&input);
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let more = (ALLOCS.load(Ordering::Relaxed) - a0)
            .saturating_sub(FREES.load(Ordering::Relaxed) - f0);
        let c = pair.last_cost();
        let (gw1, px1) = pair.drops();
        let delta = |a: &DropCounters, b: &DropCounters| {
            b.iter()
                .filter(|&(r, n)| n > a.get(r))
                .map(|(r, n)| format!("{r}+{}", n - a.get(r)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let drops = if c.rebuilt {
            String::new()
        } else {
            format!(
                "; drops: gateway [{}] proxy [{}]",
                delta(&gw0, gw1),
                delta(&px0, px1)
            )
        };
        println!(
            "{}: {} bytes, {ms:.2} ms, {} handshake messages (+{} after{}), {} wake-ups, \
             {:.1} s simulated{}{}{}{}{drops}",
            f.to_string_lossy(),
            input.len(),
            c.handshakes,
            c.settle_handshakes,
            if c.rebuilt { ", pair rebuilt" } else { "" },
            c.wakeups,
            c.simulated.as_secs_f64(),
            c.stopped
                .map(|s| format!(", stopped: {s:?} budget spent"))
                .unwrap_or_default(),
            if c.late_timers > 0 {
                format!(", {} timers in the past survived a round", c.late_timers)
            } else {
                String::new()
            },
            if c.handshake_loops > 0 {
                format!(", {} handshake loops", c.handshake_loops)
            } else {
                String::new()
            },
            if more > 0 {
                format!(", {more} more allocations than frees (libFuzzer runs it twice)")
            } else {
                String::new()
            },
        );
        n += 1;
        total_ms += ms;
        let spent = c.handshakes + c.settle_handshakes;
        dh += spent;
        with_dh += u64::from(spent > 0);
    }
    if n > 0 {
        println!(
            "{n} inputs, {:.3} ms each on average, {:.2} handshake messages each, \
             {with_dh} ({:.0} %) with any",
            total_ms / n as f64,
            dh as f64 / n as f64,
            100.0 * with_dh as f64 / n as f64
        );
    }
    let (client, server) = pair.drops();
    let list = |d: &DropCounters| {
        d.iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("gateway drops: {}", list(client));
    println!("proxy drops: {}", list(server));
    let (sent, received) = pair.cookies();
    println!("cookies: {sent} sent, {received} received");
    let (gw, px) = pair.stats();
    println!(
        "gateway: {} initiations sent, {} handshakes completed, {} sessions lost; proxy: {} \
         initiations processed, {} answered (since the pair was last built)",
        gw.handshakes_sent,
        gw.handshakes_completed,
        gw.sessions_lost,
        px.handshakes_processed,
        px.handshakes
    );
}
