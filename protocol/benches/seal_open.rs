//! Throughput of the data path in one process: a LAN packet into the gateway's
//! `handle_packet`, out of its `poll_transmit` sealed, into the proxy's `handle_datagram`
//! and out of its `poll_packet` (upstream), and back (downstream), with the acks that go
//! with them, for both ciphers and three packet sizes. Built with the release
//! profile, the one routers get (opt-level "z"). Prints figures; asserts nothing.
//!
//!   cargo bench -p linkpool-protocol
//!   cargo bench -p linkpool-protocol -- --seconds 5

#[path = "../tests/common/pair.rs"]
mod pair;

use std::time::{Duration, Instant};

use linkpool_protocol::CipherSuite;
use linkpool_protocol::wire::MAX_DATAGRAM;
use pair::{MEMBER, Pair, packet};

/// Packets per timed round; the clock is read once per round.
const ROUND: u32 = 1000;

/// Sends `size`-byte packets through in one direction for about `budget`; returns
/// packets per second.
fn measure(pair: &mut Pair, size: usize, upstream: bool, budget: Duration) -> f64 {
    let mut buf = [0u8; MAX_DATAGRAM];
    let started = Instant::now();
    let mut packets = 0u64;
    let mut seq = 0u32;
    while started.elapsed() < budget {
        for _ in 0..ROUND {
            let now = pair.now;
            seq = seq.wrapping_add(1);
            let n = packet(&mut buf, size, upstream, seq);
            let before = pair.carried;
            let delivered = if upstream {
                pair.client.handle_packet(now, &buf[..n]).unwrap();
                pair.up();
                pair.carried.up_packets - before.up_packets
            } else {
                assert_eq!(pair.server.handle_packet(now, &buf[..n]), Ok(MEMBER));
                pair.down();
                pair.carried.down_packets - before.down_packets
            };
            assert_eq!(delivered, 1, "packet {seq} not delivered");
        }
        packets += u64::from(ROUND);
        // A millisecond of protocol time per round keeps timers (acks, pings, receipts)
        // running.
        pair.now += Duration::from_millis(1);
        pair.exchange();
    }
    packets as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let mut seconds = 1.0;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--seconds" {
            seconds = args.next().and_then(|s| s.parse().ok()).unwrap_or(seconds);
        }
    }
    let budget = Duration::from_secs_f64(seconds);
    println!(
        "packet in, sealed, opened, packet out, on one core, {seconds} s per figure (release profile)"
    );
    println!(
        "  {:<18} {:>6} {:>10} {:>14} {:>10} {:>14}",
        "cipher", "bytes", "up kpps", "up Mbit/s", "down kpps", "down Mbit/s"
    );
    for suite in [CipherSuite::Aes256Gcm, CipherSuite::ChaCha20Poly1305] {
        let mut pair = Pair::connected(suite);
        for size in [64, 576, 1392] {
            let up = measure(&mut pair, size, true, budget);
            let down = measure(&mut pair, size, false, budget);
            let mbit = |pps: f64| pps * size as f64 * 8.0 / 1e6;
            println!(
                "  {:<18} {size:>6} {:>10.1} {:>14.0} {:>10.1} {:>14.0}",
                format!("{suite:?}"),
                up / 1e3,
                mbit(up),
                down / 1e3,
                mbit(down)
            );
        }
    }
}
