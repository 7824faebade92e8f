//! Small pieces both daemons' event loops are made of.

use std::io;
use std::net::SocketAddr;
use std::task::Poll;
use std::time::Instant;

use tokio::io::ReadBuf;
use tokio::net::UdpSocket;

/// Receives one datagram from whichever of `sockets` has one first, into `buf`, without
/// allocating. `sockets(i)` gives socket `i` of `count` (or `None` for a slot without one).
/// Returns the socket's index with the length and source, or its error.
pub async fn recv_any<'a>(
    count: usize,
    sockets: impl Fn(usize) -> Option<&'a UdpSocket>,
    buf: &mut [u8],
) -> (usize, io::Result<(usize, SocketAddr)>) {
    std::future::poll_fn(|cx| {
        for i in 0..count {
            let Some(socket) = sockets(i) else { continue };
            let mut rb = ReadBuf::new(buf);
            match socket.poll_recv_from(cx, &mut rb) {
                Poll::Ready(Ok(from)) => return Poll::Ready((i, Ok((rb.filled().len(), from)))),
                Poll::Ready(Err(e)) => return Poll::Ready((i, Err(e))),
                Poll::Pending => {}
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
