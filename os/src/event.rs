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

/// Whether a timer due at `wake` fired so late that the daemon was not running (a busy
/// CPU) for a while. Datagrams that came meanwhile are read before the core's timers run:
/// a timer would otherwise judge a path by a silence that was only ours.
pub fn woke_late(wake: Option<Instant>) -> bool {
    const LATE: std::time::Duration = std::time::Duration::from_millis(5);
    wake.is_some_and(|w| Instant::now() > w + LATE)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two sockets that both always have datagrams: each turn's search starts after the
    /// socket served last, so both are served in turn (a search from socket 0 every time
    /// served only socket 0).
    #[test]
    fn busy_sockets_take_turns() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let bind = || std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let (a, b, sender) = (bind(), bind(), bind());
            for s in [&a, &b] {
                s.set_nonblocking(true).unwrap();
                for _ in 0..8 {
                    sender.send_to(b"x", s.local_addr().unwrap()).unwrap();
                }
            }
            let sockets = [
                UdpSocket::from_std(a).unwrap(),
                UdpSocket::from_std(b).unwrap(),
            ];
            let mut served = Vec::new();
            let mut first = 0;
            let mut buf = [0u8; 16];
            for _ in 0..6 {
                let i = readable_any(2, first, |i| Some(&sockets[i])).await;
                sockets[i].try_recv_from(&mut buf).unwrap();
                served.push(i);
                first = (i + 1) % 2;
            }
            assert_eq!(served, [0, 1, 0, 1, 0, 1]);
        });
    }
}
