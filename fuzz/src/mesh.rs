//! Fixed mesh identities for the mesh targets: one co-op issuer, and gateways A and B that
//! have met (each holds the other's credential and has accepted its neighbour hellos).
//!
//! Meeting costs four ed25519 verifications and two X25519, milliseconds under the
//! fuzzer's instrumentation: the pair meets once per process, and every input starts from
//! a clone of it.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Instant;

use linkpool_protocol::keys::SecretKey;
use linkpool_protocol::mesh::{
    CredentialIssuer, DEFAULT_CREDENTIAL_LIFETIME_S, HelloDestination, MeshConfig, Neighbours,
    Offer,
};
use linkpool_protocol::wire::MAX_DATAGRAM;

/// The proxy's clock when the pair meets, in seconds.
pub const T0: u64 = 1_800_000_000;
/// The proxy's static secret (its issuer key is derived from it).
pub const PROXY_KEY: [u8; 32] = [0x50; 32];
/// Gateway A: member id and static secret.
pub const A: (u32, [u8; 32]) = (7, [0xa1; 32]);
/// Gateway B.
pub const B: (u32, [u8; 32]) = (9, [0xb2; 32]);
/// What both offer.
pub const OFFER: Offer = Offer {
    sharing: true,
    up_kbit: 20_000,
    down_kbit: 50_000,
};

/// A's and B's addresses on the mesh.
pub fn addresses() -> (SocketAddr, SocketAddr) {
    (
        "192.0.2.1:7117".parse().expect("literal"),
        "192.0.2.2:7117".parse().expect("literal"),
    )
}

/// The co-op's issuer.
pub fn issuer() -> &'static CredentialIssuer {
    static ISSUER: OnceLock<CredentialIssuer> = OnceLock::new();
    ISSUER.get_or_init(|| CredentialIssuer::from_proxy_key(&SecretKey::from_bytes(PROXY_KEY)))
}

/// A gateway with a fresh credential, knowing nobody.
pub fn gateway((member, secret): (u32, [u8; 32]), now: Instant) -> Neighbours {
    let key = SecretKey::from_bytes(secret);
    let credential = issuer().issue(member, &key.public_key(), T0, DEFAULT_CREDENTIAL_LIFETIME_S);
    Neighbours::new(
        MeshConfig {
            static_key: key,
            credential,
            issuers: vec![issuer().issuer_key()],
            relay_port: 7118,
            offer: OFFER,
            hello_counter_start: T0 * 1_000_000,
        },
        now,
    )
    .expect("own credential")
}

/// A and B after meeting, at `start`.
#[derive(Clone)]
pub struct Met {
    /// When they met.
    pub start: Instant,
    /// Gateway A.
    pub a: Neighbours,
    /// Gateway B.
    pub b: Neighbours,
}

/// A clone of the pair that met once in this process.
pub fn met() -> Met {
    static MET: OnceLock<Met> = OnceLock::new();
    MET.get_or_init(|| {
        let start = Instant::now();
        let mut m = Met {
            start,
            a: gateway(A, start),
            b: gateway(B, start),
        };
        for _ in 0..4 {
            m.exchange(start, T0);
        }
        assert!(m.a.neighbours().all(|n| n.usable()));
        assert!(m.b.neighbours().all(|n| n.usable()));
        while m.a.poll_event().is_some() || m.b.poll_event().is_some() {}
        m
    })
    .clone()
}

/// Where a hello from a gateway at `own` goes: (from, to) as the receiver sees them.
pub fn route(
    own: SocketAddr,
    other: SocketAddr,
    destination: HelloDestination,
) -> (SocketAddr, SocketAddr) {
    match destination {
        HelloDestination::Mesh => (own, other),
        HelloDestination::Neighbour { remote, local, .. } => (local, remote),
    }
}

impl Met {
    /// Both send what they have at `now`, each delivered to the other.
    pub fn exchange(&mut self, now: Instant, proxy_now: u64) {
        let (a_addr, b_addr) = addresses();
        let mut buf = [0u8; MAX_DATAGRAM];
        while let Some(t) = self.a.poll_hello(now, proxy_now, &mut buf) {
            let (from, to) = route(a_addr, b_addr, t.destination);
            let _ = self.b.handle_hello(now, proxy_now, from, to, &buf[..t.len]);
        }
        while let Some(t) = self.b.poll_hello(now, proxy_now, &mut buf) {
            let (from, to) = route(b_addr, a_addr, t.destination);
            let _ = self.a.handle_hello(now, proxy_now, from, to, &buf[..t.len]);
        }
    }
}
