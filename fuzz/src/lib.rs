//! Shared pieces of linkpool's fuzz targets: fixed keys, the connected gateway/proxy pair
//! of `session_pair` and its input script, and the seed inputs every target starts from.
//! Not part of the main workspace (see `fuzz/README.md`).

pub mod mesh;
pub mod relay;
pub mod seeds;
pub mod session;

/// Every fuzz target, by name (as in `Cargo.toml`).
pub const TARGETS: [&str; 11] = [
    "wire_message",
    "frame_decode",
    "bundle_parse",
    "mesh_hello",
    "mesh_discovery",
    "mesh_credential",
    "ip_check",
    "session_pair",
    "uci_parse",
    "gateway_toml",
    "relay_envelope",
];
