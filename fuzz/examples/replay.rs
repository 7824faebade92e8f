//! Runs `session_pair` inputs through the harness without libFuzzer, one after another on
//! one pair (as the fuzzer does), printing each one's time and handshakes: for reading a
//! crash or a slow input. `cargo run --release --example replay FILE...`

use std::time::Instant;

use linkpool_fuzz::session::Pair;

fn main() {
    let mut pair = Pair::new();
    for f in std::env::args_os().skip(1) {
        let input = std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.to_string_lossy()));
        let (c0, s0) = pair.handshakes();
        let t = Instant::now();
        pair.run(&input);
        let (c1, s1) = pair.handshakes();
        println!(
            "{}: {} bytes, {:.2} ms, {} initiations sent, {} answered",
            f.to_string_lossy(),
            input.len(),
            t.elapsed().as_secs_f64() * 1e3,
            c1 - c0,
            s1 - s0
        );
    }
    let (client, server) = pair.drops();
    let list = |d: &linkpool_protocol::DropCounters| {
        d.iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("gateway drops: {}", list(client));
    println!("proxy drops: {}", list(server));
    let (sent, received) = pair.cookies();
    println!("cookies: {sent} sent, {received} received");
}
