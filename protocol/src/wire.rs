//! The wire format: every datagram linkpool puts on a link.
//!
//! All integers are big-endian. Every message starts with a version byte and a type byte.
//! Parsing is done once by [`Message::parse`], which checks every length; after that no
//! accessor can panic, whatever the bytes were.
//!
//! | type | message | sent by |
//! | --- | --- | --- |
//! | 1 | [`HandshakeInit`] | gateway → proxy |
//! | 2 | [`HandshakeResponse`] | proxy → gateway |
//! | 3 | [`CookieReply`] | proxy → gateway, when under load |
//! | 4 | transport: a per-path packet number and frames ([`crate::frame`]) | both |
//! | 6 | [`RelayEnvelope`] upstream | relay → proxy |
//! | 7 | [`RelayEnvelope`] downstream | proxy → relay |
//! | 8 | [`MeshDiscovery`]: a member's credential, multicast | gateway → mesh |
//! | 9 | [`NeighbourHello`]: pairwise-authenticated, unicast | gateway → neighbour |
//!
//! The mesh hellos' authentication (credentials, pairwise keys) is [`crate::mesh`]'s.

use crate::DropReason;

/// The only protocol version this build speaks. Version 2 numbers packets per path and
/// acknowledges them ([`crate::frame`]); version 1 had a data and a control type instead.
pub const VERSION: u8 = 2;

/// Largest datagram we accept or produce. Sized for a 1500-byte inner packet in a relay
/// envelope, with room to spare, and small enough for a router's buffers.
pub const MAX_DATAGRAM: usize = 2048;

/// Length of an AEAD tag (AES-GCM and ChaCha20-Poly1305 alike).
pub const TAG_LEN: usize = 16;
/// Length of a MAC (truncated HMAC-SHA256) on handshake, relay and mesh messages.
pub const MAC_LEN: usize = 16;

/// Transport header: version, type, path (u16), receiver index, counter.
pub const TRANSPORT_HEADER_LEN: usize = 16;
/// What sealing adds to an IP packet on a direct path, at most: the header, the packet
/// number, a spread packet's frame header, the tag.
pub const TRANSPORT_OVERHEAD: usize = TRANSPORT_HEADER_LEN
    + crate::frame::PACKET_NUMBER_LEN
    + crate::frame::SPREAD_PACKET_FRAME_LEN
    + TAG_LEN;
/// The shortest transport message: header, packet number, tag.
pub const MIN_TRANSPORT_LEN: usize =
    TRANSPORT_HEADER_LEN + crate::frame::PACKET_NUMBER_LEN + TAG_LEN;
/// Relay envelope header: version, type, reserved, relay index, slot.
pub const RELAY_HEADER_LEN: usize = 12;
/// What a relay adds around a sealed datagram.
pub const RELAY_OVERHEAD: usize = RELAY_HEADER_LEN + MAC_LEN;
/// What a relayed packet costs on the worst path: outer IPv6 and UDP headers, the
/// transport header and tag, the relay envelope and tag. The tunnel MTU leaves room for it.
pub const WORST_CASE_OVERHEAD: usize = 40 + 8 + TRANSPORT_OVERHEAD + RELAY_OVERHEAD;
/// Largest IP packet that still fits in a relayed datagram.
pub const MAX_IP_PACKET: usize = MAX_DATAGRAM - TRANSPORT_OVERHEAD - RELAY_OVERHEAD;

/// Smallest tunnel MTU for IPv4 only (RFC 791's 576) and with IPv6 (RFC 8200's 1280).
pub const MIN_TUNNEL_MTU: [u16; 2] = [576, 1280];
/// Largest tunnel MTU: the largest IP packet a datagram carries.
pub const MAX_TUNNEL_MTU: u16 = MAX_IP_PACKET as u16;

/// Checks a tunnel MTU against what a datagram carries and what the tunnel's families
/// need. `ipv6` says why the tunnel carries IPv6 (for the message), if it does;
/// `automatic` whether 0 (automatic) is also allowed where this MTU is configured.
pub fn check_tunnel_mtu(mtu: i64, ipv6: Option<&str>, automatic: bool) -> Result<u16, String> {
    let min = MIN_TUNNEL_MTU[usize::from(ipv6.is_some())];
    if (i64::from(min)..=i64::from(MAX_TUNNEL_MTU)).contains(&mtu) {
        return Ok(mtu as u16);
    }
    let why = if mtu > i64::from(MAX_TUNNEL_MTU) {
        format!(
            "a datagram is at most {MAX_DATAGRAM} bytes, {} of them linkpool's headers on a \
             relayed path",
            MAX_DATAGRAM - MAX_IP_PACKET
        )
    } else if let Some(because) = ipv6 {
        format!("1280 is the IPv6 minimum, and {because}")
    } else {
        "576 is the IPv4 minimum".to_string()
    };
    let zero = if automatic { "0 (automatic) or " } else { "" };
    Err(format!(
        "{mtu} is out of range: use {zero}{min} to {MAX_TUNNEL_MTU} ({why})"
    ))
}

/// Noise IKpsk2 first message: e (32), encrypted s (32 + 16), encrypted timestamp (8 + 16).
pub const NOISE_INIT_LEN: usize = 32 + 48 + 8 + 16;
/// Noise IKpsk2 second message: e (32), encrypted empty payload (16).
pub const NOISE_RESPONSE_LEN: usize = 32 + 16;
/// Handshake initiation on the wire.
pub const HANDSHAKE_INIT_LEN: usize = 8 + NOISE_INIT_LEN + 2 * MAC_LEN;
/// Handshake response on the wire.
pub const HANDSHAKE_RESPONSE_LEN: usize = 12 + NOISE_RESPONSE_LEN + 2 * MAC_LEN;
/// Cookie reply on the wire: header, receiver index, nonce, sealed cookie.
pub const COOKIE_REPLY_LEN: usize = 8 + 12 + 16 + TAG_LEN;
/// Mesh discovery hello on the wire: header, relay port, offer, credential; a rating may
/// follow ([`MESH_DISCOVERY_RATED_LEN`]).
pub const MESH_DISCOVERY_LEN: usize = 16 + crate::mesh::CREDENTIAL_LEN;
/// A discovery hello with the sender's signed relay rating after its credential.
pub const MESH_DISCOVERY_RATED_LEN: usize = MESH_DISCOVERY_LEN + crate::statement::RATING_LEN;
/// Neighbour hello on the wire: header, sender, counter, relay port, offer, MAC.
pub const NEIGHBOUR_HELLO_LEN: usize = 28 + MAC_LEN;

/// The type byte of each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageType {
    /// Noise IK first message.
    HandshakeInit = 1,
    /// Noise IK second message.
    HandshakeResponse = 2,
    /// Cookie the initiator must echo as mac2 while the proxy is under load.
    CookieReply = 3,
    /// Sealed frames: inner packets, acknowledgements, pings, receipts.
    Transport = 4,
    /// A relay forwarding a neighbour's datagram to the proxy.
    RelayUp = 6,
    /// The proxy sending a datagram for a neighbour through its relay.
    RelayDown = 7,
    /// A gateway announcing itself on the mesh, with its credential.
    MeshDiscovery = 8,
    /// A gateway telling one neighbour it is there, under their pairwise key.
    NeighbourHello = 9,
}

impl MessageType {
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::HandshakeInit,
            2 => Self::HandshakeResponse,
            3 => Self::CookieReply,
            4 => Self::Transport,
            6 => Self::RelayUp,
            7 => Self::RelayDown,
            8 => Self::MeshDiscovery,
            9 => Self::NeighbourHello,
            _ => return None,
        })
    }
}

/// Which AEAD a session uses. Chosen by the member, announced in its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum CipherSuite {
    /// AES-256-GCM: fastest where the CPU has AES instructions.
    #[default]
    Aes256Gcm,
    /// ChaCha20-Poly1305: for routers without AES hardware.
    ChaCha20Poly1305,
}

impl CipherSuite {
    /// The byte that names the suite in a handshake initiation.
    pub fn to_byte(self) -> u8 {
        match self {
            CipherSuite::Aes256Gcm => 0,
            CipherSuite::ChaCha20Poly1305 => 1,
        }
    }

    /// The suite a handshake byte names, if any.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(CipherSuite::Aes256Gcm),
            1 => Some(CipherSuite::ChaCha20Poly1305),
            _ => None,
        }
    }

    /// The name used in bundles, configs and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            CipherSuite::Aes256Gcm => "aes-256-gcm",
            CipherSuite::ChaCha20Poly1305 => "chacha20-poly1305",
        }
    }
}

/// A cipher name that is neither `aes-256-gcm` nor `chacha20-poly1305`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownCipher(pub String);

impl std::fmt::Display for UnknownCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unknown cipher `{}` (expected aes-256-gcm or chacha20-poly1305)",
            self.0
        )
    }
}

impl std::error::Error for UnknownCipher {}

impl std::str::FromStr for CipherSuite {
    type Err = UnknownCipher;
    fn from_str(s: &str) -> Result<Self, UnknownCipher> {
        match s {
            "aes-256-gcm" => Ok(CipherSuite::Aes256Gcm),
            "chacha20-poly1305" => Ok(CipherSuite::ChaCha20Poly1305),
            other => Err(UnknownCipher(other.to_string())),
        }
    }
}

impl std::fmt::Display for CipherSuite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies one path of a member's session (own WAN, or a neighbour's). Carried,
/// authenticated, in every transport header. The member numbers its paths and never
/// gives a number to another path while the session lasts (it counts up from a random
/// start), so per-path counters always belong to one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PathId(pub u16);

impl std::fmt::Display for PathId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// A checked view of a handshake initiation.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeInit<'a> {
    bytes: &'a [u8],
}

impl<'a> HandshakeInit<'a> {
    /// Suite the initiator wants (validated).
    pub fn suite(&self) -> CipherSuite {
        CipherSuite::from_byte(self.bytes[2]).unwrap_or_default()
    }
    /// The initiator's index for this handshake; the proxy addresses replies to it.
    pub fn sender_index(&self) -> u32 {
        be32(self.bytes, 4)
    }
    /// The Noise message.
    pub fn noise(&self) -> &'a [u8] {
        &self.bytes[8..8 + NOISE_INIT_LEN]
    }
    /// Everything mac1 covers.
    pub fn mac1_input(&self) -> &'a [u8] {
        &self.bytes[..HANDSHAKE_INIT_LEN - 2 * MAC_LEN]
    }
    /// mac1: proves the sender knows the proxy's public key.
    pub fn mac1(&self) -> &'a [u8] {
        &self.bytes[HANDSHAKE_INIT_LEN - 2 * MAC_LEN..HANDSHAKE_INIT_LEN - MAC_LEN]
    }
    /// Everything mac2 covers.
    pub fn mac2_input(&self) -> &'a [u8] {
        &self.bytes[..HANDSHAKE_INIT_LEN - MAC_LEN]
    }
    /// mac2: proves the sender received a cookie at its address (zero when it has none).
    pub fn mac2(&self) -> &'a [u8] {
        &self.bytes[HANDSHAKE_INIT_LEN - MAC_LEN..]
    }
}

/// A checked view of a handshake response.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeResponse<'a> {
    bytes: &'a [u8],
}

impl<'a> HandshakeResponse<'a> {
    /// The proxy's index for the new session.
    pub fn sender_index(&self) -> u32 {
        be32(self.bytes, 4)
    }
    /// The initiator's index this answers.
    pub fn receiver_index(&self) -> u32 {
        be32(self.bytes, 8)
    }
    /// The Noise message.
    pub fn noise(&self) -> &'a [u8] {
        &self.bytes[12..12 + NOISE_RESPONSE_LEN]
    }
    /// Everything mac1 covers.
    pub fn mac1_input(&self) -> &'a [u8] {
        &self.bytes[..HANDSHAKE_RESPONSE_LEN - 2 * MAC_LEN]
    }
    /// mac1, keyed with the initiator's public key.
    pub fn mac1(&self) -> &'a [u8] {
        &self.bytes[HANDSHAKE_RESPONSE_LEN - 2 * MAC_LEN..HANDSHAKE_RESPONSE_LEN - MAC_LEN]
    }
}

/// A checked view of a cookie reply.
#[derive(Debug, Clone, Copy)]
pub struct CookieReply<'a> {
    bytes: &'a [u8],
}

impl<'a> CookieReply<'a> {
    /// The initiator's handshake index this answers.
    pub fn receiver_index(&self) -> u32 {
        be32(self.bytes, 4)
    }
    /// AEAD nonce.
    pub fn nonce(&self) -> &'a [u8; 12] {
        self.bytes[8..20].try_into().expect("checked length")
    }
    /// Sealed cookie (16 bytes) and its tag.
    pub fn sealed_cookie(&self) -> &'a [u8] {
        &self.bytes[20..COOKIE_REPLY_LEN]
    }
}

/// The header of a transport message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportHeader {
    /// The path the sender put it on.
    pub path: PathId,
    /// The receiver's session index.
    pub receiver_index: u32,
    /// The sender's packet counter: the AEAD nonce and the replay window's key.
    pub counter: u64,
}

impl TransportHeader {
    /// Writes the header into the first [`TRANSPORT_HEADER_LEN`] bytes of `out`.
    pub fn write(&self, out: &mut [u8]) {
        out[0] = VERSION;
        out[1] = MessageType::Transport as u8;
        out[2..4].copy_from_slice(&self.path.0.to_be_bytes());
        out[4..8].copy_from_slice(&self.receiver_index.to_be_bytes());
        out[8..16].copy_from_slice(&self.counter.to_be_bytes());
    }
}

/// A checked view of a relay envelope (either direction).
#[derive(Debug, Clone, Copy)]
pub struct RelayEnvelope<'a> {
    bytes: &'a [u8],
}

impl<'a> RelayEnvelope<'a> {
    /// Upstream or downstream.
    pub fn kind(&self) -> MessageType {
        MessageType::from_byte(self.bytes[1]).unwrap_or(MessageType::RelayUp)
    }
    /// The relay's own session index at the receiver (proxy for upstream, relay for
    /// downstream): says whose tag key checks this envelope.
    pub fn relay_index(&self) -> u32 {
        be32(self.bytes, 4)
    }
    /// The relay's handle for the neighbour it carries for; the proxy echoes it back so
    /// the relay can demultiplex replies without reading them.
    pub fn slot(&self) -> u32 {
        be32(self.bytes, 8)
    }
    /// The carried datagram, untouched.
    pub fn inner(&self) -> &'a [u8] {
        &self.bytes[RELAY_HEADER_LEN..self.bytes.len() - MAC_LEN]
    }
    /// Everything the relay tag covers.
    pub fn tag_input(&self) -> &'a [u8] {
        &self.bytes[..self.bytes.len() - MAC_LEN]
    }
    /// The relay tag.
    pub fn tag(&self) -> &'a [u8] {
        &self.bytes[self.bytes.len() - MAC_LEN..]
    }
}

/// Writes a relay envelope around `inner` into `out`; the caller appends the tag over
/// `out[..RELAY_HEADER_LEN + inner.len()]` (see [`crate::keys`]' derived keys).
pub fn write_relay_header(kind: MessageType, relay_index: u32, slot: u32, out: &mut [u8]) {
    out[0] = VERSION;
    out[1] = kind as u8;
    out[2] = 0;
    out[3] = 0;
    out[4..8].copy_from_slice(&relay_index.to_be_bytes());
    out[8..12].copy_from_slice(&slot.to_be_bytes());
}

fn offer_at(b: &[u8], flags: usize, at: usize) -> crate::mesh::Offer {
    crate::mesh::Offer {
        sharing: b[flags] & MESH_FLAG_SHARING != 0,
        up_kbit: be32(b, at),
        down_kbit: be32(b, at + 4),
    }
}

/// Flags byte of both mesh hellos: the owner shares its line now. Other bits are sent as
/// zero and not read (a later version may use them), but for
/// [`MESH_FLAG_RATED`].
const MESH_FLAG_SHARING: u8 = 1;
/// Flags byte of a discovery hello: the sender's signed rating follows its credential.
const MESH_FLAG_RATED: u8 = 2;

/// A checked view of a mesh discovery hello, multicast (IPv6) and broadcast (IPv4) on the
/// mesh about once a second:
///
/// | bytes | field |
/// | --- | --- |
/// | 0 | version |
/// | 1 | type (8) |
/// | 2 | flags: bit 0, sharing |
/// | 3 | reserved |
/// | 4..6 | relay port (u16) |
/// | 6..8 | reserved |
/// | 8..12 | spare upstream, kbit/s (u32) |
/// | 12..16 | spare downstream, kbit/s (u32) |
/// | 16..136 | the sender's credential ([`crate::mesh::Credential`]) |
/// | 136..263 | with flag bit 1 only: the sender's relay rating ([`crate::statement::SignedRating`]) |
///
/// Only the credential and the rating are authenticated (each by the proxy's signature).
/// Anybody can replay a discovery hello from anywhere with other fields, so a receiver
/// takes nothing from it but the credential, the rating and where to answer; relay port
/// and offer are hints for a mesh survey, and the [`NeighbourHello`]s carry the ones that
/// count.
#[derive(Debug, Clone, Copy)]
pub struct MeshDiscovery<'a> {
    bytes: &'a [u8],
}

impl<'a> MeshDiscovery<'a> {
    /// UDP port the sender's relay listens on (unauthenticated).
    pub fn relay_port(&self) -> u16 {
        u16::from_be_bytes([self.bytes[4], self.bytes[5]])
    }
    /// What the sender says it offers (unauthenticated).
    pub fn offer(&self) -> crate::mesh::Offer {
        offer_at(self.bytes, 2, 8)
    }
    /// The sender's credential, as signed by the proxy.
    pub fn credential(&self) -> &'a [u8; crate::mesh::CREDENTIAL_LEN] {
        self.bytes[16..MESH_DISCOVERY_LEN]
            .try_into()
            .expect("checked length")
    }
    /// The sender's relay rating, as signed by the proxy, if it sent one.
    pub fn rating(&self) -> Option<&'a [u8; crate::statement::RATING_LEN]> {
        self.bytes.get(MESH_DISCOVERY_LEN..)?.try_into().ok()
    }
}

/// Writes a discovery hello into `out`, with `rating` after the credential if there is
/// one; returns its length ([`MESH_DISCOVERY_LEN`] or [`MESH_DISCOVERY_RATED_LEN`]), or
/// `None` if `out` is too short.
pub fn write_mesh_discovery(
    relay_port: u16,
    offer: &crate::mesh::Offer,
    credential: &[u8; crate::mesh::CREDENTIAL_LEN],
    rating: Option<&[u8; crate::statement::RATING_LEN]>,
    out: &mut [u8],
) -> Option<usize> {
    let len = match rating {
        Some(_) => MESH_DISCOVERY_RATED_LEN,
        None => MESH_DISCOVERY_LEN,
    };
    let out = out.get_mut(..len)?;
    out[0] = VERSION;
    out[1] = MessageType::MeshDiscovery as u8;
    out[2] = if offer.sharing { MESH_FLAG_SHARING } else { 0 };
    if rating.is_some() {
        out[2] |= MESH_FLAG_RATED;
    }
    out[3] = 0;
    out[4..6].copy_from_slice(&relay_port.to_be_bytes());
    out[6..8].copy_from_slice(&[0, 0]);
    out[8..12].copy_from_slice(&offer.up_kbit.to_be_bytes());
    out[12..16].copy_from_slice(&offer.down_kbit.to_be_bytes());
    out[16..MESH_DISCOVERY_LEN].copy_from_slice(credential);
    if let Some(rating) = rating {
        out[MESH_DISCOVERY_LEN..].copy_from_slice(rating);
    }
    Some(len)
}

/// A checked view of a neighbour hello, unicast to one neighbour several times a second:
///
/// | bytes | field |
/// | --- | --- |
/// | 0 | version |
/// | 1 | type (9) |
/// | 2 | flags: bit 0, sharing |
/// | 3 | reserved |
/// | 4..8 | sender's member id (u32) |
/// | 8..16 | sender's hello counter (u64, strictly increasing) |
/// | 16..18 | relay port (u16) |
/// | 18..20 | reserved |
/// | 20..24 | spare upstream, kbit/s (u32) |
/// | 24..28 | spare downstream, kbit/s (u32) |
/// | 28..44 | MAC: the pair's key over bytes 0..28, then the sender's and the receiver's addresses on the mesh ([`crate::mesh`]) |
///
/// Every byte is covered by the MAC, reserved ones included.
#[derive(Debug, Clone, Copy)]
pub struct NeighbourHello<'a> {
    bytes: &'a [u8],
}

impl<'a> NeighbourHello<'a> {
    /// The sender's member id: says which pairwise key checks the MAC.
    pub fn sender(&self) -> u32 {
        be32(self.bytes, 4)
    }
    /// The sender's hello counter.
    pub fn counter(&self) -> u64 {
        be64(self.bytes, 8)
    }
    /// UDP port the sender's relay listens on.
    pub fn relay_port(&self) -> u16 {
        u16::from_be_bytes([self.bytes[16], self.bytes[17]])
    }
    /// What the sender offers now.
    pub fn offer(&self) -> crate::mesh::Offer {
        offer_at(self.bytes, 2, 20)
    }
    /// The bytes the MAC covers before the addresses.
    pub fn mac_input(&self) -> &'a [u8] {
        &self.bytes[..NEIGHBOUR_HELLO_LEN - MAC_LEN]
    }
    /// The MAC.
    pub fn mac(&self) -> &'a [u8] {
        &self.bytes[NEIGHBOUR_HELLO_LEN - MAC_LEN..NEIGHBOUR_HELLO_LEN]
    }
}

/// Writes a neighbour hello without its MAC into `out[..NEIGHBOUR_HELLO_LEN - MAC_LEN]`.
pub fn write_neighbour_hello(
    sender: u32,
    counter: u64,
    relay_port: u16,
    offer: &crate::mesh::Offer,
    out: &mut [u8],
) {
    out[0] = VERSION;
    out[1] = MessageType::NeighbourHello as u8;
    out[2] = if offer.sharing { MESH_FLAG_SHARING } else { 0 };
    out[3] = 0;
    out[4..8].copy_from_slice(&sender.to_be_bytes());
    out[8..16].copy_from_slice(&counter.to_be_bytes());
    out[16..18].copy_from_slice(&relay_port.to_be_bytes());
    out[18..20].copy_from_slice(&[0, 0]);
    out[20..24].copy_from_slice(&offer.up_kbit.to_be_bytes());
    out[24..28].copy_from_slice(&offer.down_kbit.to_be_bytes());
}

/// Any message, checked. Borrowed from the datagram it was parsed from.
#[derive(Debug, Clone, Copy)]
pub enum Message<'a> {
    /// Handshake initiation.
    HandshakeInit(HandshakeInit<'a>),
    /// Handshake response.
    HandshakeResponse(HandshakeResponse<'a>),
    /// Cookie reply.
    CookieReply(CookieReply<'a>),
    /// Transport; the ciphertext and tag follow the header.
    Transport(TransportHeader),
    /// Relay envelope (up or down).
    Relay(RelayEnvelope<'a>),
    /// Mesh discovery hello.
    MeshDiscovery(MeshDiscovery<'a>),
    /// Neighbour hello.
    NeighbourHello(NeighbourHello<'a>),
}

impl<'a> Message<'a> {
    /// Checks a datagram once: version, type, exact or bounded lengths.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, DropReason> {
        if bytes.len() > MAX_DATAGRAM {
            return Err(DropReason::Oversized);
        }
        if bytes.len() < 4 {
            return Err(DropReason::TooShort);
        }
        if bytes[0] != VERSION {
            return Err(DropReason::UnknownVersion);
        }
        let kind = MessageType::from_byte(bytes[1]).ok_or(DropReason::UnknownType)?;
        let exact = |len: usize| -> Result<(), DropReason> {
            match bytes.len().cmp(&len) {
                std::cmp::Ordering::Less => Err(DropReason::TooShort),
                std::cmp::Ordering::Greater => Err(DropReason::BadLength),
                std::cmp::Ordering::Equal => Ok(()),
            }
        };
        Ok(match kind {
            MessageType::HandshakeInit => {
                exact(HANDSHAKE_INIT_LEN)?;
                if CipherSuite::from_byte(bytes[2]).is_none() {
                    return Err(DropReason::UnknownCipher);
                }
                Message::HandshakeInit(HandshakeInit { bytes })
            }
            MessageType::HandshakeResponse => {
                exact(HANDSHAKE_RESPONSE_LEN)?;
                Message::HandshakeResponse(HandshakeResponse { bytes })
            }
            MessageType::CookieReply => {
                exact(COOKIE_REPLY_LEN)?;
                Message::CookieReply(CookieReply { bytes })
            }
            MessageType::Transport => {
                if bytes.len() < MIN_TRANSPORT_LEN {
                    return Err(DropReason::TooShort);
                }
                Message::Transport(TransportHeader {
                    path: PathId(u16::from_be_bytes([bytes[2], bytes[3]])),
                    receiver_index: be32(bytes, 4),
                    counter: be64(bytes, 8),
                })
            }
            MessageType::RelayUp | MessageType::RelayDown => {
                // The envelope must carry at least a transport header's worth.
                if bytes.len() < RELAY_OVERHEAD + 4 {
                    return Err(DropReason::TooShort);
                }
                Message::Relay(RelayEnvelope { bytes })
            }
            MessageType::MeshDiscovery => {
                exact(if bytes[2] & MESH_FLAG_RATED != 0 {
                    MESH_DISCOVERY_RATED_LEN
                } else {
                    MESH_DISCOVERY_LEN
                })?;
                Message::MeshDiscovery(MeshDiscovery { bytes })
            }
            MessageType::NeighbourHello => {
                exact(NEIGHBOUR_HELLO_LEN)?;
                Message::NeighbourHello(NeighbourHello { bytes })
            }
        })
    }
}
