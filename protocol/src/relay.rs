//! Relay envelopes: the keys and tags that let a proxy credit a relay for what it carried.
//! (How gateways on the mesh tell members from strangers is [`crate::mesh`]'s.)
//!
//! A relay wraps a neighbour's sealed datagram, unread, in a [`wire::RelayEnvelope`]
//! tagged with a key derived from *its own* session with the proxy; the proxy counts a
//! relayed byte only when that tag and the inner datagram both verify.

mod slots;
pub use slots::{
    MAX_RELAY_SLOTS, OWNER_ACTIVE, OWNER_SHARE, RELAY_BURST, Relay, RelayCounters, RelayPolicy,
    spare_for_relayed,
};

use crate::DropReason;
use crate::crypto;
use crate::wire::{self, MAC_LEN, MessageType, RELAY_HEADER_LEN};

/// The tag key of one relay session in one direction (derived with HKDF from the relay's
/// own session keys; see [`crate::client::Client::relay_keys`]).
#[derive(Clone, PartialEq, Eq)]
pub struct RelayKey(pub(crate) [u8; 32]);

impl std::fmt::Debug for RelayKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelayKey(<hidden>)")
    }
}

/// Wraps `buf[RELAY_HEADER_LEN..RELAY_HEADER_LEN + inner_len]` (a sealed datagram the
/// caller placed there) in an envelope and tags it. Returns the envelope's length.
pub fn seal_envelope(
    key: &RelayKey,
    kind: MessageType,
    relay_index: u32,
    slot: u32,
    buf: &mut [u8],
    inner_len: usize,
) -> Result<usize, DropReason> {
    let total = RELAY_HEADER_LEN + inner_len + MAC_LEN;
    if total > buf.len() || total > wire::MAX_DATAGRAM {
        return Err(DropReason::PacketTooLarge);
    }
    if !matches!(kind, MessageType::RelayUp | MessageType::RelayDown) {
        return Err(DropReason::Unexpected);
    }
    wire::write_relay_header(kind, relay_index, slot, buf);
    let tag = crypto::mac(&key.0, &[&buf[..RELAY_HEADER_LEN + inner_len]]);
    buf[RELAY_HEADER_LEN + inner_len..total].copy_from_slice(&tag);
    Ok(total)
}

/// Checks an envelope's tag with the relay session's key.
pub fn verify_envelope(
    key: &RelayKey,
    envelope: &wire::RelayEnvelope<'_>,
) -> Result<(), DropReason> {
    let expect = crypto::mac(&key.0, &[envelope.tag_input()]);
    if crypto::mac_eq(&expect, envelope.tag()) {
        Ok(())
    } else {
        Err(DropReason::BadRelayTag)
    }
}
