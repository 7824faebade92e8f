#!/usr/bin/env python3
"""The mesh test vectors of protocol/src/mesh.rs (`mesh::tests::vectors`), computed by a
second implementation: Python's `cryptography` (ed25519, X25519), `hmac` and `hashlib`.
Every line it prints must match a value asserted there.

    python3 protocol/tests/mesh_vectors.py      # needs python3-cryptography
"""
import hashlib
import hmac
import ipaddress
import struct

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey


def raw(key):
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def derive(ikm, label):
    """crypto::derive: HKDF-SHA256, salt "linkpool v1", 32 bytes (one expand block)."""
    prk = hmac.new(b"linkpool v1", ikm, hashlib.sha256).digest()
    return hmac.new(prk, label + b"\x01", hashlib.sha256).digest()


def address(ip, port):
    """An address as the hello MAC covers it: IPv6 form (IPv4-mapped), port."""
    ip = ipaddress.ip_address(ip)
    if ip.version == 4:
        ip = ipaddress.IPv6Address("::ffff:" + str(ip))
    return ip.packed + struct.pack(">H", port)


# The proxy's issuer key, derived from its static secret.
issuer = Ed25519PrivateKey.from_private_bytes(derive(bytes([0x50]) * 32, b"mesh credential issuer"))
issuer_key = raw(issuer.public_key())
key_id = hashlib.sha256(b"linkpool mesh issuer" + issuer_key).digest()[:4]
print("issuer key", issuer_key.hex())
print("key id", key_id.hex())

a = X25519PrivateKey.from_private_bytes(bytes([0xA1]) * 32)
b = X25519PrivateKey.from_private_bytes(bytes([0xB2]) * 32)
a_public, b_public = raw(a.public_key()), raw(b.public_key())
print("a public", a_public.hex())

# Member 7's credential, issued at 1 800 000 000 for 900 s.
signed = struct.pack(">I", 7) + a_public + struct.pack(">QQ", 1_800_000_000, 1_800_000_900) + key_id
credential = signed + issuer.sign(b"linkpool mesh credential v1" + signed)
print("credential", credential.hex())

# The pair's key: X25519, then both public keys, the lower first.
shared = a.exchange(X25519PublicKey.from_public_bytes(b_public))
low, high = sorted([a_public, b_public])
pair = derive(shared + low + high, b"mesh neighbour hello")
print("pairwise key", pair.hex())

# A's discovery hello: relay port 7118, sharing, 20 000 up, 50 000 down.
offer = struct.pack(">II", 20_000, 50_000)
discovery = bytes([2, 8, 1, 0]) + struct.pack(">H", 7118) + b"\0\0" + offer + credential
print("discovery hello", discovery.hex())

# A's first neighbour hello to B, from 192.0.2.1:7117 to 192.0.2.2:7117.
body = bytes([2, 9, 1, 0]) + struct.pack(">IQH", 7, 1_800_000_000_000_001, 7118) + b"\0\0" + offer
mac = hmac.new(pair, body + address("192.0.2.1", 7117) + address("192.0.2.2", 7117), hashlib.sha256)
print("neighbour hello", (body + mac.digest()[:16]).hex())
mac6 = hmac.new(pair, body + address("fe80::a1", 7117) + address("fe80::b2", 7117), hashlib.sha256)
print("neighbour hello MAC, fe80::a1 -> fe80::b2", mac6.digest()[:16].hex())
