//! Just enough of IPv4/IPv6 headers to check a decrypted packet and route it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::DropReason;

/// Checks that `packet` is a whole IPv4 or IPv6 packet: version, header and total length
/// agree with the buffer. A peer that passes the AEAD can still send garbage; the TUN and
/// the kernel must only get well-formed packets.
pub fn check(packet: &[u8]) -> Result<(), DropReason> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => {
            if packet.len() < 20 {
                return Err(DropReason::BadInnerPacket);
            }
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
            if ihl < 20 || total < ihl || total != packet.len() {
                return Err(DropReason::BadInnerPacket);
            }
            Ok(())
        }
        Some(6) => {
            if packet.len() < 40 {
                return Err(DropReason::BadInnerPacket);
            }
            let payload = usize::from(u16::from_be_bytes([packet[4], packet[5]]));
            if payload + 40 != packet.len() {
                return Err(DropReason::BadInnerPacket);
            }
            Ok(())
        }
        _ => Err(DropReason::BadInnerPacket),
    }
}

/// Source address of a packet that passed [`check`].
pub fn source(packet: &[u8]) -> Option<IpAddr> {
    address(packet, 12, 8)
}

/// Destination address of a packet that passed [`check`].
pub fn destination(packet: &[u8]) -> Option<IpAddr> {
    address(packet, 16, 24)
}

fn address(packet: &[u8], v4_at: usize, v6_at: usize) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => {
            let b: [u8; 4] = packet.get(v4_at..v4_at + 4)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        }
        6 => {
            let b: [u8; 16] = packet.get(v6_at..v6_at + 16)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal IPv4/UDP packet of `len` bytes from `src` to `dst`.
    pub(crate) fn ipv4(len: usize, src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        for (i, b) in p[20..].iter_mut().enumerate() {
            *b = i as u8;
        }
        p
    }

    #[test]
    fn checks_and_addresses() {
        let p = ipv4(60, [10, 0, 0, 1], [192, 0, 2, 9]);
        check(&p).unwrap();
        assert_eq!(destination(&p), Some("192.0.2.9".parse().unwrap()));
        assert_eq!(source(&p), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(check(&p[..59]), Err(DropReason::BadInnerPacket));
        let mut v6 = vec![0u8; 48];
        v6[0] = 0x60;
        v6[5] = 8;
        v6[39] = 1;
        check(&v6).unwrap();
        assert_eq!(destination(&v6), Some("::1".parse().unwrap()));
        assert_eq!(check(&[]), Err(DropReason::BadInnerPacket));
        assert_eq!(check(&[0x45; 19]), Err(DropReason::BadInnerPacket));
    }
}
