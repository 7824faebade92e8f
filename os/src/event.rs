//! Small pieces both daemons' event loops are made of.

use std::task::Poll;
use std::time::Instant;

use tokio::net::UdpSocket;

/// Waits until one of `sockets` has a datagram and returns its index. `sockets(i)` gives
/// socket `i` of `count` (or `None` for a slot without one). The search starts at `first`
/// and wraps, so a caller that moves `first` on after each turn lets no busy socket
/// starve the others. The datagram is then read with the socket's `try_*` calls.
pub async fn readable_any<'a>(
    count: usize,
    first: usize,
    sockets: impl Fn(usize) -> Option<&'a UdpSocket>,
) -> usize {
    std::future::poll_fn(|cx| {
        for k in 0..count {
            let i = (first + k) % count;
            let Some(socket) = sockets(i) else { continue };
            if socket.poll_recv_ready(cx).is_ready() {
                return Poll::Ready(i);
            }
        }
        Poll::Pending
    })
    .await
}

/// Sleeps until `t`, or forever when there is nothing to wake up for (a protocol core's
/// `poll_timeout()` of `None`).
pub async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
