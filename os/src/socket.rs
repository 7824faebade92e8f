//! UDP sockets: uplink sockets bound to one WAN device and marked so they never enter the
//! tunnel, and the proxy's listening sockets.

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use tokio::net::UdpSocket;

/// Socket buffer size we ask for: a few hundred full-size datagrams, so bursts from the
/// TUN or the network are not dropped while the event loop is busy.
pub const SOCKET_BUFFER_BYTES: usize = 4 << 20;

fn set_buffers(sock: &Socket) {
    // As root, the FORCE variants pass over net.core.[rw]mem_max; fall back otherwise.
    // A smaller buffer is not fatal, so errors are ignored.
    let fd = std::os::fd::AsRawFd::as_raw_fd(sock);
    for (force, plain) in [
        (nix::libc::SO_RCVBUFFORCE, nix::libc::SO_RCVBUF),
        (nix::libc::SO_SNDBUFFORCE, nix::libc::SO_SNDBUF),
    ] {
        let size = SOCKET_BUFFER_BYTES as nix::libc::c_int;
        let set = |opt| {
            // SAFETY: valid socket descriptor, option value is a c_int of the right size.
            unsafe {
                nix::libc::setsockopt(
                    fd,
                    nix::libc::SOL_SOCKET,
                    opt,
                    (&size as *const nix::libc::c_int).cast(),
                    std::mem::size_of::<nix::libc::c_int>() as nix::libc::socklen_t,
                )
            }
        };
        if set(force) != 0 {
            set(plain);
        }
    }
}

fn into_tokio(sock: Socket) -> io::Result<UdpSocket> {
    sock.set_nonblocking(true)?;
    UdpSocket::from_std(sock.into())
}

/// Opens an uplink socket: bound to `device` (SO_BINDTODEVICE) and marked with `fwmark`
/// (SO_MARK), on an ephemeral port. Dual-stack (`[::]`, IPv4 peers appear as
/// `::ffff:a.b.c.d`; Linux also accepts plain IPv4 destinations on it) when the kernel has
/// IPv6, IPv4-only otherwise. Needs CAP_NET_ADMIN for the mark. Must be called inside a
/// tokio runtime.
pub fn uplink_socket(device: Option<&str>, fwmark: u32) -> io::Result<UdpSocket> {
    let sock = match Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)) {
        Ok(s) => {
            s.set_only_v6(false)?;
            s
        }
        Err(e) if e.raw_os_error() == Some(nix::libc::EAFNOSUPPORT) => {
            Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?
        }
        Err(e) => return Err(e),
    };
    if let Some(dev) = device {
        sock.bind_device(Some(dev.as_bytes()))
            .map_err(|e| io::Error::new(e.kind(), format!("binding to device `{dev}`: {e}")))?;
    }
    if fwmark != 0 {
        sock.set_mark(fwmark)
            .map_err(|e| io::Error::new(e.kind(), format!("setting SO_MARK {fwmark:#x}: {e}")))?;
    }
    set_buffers(&sock);
    let any: SocketAddr = if sock.domain()? == Domain::IPV6 {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    sock.bind(&any.into())?;
    into_tokio(sock)
}

/// Whether `socket` is still bound to a live device named `device`. A socket stays bound
/// to the device's index: once the device is gone (a PPPoE or LTE reconnection deletes it
/// and makes a new one of the same name) it can never send again and must be reopened.
pub fn bound_to(socket: &UdpSocket, device: &str) -> bool {
    // The kernel answers with the name of the bound index, or ENODEV once it is gone.
    matches!(SockRef::from(socket).device(), Ok(Some(name)) if name == device.as_bytes())
}

/// Opens a listening socket on `addr`. An IPv6 address listens on IPv6 only, so that
/// `0.0.0.0:P` and `[::]:P` can both be listened on. Must be called inside a tokio runtime.
pub fn listen_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    set_buffers(&sock);
    sock.bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("listening on {addr}: {e}")))?;
    into_tokio(sock)
}
