//! Static X25519 keys as members and the proxy store them (base64, like WireGuard).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use std::fmt;

/// Length of every key the protocol uses.
pub const KEY_LEN: usize = 32;

/// A static X25519 private key. Its `Debug` never shows the key, so it cannot leak into logs.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(pub(crate) [u8; KEY_LEN]);

/// A static X25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; KEY_LEN]);

/// A 32-byte symmetric secret (Noise PSK, co-op mesh key). `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedSecret(pub(crate) [u8; KEY_LEN]);

/// Why a key string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// Not valid base64.
    NotBase64,
    /// Decoded to the wrong number of bytes.
    WrongLength(usize),
    /// The operating system's random source failed.
    NoRandomness,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::NotBase64 => f.write_str("not valid base64"),
            KeyError::WrongLength(n) => write!(f, "decodes to {n} bytes, expected {KEY_LEN}"),
            KeyError::NoRandomness => f.write_str("the system random source failed"),
        }
    }
}

impl std::error::Error for KeyError {}

fn decode(s: &str) -> Result<[u8; KEY_LEN], KeyError> {
    let bytes = STANDARD.decode(s.trim()).map_err(|_| KeyError::NotBase64)?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| KeyError::WrongLength(bytes.len()))
}

impl SecretKey {
    /// A fresh key from the system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let builder = snow::Builder::new(crate::session::NOISE_AES.parse().expect("valid pattern"));
        let kp = builder
            .generate_keypair()
            .map_err(|_| KeyError::NoRandomness)?;
        let mut k = [0u8; KEY_LEN];
        k.copy_from_slice(&kp.private);
        Ok(SecretKey(k))
    }

    /// Wraps raw bytes (test vectors, key files).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        SecretKey(bytes)
    }

    /// The raw bytes; only for handing to the Noise handshake or writing a key file.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519_base(&self.0))
    }

    /// Parses the base64 form.
    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        decode(s).map(SecretKey)
    }

    /// The base64 form, for key files and bundles only.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<hidden>)")
    }
}

impl PublicKey {
    /// Parses the base64 form.
    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        decode(s).map(PublicKey)
    }

    /// The base64 form.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl SharedSecret {
    /// A fresh secret from the system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let mut k = [0u8; KEY_LEN];
        // A Noise keypair's private half is 32 uniformly random bytes from the OS.
        k.copy_from_slice(SecretKey::generate()?.as_bytes());
        Ok(SharedSecret(k))
    }

    /// Wraps raw bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        SharedSecret(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Parses the base64 form.
    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        decode(s).map(SharedSecret)
    }

    /// The base64 form.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedSecret(<hidden>)")
    }
}

/// X25519 scalar multiplication by the base point, through snow's own Diffie-Hellman
/// (so we do not carry a second curve implementation).
fn x25519_base(secret: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    use snow::resolvers::{CryptoResolver, DefaultResolver};
    let mut dh = DefaultResolver
        .resolve_dh(&snow::params::DHChoice::Curve25519)
        .expect("curve25519 is built in");
    dh.set(secret);
    let mut out = [0u8; KEY_LEN];
    out.copy_from_slice(dh.pubkey());
    out
}

/// X25519 of a static secret and a peer's static public key, through snow's own
/// Diffie-Hellman like [`x25519_base`]. `None` for an all-zero result: the peer's key is
/// of low order, and the "shared" secret would be one anybody can compute.
pub(crate) fn x25519(secret: &SecretKey, peer: &PublicKey) -> Option<[u8; KEY_LEN]> {
    use snow::resolvers::{CryptoResolver, DefaultResolver};
    let mut dh = DefaultResolver
        .resolve_dh(&snow::params::DHChoice::Curve25519)
        .expect("curve25519 is built in");
    dh.set(&secret.0);
    let mut out = [0u8; KEY_LEN];
    dh.dh(&peer.0, &mut out).ok()?;
    (out != [0u8; KEY_LEN]).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7748_public_key_vector() {
        // RFC 7748 section 6.1, Alice's keys.
        let sk = hex32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let pk = hex32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        assert_eq!(SecretKey::from_bytes(sk).public_key().0, pk);
    }

    #[test]
    fn base64_round_trip_and_errors() {
        let sk = SecretKey::generate().unwrap();
        assert_eq!(SecretKey::from_base64(&sk.to_base64()).unwrap(), sk);
        assert_eq!(PublicKey::from_base64("!!"), Err(KeyError::NotBase64));
        assert_eq!(
            PublicKey::from_base64("AAAA"),
            Err(KeyError::WrongLength(3))
        );
        assert_eq!(format!("{sk:?}"), "SecretKey(<hidden>)");
    }

    #[test]
    fn rfc7748_shared_secret_vector() {
        // RFC 7748 section 6.1: Alice's secret with Bob's public key, and the other way.
        let alice = SecretKey::from_bytes(hex32(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        ));
        let bob = SecretKey::from_bytes(hex32(
            "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
        ));
        let shared = hex32("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
        assert_eq!(x25519(&alice, &bob.public_key()), Some(shared));
        assert_eq!(x25519(&bob, &alice.public_key()), Some(shared));
        // A low-order point gives the all-zero secret: refused.
        assert_eq!(x25519(&alice, &PublicKey([0; 32])), None);
    }

    pub(crate) fn hex32(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }
}
