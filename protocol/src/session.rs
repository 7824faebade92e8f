//! Noise sessions between a member gateway and the proxy.

/// Noise protocol name with AES-256-GCM.
pub const NOISE_AES: &str = "Noise_IKpsk2_25519_AESGCM_SHA256";
/// Noise protocol name with ChaCha20-Poly1305.
pub const NOISE_CHACHA: &str = "Noise_IKpsk2_25519_ChaChaPoly_SHA256";
