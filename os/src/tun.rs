//! TUN devices: layer-3 packets in and out of the kernel, no packet-info header.

use crate::cmd::{OsError, ip};
use nix::libc;
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt as _;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Longest interface name the kernel accepts (`IFNAMSIZ` minus the NUL).
pub const MAX_IFNAME_LEN: usize = 15;

// TUNSETIFF from <linux/if_tun.h>: _IOW('T', 202, int), taking a struct ifreq.
nix::ioctl_write_ptr_bad!(
    /// TUNSETIFF.
    tun_set_iff,
    nix::request_code_write!(b'T', 202, std::mem::size_of::<libc::c_int>()),
    libc::ifreq
);

/// Checks an interface name the way the kernel will (`dev_valid_name`).
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("interface name is empty".into());
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err(format!(
            "interface name `{name}` is longer than {MAX_IFNAME_LEN} characters"
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("`{name}` is not an interface name"));
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(format!(
            "interface name `{name}` contains `/`, `:`, a space or a control character"
        ));
    }
    Ok(())
}

/// A TUN device (IFF_TUN | IFF_NO_PI) opened non-blocking. The device exists as long as
/// this value lives: dropping it closes the descriptor and the kernel removes the device.
#[derive(Debug)]
pub struct Tun {
    file: File,
    name: String,
}

impl Tun {
    /// Creates the TUN device `name` in the calling thread's network namespace (or attaches
    /// to an existing persistent one of that name).
    pub fn create(name: &str) -> Result<Tun, OsError> {
        check_ifname(name).map_err(|m| OsError::io(m, io::ErrorKind::InvalidInput.into()))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| OsError::io("opening /dev/net/tun (is the tun module loaded?)", e))?;
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: the descriptor is an open /dev/net/tun and `req` is a valid ifreq.
        unsafe { tun_set_iff(file.as_raw_fd(), &req) }
            .map_err(|e| OsError::io(format!("creating TUN device `{name}`"), e.into()))?;
        let len = req
            .ifr_name
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(req.ifr_name.len());
        let actual: Vec<u8> = req.ifr_name[..len].iter().map(|&c| c as u8).collect();
        Ok(Tun {
            file,
            name: String::from_utf8_lossy(&actual).into_owned(),
        })
    }

    /// The device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets the device MTU.
    pub fn set_mtu(&self, mtu: u16) -> Result<(), OsError> {
        ip(&["link", "set", "dev", &self.name, "mtu", &mtu.to_string()]).map(drop)
    }

    /// Adds (or keeps) an address with its prefix length. A prefix shorter than the host
    /// length also routes that prefix to the device.
    pub fn add_address(&self, addr: IpAddr, prefix_len: u8) -> Result<(), OsError> {
        let cidr = format!("{addr}/{prefix_len}");
        let mut args = vec![
            if addr.is_ipv6() { "-6" } else { "-4" },
            "addr",
            "replace",
            &cidr,
            "dev",
            &self.name,
        ];
        if addr.is_ipv6() {
            // TUN devices are NOARP, so the kernel skips DAD anyway; say it for older kernels.
            args.push("nodad");
        }
        ip(&args).map(drop)
    }

    /// Brings the link up.
    pub fn set_up(&self) -> Result<(), OsError> {
        ip(&["link", "set", "dev", &self.name, "up"]).map(drop)
    }

    /// Keeps link-local chatter out of the tunnel, where it could only be dropped: no IPv6
    /// link-local address (so no router solicitations from fe80::) and no multicast flag
    /// (so mDNS and routing daemons leave the device alone). The kernel still sends MLD
    /// reports; the daemons skip multicast. Must come before addresses and link up.
    pub fn silence_link_local(&self) -> Result<(), OsError> {
        let addr_gen_mode = format!("/proc/sys/net/ipv6/conf/{}/addr_gen_mode", self.name);
        // Absent when IPv6 is off: then there is nothing to silence.
        if std::path::Path::new(&addr_gen_mode).exists() {
            std::fs::write(&addr_gen_mode, "1")
                .map_err(|e| OsError::io(format!("writing {addr_gen_mode}"), e))?;
        }
        ip(&["link", "set", "dev", &self.name, "multicast", "off"]).map(drop)
    }

    /// Sets the MTU, adds the addresses and brings the link up, in the order the kernel
    /// needs (an IPv6 address needs an MTU of at least 1280).
    pub fn configure(&self, mtu: u16, addresses: &[(IpAddr, u8)]) -> Result<(), OsError> {
        self.silence_link_local()?;
        self.set_mtu(mtu)?;
        for &(a, p) in addresses {
            self.add_address(a, p)?;
        }
        self.set_up()
    }

    /// Reads one packet into `buf`; `WouldBlock` when none is queued.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Writes one packet; `WouldBlock` when the device queue is full.
    pub fn write(&self, packet: &[u8]) -> io::Result<usize> {
        (&self.file).write(packet)
    }
}

impl AsRawFd for Tun {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl AsFd for Tun {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// A [`Tun`] registered with the tokio reactor.
#[derive(Debug)]
pub struct AsyncTun {
    inner: AsyncFd<Tun>,
}

impl AsyncTun {
    /// Registers the device with the current tokio runtime.
    pub fn new(tun: Tun) -> io::Result<AsyncTun> {
        // SAFETY: `Tun` owns its descriptor and never closes or replaces it while alive.
        let inner = unsafe {
            AsyncFd::register_with_interest(tun, Interest::READABLE | Interest::WRITABLE)?
        };
        Ok(AsyncTun { inner })
    }

    /// The device.
    pub fn get_ref(&self) -> &Tun {
        self.inner.get_ref()
    }

    /// Waits for and reads one packet into `buf`.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner
            .async_io(Interest::READABLE, |tun| tun.read(buf))
            .await
    }

    /// Reads one packet if one is queued (for draining in batches).
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.get_ref().read(buf)
    }

    /// Writes one packet, waiting while the device queue is full.
    pub async fn send(&self, packet: &[u8]) -> io::Result<usize> {
        self.inner
            .async_io(Interest::WRITABLE, |tun| tun.write(packet))
            .await
    }
}
