//! Why a datagram was dropped, and how many times.

/// Every reason the core drops a datagram. Each is counted; none panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// Shorter than its type requires.
    TooShort = 0,
    /// Longer than [`crate::wire::MAX_DATAGRAM`].
    Oversized,
    /// A fixed-size message with the wrong size.
    BadLength,
    /// Version byte is not [`crate::wire::VERSION`].
    UnknownVersion,
    /// Type byte names no message.
    UnknownType,
    /// Handshake asks for a cipher suite we do not know.
    UnknownCipher,
    /// A message this side never accepts (e.g. a handshake initiation at a gateway).
    Unexpected,
    /// Receiver index names no session we have.
    UnknownSession,
    /// AEAD tag did not verify: tampered, or not for us.
    BadTag,
    /// Counter already seen.
    Replay,
    /// Counter older than the replay window.
    TooOld,
    /// The session's keys are past their reject-after time or count.
    Expired,
    /// Handshake mac1 wrong: sender does not know our public key.
    BadMac1,
    /// Handshake needed a valid cookie (mac2) because we are under load.
    CookieRequired,
    /// Too many handshakes from one source.
    RateLimited,
    /// Noise handshake failed (bad key, bad PSK, corrupted).
    HandshakeFailed,
    /// Handshake from a static key that is not a member.
    UnknownMember,
    /// Handshake timestamp not newer than the last one accepted (replayed initiation).
    StaleHandshake,
    /// Response or cookie for a handshake we are not doing.
    NoPendingHandshake,
    /// A frame inside an authenticated packet is malformed (ack, receipt, packet number).
    BadFrame,
    /// Relay envelope tag did not verify.
    BadRelayTag,
    /// Decrypted packet is not an IPv4 or IPv6 packet of consistent length.
    BadInnerPacket,
    /// Caller's buffer too small, or packet too large to seal.
    PacketTooLarge,
    /// Nothing to seal with yet: the handshake has not completed.
    NoSession,
    /// A handshake initiation seen before (its ephemeral key was already used): a replay,
    /// refused before any Diffie-Hellman.
    ReplayedHandshake,
    /// The core's send queue was full: the uplinks carry less than arrives.
    QueueFull,
    /// A member sent a packet whose source is not one of its tunnel addresses.
    SpoofedSource,
    /// A packet from the Internet for an address no member has.
    NoMember,
    /// A packet for a member without a session.
    MemberOffline,
    /// A packet that waited in the core's queue longer than CoDel allows, in a flow that
    /// does not take ECN marks: dropped to slow the flow's sender down.
    QueueDelay,
    /// A second copy of an inner packet already delivered (sent redundantly, or re-sent
    /// on another path).
    Duplicate,
    /// A relay envelope naming no relay session the proxy has.
    UnknownRelay,
    /// A member's own datagram in its own relay envelope: it would be credited for carrying itself.
    RelayedForItself,
    /// A neighbour's datagram at a router whose owner does not share (or a reply for one).
    NotRelaying,
    /// A datagram to relay from an address the mesh has not found to be a member.
    NotANeighbour,
    /// A neighbour's hello at a router not on the mesh yet (no credential from its proxy
    /// so far) or with no mesh at all.
    NotOnMesh,
    /// No slot left for another neighbour at this relay.
    RelayTableFull,
    /// A relayed datagram beyond what the owner allows (per neighbour or in all).
    RelayOverCap,
    /// A reply from the proxy for a slot no neighbour holds (it left).
    UnknownRelaySlot,
    /// A datagram for a path through a relay whose own session with the proxy is down.
    RelayOffline,
    /// A datagram to relay upstream that the owner's own traffic left no room for.
    OwnerFirst,
    /// A mesh credential that is malformed, signed by no key of the co-op's proxies, or
    /// whose signature does not verify.
    BadCredential,
    /// A mesh credential past its expiry in proxy time, or a neighbour hello from a member
    /// whose credential is: how a removed member is locked out of the mesh.
    ExpiredCredential,
    /// A mesh credential older than the one already accepted for that member (replayed).
    StaleCredential,
    /// A statement of the member's account from the proxy that is malformed, not signed
    /// by the key the proxy grants credentials with, or another member's.
    BadStatement,
    /// A relay rating (this member's own from the proxy, or a neighbour's in its
    /// discovery hello) that is malformed, not signed by the key the proxy grants
    /// credentials with, or another member's: not kept, not shown.
    BadRating,
    /// A relay rating past its expiry, or issued later than now, in proxy time.
    StaleRating,
    /// A new mesh credential while the budget of signature checks is spent (a flood of
    /// forged ones); the sender's next discovery hello tries again.
    CredentialRateLimited,
    /// A neighbour hello whose MAC does not verify: forged, tampered with, or re-sent from
    /// another address.
    BadHelloMac,
    /// A neighbour hello whose counter is not above the last one accepted from that member.
    ReplayedHello,
    /// A neighbour hello from a member whose valid credential this gateway has not seen.
    UnknownNeighbour,
    /// A new neighbour's credential while the neighbour table is full.
    NeighbourTableFull,
}

impl DropReason {
    /// All reasons, in counter order.
    pub const ALL: [DropReason; 52] = [
        DropReason::TooShort,
        DropReason::Oversized,
        DropReason::BadLength,
        DropReason::UnknownVersion,
        DropReason::UnknownType,
        DropReason::UnknownCipher,
        DropReason::Unexpected,
        DropReason::UnknownSession,
        DropReason::BadTag,
        DropReason::Replay,
        DropReason::TooOld,
        DropReason::Expired,
        DropReason::BadMac1,
        DropReason::CookieRequired,
        DropReason::RateLimited,
        DropReason::HandshakeFailed,
        DropReason::UnknownMember,
        DropReason::StaleHandshake,
        DropReason::NoPendingHandshake,
        DropReason::BadFrame,
        DropReason::BadRelayTag,
        DropReason::BadInnerPacket,
        DropReason::PacketTooLarge,
        DropReason::NoSession,
        DropReason::ReplayedHandshake,
        DropReason::QueueFull,
        DropReason::SpoofedSource,
        DropReason::NoMember,
        DropReason::MemberOffline,
        DropReason::QueueDelay,
        DropReason::Duplicate,
        DropReason::UnknownRelay,
        DropReason::RelayedForItself,
        DropReason::NotRelaying,
        DropReason::NotANeighbour,
        DropReason::NotOnMesh,
        DropReason::RelayTableFull,
        DropReason::RelayOverCap,
        DropReason::UnknownRelaySlot,
        DropReason::RelayOffline,
        DropReason::OwnerFirst,
        DropReason::BadCredential,
        DropReason::ExpiredCredential,
        DropReason::StaleCredential,
        DropReason::BadStatement,
        DropReason::BadRating,
        DropReason::StaleRating,
        DropReason::CredentialRateLimited,
        DropReason::BadHelloMac,
        DropReason::ReplayedHello,
        DropReason::UnknownNeighbour,
        DropReason::NeighbourTableFull,
    ];

    /// A stable snake_case name for logs and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::TooShort => "too_short",
            DropReason::Oversized => "oversized",
            DropReason::BadLength => "bad_length",
            DropReason::UnknownVersion => "unknown_version",
            DropReason::UnknownType => "unknown_type",
            DropReason::UnknownCipher => "unknown_cipher",
            DropReason::Unexpected => "unexpected",
            DropReason::UnknownSession => "unknown_session",
            DropReason::BadTag => "bad_tag",
            DropReason::Replay => "replay",
            DropReason::TooOld => "too_old",
            DropReason::Expired => "expired",
            DropReason::BadMac1 => "bad_mac1",
            DropReason::CookieRequired => "cookie_required",
            DropReason::RateLimited => "rate_limited",
            DropReason::HandshakeFailed => "handshake_failed",
            DropReason::UnknownMember => "unknown_member",
            DropReason::StaleHandshake => "stale_handshake",
            DropReason::NoPendingHandshake => "no_pending_handshake",
            DropReason::BadFrame => "bad_frame",
            DropReason::BadRelayTag => "bad_relay_tag",
            DropReason::BadInnerPacket => "bad_inner_packet",
            DropReason::PacketTooLarge => "packet_too_large",
            DropReason::NoSession => "no_session",
            DropReason::ReplayedHandshake => "replayed_handshake",
            DropReason::QueueFull => "queue_full",
            DropReason::SpoofedSource => "spoofed_source",
            DropReason::NoMember => "no_member",
            DropReason::MemberOffline => "member_offline",
            DropReason::QueueDelay => "queue_delay",
            DropReason::Duplicate => "duplicate",
            DropReason::UnknownRelay => "unknown_relay",
            DropReason::RelayedForItself => "relayed_for_itself",
            DropReason::NotRelaying => "not_relaying",
            DropReason::NotANeighbour => "not_a_neighbour",
            DropReason::NotOnMesh => "not_on_mesh",
            DropReason::RelayTableFull => "relay_table_full",
            DropReason::RelayOverCap => "relay_over_cap",
            DropReason::UnknownRelaySlot => "unknown_relay_slot",
            DropReason::RelayOffline => "relay_offline",
            DropReason::OwnerFirst => "owner_first",
            DropReason::BadCredential => "bad_credential",
            DropReason::ExpiredCredential => "expired_credential",
            DropReason::StaleCredential => "stale_credential",
            DropReason::BadStatement => "bad_statement",
            DropReason::BadRating => "bad_rating",
            DropReason::StaleRating => "stale_rating",
            DropReason::CredentialRateLimited => "credential_rate_limited",
            DropReason::BadHelloMac => "bad_hello_mac",
            DropReason::ReplayedHello => "replayed_hello",
            DropReason::UnknownNeighbour => "unknown_neighbour",
            DropReason::NeighbourTableFull => "neighbour_table_full",
        }
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Drop counters, one per reason. Plain integers: the core is single-threaded, and this
/// avoids 64-bit atomics that 32-bit MIPS lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropCounters([u64; DropReason::ALL.len()]);

impl Default for DropCounters {
    fn default() -> Self {
        DropCounters([0; DropReason::ALL.len()])
    }
}

impl DropCounters {
    /// Counts one drop.
    pub fn count(&mut self, reason: DropReason) {
        self.0[reason as usize] += 1;
    }

    /// Counts `n` drops.
    pub fn add(&mut self, reason: DropReason, n: u64) {
        self.0[reason as usize] += n;
    }

    /// How many times `reason` happened.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize]
    }

    /// Counts `r`'s reason if it is an error, and passes it on.
    pub fn record<T>(&mut self, r: Result<T, DropReason>) -> Result<T, DropReason> {
        if let Err(reason) = &r {
            self.count(*reason);
        }
        r
    }

    /// All drops.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Non-zero counters, for status output.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|&r| (r, self.get(r)))
            .filter(|&(_, n)| n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_documented_for_users() {
        let doc = include_str!("../../docs/status.md");
        for r in DropReason::ALL {
            assert!(
                doc.contains(&format!("| `{}` |", r.name())),
                "docs/status.md does not explain `{r}`"
            );
        }
    }

    #[test]
    fn all_is_in_discriminant_order() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?}");
        }
    }
}
