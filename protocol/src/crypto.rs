//! The few primitives the protocol uses, wrapped so that the rest never touches a cipher
//! crate directly: packet AEADs, truncated HMACs and HKDF subkeys.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use chacha20poly1305::ChaCha20Poly1305;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::wire::{CipherSuite, MAC_LEN, TAG_LEN};

/// One direction's packet cipher.
pub(crate) enum PacketCipher {
    // Boxed: the AES key schedule is large and sessions move between slots.
    Aes(Box<Aes256Gcm>),
    ChaCha(Box<ChaCha20Poly1305>),
}

/// The AEAD nonce for a counter: four zero bytes and the counter, big-endian.
fn nonce(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n
}

impl PacketCipher {
    pub(crate) fn new(suite: CipherSuite, key: &[u8; 32]) -> Self {
        match suite {
            CipherSuite::Aes256Gcm => PacketCipher::Aes(Box::new(Aes256Gcm::new(key.into()))),
            CipherSuite::ChaCha20Poly1305 => {
                PacketCipher::ChaCha(Box::new(ChaCha20Poly1305::new(key.into())))
            }
        }
    }

    /// Encrypts `buf` in place and returns the tag.
    pub(crate) fn seal(&self, counter: u64, aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        let n = nonce(counter);
        let tag = match self {
            PacketCipher::Aes(c) => c.encrypt_in_place_detached(Nonce::from_slice(&n), aad, buf),
            PacketCipher::ChaCha(c) => c.encrypt_in_place_detached((&n).into(), aad, buf),
        }
        // Only fails for inputs longer than 64 GiB.
        .expect("packet within AEAD limits");
        tag.into()
    }

    /// Decrypts `buf` in place if `tag` verifies; leaves garbage in `buf` otherwise.
    pub(crate) fn open(&self, counter: u64, aad: &[u8], buf: &mut [u8], tag: &[u8]) -> bool {
        let n = nonce(counter);
        match self {
            PacketCipher::Aes(c) => c
                .decrypt_in_place_detached(Nonce::from_slice(&n), aad, buf, tag.into())
                .is_ok(),
            PacketCipher::ChaCha(c) => c
                .decrypt_in_place_detached((&n).into(), aad, buf, tag.into())
                .is_ok(),
        }
    }
}

/// HMAC-SHA256 over the concatenation of `parts`, truncated to [`MAC_LEN`].
pub(crate) fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; MAC_LEN] {
    MacKey::new(key).mac(parts)
}

/// A MAC key with HMAC's key schedule done once: a flood of handshakes is checked with
/// two SHA-256 blocks less per datagram than [`mac`] takes.
#[derive(Clone)]
pub(crate) struct MacKey(Hmac<Sha256>);

impl MacKey {
    pub(crate) fn new(key: &[u8]) -> Self {
        MacKey(<Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length"))
    }

    pub(crate) fn mac(&self, parts: &[&[u8]]) -> [u8; MAC_LEN] {
        let mut m = self.0.clone();
        for p in parts {
            m.update(p);
        }
        let full = m.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }
}

/// Constant-time check of a truncated MAC.
pub(crate) fn mac_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A 32-byte subkey: HKDF-SHA256 with a fixed salt, `ikm` and a purpose label.
pub(crate) fn derive(ikm: &[u8], label: &[u8]) -> [u8; 32] {
    let hk = Hkdf::<Sha256>::new(Some(b"linkpool v1"), ikm);
    let mut out = [0u8; 32];
    hk.expand(label, &mut out)
        .expect("32 bytes is a valid HKDF length");
    out
}

/// AEAD for cookie replies (ChaCha20-Poly1305 whatever the session suite: cheap everywhere).
pub(crate) fn cookie_cipher(key: &[u8; 32]) -> ChaCha20Poly1305 {
    ChaCha20Poly1305::new(key.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_both_suites_and_tamper() {
        for suite in [CipherSuite::Aes256Gcm, CipherSuite::ChaCha20Poly1305] {
            let c = PacketCipher::new(suite, &[7u8; 32]);
            let mut buf = *b"hello, pool";
            let tag = c.seal(42, b"hdr", &mut buf);
            assert_ne!(&buf, b"hello, pool");
            let mut copy = buf;
            assert!(c.open(42, b"hdr", &mut copy, &tag));
            assert_eq!(&copy, b"hello, pool");
            let mut copy = buf;
            assert!(!c.open(43, b"hdr", &mut copy, &tag), "wrong counter");
            let mut copy = buf;
            assert!(!c.open(42, b"hdX", &mut copy, &tag), "wrong header");
        }
    }

    #[test]
    fn mac_eq_is_exact() {
        assert!(mac_eq(&[1, 2], &[1, 2]));
        assert!(!mac_eq(&[1, 2], &[1, 3]));
        assert!(!mac_eq(&[1, 2], &[1]));
    }
}
