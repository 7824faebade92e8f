//! What the tests over the real cores share: durations, and a WAN with 50 ms of queue.
#![allow(dead_code)]

use std::time::Duration;

use linkpool_sim::LinkParams;

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// `mbit` Mbit/s and `delay_ms` each way, 50 ms of queue.
pub fn wan(mbit: u64, delay_ms: u64) -> LinkParams {
    LinkParams {
        rate_bps: Some(mbit * 1_000_000),
        delay: ms(delay_ms),
        queue: ms(50),
        ..Default::default()
    }
}
