//! UDP sockets: uplink sockets bound to one WAN device and marked so they never enter the
//! tunnel, and the proxy's listening sockets.

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
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

/// Opens a mesh socket: IPv4, bound to `device` and to `port` on every address (so that
/// broadcasts on the device reach it), broadcasts allowed, marked with `fwmark` so what it
/// relays never enters the tunnel. Must be called inside a tokio runtime.
pub fn mesh_socket(device: &str, port: u16, fwmark: u32) -> io::Result<UdpSocket> {
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    sock.bind_device(Some(device.as_bytes()))
        .map_err(|e| io::Error::new(e.kind(), format!("binding to device `{device}`: {e}")))?;
    if fwmark != 0 {
        sock.set_mark(fwmark)
            .map_err(|e| io::Error::new(e.kind(), format!("setting SO_MARK {fwmark:#x}: {e}")))?;
    }
    sock.set_broadcast(true)?;
    // One socket per mesh device, all on the same port.
    sock.set_reuse_address(true)?;
    set_buffers(&sock);
    let any: SocketAddr = (Ipv4Addr::UNSPECIFIED, port).into();
    sock.bind(&any.into()).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("listening on port {port} of `{device}`: {e}"),
        )
    })?;
    into_tokio(sock)
}

/// Opens a mesh socket for a device with an IPv6 link-local address only: IPv6 only
/// (`IPV6_V6ONLY`), bound to `device` and to `[::]:port` (so that both datagrams to
/// `group` and unicast to our link-local address reach it), a member of the link-local
/// multicast `group` on `device`, which is also where its multicast goes (hop limit 1,
/// the default), without our own multicast looped back, marked with `fwmark` so what it
/// relays never enters the tunnel. Must be called inside a tokio runtime.
pub fn mesh_socket_v6(
    device: &str,
    port: u16,
    group: Ipv6Addr,
    fwmark: u32,
) -> io::Result<UdpSocket> {
    let index = ifindex(device)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no device `{device}`")))?;
    let sock = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_only_v6(true)?;
    sock.bind_device(Some(device.as_bytes()))
        .map_err(|e| io::Error::new(e.kind(), format!("binding to device `{device}`: {e}")))?;
    if fwmark != 0 {
        sock.set_mark(fwmark)
            .map_err(|e| io::Error::new(e.kind(), format!("setting SO_MARK {fwmark:#x}: {e}")))?;
    }
    sock.set_multicast_if_v6(index)?;
    sock.set_multicast_loop_v6(false)?;
    sock.join_multicast_v6(&group, index)
        .map_err(|e| io::Error::new(e.kind(), format!("joining {group} on `{device}`: {e}")))?;
    // One socket per mesh device, all on the same port.
    sock.set_reuse_address(true)?;
    set_buffers(&sock);
    let any: SocketAddr = (Ipv6Addr::UNSPECIFIED, port).into();
    sock.bind(&any.into()).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("listening on port {port} of `{device}` (IPv6): {e}"),
        )
    })?;
    into_tokio(sock)
}

/// The index of network device `device` (an IPv6 link-local address's scope id there).
pub fn ifindex(device: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(device)
        .ok()
        .filter(|&i| i != 0)
}

/// Whether `ip` is an IPv6 link-local unicast address (`fe80::/10`).
pub fn is_link_local_v6(ip: &Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

/// The first IPv6 link-local address (`fe80::/10`) of `device`.
pub fn ipv6_link_local_of(device: &str) -> Option<Ipv6Addr> {
    nix::ifaddrs::getifaddrs().ok()?.find_map(|a| {
        if a.interface_name != device {
            return None;
        }
        let ip = a.address?.as_sockaddr_in6()?.ip();
        is_link_local_v6(&ip).then_some(ip)
    })
}

/// The first IPv4 address of `device` and its prefix length.
pub fn ipv4_of(device: &str) -> Option<(Ipv4Addr, u8)> {
    nix::ifaddrs::getifaddrs().ok()?.find_map(|a| {
        if a.interface_name != device {
            return None;
        }
        let ip = a.address?.as_sockaddr_in()?.ip();
        let mask = a.netmask.and_then(|m| m.as_sockaddr_in().map(|m| m.ip()));
        Some((ip, mask.map_or(32, |m| u32::from(m).count_ones() as u8)))
    })
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
    // Each datagram's destination address comes with it, so that answers leave from the
    // address the member reached (a multi-homed proxy, or a wildcard listen).
    let fd = std::os::fd::AsFd::as_fd(&sock);
    if addr.is_ipv6() {
        nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::Ipv6RecvPacketInfo, &true)
    } else {
        nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::Ipv4PacketInfo, &true)
    }
    .map_err(|e| io::Error::other(format!("listening on {addr}: {e}")))?;
    sock.bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("listening on {addr}: {e}")))?;
    into_tokio(sock)
}

/// Receives a datagram without blocking; returns its length, its source and the local
/// address it was sent to (from `IP_PKTINFO`/`IPV6_PKTINFO`, on sockets from
/// [`listen_socket`]; `None` elsewhere).
pub fn try_recv_with_destination(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg};
    use std::os::fd::AsRawFd;
    socket.try_io(tokio::io::Interest::READABLE, || {
        let mut cmsg = nix::cmsg_space!(nix::libc::in6_pktinfo);
        let mut iov = [io::IoSliceMut::new(buf)];
        let msg = recvmsg::<SockaddrStorage>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_DONTWAIT,
        )
        .map_err(io::Error::from)?;
        let from = msg
            .address
            .and_then(|a| {
                a.as_sockaddr_in()
                    .map(|v4| SocketAddr::from(std::net::SocketAddrV4::from(*v4)))
                    .or_else(|| {
                        a.as_sockaddr_in6()
                            .map(|v6| SocketAddr::from(std::net::SocketAddrV6::from(*v6)))
                    })
            })
            .ok_or_else(|| io::Error::other("datagram without a source address"))?;
        let mut local = None;
        for c in msg.cmsgs().map_err(io::Error::from)? {
            match c {
                ControlMessageOwned::Ipv4PacketInfo(i) => {
                    local = Some(IpAddr::from(u32::from_be(i.ipi_addr.s_addr).to_be_bytes()))
                }
                ControlMessageOwned::Ipv6PacketInfo(i) => {
                    local = Some(IpAddr::from(i.ipi6_addr.s6_addr))
                }
                _ => {}
            }
        }
        Ok((msg.bytes, from, local))
    })
}

/// Sends `buf` to `to` from the local address `from` (when given, with
/// `IP_PKTINFO`/`IPV6_PKTINFO`; the kernel picks the route's source otherwise).
pub fn try_send_from(
    socket: &UdpSocket,
    buf: &[u8],
    to: SocketAddr,
    from: Option<IpAddr>,
) -> io::Result<usize> {
    use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrStorage, sendmsg};
    use std::os::fd::AsRawFd;
    let Some(from) = from else {
        return socket.try_send_to(buf, to);
    };
    socket.try_io(tokio::io::Interest::WRITABLE, || {
        let iov = [io::IoSlice::new(buf)];
        let dest = SockaddrStorage::from(to);
        let sent = match from {
            IpAddr::V4(a) => {
                let info = nix::libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: nix::libc::in_addr {
                        s_addr: u32::from(a).to_be(),
                    },
                    ipi_addr: nix::libc::in_addr { s_addr: 0 },
                };
                sendmsg(
                    socket.as_raw_fd(),
                    &iov,
                    &[ControlMessage::Ipv4PacketInfo(&info)],
                    MsgFlags::MSG_DONTWAIT,
                    Some(&dest),
                )
            }
            IpAddr::V6(a) => {
                let info = nix::libc::in6_pktinfo {
                    ipi6_addr: nix::libc::in6_addr {
                        s6_addr: a.octets(),
                    },
                    ipi6_ifindex: 0,
                };
                sendmsg(
                    socket.as_raw_fd(),
                    &iov,
                    &[ControlMessage::Ipv6PacketInfo(&info)],
                    MsgFlags::MSG_DONTWAIT,
                    Some(&dest),
                )
            }
        };
        sent.map_err(io::Error::from)
    })
}
