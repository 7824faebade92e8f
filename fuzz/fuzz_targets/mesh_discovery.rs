//! `mesh::Neighbours::handle_hello` with discovery hellos, at gateway B of a pair that met
//! (`src/mesh.rs`): no panic; a refusal is counted once, under its reason; a hello is
//! taken only with an unexpired credential the co-op's issuer signed, after which its
//! member is in B's table, not usable (a discovery hello proves nothing about its
//! sender) unless it already was; the table stays bounded; no timer in the past survives.
//!
//! First byte even: the rest is a datagram from the mesh, from A's address. Odd: the rest
//! gives a credential's fields (member u32, static key 32 bytes, issued u16 seconds
//! around the proxy's now, lifetime u16, then u16: a bit to flip, none from 960 up),
//! issued by the co-op and sent in a discovery hello from an address of its own.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use linkpool_fuzz::mesh::{self, T0, addresses, issuer};
use linkpool_protocol::keys::{PublicKey, SecretKey};
use linkpool_protocol::mesh::{CREDENTIAL_LEN, Credential, MAX_NEIGHBOURS};
use linkpool_protocol::wire::{self, MAX_DATAGRAM, MESH_DISCOVERY_LEN, Message};

fn array<const N: usize>(b: &[u8]) -> [u8; N] {
    b[..N].try_into().expect("length")
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mesh::Met { start, mut b, .. } = mesh::met();
    let (a_addr, b_addr) = addresses();
    let (now, proxy_now) = (start, T0);
    let a_usable = b.neighbours().next().is_some_and(|n| n.usable());
    let (datagram, from, flipped) = if mode % 2 == 0 {
        (rest.to_vec(), a_addr, false)
    } else {
        let mut f = [0u8; 42];
        let n = rest.len().min(f.len());
        f[..n].copy_from_slice(&rest[..n]);
        let member = u32::from_be_bytes(array(&f[0..]));
        let public = PublicKey(array(&f[4..]));
        let issued = T0 - 0x8000 + u64::from(u16::from_be_bytes(array(&f[36..])));
        let lifetime = u64::from(u16::from_be_bytes(array(&f[38..])));
        let flip = usize::from(u16::from_be_bytes(array(&f[40..])));
        let c = issuer().issue(member, &public, issued, lifetime);
        let mut d = vec![0u8; MESH_DISCOVERY_LEN];
        wire::write_mesh_discovery(7118, &mesh::OFFER, c.as_bytes(), None, &mut d);
        if flip < CREDENTIAL_LEN * 8 {
            d[16 + flip / 8] ^= 1 << (flip % 8);
        }
        let from = SocketAddr::new([192, 0, 2, 77].into(), 7117);
        (d, from, flip < CREDENTIAL_LEN * 8)
    };
    let before = b.drops().total();
    let r = b.handle_hello(now, proxy_now, from, b_addr, &datagram);
    assert_eq!(b.drops().total() - before, u64::from(r.is_err()), "{r:?}");
    if let Err(reason) = r {
        assert!(b.drops().get(reason) > 0);
    } else {
        assert!(!flipped, "a tampered credential was taken");
        let Ok(Message::MeshDiscovery(d)) = Message::parse(&datagram) else {
            panic!("taken, and not a discovery hello: nobody can forge a neighbour hello");
        };
        let c = Credential::from_bytes(d.credential()).expect("taken, so well formed");
        issuer().issuer_key().verify(&c).expect("taken, so signed");
        assert!(proxy_now < c.expires_at(), "taken, so unexpired");
        let n = b.neighbour(c.member()).expect("taken, so a neighbour");
        assert_eq!(n.credential(), &c);
        // A usable neighbour stays so through a new credential for the same key.
        let a_key = SecretKey::from_bytes(mesh::A.1).public_key();
        let was_a = c.member() == mesh::A.0 && c.public_key() == a_key;
        assert_eq!(n.usable(), was_a && a_usable);
    }
    assert!(b.neighbours().count() <= MAX_NEIGHBOURS);
    // Whatever it answers goes out, and then no timer is due.
    b.handle_timeout(now, proxy_now);
    let mut buf = [0u8; MAX_DATAGRAM];
    let mut sent = 0;
    while b.poll_hello(now, proxy_now, &mut buf).is_some() {
        sent += 1;
        assert!(sent <= 3 * MAX_NEIGHBOURS, "hellos never stop");
    }
    assert!(
        b.poll_timeout().is_none_or(|t| t > now),
        "a timer in the past"
    );
});
