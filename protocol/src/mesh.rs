//! Who is a neighbour on the mesh: proxy-signed credentials and authenticated hellos.
//!
//! Sans-IO like the rest of the core: no socket, no clock. Entry points take `now`
//! (monotonic) and, where expiry matters, `proxy_now_s`: the proxy's wall clock in
//! seconds as this gateway knows it (its own clock plus the offset it keeps to the
//! proxy's). Routers' clocks are not synchronised and many have no real-time clock, so a
//! credential's times are the proxy's and are only ever compared with the proxy's.
//!
//! # How a member proves it is one
//!
//! 1. The proxy gives each member, through its tunnel, a short-lived [`Credential`]:
//!    member id, the member's static X25519 key (its Noise key, [`crate::keys`]), issue
//!    and expiry time, signed (ed25519) with a key derived from the proxy's own static key
//!    ([`CredentialIssuer`]: no new key file). The verifying key ([`IssuerKey`]) reaches
//!    members through the tunnel too, authenticated by the Noise session, so bundles do not
//!    change. Lifetime [`DEFAULT_CREDENTIAL_LIFETIME_S`] (15 minutes, the issuer's choice),
//!    refreshed at half life ([`Credential::refresh_at`]): a removed member is out of the
//!    mesh when its last credential expires, at most one lifetime after its removal.
//! 2. Every gateway multicasts a discovery hello ([`wire::MeshDiscovery`]) with its
//!    credential every [`DISCOVERY_INTERVAL`]. A receiver checks a credential once
//!    (issuer, expiry in proxy time, signature) and keeps it: the same credential again
//!    costs a comparison of bytes, not a signature check; a refused one is remembered too.
//!    Anybody can replay a discovery hello from anywhere, so it proves nothing about its
//!    sender: it only makes the receiver answer, with its own discovery hello (unicast, so
//!    that both sides know each other within a round trip) and neighbour hellos.
//! 3. Neighbour hellos ([`wire::NeighbourHello`]) go unicast to each neighbour every
//!    [`NEIGHBOUR_HELLO_INTERVAL`], with a counter that only goes up and a MAC under the
//!    pair's key: HKDF over X25519(own static secret, their static key) and both keys in
//!    ascending order. The MAC also covers both ends' addresses as seen on the mesh (IP
//!    and port; not an IPv6 scope id, which differs from host to host), so a hello re-sent
//!    from another address fails. Checking one costs an HMAC-SHA256 (three compression
//!    blocks, the key schedule done once per neighbour): no signature per hello. About
//!    10,400 instructions on a MIPS 24Kc, so 20 neighbours at 4 hellos a second take
//!    0.3-0.6 % of a 580 MHz router's CPU, sending included (`benches/mesh_hello.rs`).
//! 4. A neighbour is usable from its first valid neighbour hello ([`NeighbourEvent::Seen`]),
//!    and lost when silent for [`SILENCE_TIMEOUT`] or when its credential expires.
//!
//! # Choices
//!
//! * A neighbour's last accepted counter is kept as long as its credential is (not only
//!   while it is heard), so its old hellos cannot be replayed to bring back a neighbour
//!   that left; a new credential for the same static key keeps it too. A gateway starts
//!   its counter from the proxy clock in microseconds ([`MeshConfig::hello_counter_start`]),
//!   so a restart continues upward without any state on flash, even on a router whose own
//!   clock starts in the past.
//! * What a flood costs is bounded: the cheap refusals (length, issuer's key id, expiry,
//!   an older credential than the one held, a full table, a credential refused lately)
//!   come before any signature check, and checks are a token bucket
//!   ([`SIGNATURE_CHECK_BURST`], then [`SIGNATURE_CHECKS_PER_SECOND`]). A neighbour whose
//!   new credential meets an empty bucket keeps its old one and gets in with its next
//!   discovery hello.
//! * The table holds [`MAX_NEIGHBOURS`] members with a valid credential, heard or not; a
//!   full table refuses newcomers (counted) until a credential expires. Only a member can
//!   take a place: a device that is not one cannot fill it.
//! * Addresses: a neighbour's address is where its authenticated hellos come from; before
//!   its first one (or once it is lost), where its discovery hellos come from. A replayed
//!   discovery hello never moves a usable neighbour. A gateway whose own address on the
//!   mesh changes is heard again once its neighbours have lost it and heard its discovery
//!   hello at the new one: about two seconds.
//! * A hello carrying our own member id or key (our multicast looped back) is refused as
//!   [`DropReason::Unexpected`]: the daemon should turn `IP_MULTICAST_LOOP` off.

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::crypto::{self, MacKey};
use crate::keys::{self, PublicKey, SecretKey};
use crate::statement::{Rating, SignedRating};
use crate::wire::{self, MAC_LEN, Message, NEIGHBOUR_HELLO_LEN};
use crate::{DropCounters, DropReason};

/// A credential on the wire (layout at [`Credential`]).
pub const CREDENTIAL_LEN: usize = CREDENTIAL_SIGNED_LEN + SIGNATURE_LEN;
/// The part of a credential its signature covers.
const CREDENTIAL_SIGNED_LEN: usize = 56;
const SIGNATURE_LEN: usize = 64;
/// Put before the signed bytes: a credential's signature can be nothing else the proxy
/// signs (statements, ratings).
const SIGNING_CONTEXT: &[u8] = b"linkpool mesh credential v1";

/// How long a credential lasts unless the issuer says otherwise: a removed member is out
/// of the mesh this long after its last refresh, at most. Members refresh at half life.
pub const DEFAULT_CREDENTIAL_LIFETIME_S: u64 = 15 * 60;
/// Most neighbours one gateway keeps (its relay has as many slots).
pub const MAX_NEIGHBOURS: usize = 32;
/// How often a gateway multicasts its discovery hello.
pub const DISCOVERY_INTERVAL: Duration = Duration::from_secs(1);
/// How often a gateway says hello to each neighbour: four times a second, so that
/// [`SILENCE_TIMEOUT`] passes only after four hellos in a row are lost.
pub const NEIGHBOUR_HELLO_INTERVAL: Duration = Duration::from_millis(250);
/// A usable neighbour not heard from for this long is lost (its paths die with it).
pub const SILENCE_TIMEOUT: Duration = Duration::from_millis(1200);
/// A gateway keeps saying hello to a neighbour this long after it last heard anything from
/// it (its discovery hellos count): three discovery hellos lost in a row, and it stops
/// talking to a neighbour that left, until it hears it again.
pub const ANSWER_FOR: Duration = Duration::from_secs(3);
/// Signature checks in a burst (a whole neighbourhood appearing at once)...
pub const SIGNATURE_CHECK_BURST: u32 = MAX_NEIGHBOURS as u32;
/// ...and per second after it: a flood of forged credentials costs a router at most this
/// many checks a second (a check is about 4.2 million instructions on a MIPS 24Kc: some
/// 7-14 ms at 580 MHz, so 1-3 % of its CPU). Refreshes need one per neighbour per half
/// lifetime: 20 neighbours, one check every 22 s.
pub const SIGNATURE_CHECKS_PER_SECOND: u32 = 2;
/// Refused credentials remembered, so that one repeated costs no second check.
const REFUSED_REMEMBERED: usize = 8;
/// How far a neighbour's rating may seem issued in the future, or used past its expiry,
/// in our estimate of the proxy's clock (which the grants give to the second).
pub(crate) const RATING_SKEW_S: u64 = 60;
/// Events kept for [`Neighbours::poll_event`]; beyond, new ones are counted and dropped.
const EVENT_CAPACITY: usize = 4 * MAX_NEIGHBOURS;
/// Timers for credential expiry are set at most this far ahead, and set again then (a
/// credential may say it lasts for ever; `Instant + Duration` must not overflow).
const MAX_TIMER: Duration = Duration::from_secs(3600);

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// What a gateway offers its neighbours now (carried in both hellos; only a neighbour
/// hello's is authenticated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offer {
    /// Whether its owner shares the line now.
    pub sharing: bool,
    /// Spare upstream capacity, kbit/s.
    pub up_kbit: u32,
    /// Spare downstream capacity, kbit/s.
    pub down_kbit: u32,
}

/// A member's mesh credential, as the proxy signed it. Kept as its bytes: two credentials
/// are the same when their bytes are, which is what makes a repeated one cheap.
///
/// | bytes | field |
/// | --- | --- |
/// | 0..4 | member id (u32) |
/// | 4..36 | the member's static X25519 public key |
/// | 36..44 | issued at, proxy wall-clock seconds (u64) |
/// | 44..52 | expires at, proxy wall-clock seconds (u64) |
/// | 52..56 | key id of the issuer's key ([`IssuerKey::id`]) |
/// | 56..120 | ed25519 signature over `"linkpool mesh credential v1"` and bytes 0..56 |
///
/// Big-endian, like every integer on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Credential {
    bytes: [u8; CREDENTIAL_LEN],
}

impl Credential {
    /// Checks a credential's layout: its length, and an expiry after its issue. Says
    /// nothing about its signature ([`IssuerKey::verify`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Credential, DropReason> {
        let bytes: [u8; CREDENTIAL_LEN] = match bytes.len() {
            n if n < CREDENTIAL_LEN => return Err(DropReason::TooShort),
            n if n > CREDENTIAL_LEN => return Err(DropReason::BadLength),
            _ => bytes.try_into().map_err(|_| DropReason::BadLength)?,
        };
        let c = Credential { bytes };
        if c.expires_at() <= c.issued_at() {
            return Err(DropReason::BadCredential);
        }
        Ok(c)
    }

    /// The bytes, to hand to a member through its tunnel or put in a discovery hello.
    pub fn as_bytes(&self) -> &[u8; CREDENTIAL_LEN] {
        &self.bytes
    }

    /// The member's id at the proxy.
    pub fn member(&self) -> u32 {
        be32(&self.bytes, 0)
    }

    /// The member's static X25519 public key.
    pub fn public_key(&self) -> PublicKey {
        let mut k = [0u8; 32];
        k.copy_from_slice(&self.bytes[4..36]);
        PublicKey(k)
    }

    /// When the proxy issued it, in its wall-clock seconds.
    pub fn issued_at(&self) -> u64 {
        be64(&self.bytes, 36)
    }

    /// When it expires, in the proxy's wall-clock seconds: valid while `proxy_now_s` is
    /// below this.
    pub fn expires_at(&self) -> u64 {
        be64(&self.bytes, 44)
    }

    /// When its holder should ask for the next one: half-way through its lifetime, so a
    /// proxy unreachable for a while does not cost the member its neighbours at once.
    pub fn refresh_at(&self) -> u64 {
        self.issued_at() + (self.expires_at() - self.issued_at()) / 2
    }

    /// Which of the co-op's keys signed it.
    pub fn key_id(&self) -> u32 {
        be32(&self.bytes, 52)
    }

    fn signed_message(&self) -> [u8; SIGNING_CONTEXT.len() + CREDENTIAL_SIGNED_LEN] {
        let mut m = [0u8; SIGNING_CONTEXT.len() + CREDENTIAL_SIGNED_LEN];
        m[..SIGNING_CONTEXT.len()].copy_from_slice(SIGNING_CONTEXT);
        m[SIGNING_CONTEXT.len()..].copy_from_slice(&self.bytes[..CREDENTIAL_SIGNED_LEN]);
        m
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("member", &self.member())
            .field("public_key", &self.public_key())
            .field("issued_at", &self.issued_at())
            .field("expires_at", &self.expires_at())
            .field("key_id", &format_args!("{:08x}", self.key_id()))
            .finish()
    }
}

/// The verifying key of a proxy's credentials, as members get it through the tunnel.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IssuerKey {
    key: VerifyingKey,
    id: u32,
}

impl IssuerKey {
    /// Parses the 32-byte key. `BadCredential` if it is no valid ed25519 key.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<IssuerKey, DropReason> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| DropReason::BadCredential)?;
        if key.is_weak() {
            return Err(DropReason::BadCredential);
        }
        Ok(IssuerKey::new(key))
    }

    fn new(key: VerifyingKey) -> IssuerKey {
        // A hash, not the key's own first bytes: ids of keys that share a prefix differ.
        let digest = Sha256::new()
            .chain_update(b"linkpool mesh issuer")
            .chain_update(key.as_bytes())
            .finalize();
        IssuerKey {
            key,
            id: be32(&digest, 0),
        }
    }

    /// The 32 bytes to hand to members.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The id credentials name this key by. Only a hint for finding the key: a credential
    /// is good only when the signature verifies under it.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Checks that this key signed `credential` (strict ed25519: no malleable signature).
    /// Not its expiry: that needs the proxy's time ([`Neighbours::handle_hello`]).
    pub fn verify(&self, credential: &Credential) -> Result<(), DropReason> {
        if credential.key_id() != self.id {
            return Err(DropReason::BadCredential);
        }
        let mut sig = [0u8; SIGNATURE_LEN];
        sig.copy_from_slice(&credential.bytes[CREDENTIAL_SIGNED_LEN..]);
        self.key
            .verify_strict(&credential.signed_message(), &Signature::from_bytes(&sig))
            .map_err(|_| DropReason::BadCredential)
    }

    /// Checks a signature of [`CredentialIssuer::sign_in_context`] (strict ed25519). False
    /// for a bad one, and for a message longer than such signatures cover.
    pub(crate) fn verify_in_context(
        &self,
        context: &[u8],
        body: &[u8],
        signature: &[u8; SIGNATURE_LEN],
    ) -> bool {
        let mut m = [0u8; MAX_IN_CONTEXT_LEN];
        let Some(m) = in_context(&mut m, context, body) else {
            return false;
        };
        self.key
            .verify_strict(m, &Signature::from_bytes(signature))
            .is_ok()
    }
}

/// Longest context and body [`CredentialIssuer::sign_in_context`] signs: on the stack, so
/// a check costs no allocation.
const MAX_IN_CONTEXT_LEN: usize = 256;

fn in_context<'a>(
    m: &'a mut [u8; MAX_IN_CONTEXT_LEN],
    context: &[u8],
    body: &[u8],
) -> Option<&'a [u8]> {
    let m = m.get_mut(..context.len() + body.len())?;
    m[..context.len()].copy_from_slice(context);
    m[context.len()..].copy_from_slice(body);
    Some(m)
}

impl fmt::Debug for IssuerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IssuerKey({:08x})", self.id)
    }
}

/// The proxy's side: signs members' credentials. Its key is derived (HKDF) from the
/// proxy's static secret, so a proxy needs no new key file and the key changes with it.
pub struct CredentialIssuer {
    signing: SigningKey,
    public: IssuerKey,
}

impl CredentialIssuer {
    /// The issuer of the proxy whose static secret is `proxy_key`.
    pub fn from_proxy_key(proxy_key: &SecretKey) -> CredentialIssuer {
        let seed = crypto::derive(proxy_key.as_bytes(), b"mesh credential issuer");
        let signing = SigningKey::from_bytes(&seed);
        let public = IssuerKey::new(signing.verifying_key());
        CredentialIssuer { signing, public }
    }

    /// What members verify credentials with.
    pub fn issuer_key(&self) -> IssuerKey {
        self.public
    }

    /// Signs a credential for `member`, valid from `proxy_now_s` for `lifetime_s` seconds
    /// (at least one; [`DEFAULT_CREDENTIAL_LIFETIME_S`] unless the co-op chose otherwise).
    pub fn issue(
        &self,
        member: u32,
        public_key: &PublicKey,
        proxy_now_s: u64,
        lifetime_s: u64,
    ) -> Credential {
        let mut bytes = [0u8; CREDENTIAL_LEN];
        bytes[0..4].copy_from_slice(&member.to_be_bytes());
        bytes[4..36].copy_from_slice(&public_key.0);
        bytes[36..44].copy_from_slice(&proxy_now_s.to_be_bytes());
        let expires = proxy_now_s.saturating_add(lifetime_s.max(1));
        bytes[44..52].copy_from_slice(&expires.to_be_bytes());
        bytes[52..56].copy_from_slice(&self.public.id.to_be_bytes());
        let mut c = Credential { bytes };
        let sig = self.signing.sign(&c.signed_message());
        c.bytes[CREDENTIAL_SIGNED_LEN..].copy_from_slice(&sig.to_bytes());
        c
    }

    /// Signs `context` then `body` with the credentials' key, for the proxy's other signed
    /// documents ([`crate::statement`]): one key, one context per kind, none a prefix of
    /// another, so that no signature passes for another kind's. Panics if both together
    /// are longer than 256 bytes (the callers' sizes are fixed).
    pub(crate) fn sign_in_context(&self, context: &[u8], body: &[u8]) -> [u8; SIGNATURE_LEN] {
        debug_assert!(
            !context.starts_with(SIGNING_CONTEXT) && !SIGNING_CONTEXT.starts_with(context)
        );
        let mut m = [0u8; MAX_IN_CONTEXT_LEN];
        let m = in_context(&mut m, context, body).expect("context and body fit");
        self.signing.sign(m).to_bytes()
    }
}

impl fmt::Debug for CredentialIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CredentialIssuer({:08x}, <hidden>)", self.public.id)
    }
}

/// The pair's hello key: HKDF over the X25519 secret and both static keys, the lower
/// first, so both ends derive the same key. `None` if their key is of low order.
fn pairwise_key(own: &SecretKey, own_public: &PublicKey, peer: &PublicKey) -> Option<[u8; 32]> {
    let shared = keys::x25519(own, peer)?;
    let (lo, hi) = if own_public.0 <= peer.0 {
        (own_public, peer)
    } else {
        (peer, own_public)
    };
    let mut ikm = [0u8; 96];
    ikm[..32].copy_from_slice(&shared);
    ikm[32..64].copy_from_slice(&lo.0);
    ikm[64..].copy_from_slice(&hi.0);
    Some(crypto::derive(&ikm, b"mesh neighbour hello"))
}

/// An address as the MAC covers it: the IPv6 form of the IP (IPv4 as `::ffff:a.b.c.d`,
/// so a dual-stack socket's view and a plain IPv4 one agree) and the port. Not the IPv6
/// scope id or flow label: those are local to each host.
fn address_bytes(a: &SocketAddr) -> [u8; 18] {
    let ip = match a.ip().to_canonical() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    let mut out = [0u8; 18];
    out[..16].copy_from_slice(&ip.octets());
    out[16..].copy_from_slice(&a.port().to_be_bytes());
    out
}

/// A neighbour hello's MAC: the pair's key over the hello (before its MAC), the sender's
/// address, the receiver's.
fn hello_mac(
    key: &MacKey,
    hello: &[u8],
    sender: &SocketAddr,
    receiver: &SocketAddr,
) -> [u8; MAC_LEN] {
    key.mac(&[hello, &address_bytes(sender), &address_bytes(receiver)])
}

/// When a credential expiring at `expires_at` (proxy seconds) expires in local time, as
/// far as the proxy clock's offset is known now; at most [`MAX_TIMER`] ahead.
fn expiry_instant(now: Instant, proxy_now_s: u64, expires_at: u64) -> Instant {
    let left = Duration::from_secs(expires_at.saturating_sub(proxy_now_s)).min(MAX_TIMER);
    now + left
}

/// What one gateway knows of itself on the mesh.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// Its static secret (the Noise key its credential names).
    pub static_key: SecretKey,
    /// Its credential, from its proxy.
    pub credential: Credential,
    /// The keys of the co-op's proxies (one per proxy), from the tunnel.
    pub issuers: Vec<IssuerKey>,
    /// UDP port its relay listens on, on the mesh.
    pub relay_port: u16,
    /// What it offers now.
    pub offer: Offer,
    /// Its neighbour hellos count up from here: the proxy's clock in microseconds, so that
    /// a restarted gateway continues above what its neighbours last accepted.
    pub hello_counter_start: u64,
}

/// What changed about a neighbour ([`Neighbours::poll_event`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighbourEvent {
    /// Its first valid neighbour hello (or the first after it was lost): usable.
    Seen {
        /// Its member id.
        member: u32,
        /// Where its hellos come from on the mesh.
        address: SocketAddr,
    },
    /// Silent for [`SILENCE_TIMEOUT`], its credential expired or was replaced with one for
    /// another key, or its issuer was dropped: its paths die with it.
    Lost {
        /// Its member id.
        member: u32,
        /// Where it was.
        address: SocketAddr,
    },
    /// A usable neighbour's authenticated hellos now come from another address (a relay
    /// keys its slots by address).
    Moved {
        /// Its member id.
        member: u32,
        /// The old address.
        from: SocketAddr,
        /// The new one.
        to: SocketAddr,
    },
    /// A usable neighbour's offer or relay port changed, or it handed on a new rating.
    OfferChanged {
        /// Its member id.
        member: u32,
    },
}

/// Where a hello from [`Neighbours::poll_hello`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelloDestination {
    /// Everyone: the daemon sends the same bytes on every mesh interface, to the IPv6
    /// link-local multicast group and as an IPv4 broadcast.
    Mesh,
    /// One neighbour: send to `remote`, from `local` (the MAC covers both).
    Neighbour {
        /// Its member id.
        member: u32,
        /// Its address.
        remote: SocketAddr,
        /// Ours, on the link it is on.
        local: SocketAddr,
    },
}

/// A hello written by [`Neighbours::poll_hello`]: send `buf[..len]` to `destination`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloTransmit {
    /// Where it goes.
    pub destination: HelloDestination,
    /// Its length.
    pub len: usize,
}

/// What the neighbour table did, for status and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MeshStats {
    /// ed25519 verifications (own credential included): what a flood costs.
    pub signature_checks: u64,
    /// Hellos of either kind accepted.
    pub hellos_accepted: u64,
    /// Discovery hellos written (multicast, and unicast answers).
    pub discovery_sent: u64,
    /// Neighbour hellos written.
    pub neighbour_hellos_sent: u64,
    /// Events dropped because nobody polled them.
    pub events_dropped: u64,
}

/// One neighbour: a member whose valid credential this gateway holds.
#[derive(Clone)]
pub struct Neighbour {
    credential: Credential,
    mac_key: MacKey,
    /// Where its hellos come from; where ours go.
    remote: SocketAddr,
    /// Our address on its link.
    local: SocketAddr,
    usable: bool,
    relay_port: u16,
    offer: Offer,
    last_counter: u64,
    /// Last accepted neighbour hello.
    last_hello: Option<Instant>,
    /// Last accepted hello of either kind.
    heard: Instant,
    next_hello: Instant,
    /// Our discovery hello should go to it, unicast, before the next neighbour hello.
    discovery_due: bool,
    /// Its credential's expiry in local time, as last estimated.
    expires: Instant,
    accepted: u64,
    refused: u64,
    /// Its relay rating, verified, as its discovery hellos last carried it.
    rating: Option<(SignedRating, Rating)>,
}

impl Neighbour {
    /// Its member id.
    pub fn member(&self) -> u32 {
        self.credential.member()
    }
    /// Its static key.
    pub fn public_key(&self) -> PublicKey {
        self.credential.public_key()
    }
    /// The credential it presented.
    pub fn credential(&self) -> &Credential {
        &self.credential
    }
    /// Where its hellos come from on the mesh (authenticated once it is usable).
    pub fn address(&self) -> SocketAddr {
        self.remote
    }
    /// Our own address on its link.
    pub fn local_address(&self) -> SocketAddr {
        self.local
    }
    /// Where its relay listens: its address with the relay port its hellos give (`None`
    /// before its first valid neighbour hello).
    pub fn relay_endpoint(&self) -> Option<SocketAddr> {
        // From the address itself, not its IP: a link-local one keeps its scope id.
        let mut relay = self.remote;
        relay.set_port(self.relay_port);
        self.last_hello.map(|_| relay)
    }
    /// Whether it may carry paths: a valid neighbour hello within [`SILENCE_TIMEOUT`].
    pub fn usable(&self) -> bool {
        self.usable
    }
    /// What its last valid neighbour hello offered.
    pub fn offer(&self) -> Offer {
        self.offer
    }
    /// When its last valid neighbour hello arrived.
    pub fn last_heard(&self) -> Option<Instant> {
        self.last_hello
    }
    /// Its relay rating as the proxy signed it, while it holds at `proxy_now_s`.
    pub fn rating(&self, proxy_now_s: u64) -> Option<&Rating> {
        self.rating
            .as_ref()
            .map(|(_, r)| r)
            .filter(|r| proxy_now_s < r.expires_at)
    }
    /// Hellos of either kind accepted from it.
    pub fn hellos_accepted(&self) -> u64 {
        self.accepted
    }
    /// Hellos refused that claimed to be from it (the claim is unauthenticated: anyone can
    /// make this count grow).
    pub fn hellos_refused(&self) -> u64 {
        self.refused
    }

    /// Whether a hello to it is due: it fell due while we still answer it.
    fn hello_due(&self, now: Instant) -> bool {
        self.next_hello <= now && self.next_hello < self.heard + ANSWER_FOR
    }
}

impl fmt::Debug for Neighbour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Neighbour")
            .field("member", &self.member())
            .field("address", &self.remote)
            .field("usable", &self.usable)
            .field("offer", &self.offer)
            .field("last_counter", &self.last_counter)
            .finish_non_exhaustive()
    }
}

/// Credentials refused lately, by their bytes: one repeated is refused without a check.
#[derive(Clone)]
struct Refused {
    bytes: [[u8; CREDENTIAL_LEN]; REFUSED_REMEMBERED],
    len: usize,
    next: usize,
}

impl Refused {
    fn contains(&self, c: &Credential) -> bool {
        self.bytes[..self.len].iter().any(|b| b == &c.bytes)
    }

    fn insert(&mut self, c: &Credential) {
        self.bytes[self.next] = c.bytes;
        self.next = (self.next + 1) % REFUSED_REMEMBERED;
        self.len = (self.len + 1).min(REFUSED_REMEMBERED);
    }
}

/// A token bucket of signature checks, in thousandths of a check.
#[derive(Debug, Clone)]
struct CheckBudget {
    milli: u64,
    at: Instant,
}

impl CheckBudget {
    const FULL: u64 = SIGNATURE_CHECK_BURST as u64 * 1000;

    fn take(&mut self, now: Instant) -> bool {
        let ms = now.saturating_duration_since(self.at).as_millis();
        let refill = u64::try_from(ms).unwrap_or(u64::MAX);
        self.milli = self
            .milli
            .saturating_add(refill.saturating_mul(u64::from(SIGNATURE_CHECKS_PER_SECOND)))
            .min(Self::FULL);
        self.at = now;
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }
}

/// Events, bounded: a daemon that never polls them does not grow memory.
#[derive(Debug, Clone)]
struct Events(VecDeque<NeighbourEvent>);

impl Events {
    fn push(&mut self, stats: &mut MeshStats, e: NeighbourEvent) {
        if self.0.len() < EVENT_CAPACITY {
            self.0.push_back(e);
        } else {
            stats.events_dropped += 1;
        }
    }
}

/// A gateway's neighbours on the mesh: it checks their credentials and hellos, says hello
/// to them, and tells who is usable.
///
/// Driven like the other sans-IO cores: [`Neighbours::handle_hello`] with every datagram
/// from the mesh hello socket, [`Neighbours::poll_hello`] until `None` after every call,
/// [`Neighbours::handle_timeout`] at [`Neighbours::poll_timeout`], and
/// [`Neighbours::poll_event`] for what changed. Nothing allocates after [`Neighbours::new`]
/// but [`Neighbours::set_issuers`]. `Clone` is for harnesses (a fuzzer starts every input
/// from one table that met its neighbours).
#[derive(Clone)]
pub struct Neighbours {
    static_key: SecretKey,
    public_key: PublicKey,
    credential: Credential,
    issuers: Vec<IssuerKey>,
    relay_port: u16,
    offer: Offer,
    /// Our relay rating from the proxy, for our discovery hellos.
    rating: Option<SignedRating>,
    counter: u64,
    /// Our credential has expired in proxy time: neighbours would refuse our hellos.
    own_expired: bool,
    next_discovery: Instant,
    table: Vec<Neighbour>,
    /// The neighbour the search for due hellos starts at, so that none waits behind others.
    cursor: usize,
    refused: Box<Refused>,
    budget: CheckBudget,
    events: Events,
    drops: DropCounters,
    stats: MeshStats,
}

impl fmt::Debug for Neighbours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Neighbours")
            .field("member", &self.member())
            .field("neighbours", &self.table)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Neighbours {
    /// A table with no neighbours yet; the first discovery hello is due at once.
    /// `BadCredential` if the credential is not for `static_key` or no issuer signed it.
    pub fn new(config: MeshConfig, now: Instant) -> Result<Neighbours, DropReason> {
        let public_key = config.static_key.public_key();
        let mut n = Neighbours {
            static_key: config.static_key,
            public_key,
            credential: config.credential,
            issuers: config.issuers,
            relay_port: config.relay_port,
            offer: config.offer,
            rating: None,
            counter: config.hello_counter_start,
            own_expired: false,
            next_discovery: now,
            table: Vec::with_capacity(MAX_NEIGHBOURS),
            cursor: 0,
            refused: Box::new(Refused {
                bytes: [[0; CREDENTIAL_LEN]; REFUSED_REMEMBERED],
                len: 0,
                next: 0,
            }),
            budget: CheckBudget {
                milli: CheckBudget::FULL,
                at: now,
            },
            events: Events(VecDeque::with_capacity(EVENT_CAPACITY)),
            drops: DropCounters::default(),
            stats: MeshStats::default(),
        };
        n.set_credential(config.credential)?;
        Ok(n)
    }

    /// Our member id.
    pub fn member(&self) -> u32 {
        self.credential.member()
    }

    /// Our credential.
    pub fn credential(&self) -> &Credential {
        &self.credential
    }

    /// A new credential from the proxy (at [`Credential::refresh_at`]). `BadCredential` if
    /// it is not for our static key or no issuer signed it: the old one stays.
    pub fn set_credential(&mut self, credential: Credential) -> Result<(), DropReason> {
        if credential.public_key() != self.public_key {
            return Err(DropReason::BadCredential);
        }
        self.verify(&credential)?;
        self.credential = credential;
        self.own_expired = false;
        Ok(())
    }

    /// The co-op's issuer keys changed. Neighbours whose credential no remaining key
    /// signed are dropped (their credentials are of a proxy the co-op no longer has).
    pub fn set_issuers(&mut self, issuers: Vec<IssuerKey>) {
        self.issuers = issuers;
        let mut i = 0;
        while i < self.table.len() {
            let id = self.table[i].credential.key_id();
            if self.issuers.iter().any(|k| k.id() == id) {
                i += 1;
            } else {
                let gone = self.table.swap_remove(i);
                if gone.usable {
                    self.events.push(
                        &mut self.stats,
                        NeighbourEvent::Lost {
                            member: gone.member(),
                            address: gone.remote,
                        },
                    );
                }
            }
        }
    }

    /// What we offer from now on (in our next hellos).
    pub fn set_offer(&mut self, offer: Offer, relay_port: u16) {
        self.offer = offer;
        self.relay_port = relay_port;
    }

    /// Every neighbour with a valid credential, usable or not.
    pub fn neighbours(&self) -> impl Iterator<Item = &Neighbour> + '_ {
        self.table.iter()
    }

    /// One neighbour.
    pub fn neighbour(&self, member: u32) -> Option<&Neighbour> {
        self.table.iter().find(|n| n.member() == member)
    }

    /// Hellos refused, by reason.
    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    /// What the table did.
    pub fn stats(&self) -> &MeshStats {
        &self.stats
    }

    /// What changed since the last call.
    pub fn poll_event(&mut self) -> Option<NeighbourEvent> {
        self.events.0.pop_front()
    }

    fn note_proxy_time(&mut self, proxy_now_s: u64) {
        self.own_expired = proxy_now_s >= self.credential.expires_at();
    }

    /// A signature check, counted; any issuer whose id matches may have signed it.
    fn verify(&mut self, credential: &Credential) -> Result<(), DropReason> {
        let mut result = Err(DropReason::BadCredential);
        for k in self
            .issuers
            .iter()
            .filter(|k| k.id() == credential.key_id())
        {
            self.stats.signature_checks += 1;
            result = k.verify(credential);
            if result.is_ok() {
                break;
            }
        }
        result
    }

    /// A hello from the mesh. `from` is its source address; `to` is our own address on the
    /// link it came in on: for a unicast hello the address it was sent to (with
    /// `IP_PKTINFO`/`IPV6_PKTINFO` on a wildcard socket), for a multicast or broadcast one
    /// our address on that interface, with the hello socket's port (never the group's:
    /// our answers are sent from it, and our neighbour hellos' MAC covers it).
    ///
    /// Every refusal is counted under its reason ([`Neighbours::drops`]), and under the
    /// neighbour it claims to be from, if known.
    pub fn handle_hello(
        &mut self,
        now: Instant,
        proxy_now_s: u64,
        from: SocketAddr,
        to: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), DropReason> {
        self.note_proxy_time(proxy_now_s);
        let (claimed, result) = match Message::parse(datagram) {
            Ok(Message::MeshDiscovery(h)) => (
                Some(be32(h.credential(), 0)),
                self.handle_discovery(now, proxy_now_s, from, to, &h),
            ),
            Ok(Message::NeighbourHello(h)) => (
                Some(h.sender()),
                self.handle_neighbour_hello(now, proxy_now_s, from, to, &h),
            ),
            Ok(_) => (None, Err(DropReason::Unexpected)),
            Err(reason) => (None, Err(reason)),
        };
        match result {
            Ok(()) => {
                self.stats.hellos_accepted += 1;
                Ok(())
            }
            Err(reason) => {
                self.drops.count(reason);
                if let Some(n) =
                    claimed.and_then(|m| self.table.iter_mut().find(|n| n.member() == m))
                {
                    n.refused += 1;
                }
                Err(reason)
            }
        }
    }

    fn handle_discovery(
        &mut self,
        now: Instant,
        proxy_now_s: u64,
        from: SocketAddr,
        to: SocketAddr,
        hello: &wire::MeshDiscovery<'_>,
    ) -> Result<(), DropReason> {
        let credential = Credential::from_bytes(hello.credential())?;
        if credential.member() == self.member() || credential.public_key() == self.public_key {
            // Our own hello, looped back (the daemon should turn multicast loop off).
            return Err(DropReason::Unexpected);
        }
        // The cheap refusals first: none of them costs a signature check.
        if !self.issuers.iter().any(|k| k.id() == credential.key_id()) {
            return Err(DropReason::BadCredential);
        }
        if proxy_now_s >= credential.expires_at() {
            return Err(DropReason::ExpiredCredential);
        }
        let known = self
            .table
            .iter()
            .position(|n| n.member() == credential.member());
        let i = match known {
            Some(i) if self.table[i].credential == credential => i,
            Some(i) if credential.issued_at() < self.table[i].credential.issued_at() => {
                return Err(DropReason::StaleCredential);
            }
            _ => {
                if known.is_none() && self.table.len() >= MAX_NEIGHBOURS {
                    return Err(DropReason::NeighbourTableFull);
                }
                if self.refused.contains(&credential) {
                    return Err(DropReason::BadCredential);
                }
                if !self.budget.take(now) {
                    return Err(DropReason::CredentialRateLimited);
                }
                let key = self.verify(&credential).ok().and_then(|()| {
                    pairwise_key(&self.static_key, &self.public_key, &credential.public_key())
                });
                let Some(key) = key else {
                    self.refused.insert(&credential);
                    return Err(DropReason::BadCredential);
                };
                self.admit(now, from, to, credential, MacKey::new(&key), known)
            }
        };
        let n = &mut self.table[i];
        n.heard = now;
        n.accepted += 1;
        n.expires = expiry_instant(now, proxy_now_s, credential.expires_at());
        // Only authenticated hellos move a usable neighbour: a discovery hello replayed from
        // elsewhere must not hijack its path.
        if !n.usable && (n.remote != from || n.local != to) {
            n.remote = from;
            n.local = to;
            n.next_hello = now;
        }
        if let Some(rating) = hello.rating() {
            // The hello stands on its credential; a rating that fails is only not kept.
            if let Err(reason) = self.take_rating(now, proxy_now_s, i, rating) {
                self.drops.count(reason);
            }
        }
        Ok(())
    }

    /// A neighbour's rating from its discovery hello: kept if the proxy signed it for
    /// that neighbour and it holds now. The same bytes again cost nothing; new ones
    /// a signature check from the budget credentials use.
    fn take_rating(
        &mut self,
        now: Instant,
        proxy_now_s: u64,
        i: usize,
        bytes: &[u8; crate::statement::RATING_LEN],
    ) -> Result<(), DropReason> {
        let signed = SignedRating::from_bytes(bytes).map_err(|_| DropReason::BadRating)?;
        let n = &self.table[i];
        if n.rating.as_ref().is_some_and(|(s, _)| *s == signed) {
            return Ok(());
        }
        let issuer = self
            .issuers
            .iter()
            .find(|k| k.id() == signed.key_id())
            .ok_or(DropReason::BadRating)?;
        if !self.budget.take(now) {
            return Err(DropReason::CredentialRateLimited);
        }
        self.stats.signature_checks += 1;
        use crate::statement::VerifyError;
        let rating = signed
            .verify_fresh(issuer, proxy_now_s, RATING_SKEW_S)
            .map_err(|e| match e {
                VerifyError::Expired | VerifyError::FromTheFuture => DropReason::StaleRating,
                _ => DropReason::BadRating,
            })?;
        let n = &mut self.table[i];
        if rating.member != n.member() {
            return Err(DropReason::BadRating);
        }
        // An older one than kept (replayed): the newer stays.
        if n.rating
            .as_ref()
            .is_some_and(|(_, r)| r.issued_at > rating.issued_at)
        {
            return Err(DropReason::StaleRating);
        }
        n.rating = Some((signed, rating));
        if n.usable {
            let changed = NeighbourEvent::OfferChanged { member: n.member() };
            self.events.push(&mut self.stats, changed);
        }
        Ok(())
    }

    /// A newly verified credential: a new neighbour, or a known one's next credential.
    /// Returns its index.
    fn admit(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        credential: Credential,
        mac_key: MacKey,
        known: Option<usize>,
    ) -> usize {
        if let Some(i) = known {
            let n = &mut self.table[i];
            if n.credential.public_key() != credential.public_key() {
                // A new static key: a new pair key, and a counter of its own (old hellos
                // fail the new key's MAC, so nothing can be replayed).
                n.mac_key = mac_key;
                n.last_counter = 0;
                n.last_hello = None;
                if n.usable {
                    n.usable = false;
                    let lost = NeighbourEvent::Lost {
                        member: n.member(),
                        address: n.remote,
                    };
                    self.events.push(&mut self.stats, lost);
                }
            }
            // The same key: the counter stays, or its old hellos would pass again.
            let n = &mut self.table[i];
            n.credential = credential;
            // A new credential often means it restarted and forgot us: tell it who we are.
            n.discovery_due = true;
            n.next_hello = now;
            return i;
        }
        self.table.push(Neighbour {
            credential,
            mac_key,
            remote: from,
            local: to,
            usable: false,
            relay_port: 0,
            offer: Offer::default(),
            last_counter: 0,
            last_hello: None,
            heard: now,
            next_hello: now,
            discovery_due: true,
            expires: now,
            accepted: 0,
            refused: 0,
            rating: None,
        });
        self.table.len() - 1
    }

    fn handle_neighbour_hello(
        &mut self,
        now: Instant,
        proxy_now_s: u64,
        from: SocketAddr,
        to: SocketAddr,
        hello: &wire::NeighbourHello<'_>,
    ) -> Result<(), DropReason> {
        let member = hello.sender();
        if member == self.member() {
            return Err(DropReason::Unexpected);
        }
        let n = self
            .table
            .iter_mut()
            .find(|n| n.member() == member)
            .ok_or(DropReason::UnknownNeighbour)?;
        if proxy_now_s >= n.credential.expires_at() {
            return Err(DropReason::ExpiredCredential);
        }
        // The MAC before the counter: a forged hello is counted as forged, whatever its
        // counter says.
        let mac = hello_mac(&n.mac_key, hello.mac_input(), &from, &to);
        if !crypto::mac_eq(&mac, hello.mac()) {
            return Err(DropReason::BadHelloMac);
        }
        if hello.counter() <= n.last_counter {
            return Err(DropReason::ReplayedHello);
        }
        n.last_counter = hello.counter();
        n.last_hello = Some(now);
        n.heard = now;
        n.accepted += 1;
        let moved = n.remote != from;
        let old = n.remote;
        n.remote = from;
        n.local = to;
        let changed = n.offer != hello.offer() || n.relay_port != hello.relay_port();
        n.offer = hello.offer();
        n.relay_port = hello.relay_port();
        if !n.usable {
            // Seen says it all: its address, offer and relay port are read from the table.
            n.usable = true;
            let seen = NeighbourEvent::Seen {
                member,
                address: from,
            };
            self.events.push(&mut self.stats, seen);
            return Ok(());
        }
        if moved {
            let moved = NeighbourEvent::Moved {
                member,
                from: old,
                to: from,
            };
            self.events.push(&mut self.stats, moved);
        }
        if changed {
            let changed = NeighbourEvent::OfferChanged { member };
            self.events.push(&mut self.stats, changed);
        }
        Ok(())
    }

    /// Our discovery hello, with our rating if we have one, into `buf`; its length. (Of
    /// the fields it reads, so a neighbour's entry may stay borrowed.)
    fn discovery(
        relay_port: u16,
        offer: &Offer,
        credential: &Credential,
        rating: Option<&SignedRating>,
        buf: &mut [u8],
    ) -> Option<usize> {
        let rating = rating.map(SignedRating::to_bytes);
        wire::write_mesh_discovery(
            relay_port,
            offer,
            credential.as_bytes(),
            rating.as_ref(),
            buf,
        )
    }

    fn write_discovery(&self, buf: &mut [u8]) -> Option<usize> {
        Self::discovery(
            self.relay_port,
            &self.offer,
            &self.credential,
            self.rating.as_ref(),
            buf,
        )
    }

    /// Our relay rating from the proxy, handed to neighbours in our discovery hellos
    /// (checked by whoever receives it: the proxy signed it).
    pub fn set_rating(&mut self, rating: Option<SignedRating>) {
        self.rating = rating;
    }

    /// The next hello to send, written into `buf` (at least [`MESH_DISCOVERY_RATED_LEN`]
    /// bytes; any datagram buffer is): our discovery hello when due, then the unicast ones.
    /// Call until `None` after every other call. Nothing goes out while our own credential
    /// has expired in proxy time (neighbours would refuse it all).
    pub fn poll_hello(
        &mut self,
        now: Instant,
        proxy_now_s: u64,
        buf: &mut [u8],
    ) -> Option<HelloTransmit> {
        self.note_proxy_time(proxy_now_s);
        if self.own_expired {
            return None;
        }
        if now >= self.next_discovery {
            self.next_discovery = now + DISCOVERY_INTERVAL;
            match self.write_discovery(buf) {
                Some(len) => {
                    self.stats.discovery_sent += 1;
                    return Some(HelloTransmit {
                        destination: HelloDestination::Mesh,
                        len,
                    });
                }
                // Counted as lost, and its timer consumed: no spinning on a caller's bug.
                None => self.drops.count(DropReason::PacketTooLarge),
            }
        }
        let member = self.member();
        let len = self.table.len();
        for k in 0..len {
            let i = (self.cursor + k) % len;
            let n = &mut self.table[i];
            if !n.hello_due(now) {
                continue;
            }
            let destination = HelloDestination::Neighbour {
                member: n.member(),
                remote: n.remote,
                local: n.local,
            };
            if std::mem::take(&mut n.discovery_due) {
                let rating = self.rating.as_ref();
                let written =
                    Self::discovery(self.relay_port, &self.offer, &self.credential, rating, buf);
                if let Some(len) = written {
                    self.stats.discovery_sent += 1;
                    // The cursor stays: the neighbour hello to it comes next.
                    return Some(HelloTransmit { destination, len });
                }
                self.drops.count(DropReason::PacketTooLarge);
            }
            n.next_hello = now + NEIGHBOUR_HELLO_INTERVAL;
            self.cursor = (i + 1) % len;
            let Some(out) = buf.get_mut(..NEIGHBOUR_HELLO_LEN) else {
                self.drops.count(DropReason::PacketTooLarge);
                continue;
            };
            self.counter = self.counter.saturating_add(1);
            wire::write_neighbour_hello(member, self.counter, self.relay_port, &self.offer, out);
            let split = NEIGHBOUR_HELLO_LEN - MAC_LEN;
            let mac = hello_mac(&n.mac_key, &out[..split], &n.local, &n.remote);
            out[split..].copy_from_slice(&mac);
            self.stats.neighbour_hellos_sent += 1;
            return Some(HelloTransmit {
                destination,
                len: NEIGHBOUR_HELLO_LEN,
            });
        }
        None
    }

    /// When [`Neighbours::handle_timeout`] (and then [`Neighbours::poll_hello`]) should
    /// run next. After both have run at `now`, this is later than `now`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut at = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if !self.own_expired {
            at(self.next_discovery);
            for n in &self.table {
                if n.next_hello < n.heard + ANSWER_FOR {
                    at(n.next_hello);
                }
            }
        }
        for n in &self.table {
            at(n.expires);
            if let (true, Some(h)) = (n.usable, n.last_hello) {
                at(h + SILENCE_TIMEOUT);
            }
        }
        next
    }

    /// Loses neighbours silent for [`SILENCE_TIMEOUT`] and forgets those whose credential
    /// expired in proxy time (a removed member's last one, say).
    pub fn handle_timeout(&mut self, now: Instant, proxy_now_s: u64) {
        self.note_proxy_time(proxy_now_s);
        let mut i = 0;
        while i < self.table.len() {
            let n = &mut self.table[i];
            if proxy_now_s >= n.credential.expires_at() {
                let gone = self.table.swap_remove(i);
                if gone.usable {
                    let lost = NeighbourEvent::Lost {
                        member: gone.member(),
                        address: gone.remote,
                    };
                    self.events.push(&mut self.stats, lost);
                }
                continue;
            }
            // Set again from the proxy clock as known now: a timer due early (the offset
            // moved) is not due again at once.
            n.expires = expiry_instant(now, proxy_now_s, n.credential.expires_at());
            if n.usable && n.last_hello.is_some_and(|h| now >= h + SILENCE_TIMEOUT) {
                n.usable = false;
                let lost = NeighbourEvent::Lost {
                    member: n.member(),
                    address: n.remote,
                };
                self.events.push(&mut self.stats, lost);
            }
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SplitMix;
    use crate::wire::MAX_DATAGRAM;

    /// The proxy's clock when every test starts, in seconds.
    const T0: u64 = 1_800_000_000;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn issuer() -> CredentialIssuer {
        CredentialIssuer::from_proxy_key(&SecretKey::from_bytes([0x50; 32]))
    }

    fn secret(member: u32) -> SecretKey {
        let mut b = [0x77u8; 32];
        b[..4].copy_from_slice(&member.to_be_bytes());
        SecretKey::from_bytes(b)
    }

    const OFFER: Offer = Offer {
        sharing: true,
        up_kbit: 20_000,
        down_kbit: 50_000,
    };

    fn config(issuer: &CredentialIssuer, member: u32, key: &SecretKey, at: u64) -> MeshConfig {
        MeshConfig {
            static_key: key.clone(),
            credential: issuer.issue(member, &key.public_key(), at, DEFAULT_CREDENTIAL_LIFETIME_S),
            issuers: vec![issuer.issuer_key()],
            relay_port: 7118,
            offer: OFFER,
            hello_counter_start: at * 1_000_000,
        }
    }

    fn discovery(credential: &Credential) -> Vec<u8> {
        let mut out = vec![0u8; wire::MESH_DISCOVERY_LEN];
        wire::write_mesh_discovery(7118, &OFFER, credential.as_bytes(), None, &mut out).unwrap();
        out
    }

    struct Node {
        table: Neighbours,
        addr: SocketAddr,
        key: SecretKey,
        /// Gets a fresh credential at half life; a removed member does not.
        member: bool,
        /// What it sends is lost.
        muted: bool,
    }

    #[derive(Debug, Clone)]
    struct Sent {
        at: Instant,
        node: usize,
        destination: HelloDestination,
        bytes: Vec<u8>,
        delivered: bool,
    }

    /// Gateways on one mesh link, run timer by timer in simulated time. Every step checks
    /// that no timer in the past survives.
    struct Net {
        nodes: Vec<Node>,
        issuer: CredentialIssuer,
        start: Instant,
        now: Instant,
        sent: Vec<Sent>,
        events: Vec<(Instant, usize, NeighbourEvent)>,
    }

    impl Net {
        fn new(n: usize) -> Net {
            let addrs: Vec<String> = (1..=n).map(|i| format!("10.9.0.{i}:7117")).collect();
            Net::with_addresses(&addrs.iter().map(String::as_str).collect::<Vec<_>>())
        }

        fn with_addresses(addrs: &[&str]) -> Net {
            let start = Instant::now();
            let mut net = Net {
                nodes: Vec::new(),
                issuer: issuer(),
                start,
                now: start,
                sent: Vec::new(),
                events: Vec::new(),
            };
            for a in addrs {
                net.join(a);
            }
            net
        }

        fn join(&mut self, address: &str) -> usize {
            let member = 100 + self.nodes.len() as u32;
            let key = secret(member);
            let config = config(&self.issuer, member, &key, self.proxy_now());
            self.nodes.push(Node {
                table: Neighbours::new(config, self.now).unwrap(),
                addr: addr(address),
                key,
                member: true,
                muted: false,
            });
            self.nodes.len() - 1
        }

        fn proxy_now(&self) -> u64 {
            T0 + (self.now - self.start).as_secs()
        }

        fn id(&self, i: usize) -> u32 {
            self.nodes[i].table.member()
        }

        fn table(&self, i: usize) -> &Neighbours {
            &self.nodes[i].table
        }

        /// Node `i`'s entry for node `j`.
        fn entry(&self, i: usize, j: usize) -> Option<&Neighbour> {
            self.nodes[i].table.neighbour(self.id(j))
        }

        fn usable(&self, i: usize, j: usize) -> bool {
            self.entry(i, j).is_some_and(Neighbour::usable)
        }

        /// Everything the nodes send now, delivered, and what that makes them send.
        fn flush(&mut self) {
            let mut buf = [0u8; MAX_DATAGRAM];
            let pn = self.proxy_now();
            for _ in 0..8 {
                let mut sent = Vec::new();
                for (i, n) in self.nodes.iter_mut().enumerate() {
                    while let Some(t) = n.table.poll_hello(self.now, pn, &mut buf) {
                        sent.push(Sent {
                            at: self.now,
                            node: i,
                            destination: t.destination,
                            bytes: buf[..t.len].to_vec(),
                            delivered: !n.muted,
                        });
                    }
                }
                if sent.is_empty() {
                    return;
                }
                for s in sent.iter().filter(|s| s.delivered) {
                    self.deliver(s.node, s.destination, &s.bytes);
                }
                self.sent.extend(sent);
                self.collect_events();
            }
            panic!("the nodes never stop sending at one instant");
        }

        fn deliver(&mut self, from_node: usize, destination: HelloDestination, bytes: &[u8]) {
            let (now, pn) = (self.now, self.proxy_now());
            match destination {
                HelloDestination::Mesh => {
                    let from = self.nodes[from_node].addr;
                    for (j, n) in self.nodes.iter_mut().enumerate() {
                        if j != from_node {
                            let to = n.addr;
                            let _ = n.table.handle_hello(now, pn, from, to, bytes);
                        }
                    }
                }
                HelloDestination::Neighbour { remote, local, .. } => {
                    if let Some(n) = self.nodes.iter_mut().find(|n| n.addr == remote) {
                        let _ = n.table.handle_hello(now, pn, local, remote, bytes);
                    }
                }
            }
        }

        fn collect_events(&mut self) {
            for (i, n) in self.nodes.iter_mut().enumerate() {
                while let Some(e) = n.table.poll_event() {
                    self.events.push((self.now, i, e));
                }
            }
        }

        /// Runs every node's event loop up to `until`.
        fn run_until(&mut self, until: Instant) {
            loop {
                let pn = self.proxy_now();
                for n in &mut self.nodes {
                    if n.member && pn >= n.table.credential().refresh_at() {
                        let c = self.issuer.issue(
                            n.table.member(),
                            &n.key.public_key(),
                            pn,
                            DEFAULT_CREDENTIAL_LIFETIME_S,
                        );
                        n.table.set_credential(c).unwrap();
                    }
                    n.table.handle_timeout(self.now, pn);
                }
                self.collect_events();
                self.flush();
                for (i, n) in self.nodes.iter().enumerate() {
                    if let Some(t) = n.table.poll_timeout() {
                        assert!(t > self.now, "node {i}: a timer in the past survived");
                    }
                }
                match self
                    .nodes
                    .iter()
                    .filter_map(|n| n.table.poll_timeout())
                    .min()
                {
                    Some(t) if t <= until => self.now = t,
                    _ => {
                        self.now = until;
                        return;
                    }
                }
            }
        }

        fn run_for(&mut self, d: Duration) {
            self.run_until(self.now + d);
        }

        /// The next neighbour hello node `i` sends node `j`, not delivered.
        fn fresh_hello(&mut self, i: usize, j: usize) -> Vec<u8> {
            let (to_member, pn) = (self.id(j), self.proxy_now());
            let at = self.now + NEIGHBOUR_HELLO_INTERVAL;
            let mut buf = [0u8; MAX_DATAGRAM];
            while let Some(t) = self.nodes[i].table.poll_hello(at, pn, &mut buf) {
                if let HelloDestination::Neighbour { member, .. } = t.destination {
                    if member == to_member && t.len == NEIGHBOUR_HELLO_LEN {
                        return buf[..t.len].to_vec();
                    }
                }
            }
            panic!("node {i} has no hello for node {j}");
        }

        /// Node `j` handles `bytes` as if from `from`, to `to`.
        fn hand(
            &mut self,
            j: usize,
            from: SocketAddr,
            to: SocketAddr,
            bytes: &[u8],
        ) -> Result<(), DropReason> {
            let (now, pn) = (self.now, self.proxy_now());
            self.nodes[j].table.handle_hello(now, pn, from, to, bytes)
        }

        /// Node `j` handles what node `i` sends it.
        fn hand_from(&mut self, i: usize, j: usize, bytes: &[u8]) -> Result<(), DropReason> {
            let (from, to) = (self.nodes[i].addr, self.nodes[j].addr);
            self.hand(j, from, to, bytes)
        }

        fn events_of(&self, i: usize) -> Vec<NeighbourEvent> {
            self.events
                .iter()
                .filter(|e| e.1 == i)
                .map(|e| e.2)
                .collect()
        }
    }

    #[test]
    fn two_neighbours_find_each_other_and_check_each_credential_once() {
        let mut net = Net::new(2);
        net.run_for(Duration::ZERO);
        // Discovery hellos cross, each answers the other's unicast, neighbour hellos follow:
        // both usable at once, and nothing refused on the way.
        assert!(net.usable(0, 1) && net.usable(1, 0));
        for (i, j) in [(0, 1), (1, 0)] {
            assert_eq!(
                net.events_of(i),
                [NeighbourEvent::Seen {
                    member: net.id(j),
                    address: net.nodes[j].addr
                }]
            );
            assert_eq!(net.table(i).drops().total(), 0);
            let e = net.entry(i, j).unwrap();
            assert_eq!(e.offer(), OFFER);
            assert_eq!(
                e.relay_endpoint(),
                Some(SocketAddr::new(net.nodes[j].addr.ip(), 7118))
            );
        }
        net.run_for(Duration::from_secs(10));
        for i in 0..2 {
            let t = net.table(i);
            assert_eq!(t.drops().total(), 0);
            assert!(net.usable(i, 1 - i));
            // Its own credential and its neighbour's, once each, after ten more discovery
            // hellos with the same credential.
            assert_eq!(t.stats().signature_checks, 2);
            assert!(t.stats().hellos_accepted >= 10 + 4 * 10, "{:?}", t.stats());
            assert!(t.stats().discovery_sent >= 11);
            assert!(t.stats().neighbour_hellos_sent >= 40);
        }
        assert_eq!(net.events.len(), 2, "no event but the two Seen");
    }

    /// A relay's rating rides in its discovery hellos; a neighbour keeps it once checked
    /// (the same bytes again cost no check) and refuses, counted, one that is another
    /// member's, signed by another key, tampered with or expired, keeping the good one.
    #[test]
    fn a_rating_in_discovery_hellos_is_kept_only_fresh_signed_and_the_senders() {
        let mut net = Net::new(2);
        net.run_for(Duration::ZERO);
        let now = net.proxy_now();
        let rating = |member: u32, issued_at: u64| Rating {
            member,
            window_start: issued_at - 600,
            window_end: issued_at,
            bytes_offered: 1_000_000,
            bytes_delivered: 990_000,
            uptime_permille: 1000,
            line_rate: 2_000_000,
            issued_at,
            expires_at: issued_at + 1800,
        };
        let good = rating(net.id(0), now);
        net.nodes[0]
            .table
            .set_rating(Some(SignedRating::sign(&net.issuer, &good)));
        net.run_for(Duration::from_millis(1100));
        assert_eq!(
            net.entry(1, 0).unwrap().rating(net.proxy_now()),
            Some(&good)
        );
        assert_eq!(net.entry(0, 1).unwrap().rating(net.proxy_now()), None);
        let checks = net.table(1).stats().signature_checks;
        net.run_for(Duration::from_secs(5));
        assert_eq!(net.table(1).stats().signature_checks, checks);
        assert_eq!(net.table(1).drops().total(), 0);
        let other = CredentialIssuer::from_proxy_key(&SecretKey::from_bytes([0x51; 32]));
        let mut tampered = SignedRating::sign(&net.issuer, &good).to_bytes();
        tampered[40] ^= 1;
        let expired = Rating {
            issued_at: now - 4000,
            expires_at: now - 2000,
            ..good
        };
        for (bad, reason) in [
            (
                SignedRating::sign(&net.issuer, &rating(net.id(1), now)),
                DropReason::BadRating,
            ),
            (SignedRating::sign(&other, &good), DropReason::BadRating),
            (
                SignedRating::from_bytes(&tampered).unwrap(),
                DropReason::BadRating,
            ),
            (
                SignedRating::sign(&net.issuer, &expired),
                DropReason::StaleRating,
            ),
        ] {
            let before = net.table(1).drops().get(reason);
            net.nodes[0].table.set_rating(Some(bad));
            net.run_for(Duration::from_millis(1100));
            assert!(net.table(1).drops().get(reason) > before, "{reason:?}");
            assert_eq!(
                net.entry(1, 0).unwrap().rating(net.proxy_now()),
                Some(&good)
            );
            assert!(net.usable(1, 0), "the hello stands on its credential");
        }
        // Past its expiry it is no longer shown.
        assert_eq!(net.entry(1, 0).unwrap().rating(good.expires_at), None);
    }

    #[test]
    fn a_late_joiner_is_usable_within_a_round_trip_of_its_first_hello() {
        let mut net = Net::new(1);
        net.run_for(Duration::from_millis(2500));
        let late = net.join("10.9.0.2:7117");
        let joined = net.now;
        net.run_for(Duration::ZERO);
        assert!(net.usable(0, late) && net.usable(late, 0));
        assert!(net.events.iter().all(|e| e.0 == joined));
        assert_eq!(
            net.table(0).drops().total() + net.table(late).drops().total(),
            0
        );
    }

    #[test]
    fn a_replayed_neighbour_hello_is_refused_and_counted() {
        let mut net = Net::new(2);
        net.run_for(Duration::from_secs(1));
        let hello = net.fresh_hello(0, 1);
        assert_eq!(net.hand_from(0, 1, &hello), Ok(()));
        assert_eq!(net.hand_from(0, 1, &hello), Err(DropReason::ReplayedHello));
        // An older one, already accepted long ago, too.
        let old = net
            .sent
            .iter()
            .find(|s| s.node == 0 && s.bytes.len() == NEIGHBOUR_HELLO_LEN)
            .unwrap()
            .bytes
            .clone();
        assert_eq!(net.hand_from(0, 1, &old), Err(DropReason::ReplayedHello));
        let t = net.table(1);
        assert_eq!(t.drops().get(DropReason::ReplayedHello), 2);
        assert_eq!(t.drops().total(), 2);
        assert_eq!(net.entry(1, 0).unwrap().hellos_refused(), 2);
    }

    #[test]
    fn a_forged_neighbour_hello_is_refused_whatever_bit_is_flipped() {
        let mut net = Net::new(2);
        net.run_for(Duration::from_secs(1));
        let hello = net.fresh_hello(0, 1);
        for bit in 0..NEIGHBOUR_HELLO_LEN * 8 {
            let mut forged = hello.clone();
            forged[bit / 8] ^= 1 << (bit % 8);
            let r = net.hand_from(0, 1, &forged);
            assert!(r.is_err(), "bit {bit} flipped and accepted");
            // Past the header and the sender (which pick the message and the key), it is
            // the MAC that refuses.
            if !matches!(bit / 8, 0 | 1 | 4..=7) {
                assert_eq!(r, Err(DropReason::BadHelloMac), "bit {bit}");
            }
        }
        let t = net.table(1);
        assert_eq!(t.drops().total(), NEIGHBOUR_HELLO_LEN as u64 * 8);
        assert_eq!(
            t.drops().get(DropReason::BadHelloMac),
            (NEIGHBOUR_HELLO_LEN as u64 - 6) * 8
        );
        // None of them moved the counter: the real one still passes.
        assert_eq!(net.hand_from(0, 1, &hello), Ok(()));
    }

    #[test]
    fn a_hello_re_sent_from_another_address_is_refused() {
        let mut net = Net::new(2);
        net.run_for(Duration::from_secs(1));
        let (a, b) = (net.nodes[0].addr, net.nodes[1].addr);
        let hello = net.fresh_hello(0, 1);
        for (from, to) in [
            (addr("10.9.0.66:7117"), b),
            (addr("10.9.0.1:7118"), b),
            (a, addr("10.9.0.99:7117")),
            (b, a),
        ] {
            assert_eq!(
                net.hand(1, from, to, &hello),
                Err(DropReason::BadHelloMac),
                "{from} -> {to}"
            );
        }
        assert_eq!(net.table(1).drops().get(DropReason::BadHelloMac), 4);
        assert_eq!(net.entry(1, 0).unwrap().address(), a);
        // The same IPv4 address as a dual-stack socket sees it is the same address.
        assert_eq!(
            net.hand(1, addr("[::ffff:10.9.0.1]:7117"), b, &hello),
            Ok(())
        );
    }

    #[test]
    fn link_local_scope_ids_differ_between_hosts_and_do_not_count() {
        let mut net = Net::with_addresses(&["[fe80::1%2]:7117", "[fe80::2%2]:7117"]);
        net.run_for(Duration::from_secs(1));
        assert!(net.usable(0, 1) && net.usable(1, 0));
        let hello = net.fresh_hello(0, 1);
        // Node 1 sees the same link under its own interface index.
        let r = net.hand(
            1,
            addr("[fe80::1%7]:7117"),
            addr("[fe80::2%7]:7117"),
            &hello,
        );
        assert_eq!(r, Ok(()));
    }

    #[test]
    fn a_removed_member_is_locked_out_when_its_credential_expires() {
        let mut net = Net::new(2);
        // Node 1 is removed at the proxy: it gets no more credentials; node 0 does.
        net.nodes[1].member = false;
        let expiry = net.start + Duration::from_secs(DEFAULT_CREDENTIAL_LIFETIME_S);
        net.run_until(expiry - Duration::from_millis(300));
        assert!(net.usable(0, 1) && net.usable(1, 0));
        let hello = net.fresh_hello(1, 0);
        let its_discovery = discovery(net.table(1).credential());
        // Just past expiry (proxy time), before node 0's timer has run: refused as expired.
        net.now = expiry;
        assert_eq!(
            net.hand_from(1, 0, &hello),
            Err(DropReason::ExpiredCredential)
        );
        assert_eq!(
            net.hand_from(1, 0, &its_discovery),
            Err(DropReason::ExpiredCredential)
        );
        net.run_for(Duration::from_secs(5));
        assert!(net.events_of(0).contains(&NeighbourEvent::Lost {
            member: net.id(1),
            address: net.nodes[1].addr
        }));
        let lost_at = net
            .events
            .iter()
            .find(|e| e.1 == 0 && matches!(e.2, NeighbourEvent::Lost { .. }));
        assert_eq!(
            lost_at.unwrap().0,
            expiry,
            "lost at its credential's expiry, not later"
        );
        assert!(net.entry(0, 1).is_none(), "forgotten with its credential");
        // It stopped sending (nobody would take it), and what it sent before is refused.
        assert!(net.sent.iter().all(|s| s.node != 1 || s.at < expiry));
        let hello = net
            .sent
            .iter()
            .rev()
            .find(|s| s.node == 1 && s.bytes.len() == NEIGHBOUR_HELLO_LEN)
            .unwrap()
            .bytes
            .clone();
        assert_eq!(
            net.hand_from(1, 0, &hello),
            Err(DropReason::UnknownNeighbour)
        );
        assert_eq!(
            net.hand_from(1, 0, &its_discovery),
            Err(DropReason::ExpiredCredential)
        );
        // Node 0 itself lived on through two refreshes.
        assert!(net.table(0).credential().expires_at() > net.proxy_now());
        assert_eq!(net.table(0).drops().get(DropReason::ExpiredCredential), 3);
        assert_eq!(net.table(0).drops().get(DropReason::UnknownNeighbour), 1);
    }

    #[test]
    fn a_credential_signed_by_another_key_is_refused() {
        let mut net = Net::new(1);
        net.run_for(Duration::ZERO);
        let stranger = CredentialIssuer::from_proxy_key(&SecretKey::from_bytes([0x51; 32]));
        let key = secret(555);
        let theirs = stranger.issue(555, &key.public_key(), T0, DEFAULT_CREDENTIAL_LIFETIME_S);
        let from = addr("10.9.0.55:7117");
        let to = net.nodes[0].addr;
        let checks = net.table(0).stats().signature_checks;
        // Another co-op's key: refused by its id, without a signature check.
        assert_eq!(
            net.hand(0, from, to, &discovery(&theirs)),
            Err(DropReason::BadCredential)
        );
        assert_eq!(net.table(0).stats().signature_checks, checks);
        // Signed by another key under our co-op's key id: one check, then remembered.
        let mut bytes = *theirs.as_bytes();
        bytes[52..56].copy_from_slice(&issuer().issuer_key().id().to_be_bytes());
        let forged = Credential::from_bytes(&bytes).unwrap();
        for _ in 0..3 {
            assert_eq!(
                net.hand(0, from, to, &discovery(&forged)),
                Err(DropReason::BadCredential)
            );
        }
        assert_eq!(net.table(0).stats().signature_checks, checks + 1);
        assert_eq!(net.table(0).drops().get(DropReason::BadCredential), 4);
        assert_eq!(net.table(0).neighbours().count(), 0);
        // So its hellos are from nobody we know.
        let mut hello = [0u8; NEIGHBOUR_HELLO_LEN];
        wire::write_neighbour_hello(555, 1, 7118, &OFFER, &mut hello);
        assert_eq!(
            net.hand(0, from, to, &hello),
            Err(DropReason::UnknownNeighbour)
        );
    }

    #[test]
    fn a_tampered_credential_is_refused_and_the_real_one_stays() {
        let mut net = Net::new(2);
        net.run_for(Duration::from_secs(1));
        let real = *net.table(1).credential();
        let valid = discovery(&real);
        let checks = net.table(0).stats().signature_checks;
        let mut refused = 0;
        for bit in 0..CREDENTIAL_LEN * 8 {
            // A check's worth of budget between flips: this is about tampering, not floods.
            net.now += Duration::from_millis(1000 / u64::from(SIGNATURE_CHECKS_PER_SECOND));
            let mut tampered = valid.clone();
            tampered[16 + bit / 8] ^= 1 << (bit % 8);
            let r = net.hand_from(1, 0, &tampered);
            assert!(
                matches!(
                    r,
                    Err(DropReason::BadCredential
                        | DropReason::ExpiredCredential
                        | DropReason::StaleCredential
                        // Member 101 flipped to 100: node 0's own id.
                        | DropReason::Unexpected)
                ),
                "bit {bit}: {r:?}"
            );
            refused += 1;
            assert_eq!(net.entry(0, 1).unwrap().credential(), &real);
        }
        let t = net.table(0);
        assert_eq!(t.drops().total(), refused);
        // Only the flips that look like a newer credential of a member cost a check.
        assert!(t.stats().signature_checks - checks < refused);
        assert_eq!(t.neighbours().count(), 1);
        // A tampered credential costs one check, and the same again none.
        let mut tampered = valid.clone();
        tampered[16 + 100] ^= 1;
        let checks = net.table(0).stats().signature_checks;
        net.now += Duration::from_secs(1);
        for _ in 0..3 {
            assert_eq!(
                net.hand_from(1, 0, &tampered),
                Err(DropReason::BadCredential)
            );
        }
        assert_eq!(net.table(0).stats().signature_checks, checks + 1);
    }

    #[test]
    fn a_flood_of_forged_credentials_costs_a_bounded_number_of_checks() {
        let mut net = Net::new(1);
        net.run_for(Duration::ZERO);
        let checks = net.table(0).stats().signature_checks;
        let to = net.nodes[0].addr;
        let id = issuer().issuer_key().id();
        let forge = |n: u32| {
            let mut b = [0x5au8; CREDENTIAL_LEN];
            b[0..4].copy_from_slice(&(1000 + n).to_be_bytes());
            b[36..44].copy_from_slice(&T0.to_be_bytes());
            b[44..52].copy_from_slice(&(T0 + 900).to_be_bytes());
            b[52..56].copy_from_slice(&id.to_be_bytes());
            Credential::from_bytes(&b).unwrap()
        };
        let mut limited = 0;
        for n in 0..100 {
            match net.hand(0, addr("10.9.0.66:7117"), to, &discovery(&forge(n))) {
                Err(DropReason::BadCredential) => {}
                Err(DropReason::CredentialRateLimited) => limited += 1,
                r => panic!("{r:?}"),
            }
        }
        let t = net.table(0);
        assert_eq!(
            t.stats().signature_checks - checks,
            u64::from(SIGNATURE_CHECK_BURST)
        );
        assert_eq!(limited, 100 - SIGNATURE_CHECK_BURST);
        // Then a few a second.
        net.now += Duration::from_secs(1);
        for n in 100..200 {
            let _ = net.hand(0, addr("10.9.0.66:7117"), to, &discovery(&forge(n)));
        }
        let t = net.table(0);
        assert_eq!(
            t.stats().signature_checks - checks,
            u64::from(SIGNATURE_CHECK_BURST + SIGNATURE_CHECKS_PER_SECOND)
        );
    }

    #[test]
    fn an_older_credential_of_a_member_is_refused_as_stale() {
        let mut net = Net::new(2);
        net.run_for(Duration::from_secs(1));
        let old = discovery(net.table(1).credential());
        let newer = net.issuer.issue(
            net.id(1),
            &net.nodes[1].key.public_key(),
            T0 + 1,
            DEFAULT_CREDENTIAL_LIFETIME_S,
        );
        net.nodes[1].table.set_credential(newer).unwrap();
        net.run_for(Duration::from_secs(2));
        assert_eq!(net.entry(0, 1).unwrap().credential(), &newer);
        assert_eq!(net.hand_from(1, 0, &old), Err(DropReason::StaleCredential));
        assert!(net.usable(0, 1) && net.usable(1, 0));
        // A refresh changes nothing a relay would see.
        assert_eq!(net.events.len(), 2);
    }

    #[test]
    fn silence_loses_a_neighbour_within_the_timeout() {
        let mut net = Net::new(3);
        net.run_for(Duration::from_secs(2));
        net.nodes[1].muted = true;
        let muted = net.now;
        net.run_for(Duration::from_secs(4));
        let last = net.entry(0, 1).unwrap().last_heard().unwrap();
        assert!(last <= muted);
        for i in [0, 2] {
            let lost: Vec<_> = net
                .events
                .iter()
                .filter(|e| e.1 == i && matches!(e.2, NeighbourEvent::Lost { .. }))
                .collect();
            assert_eq!(lost.len(), 1, "{lost:?}");
            assert_eq!(
                lost[0].2,
                NeighbourEvent::Lost {
                    member: net.id(1),
                    address: net.nodes[1].addr
                }
            );
            assert!(
                lost[0].0 - last <= SILENCE_TIMEOUT,
                "lost {:?} after its last hello",
                lost[0].0 - last
            );
            assert!(!net.usable(i, 1));
        }
        assert!(net.usable(0, 2) && net.usable(2, 0));
        // Past ANSWER_FOR, nobody says hello to it any more; its credential is kept (its
        // counter with it) until it expires.
        let quiet = muted + ANSWER_FOR;
        assert!(!net.sent.iter().any(|s| s.at > quiet
            && matches!(s.destination, HelloDestination::Neighbour { member, .. } if member == net.id(1))));
        assert!(net.entry(0, 1).is_some());
        // It comes back: seen again.
        net.nodes[1].muted = false;
        net.run_for(Duration::from_secs(2));
        assert!(net.usable(0, 1) && net.usable(1, 0) && net.usable(2, 1));
    }

    #[test]
    fn a_gateway_whose_credential_expired_sends_nothing_and_does_not_spin() {
        let mut net = Net::new(2);
        net.nodes[0].member = false;
        net.nodes[1].member = false;
        let expiry = net.start + Duration::from_secs(DEFAULT_CREDENTIAL_LIFETIME_S);
        net.run_until(expiry + Duration::from_secs(30));
        assert!(net.sent.iter().all(|s| s.at < expiry));
        for i in 0..2 {
            assert_eq!(net.table(i).neighbours().count(), 0);
            assert_eq!(net.table(i).poll_timeout(), None);
        }
        // A new credential, and it starts again.
        for i in 0..2 {
            let pn = net.proxy_now();
            let c = net
                .issuer
                .issue(net.id(i), &net.nodes[i].key.public_key(), pn, 900);
            net.nodes[i].table.set_credential(c).unwrap();
        }
        net.run_for(Duration::from_secs(1));
        assert!(net.usable(0, 1) && net.usable(1, 0));
    }

    #[test]
    fn only_authenticated_hellos_move_a_usable_neighbour() {
        let mut net = Net::new(2);
        net.run_for(Duration::from_secs(1));
        let (a, b) = (net.nodes[0].addr, net.nodes[1].addr);
        // Node 0's discovery hello, replayed by a stranger from elsewhere.
        let replayed = discovery(net.table(0).credential());
        assert_eq!(net.hand(1, addr("10.9.0.66:7117"), b, &replayed), Ok(()));
        assert_eq!(net.entry(1, 0).unwrap().address(), a);
        net.run_for(Duration::from_secs(1));
        assert!(net.sent.iter().all(|s| !matches!(s.destination,
            HelloDestination::Neighbour { remote, .. } if remote.port() == 7117 && remote.ip() == addr("10.9.0.66:1").ip())));
        // Node 1 gets a second address on the link and hears node 0 there, after node 0
        // went quiet for it: its hellos leave from the new one, and node 0 follows them.
        let b2 = addr("10.9.0.12:7117");
        net.nodes[0].muted = true;
        net.run_for(Duration::from_secs(2));
        assert!(!net.usable(1, 0) && net.usable(0, 1));
        net.hand(1, a, b2, &replayed).unwrap();
        net.nodes[1].addr = b2;
        net.nodes[0].muted = false;
        net.run_for(Duration::from_secs(1));
        assert!(net.usable(0, 1) && net.usable(1, 0));
        assert_eq!(net.entry(0, 1).unwrap().address(), b2);
        assert!(net.events_of(0).contains(&NeighbourEvent::Moved {
            member: net.id(1),
            from: b,
            to: b2
        }));
    }

    #[test]
    fn a_member_with_a_new_static_key_is_lost_then_seen_under_it() {
        let mut net = Net::new(2);
        net.run_for(Duration::from_secs(1));
        let old_hello = net.fresh_hello(1, 0);
        // Its key changed at the proxy (same member id): a fresh table with the new key.
        net.now += Duration::from_secs(1);
        let key = SecretKey::from_bytes([0x99; 32]);
        let config = config(&net.issuer, net.id(1), &key, net.proxy_now());
        net.nodes[1].table = Neighbours::new(config, net.now).unwrap();
        net.nodes[1].key = key;
        net.run_for(Duration::ZERO);
        let ev = net.events_of(0);
        assert_eq!(
            ev[ev.len() - 2],
            NeighbourEvent::Lost {
                member: net.id(1),
                address: net.nodes[1].addr
            }
        );
        assert_eq!(
            ev[ev.len() - 1],
            NeighbourEvent::Seen {
                member: net.id(1),
                address: net.nodes[1].addr
            }
        );
        assert_eq!(
            net.entry(0, 1).unwrap().public_key(),
            net.nodes[1].key.public_key()
        );
        // Its hellos under the old key no longer pass, though their counter is high.
        assert_eq!(
            net.hand_from(1, 0, &old_hello),
            Err(DropReason::BadHelloMac)
        );
    }

    #[test]
    fn a_full_table_refuses_newcomers() {
        let mut net = Net::new(1);
        net.run_for(Duration::ZERO);
        let to = net.nodes[0].addr;
        for n in 0..=MAX_NEIGHBOURS as u32 {
            let key = secret(2000 + n);
            let c = net.issuer.issue(2000 + n, &key.public_key(), T0, 900);
            let from = SocketAddr::new(IpAddr::from([10, 9, 1, n as u8]), 7117);
            let r = net.hand(0, from, to, &discovery(&c));
            if (n as usize) < MAX_NEIGHBOURS {
                assert_eq!(r, Ok(()));
            } else {
                assert_eq!(r, Err(DropReason::NeighbourTableFull));
            }
        }
        let t = net.table(0);
        assert_eq!(t.neighbours().count(), MAX_NEIGHBOURS);
        assert_eq!(t.drops().get(DropReason::NeighbourTableFull), 1);
        // Refused before any signature check: the table was full anyway.
        assert_eq!(t.stats().signature_checks, 1 + MAX_NEIGHBOURS as u64);
    }

    #[test]
    fn garbage_is_refused_and_counted_never_a_panic() {
        let mut net = Net::new(2);
        net.run_for(Duration::from_secs(1));
        let valid = [net.fresh_hello(0, 1), discovery(net.table(0).credential())];
        let mut rng = SplitMix(7);
        let mut errors = 0;
        let before = net.table(1).drops().total();
        for i in 0..20_000 {
            let mut bytes = if i % 2 == 0 {
                let len = (rng.next_u32() % 200) as usize;
                let mut b: Vec<u8> = (0..len).map(|_| rng.next_u32() as u8).collect();
                if b.len() > 2 {
                    b[0] = wire::VERSION;
                    b[1] = 8 + (rng.next_u32() % 2) as u8;
                }
                b
            } else {
                valid[(i / 2) % 2].clone()
            };
            for _ in 0..1 + rng.next_u32() % 3 {
                if !bytes.is_empty() {
                    let at = rng.next_u32() as usize % bytes.len();
                    bytes[at] ^= 1 << (rng.next_u32() % 8);
                }
            }
            if net.hand_from(0, 1, &bytes).is_err() {
                errors += 1;
            }
        }
        assert_eq!(net.table(1).drops().total() - before, errors);
        assert!(net.usable(1, 0));
    }

    #[test]
    fn new_refuses_a_credential_for_another_key_or_issuer() {
        let issuer = issuer();
        let mut c = config(&issuer, 5, &secret(5), T0);
        c.static_key = secret(6);
        assert_eq!(
            Neighbours::new(c, Instant::now()).err(),
            Some(DropReason::BadCredential)
        );
        let mut c = config(&issuer, 5, &secret(5), T0);
        c.issuers =
            vec![CredentialIssuer::from_proxy_key(&SecretKey::from_bytes([1; 32])).issuer_key()];
        assert_eq!(
            Neighbours::new(c, Instant::now()).err(),
            Some(DropReason::BadCredential)
        );
    }

    #[test]
    fn credential_layout_and_checks() {
        let issuer = issuer();
        let key = secret(9);
        let c = issuer.issue(9, &key.public_key(), T0, 600);
        assert_eq!(c.member(), 9);
        assert_eq!(c.public_key(), key.public_key());
        assert_eq!(
            (c.issued_at(), c.expires_at(), c.refresh_at()),
            (T0, T0 + 600, T0 + 300)
        );
        assert_eq!(c.key_id(), issuer.issuer_key().id());
        assert_eq!(Credential::from_bytes(c.as_bytes()), Ok(c));
        assert_eq!(issuer.issuer_key().verify(&c), Ok(()));
        assert_eq!(
            Credential::from_bytes(&c.as_bytes()[1..]),
            Err(DropReason::TooShort)
        );
        assert_eq!(
            Credential::from_bytes(&[0; CREDENTIAL_LEN + 1]),
            Err(DropReason::BadLength)
        );
        // Expiring before it is issued (or a zero lifetime) is malformed.
        let mut b = *c.as_bytes();
        b[44..52].copy_from_slice(&T0.to_be_bytes());
        assert_eq!(Credential::from_bytes(&b), Err(DropReason::BadCredential));
        assert_eq!(
            issuer.issue(9, &key.public_key(), T0, 0).expires_at(),
            T0 + 1
        );
        // The issuer key round-trips; a key that is no point is refused.
        let k = issuer.issuer_key();
        assert_eq!(IssuerKey::from_bytes(&k.to_bytes()), Ok(k));
        assert!(IssuerKey::from_bytes(&[0; 32]).is_err());
        assert!(!format!("{issuer:?}").contains(&hex(&k.to_bytes())));
    }

    #[test]
    fn dropping_an_issuer_drops_its_members() {
        let mut net = Net::new(2);
        net.run_for(Duration::from_secs(1));
        let stranger = CredentialIssuer::from_proxy_key(&SecretKey::from_bytes([0x51; 32]));
        net.nodes[0].table.set_issuers(vec![stranger.issuer_key()]);
        assert!(net.entry(0, 1).is_none());
        assert_eq!(
            net.nodes[0].table.poll_event(),
            Some(NeighbourEvent::Lost {
                member: net.id(1),
                address: net.nodes[1].addr
            })
        );
    }

    #[test]
    fn a_buffer_too_small_loses_the_hello_and_does_not_spin() {
        let mut net = Net::new(2);
        net.run_for(Duration::from_secs(1));
        let (now, pn) = (net.now + DISCOVERY_INTERVAL, net.proxy_now());
        let t = &mut net.nodes[0].table;
        let mut small = [0u8; NEIGHBOUR_HELLO_LEN - 1];
        t.handle_timeout(now, pn);
        assert_eq!(t.poll_hello(now, pn, &mut small), None);
        assert!(t.poll_timeout().unwrap() > now);
        // The discovery hello and the neighbour hello, lost.
        assert_eq!(t.drops().get(DropReason::PacketTooLarge), 2);
    }

    #[test]
    fn a_link_local_relay_keeps_its_scope() {
        let mut net = Net::with_addresses(&["[fe80::1%2]:7117", "[fe80::2%2]:7117"]);
        net.run_for(Duration::from_secs(1));
        let relay = net.entry(0, 1).unwrap().relay_endpoint().unwrap();
        assert_eq!(relay, addr("[fe80::2%2]:7118"));
        let SocketAddr::V6(v6) = relay else {
            panic!("{relay}")
        };
        assert_eq!(v6.scope_id(), 2);
    }

    /// Fixed keys, exact bytes: any change of format shows here. Checked against a second
    /// implementation (Python's `cryptography`, `hmac`, `hashlib`):
    /// `protocol/tests/mesh_vectors.py` prints the same.
    #[test]
    fn vectors() {
        let issuer = issuer();
        assert_eq!(
            hex(&issuer.issuer_key().to_bytes()),
            "7d2984a59ee6d239ba9b487abe4ee4d6035b6bd33a22d81d7e3a3d8f227290c5"
        );
        assert_eq!(issuer.issuer_key().id(), 0x2698_5a41);
        let a = SecretKey::from_bytes([0xa1; 32]);
        let b = SecretKey::from_bytes([0xb2; 32]);
        let a_public = "c306fb0ef2bf8b7f93bad98155fa37daec74db0c4cbeda6c6f1dba9d36558252";
        assert_eq!(hex(&a.public_key().0), a_public);

        let credential = issuer.issue(7, &a.public_key(), T0, DEFAULT_CREDENTIAL_LIFETIME_S);
        let signature = "a5c239349f6d16755327932821c003a01d895d0ce8701413b0457a4b74eaacc9\
                         3be2b4a8f3545235deea5b0ee423ffe145794f889e0d6d1bd7ea0b13d712fc03";
        let credential_hex = [
            "00000007",         // member 7
            a_public,           // its static key
            "000000006b49d200", // issued at 1 800 000 000
            "000000006b49d584", // expires at 1 800 000 900
            "26985a41",         // key id
            signature,
        ]
        .concat();
        assert_eq!(hex(credential.as_bytes()), credential_hex);

        let pair = "03e0f5056f5472a00541885a7b8a69d130f2ee3199612ee9d1dd77b064ed5c9c";
        let ab = pairwise_key(&a, &a.public_key(), &b.public_key()).unwrap();
        assert_eq!(hex(&ab), pair);
        assert_eq!(pairwise_key(&b, &b.public_key(), &a.public_key()), Some(ab));

        let (a_addr, b_addr) = (addr("192.0.2.1:7117"), addr("192.0.2.2:7117"));
        let now = Instant::now();
        let mut table_a = Neighbours::new(
            MeshConfig {
                static_key: a,
                credential,
                issuers: vec![issuer.issuer_key()],
                relay_port: 7118,
                offer: OFFER,
                hello_counter_start: 1_800_000_000_000_000,
            },
            now,
        )
        .unwrap();
        let mut buf = [0u8; MAX_DATAGRAM];
        let t = table_a.poll_hello(now, T0, &mut buf).unwrap();
        assert_eq!(t.destination, HelloDestination::Mesh);
        let discovery_hex = [
            "0208",     // version 2, type 8
            "01",       // sharing
            "00",       // reserved
            "1bce",     // relay port 7118
            "0000",     // reserved
            "00004e20", // 20 000 kbit/s up
            "0000c350", // 50 000 kbit/s down
            &credential_hex,
        ]
        .concat();
        assert_eq!(hex(&buf[..t.len]), discovery_hex);

        // B's discovery hello reaches A; A answers it unicast, then says hello.
        let credential_b = issuer.issue(9, &b.public_key(), T0, DEFAULT_CREDENTIAL_LIFETIME_S);
        table_a
            .handle_hello(now, T0, b_addr, a_addr, &discovery(&credential_b))
            .unwrap();
        let to_b = HelloDestination::Neighbour {
            member: 9,
            remote: b_addr,
            local: a_addr,
        };
        let t = table_a.poll_hello(now, T0, &mut buf).unwrap();
        assert_eq!((t.destination, hex(&buf[..t.len])), (to_b, discovery_hex));
        let t = table_a.poll_hello(now, T0, &mut buf).unwrap();
        let hello_hex = [
            "0209",             // version 2, type 9
            "01",               // sharing
            "00",               // reserved
            "00000007",         // from member 7
            "0006651728988001", // counter 1 800 000 000 000 001
            "1bce",             // relay port 7118
            "0000",             // reserved
            "00004e20",         // 20 000 kbit/s up
            "0000c350",         // 50 000 kbit/s down
            // HMAC-SHA256(pair key, bytes 0..28 | ::ffff:192.0.2.1 7117 | ::ffff:192.0.2.2 7117)
            "6a0c94f345c25156eb8d325edb65b832",
        ]
        .concat();
        assert_eq!((t.destination, hex(&buf[..t.len])), (to_b, hello_hex));
        // Over IPv6 link-local addresses (the scope id is not covered).
        let key = MacKey::new(&ab);
        let mac = hello_mac(
            &key,
            &buf[..28],
            &addr("[fe80::a1%3]:7117"),
            &addr("[fe80::b2%3]:7117"),
        );
        assert_eq!(hex(&mac), "4e66bf290e261efe06a3d155ea1b26f5");
    }
}
