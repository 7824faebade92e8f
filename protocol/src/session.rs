//! Noise sessions between a member gateway and the proxy: the handshake messages and the
//! keypairs that seal and open transport packets.
//!
//! The handshake is Noise IKpsk2 (as WireGuard): the gateway knows the proxy's static key,
//! the proxy learns the member's from the first message and looks it up; an optional
//! per-member PSK is mixed in last (all zeros when there is none). Transport packets do not
//! use Noise's implicit nonces: packets of one session travel over several paths and
//! arrive out of order, so each carries an explicit 64-bit counter, is opened statelessly,
//! and passes a [`ReplayWindow`].

use std::ops::Range;
use std::time::{Duration, Instant};

use crate::DropReason;
use crate::crypto::{self, PacketCipher};
use crate::keys::{PublicKey, SecretKey, SharedSecret};
use crate::replay::ReplayWindow;
use crate::wire::{
    self, CipherSuite, HANDSHAKE_INIT_LEN, HANDSHAKE_RESPONSE_LEN, MAC_LEN, MessageType,
    NOISE_INIT_LEN, NOISE_RESPONSE_LEN, PathId, TAG_LEN, TRANSPORT_HEADER_LEN, TransportHeader,
};

/// Noise protocol name with AES-256-GCM.
pub const NOISE_AES: &str = "Noise_IKpsk2_25519_AESGCM_SHA256";
/// Noise protocol name with ChaCha20-Poly1305.
pub const NOISE_CHACHA: &str = "Noise_IKpsk2_25519_ChaChaPoly_SHA256";
/// Bound into every handshake, so a linkpool handshake can never be confused with another
/// Noise protocol's.
const PROLOGUE: &[u8] = b"linkpool v1";

/// Timers and limits of a session. The defaults follow WireGuard's where they exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The initiator starts a new handshake when the current keys are this old.
    pub rekey_after_time: Duration,
    /// ... or after sending this many packets with them.
    pub rekey_after_messages: u64,
    /// Keys are never used after this age (in either direction).
    pub reject_after_time: Duration,
    /// Keys are never used past this counter.
    pub reject_after_messages: u64,
    /// First handshake retry; doubles on each failure up to `handshake_retry_max`.
    pub handshake_retry_initial: Duration,
    /// Longest wait between handshake attempts.
    pub handshake_retry_max: Duration,
    /// With nothing authenticated heard from the proxy on any path for this long, the
    /// gateway handshakes again (a proxy that restarted answers only that). Paths have
    /// their own, much faster, liveness ([`crate::path`]).
    pub suspect_after: Duration,
    /// With nothing authenticated heard from the proxy for this long, the gateway assumes
    /// the proxy lost the session (restart) and handshakes again.
    pub dead_after: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            rekey_after_time: Duration::from_secs(120),
            // At 1 Gbit/s of small packets this is reached in hours; time rekeys first.
            rekey_after_messages: 1 << 32,
            reject_after_time: Duration::from_secs(180),
            reject_after_messages: u64::MAX - (1 << 16),
            handshake_retry_initial: Duration::from_secs(1),
            handshake_retry_max: Duration::from_secs(8),
            suspect_after: Duration::from_millis(1200),
            dead_after: Duration::from_secs(6),
        }
    }
}

fn noise_params(suite: CipherSuite) -> snow::params::NoiseParams {
    let name = match suite {
        CipherSuite::Aes256Gcm => NOISE_AES,
        CipherSuite::ChaCha20Poly1305 => NOISE_CHACHA,
    };
    name.parse().expect("valid Noise protocol name")
}

/// Key that mac1 of messages *to* the holder of `public` is made with.
pub(crate) fn mac1_key(public: &PublicKey) -> [u8; 32] {
    crypto::derive(&public.0, b"mac1")
}

/// Key that cookie replies *from* the holder of `public` are sealed with.
pub(crate) fn cookie_key(public: &PublicKey) -> [u8; 32] {
    crypto::derive(&public.0, b"cookie")
}

/// Writes mac1 of a handshake initiation in `init` (at least [`HANDSHAKE_INIT_LEN`]
/// bytes) for the proxy `proxy`, and clears mac2. Anyone who knows the proxy's public key
/// can do this: mac1 only spares the proxy work for datagrams that are not initiations at
/// all. Test tools use it to forge initiations with random keys.
pub fn write_mac1(proxy: &PublicKey, init: &mut [u8]) {
    let Some(init) = init.get_mut(..HANDSHAKE_INIT_LEN) else {
        return;
    };
    let m1_at = HANDSHAKE_INIT_LEN - 2 * MAC_LEN;
    let mac1 = crypto::mac(&mac1_key(proxy), &[&init[..m1_at]]);
    init[m1_at..m1_at + MAC_LEN].copy_from_slice(&mac1);
    init[m1_at + MAC_LEN..].fill(0);
}

/// An initiator's handshake in flight.
pub(crate) struct Initiation {
    pub(crate) state: snow::HandshakeState,
    pub(crate) local_index: u32,
    pub(crate) suite: CipherSuite,
    /// mac1 of the initiation we sent: a cookie reply must be bound to it.
    pub(crate) mac1: [u8; MAC_LEN],
}

/// Writes a handshake initiation into `out` (which must hold [`HANDSHAKE_INIT_LEN`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn initiate(
    static_key: &SecretKey,
    proxy: &PublicKey,
    psk: Option<&SharedSecret>,
    suite: CipherSuite,
    local_index: u32,
    timestamp_us: u64,
    cookie: Option<&[u8; 16]>,
    out: &mut [u8],
) -> Result<Initiation, DropReason> {
    let zero = [0u8; 32];
    let psk = psk.map(|p| p.as_bytes()).unwrap_or(&zero);
    let mut state = snow::Builder::new(noise_params(suite))
        .local_private_key(static_key.as_bytes())
        .and_then(|b| b.remote_public_key(&proxy.0))
        .and_then(|b| b.prologue(PROLOGUE))
        .and_then(|b| b.psk(2, psk))
        .and_then(|b| b.build_initiator())
        .map_err(|_| DropReason::HandshakeFailed)?;
    let out = out
        .get_mut(..HANDSHAKE_INIT_LEN)
        .ok_or(DropReason::PacketTooLarge)?;
    out[0] = wire::VERSION;
    out[1] = MessageType::HandshakeInit as u8;
    out[2] = suite.to_byte();
    out[3] = 0;
    out[4..8].copy_from_slice(&local_index.to_be_bytes());
    let n = state
        .write_message(&timestamp_us.to_be_bytes(), &mut out[8..8 + NOISE_INIT_LEN])
        .map_err(|_| DropReason::HandshakeFailed)?;
    debug_assert_eq!(n, NOISE_INIT_LEN);
    write_mac1(proxy, out);
    let m1_at = HANDSHAKE_INIT_LEN - 2 * MAC_LEN;
    let mac1: [u8; MAC_LEN] = out[m1_at..m1_at + MAC_LEN]
        .try_into()
        .expect("fixed length");
    if let Some(c) = cookie {
        let mac2 = crypto::mac(c, &[&out[..m1_at + MAC_LEN]]);
        out[m1_at + MAC_LEN..].copy_from_slice(&mac2);
    }
    Ok(Initiation {
        state,
        local_index,
        suite,
        mac1,
    })
}

/// What the responder learns from a valid initiation, before it answers.
pub(crate) struct Received {
    pub(crate) state: snow::HandshakeState,
    pub(crate) member_key: PublicKey,
    pub(crate) timestamp_us: u64,
    pub(crate) suite: CipherSuite,
    pub(crate) remote_index: u32,
}

/// Reads the Noise part of an initiation whose MACs were already checked.
pub(crate) fn receive_initiation(
    static_key: &SecretKey,
    init: &wire::HandshakeInit<'_>,
) -> Result<Received, DropReason> {
    let suite = init.suite();
    let mut state = snow::Builder::new(noise_params(suite))
        .local_private_key(static_key.as_bytes())
        .and_then(|b| b.prologue(PROLOGUE))
        .and_then(|b| b.build_responder())
        .map_err(|_| DropReason::HandshakeFailed)?;
    let mut ts = [0u8; 8 + 16];
    let n = state
        .read_message(init.noise(), &mut ts)
        .map_err(|_| DropReason::HandshakeFailed)?;
    if n != 8 {
        return Err(DropReason::HandshakeFailed);
    }
    let remote = state
        .get_remote_static()
        .ok_or(DropReason::HandshakeFailed)?;
    let mut member_key = [0u8; 32];
    member_key.copy_from_slice(remote);
    let mut t = [0u8; 8];
    t.copy_from_slice(&ts[..8]);
    Ok(Received {
        state,
        member_key: PublicKey(member_key),
        timestamp_us: u64::from_be_bytes(t),
        suite,
        remote_index: init.sender_index(),
    })
}

/// Answers a received initiation: writes the response into `out` and returns the new
/// responder keypair.
pub(crate) fn respond(
    mut received: Received,
    psk: Option<&SharedSecret>,
    local_index: u32,
    now: Instant,
    out: &mut [u8],
) -> Result<Keypair, DropReason> {
    let zero = [0u8; 32];
    let psk = psk.map(|p| p.as_bytes()).unwrap_or(&zero);
    received
        .state
        .set_psk(2, psk)
        .map_err(|_| DropReason::HandshakeFailed)?;
    let out = out
        .get_mut(..HANDSHAKE_RESPONSE_LEN)
        .ok_or(DropReason::PacketTooLarge)?;
    out[0] = wire::VERSION;
    out[1] = MessageType::HandshakeResponse as u8;
    out[2] = 0;
    out[3] = 0;
    out[4..8].copy_from_slice(&local_index.to_be_bytes());
    out[8..12].copy_from_slice(&received.remote_index.to_be_bytes());
    let n = received
        .state
        .write_message(&[], &mut out[12..12 + NOISE_RESPONSE_LEN])
        .map_err(|_| DropReason::HandshakeFailed)?;
    debug_assert_eq!(n, NOISE_RESPONSE_LEN);
    let m1_at = HANDSHAKE_RESPONSE_LEN - 2 * MAC_LEN;
    let mac1 = crypto::mac(&mac1_key(&received.member_key), &[&out[..m1_at]]);
    out[m1_at..m1_at + MAC_LEN].copy_from_slice(&mac1);
    out[m1_at + MAC_LEN..].fill(0);
    let (k1, k2) = received.state.dangerously_get_raw_split();
    Ok(Keypair::new(
        received.suite,
        false,
        &k1,
        &k2,
        local_index,
        received.remote_index,
        now,
    ))
}

/// Completes the initiator's side with the proxy's response.
pub(crate) fn complete(
    mut initiation: Initiation,
    response: &wire::HandshakeResponse<'_>,
    now: Instant,
) -> Result<Keypair, DropReason> {
    let mut empty = [0u8; 16];
    initiation
        .state
        .read_message(response.noise(), &mut empty)
        .map_err(|_| DropReason::HandshakeFailed)?;
    let (k1, k2) = initiation.state.dangerously_get_raw_split();
    Ok(Keypair::new(
        initiation.suite,
        true,
        &k1,
        &k2,
        initiation.local_index,
        response.sender_index(),
        now,
    ))
}

/// Keys for one session in both directions, with the sender's counter and the receiver's
/// replay window.
pub(crate) struct Keypair {
    pub(crate) local_index: u32,
    pub(crate) remote_index: u32,
    send: PacketCipher,
    recv: PacketCipher,
    pub(crate) send_counter: u64,
    pub(crate) replay: ReplayWindow,
    pub(crate) created: Instant,
    /// Relay tag keys derived from this session (the relay's own, when it relays).
    pub(crate) relay_up_key: [u8; 32],
    pub(crate) relay_down_key: [u8; 32],
}

impl Keypair {
    fn new(
        suite: CipherSuite,
        initiator: bool,
        k1: &[u8; 32],
        k2: &[u8; 32],
        local_index: u32,
        remote_index: u32,
        now: Instant,
    ) -> Self {
        // Noise's split: the initiator sends with k1, the responder with k2.
        let (send, recv) = if initiator { (k1, k2) } else { (k2, k1) };
        let mut both = [0u8; 64];
        both[..32].copy_from_slice(k1);
        both[32..].copy_from_slice(k2);
        Keypair {
            local_index,
            remote_index,
            send: PacketCipher::new(suite, send),
            recv: PacketCipher::new(suite, recv),
            send_counter: 0,
            replay: ReplayWindow::default(),
            created: now,
            relay_up_key: crypto::derive(&both, b"relay up"),
            relay_down_key: crypto::derive(&both, b"relay down"),
        }
    }

    pub(crate) fn expired(&self, now: Instant, limits: &Limits) -> bool {
        now.saturating_duration_since(self.created) >= limits.reject_after_time
    }

    /// Seals the payload at `buf[TRANSPORT_HEADER_LEN..][..len]` in place, writing the
    /// header before it and the tag after it. Returns the datagram length.
    pub(crate) fn seal(
        &mut self,
        path: PathId,
        buf: &mut [u8],
        len: usize,
        limits: &Limits,
    ) -> Result<usize, DropReason> {
        let total = TRANSPORT_HEADER_LEN + len + TAG_LEN;
        if total > buf.len() || total > wire::MAX_DATAGRAM {
            return Err(DropReason::PacketTooLarge);
        }
        if self.send_counter >= limits.reject_after_messages {
            return Err(DropReason::Expired);
        }
        let counter = self.send_counter;
        self.send_counter += 1;
        let (header, rest) = buf.split_at_mut(TRANSPORT_HEADER_LEN);
        TransportHeader {
            path,
            receiver_index: self.remote_index,
            counter,
        }
        .write(header);
        let (payload, tail) = rest.split_at_mut(len);
        let tag = self.send.seal(counter, header, payload);
        tail[..TAG_LEN].copy_from_slice(&tag);
        Ok(total)
    }

    /// Opens a transport datagram in place; returns where the plaintext is in `buf`.
    pub(crate) fn open(
        &mut self,
        header: &TransportHeader,
        buf: &mut [u8],
        now: Instant,
        limits: &Limits,
    ) -> Result<Range<usize>, DropReason> {
        if self.expired(now, limits) || header.counter >= limits.reject_after_messages {
            return Err(DropReason::Expired);
        }
        self.replay.check(header.counter)?;
        let end = buf.len() - TAG_LEN;
        let (head, rest) = buf.split_at_mut(TRANSPORT_HEADER_LEN);
        let (payload, tag) = rest.split_at_mut(end - TRANSPORT_HEADER_LEN);
        if !self.recv.open(header.counter, head, payload, tag) {
            return Err(DropReason::BadTag);
        }
        self.replay.commit(header.counter);
        Ok(TRANSPORT_HEADER_LEN..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// Known keys and counter → known bytes, cross-checked with an independent AEAD
    /// implementation (Python `cryptography`). If this changes, old and new builds can no
    /// longer talk: bump `wire::VERSION` instead of editing the vector. The plaintext is a
    /// version 2 one: packet number 5 on path 3, then a packet frame and an inner packet.
    #[test]
    fn transport_packet_vectors() {
        let now = Instant::now();
        let limits = Limits::default();
        let packet = *b"\x00\x00\x00\x05\x04E\x00\x00\x14linkpool-vec";
        let mut expected = Vec::new();
        for suite in [CipherSuite::Aes256Gcm, CipherSuite::ChaCha20Poly1305] {
            let mut k = Keypair::new(suite, true, &[1; 32], &[2; 32], 7, 0x0102_0304, now);
            k.send_counter = 0x0a0b_0c0d;
            let mut buf = [0u8; 64];
            buf[TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + packet.len()].copy_from_slice(&packet);
            let n = k.seal(PathId(3), &mut buf, packet.len(), &limits).unwrap();
            expected.push(hex(&buf[..n]));
            // The responder side of the same keys opens it.
            let mut r = Keypair::new(suite, false, &[1; 32], &[2; 32], 0x0102_0304, 7, now);
            let header = match wire::Message::parse(&buf[..n]).unwrap() {
                wire::Message::Transport(h) => h,
                _ => panic!(),
            };
            let range = r.open(&header, &mut buf[..n], now, &limits).unwrap();
            assert_eq!(&buf[range], &packet);
        }
        assert_eq!(
            expected,
            [
                "0204000301020304000000000a0b0c0dfaf7e25f96604a9041c9a87d5c86a6f5588473a4a6541bfa14ef9a9f704de9b40567111c60",
                "0204000301020304000000000a0b0c0d559fec80249b9c9b17232614946fbdd8921f73acf069a1d1dd5211f30068b1b03c2074a403",
            ]
        );
    }
}
