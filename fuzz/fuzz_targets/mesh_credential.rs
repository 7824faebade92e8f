//! `mesh::Credential::from_bytes` and `IssuerKey::verify` on anything: no panic; only a
//! credential the co-op's issuer signed verifies, and it is exactly the one the issuer
//! makes of its fields; one it issues verifies, and any bit flipped in it is refused.
//!
//! First byte even: the rest is a credential. Odd: the rest gives a credential's fields
//! (member u32, static key 32 bytes, issued at u64, lifetime u16, then u16: which bit to
//! flip), which is issued, checked, then tampered with.
#![no_main]

use libfuzzer_sys::fuzz_target;
use linkpool_fuzz::mesh::issuer;
use linkpool_protocol::keys::PublicKey;
use linkpool_protocol::mesh::{CREDENTIAL_LEN, Credential};

fn array<const N: usize>(b: &[u8]) -> [u8; N] {
    b[..N].try_into().expect("length")
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let key = issuer().issuer_key();
    if mode % 2 == 0 {
        let Ok(c) = Credential::from_bytes(rest) else {
            return;
        };
        assert_eq!(c.as_bytes()[..], rest[..]);
        assert!(c.issued_at() < c.expires_at());
        assert!((c.issued_at()..c.expires_at()).contains(&c.refresh_at()));
        if key.verify(&c).is_ok() {
            // ed25519 signs deterministically: what verifies is what the issuer makes.
            let lifetime = c.expires_at() - c.issued_at();
            let again = issuer().issue(c.member(), &c.public_key(), c.issued_at(), lifetime);
            assert_eq!(again, c, "a credential the issuer did not make verifies");
        }
        return;
    }
    let mut f = [0u8; 48];
    let n = rest.len().min(f.len());
    f[..n].copy_from_slice(&rest[..n]);
    let member = u32::from_be_bytes(array(&f[0..]));
    let public = PublicKey(array(&f[4..]));
    let issued = u64::from_be_bytes(array(&f[36..]));
    let lifetime = u64::from(u16::from_be_bytes(array(&f[44..])));
    let flip = usize::from(u16::from_be_bytes(array(&f[46..]))) % (CREDENTIAL_LEN * 8);
    let c = issuer().issue(member, &public, issued, lifetime);
    match Credential::from_bytes(c.as_bytes()) {
        Ok(parsed) => assert_eq!(parsed, c),
        // Issued at the end of time: it cannot expire after it was issued.
        Err(_) => {
            assert_eq!(issued, u64::MAX);
            return;
        }
    }
    key.verify(&c)
        .expect("the issuer's own credential verifies");
    assert_eq!(
        (c.member(), c.public_key(), c.issued_at()),
        (member, public, issued)
    );
    let mut bytes = *c.as_bytes();
    bytes[flip / 8] ^= 1 << (flip % 8);
    if let Ok(tampered) = Credential::from_bytes(&bytes) {
        assert!(
            key.verify(&tampered).is_err(),
            "bit {flip} flipped and accepted"
        );
    }
});
