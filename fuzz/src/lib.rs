//! Shared pieces of linkpool's fuzz targets: fixed keys, the connected gateway/proxy pair
//! of `session_pair` and its input script, and the seed inputs every target starts from.
//! Not part of the main workspace (see `fuzz/README.md`).

pub mod seeds;
pub mod session;

use linkpool_protocol::keys::SharedSecret;
use linkpool_protocol::relay::MeshKey;

/// The co-op mesh secret the `mesh_hello` target authenticates with.
pub const MESH_SECRET: [u8; 32] = [0x44; 32];

/// The mesh key derived from [`MESH_SECRET`].
pub fn mesh_key() -> MeshKey {
    MeshKey::new(&SharedSecret::from_bytes(MESH_SECRET))
}

/// Every fuzz target, by name (as in `Cargo.toml`).
pub const TARGETS: [&str; 8] = [
    "wire_message",
    "frame_decode",
    "bundle_parse",
    "mesh_hello",
    "ip_check",
    "session_pair",
    "uci_parse",
    "gateway_toml",
];
