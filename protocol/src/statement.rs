//! What the proxy signs besides mesh credentials: members' statements and relays'
//! reliability ratings.
//!
//! Both are signed (ed25519) with the key the proxy signs mesh credentials with
//! ([`CredentialIssuer`]), so members already hold the key that checks them
//! ([`IssuerKey`]). Each kind is signed under its own context (`"linkpool statement v1"`,
//! `"linkpool rating v1"`, a credential's is `"linkpool mesh credential v1"`), none a
//! prefix of another: a signature of one kind never passes for another's.
//!
//! Fixed-size encodings, big-endian like every integer on the wire, starting with a
//! version byte and the signing key's id ([`IssuerKey::id`], a hint for picking the key
//! when a co-op runs several proxies), the 64-byte signature last, over all bytes before
//! it. Times are the proxy's wall clock, unix seconds, and come in as arguments.
//!
//! * [`SignedStatement`] ([`STATEMENT_LEN`] = 153 bytes): what a member consumed, carried,
//!   earned and spent over a period, and its balance; fetched through its tunnel.
//! * [`SignedRating`] ([`RATING_LEN`] = 127 bytes): how reliably a member's relay
//!   delivered over a window; the relay carries it in its mesh hellos, so neighbours can
//!   choose relays on the proxy's word rather than the relay's. A receiver should keep a
//!   verified rating and compare bytes when the same one comes again, as with credentials:
//!   a signature check costs milliseconds on a router.

use std::fmt;
use std::ops::Range;

use crate::credits::MilliCredits;
use crate::mesh::{CredentialIssuer, IssuerKey};

/// The version byte of both encodings.
pub const VERSION: u8 = 1;
/// Length of an ed25519 signature.
const SIGNATURE_LEN: usize = 64;

/// Contexts signed before the bytes: one per kind, none a prefix of another's (nor of a
/// credential's), so that no message of one kind is a message of another.
const STATEMENT_CONTEXT: &[u8] = b"linkpool statement v1";
const RATING_CONTEXT: &[u8] = b"linkpool rating v1";

/// A signed statement on the wire.
pub const STATEMENT_LEN: usize = statement_field::SIGNED_LEN + SIGNATURE_LEN;
/// A signed rating on the wire.
pub const RATING_LEN: usize = rating_field::SIGNED_LEN + SIGNATURE_LEN;

/// Why signed bytes were refused. Each cause its own variant, so callers can count them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VerifyError {
    /// Fewer bytes than the kind's length (truncated).
    TooShort,
    /// More bytes than the kind's length (or another kind).
    BadLength,
    /// The version byte is not [`VERSION`].
    UnknownVersion,
    /// Signed by another key than the one given (another proxy, another co-op), going by
    /// its key id.
    UnknownIssuer,
    /// The signature does not verify: tampered with, forged, or another kind's.
    BadSignature,
    /// Validly signed but inconsistent (a period or window ending before it starts, an
    /// expiry before issue, more delivered than offered, uptime above 1000 ‰): the
    /// proxy's fault.
    Malformed,
    /// A rating used at or after its expiry (beyond the allowed skew).
    Expired,
    /// A rating issued later than now (beyond the allowed skew): the proxy's clock and
    /// ours disagree, or it was made to be replayed later.
    FromTheFuture,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VerifyError::TooShort => "too short",
            VerifyError::BadLength => "wrong length",
            VerifyError::UnknownVersion => "unknown version",
            VerifyError::UnknownIssuer => "signed by another key",
            VerifyError::BadSignature => "bad signature",
            VerifyError::Malformed => "inconsistent contents",
            VerifyError::Expired => "expired",
            VerifyError::FromTheFuture => "issued in the future",
        })
    }
}

impl std::error::Error for VerifyError {}

/// Reads big-endian integers at a field's range; the ranges are constants within the
/// fixed length, checked once when the bytes come in.
fn get_u64(b: &[u8], at: Range<usize>) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at]);
    u64::from_be_bytes(a)
}

fn get_i64(b: &[u8], at: Range<usize>) -> i64 {
    get_u64(b, at) as i64
}

fn get_u32(b: &[u8], at: Range<usize>) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at]);
    u32::from_be_bytes(a)
}

fn get_u16(b: &[u8], at: Range<usize>) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[at]);
    u16::from_be_bytes(a)
}

/// The length and version checks both kinds share.
fn fixed<const N: usize>(bytes: &[u8]) -> Result<[u8; N], VerifyError> {
    let b: [u8; N] = match bytes.len() {
        n if n < N => return Err(VerifyError::TooShort),
        n if n > N => return Err(VerifyError::BadLength),
        _ => bytes.try_into().map_err(|_| VerifyError::BadLength)?,
    };
    if b[0] != VERSION {
        return Err(VerifyError::UnknownVersion);
    }
    Ok(b)
}

/// The key id and signature checks both kinds share.
fn check_signature(
    issuer: &IssuerKey,
    context: &[u8],
    bytes: &[u8],
    key_id: Range<usize>,
) -> Result<(), VerifyError> {
    if get_u32(bytes, key_id) != issuer.id() {
        return Err(VerifyError::UnknownIssuer);
    }
    let (body, signature) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
    let signature: &[u8; SIGNATURE_LEN] = signature
        .try_into()
        .map_err(|_| VerifyError::BadSignature)?;
    if issuer.verify_in_context(context, body, signature) {
        Ok(())
    } else {
        Err(VerifyError::BadSignature)
    }
}

/// Byte ranges of a statement: one layout, for writing and reading.
mod statement_field {
    use std::ops::Range;

    pub(super) const VERSION: usize = 0;
    pub(super) const KEY_ID: Range<usize> = 1..5;
    pub(super) const MEMBER: Range<usize> = 5..9;
    pub(super) const PERIOD_START: Range<usize> = 9..17;
    pub(super) const PERIOD_END: Range<usize> = 17..25;
    pub(super) const CONSUMED_UP: Range<usize> = 25..33;
    pub(super) const CONSUMED_DOWN: Range<usize> = 33..41;
    pub(super) const CARRIED_UP: Range<usize> = 41..49;
    pub(super) const CARRIED_DOWN: Range<usize> = 49..57;
    pub(super) const EARNED: Range<usize> = 57..65;
    pub(super) const SPENT: Range<usize> = 65..73;
    pub(super) const BALANCE: Range<usize> = 73..81;
    pub(super) const ISSUED_AT: Range<usize> = 81..89;
    pub(super) const SIGNED_LEN: usize = 89;
}

/// What a member consumed, carried, earned and spent over a period, as the proxy's
/// ledger has it. Bytes are wire bytes ([`crate::credits`]); times unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Statement {
    /// The member's id at the proxy.
    pub member: u32,
    /// Start of the period (included).
    pub period_start: u64,
    /// End of the period (excluded); not before its start.
    pub period_end: u64,
    /// Bytes the member sent over others' lines.
    pub consumed_up: u64,
    /// Bytes the member received over others' lines.
    pub consumed_down: u64,
    /// Bytes the member's line carried up for others.
    pub carried_up: u64,
    /// Bytes the member's line carried down for others.
    pub carried_down: u64,
    /// Credit earned in the period (not negative).
    pub earned: MilliCredits,
    /// Credit spent in the period (not negative).
    pub spent: MilliCredits,
    /// The balance at the end of the period, adjustments included.
    pub balance: MilliCredits,
    /// When the proxy issued it.
    pub issued_at: u64,
}

impl Statement {
    /// Whether it is consistent: a period that does not end before it starts, nothing
    /// earned or spent below zero. [`SignedStatement::verify`] refuses one that is not,
    /// so the proxy should check before signing.
    pub fn check(&self) -> Result<(), VerifyError> {
        let ok = self.period_start <= self.period_end && self.earned >= 0 && self.spent >= 0;
        ok.then_some(()).ok_or(VerifyError::Malformed)
    }
}

/// A statement and the proxy's signature, as bytes.
///
/// | bytes | field |
/// | --- | --- |
/// | 0 | version ([`VERSION`]) |
/// | 1..5 | key id of the signing key ([`IssuerKey::id`]) |
/// | 5..9 | member id (u32) |
/// | 9..17, 17..25 | period start, end (u64) |
/// | 25..33, 33..41 | bytes consumed up, down (u64) |
/// | 41..49, 49..57 | bytes carried for others up, down (u64) |
/// | 57..65, 65..73, 73..81 | earned, spent, balance (i64, milli-credits) |
/// | 81..89 | issued at (u64) |
/// | 89..153 | ed25519 signature over `"linkpool statement v1"` and bytes 0..89 |
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SignedStatement {
    bytes: [u8; STATEMENT_LEN],
}

impl SignedStatement {
    /// The proxy signs `statement` with its credential issuer's key.
    pub fn sign(issuer: &CredentialIssuer, statement: &Statement) -> SignedStatement {
        use statement_field as f;
        let s = statement;
        let mut b = [0u8; STATEMENT_LEN];
        b[f::VERSION] = VERSION;
        b[f::KEY_ID].copy_from_slice(&issuer.issuer_key().id().to_be_bytes());
        b[f::MEMBER].copy_from_slice(&s.member.to_be_bytes());
        b[f::PERIOD_START].copy_from_slice(&s.period_start.to_be_bytes());
        b[f::PERIOD_END].copy_from_slice(&s.period_end.to_be_bytes());
        b[f::CONSUMED_UP].copy_from_slice(&s.consumed_up.to_be_bytes());
        b[f::CONSUMED_DOWN].copy_from_slice(&s.consumed_down.to_be_bytes());
        b[f::CARRIED_UP].copy_from_slice(&s.carried_up.to_be_bytes());
        b[f::CARRIED_DOWN].copy_from_slice(&s.carried_down.to_be_bytes());
        b[f::EARNED].copy_from_slice(&s.earned.to_be_bytes());
        b[f::SPENT].copy_from_slice(&s.spent.to_be_bytes());
        b[f::BALANCE].copy_from_slice(&s.balance.to_be_bytes());
        b[f::ISSUED_AT].copy_from_slice(&s.issued_at.to_be_bytes());
        let signature = issuer.sign_in_context(STATEMENT_CONTEXT, &b[..f::SIGNED_LEN]);
        b[f::SIGNED_LEN..].copy_from_slice(&signature);
        SignedStatement { bytes: b }
    }

    /// Checks the length and version; the signature is [`SignedStatement::verify`]'s.
    pub fn from_bytes(bytes: &[u8]) -> Result<SignedStatement, VerifyError> {
        fixed(bytes).map(|bytes| SignedStatement { bytes })
    }

    /// The bytes, to hand to the member.
    pub fn to_bytes(&self) -> [u8; STATEMENT_LEN] {
        self.bytes
    }

    /// The id of the key that signed it: a hint for picking the key, nothing more.
    pub fn key_id(&self) -> u32 {
        get_u32(&self.bytes, statement_field::KEY_ID)
    }

    /// The statement, if `issuer` signed it and it is consistent.
    pub fn verify(&self, issuer: &IssuerKey) -> Result<Statement, VerifyError> {
        check_signature(
            issuer,
            STATEMENT_CONTEXT,
            &self.bytes,
            statement_field::KEY_ID,
        )?;
        let s = self.unverified();
        s.check()?;
        Ok(s)
    }

    /// The figures as they stand, signature unchecked: to show, marked as unverified,
    /// never to trust.
    pub fn unverified(&self) -> Statement {
        use statement_field as f;
        let b = &self.bytes;
        Statement {
            member: get_u32(b, f::MEMBER),
            period_start: get_u64(b, f::PERIOD_START),
            period_end: get_u64(b, f::PERIOD_END),
            consumed_up: get_u64(b, f::CONSUMED_UP),
            consumed_down: get_u64(b, f::CONSUMED_DOWN),
            carried_up: get_u64(b, f::CARRIED_UP),
            carried_down: get_u64(b, f::CARRIED_DOWN),
            earned: get_i64(b, f::EARNED),
            spent: get_i64(b, f::SPENT),
            balance: get_i64(b, f::BALANCE),
            issued_at: get_u64(b, f::ISSUED_AT),
        }
    }
}

impl fmt::Debug for SignedStatement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedStatement")
            .field("member", &get_u32(&self.bytes, statement_field::MEMBER))
            .field("key_id", &format_args!("{:08x}", self.key_id()))
            .finish_non_exhaustive()
    }
}

/// Byte ranges of a rating: one layout, for writing and reading.
mod rating_field {
    use std::ops::Range;

    pub(super) const VERSION: usize = 0;
    pub(super) const KEY_ID: Range<usize> = 1..5;
    pub(super) const MEMBER: Range<usize> = 5..9;
    pub(super) const WINDOW_START: Range<usize> = 9..17;
    pub(super) const WINDOW_END: Range<usize> = 17..25;
    pub(super) const OFFERED: Range<usize> = 25..33;
    pub(super) const DELIVERED: Range<usize> = 33..41;
    pub(super) const UPTIME: Range<usize> = 41..43;
    pub(super) const LINE_RATE: Range<usize> = 43..47;
    pub(super) const ISSUED_AT: Range<usize> = 47..55;
    pub(super) const EXPIRES_AT: Range<usize> = 55..63;
    pub(super) const SIGNED_LEN: usize = 63;
}

/// How reliably a member's relay carried over a window, as the proxy measured it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rating {
    /// The relaying member's id.
    pub member: u32,
    /// Start of the window measured (included), unix seconds.
    pub window_start: u64,
    /// End of the window (excluded); not before its start.
    pub window_end: u64,
    /// Wire bytes offered to the relay: what the proxy sent through it and what its
    /// consumers sent through it, as far as the proxy knows.
    pub bytes_offered: u64,
    /// Of those, the bytes it delivered (at most as many).
    pub bytes_delivered: u64,
    /// Share of the window it was up as a relay, in thousandths (at most 1000).
    pub uptime_permille: u16,
    /// Its line's measured rate, bytes per second (a u32 holds 34 Gbit/s).
    pub line_rate: u32,
    /// When the proxy issued it.
    pub issued_at: u64,
    /// When it stops counting: used only while now is before this.
    pub expires_at: u64,
}

impl Rating {
    /// Delivered bytes per thousand offered, rounded down; `None` when nothing was
    /// offered (no evidence either way).
    pub fn delivered_permille(&self) -> Option<u16> {
        (self.bytes_offered > 0).then(|| {
            let d = u128::from(self.bytes_delivered.min(self.bytes_offered));
            (d * 1000 / u128::from(self.bytes_offered)) as u16
        })
    }

    /// Whether it is consistent: a window that does not end before it starts, no more
    /// delivered than offered, uptime at most 1000 ‰, expiry after issue.
    /// [`SignedRating::verify_fresh`] refuses one that is not, so the proxy should check
    /// before signing.
    pub fn check(&self) -> Result<(), VerifyError> {
        let ok = self.window_start <= self.window_end
            && self.bytes_delivered <= self.bytes_offered
            && self.uptime_permille <= 1000
            && self.issued_at < self.expires_at;
        ok.then_some(()).ok_or(VerifyError::Malformed)
    }
}

/// A rating and the proxy's signature, as bytes (compact: it rides in mesh hellos).
///
/// | bytes | field |
/// | --- | --- |
/// | 0 | version ([`VERSION`]) |
/// | 1..5 | key id of the signing key ([`IssuerKey::id`]) |
/// | 5..9 | member id (u32) |
/// | 9..17, 17..25 | window start, end (u64) |
/// | 25..33, 33..41 | bytes offered, delivered (u64) |
/// | 41..43 | uptime, permille (u16) |
/// | 43..47 | line rate, bytes/s (u32) |
/// | 47..55, 55..63 | issued at, expires at (u64) |
/// | 63..127 | ed25519 signature over `"linkpool rating v1"` and bytes 0..63 |
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SignedRating {
    bytes: [u8; RATING_LEN],
}

impl SignedRating {
    /// The proxy signs `rating` with its credential issuer's key.
    pub fn sign(issuer: &CredentialIssuer, rating: &Rating) -> SignedRating {
        use rating_field as f;
        let r = rating;
        let mut b = [0u8; RATING_LEN];
        b[f::VERSION] = VERSION;
        b[f::KEY_ID].copy_from_slice(&issuer.issuer_key().id().to_be_bytes());
        b[f::MEMBER].copy_from_slice(&r.member.to_be_bytes());
        b[f::WINDOW_START].copy_from_slice(&r.window_start.to_be_bytes());
        b[f::WINDOW_END].copy_from_slice(&r.window_end.to_be_bytes());
        b[f::OFFERED].copy_from_slice(&r.bytes_offered.to_be_bytes());
        b[f::DELIVERED].copy_from_slice(&r.bytes_delivered.to_be_bytes());
        b[f::UPTIME].copy_from_slice(&r.uptime_permille.to_be_bytes());
        b[f::LINE_RATE].copy_from_slice(&r.line_rate.to_be_bytes());
        b[f::ISSUED_AT].copy_from_slice(&r.issued_at.to_be_bytes());
        b[f::EXPIRES_AT].copy_from_slice(&r.expires_at.to_be_bytes());
        let signature = issuer.sign_in_context(RATING_CONTEXT, &b[..f::SIGNED_LEN]);
        b[f::SIGNED_LEN..].copy_from_slice(&signature);
        SignedRating { bytes: b }
    }

    /// Checks the length and version; the rest is [`SignedRating::verify_fresh`]'s.
    pub fn from_bytes(bytes: &[u8]) -> Result<SignedRating, VerifyError> {
        fixed(bytes).map(|bytes| SignedRating { bytes })
    }

    /// The bytes, to put in a hello.
    pub fn to_bytes(&self) -> [u8; RATING_LEN] {
        self.bytes
    }

    /// The id of the key that signed it: a hint for picking the key, nothing more.
    pub fn key_id(&self) -> u32 {
        get_u32(&self.bytes, rating_field::KEY_ID)
    }

    /// The rating, if `issuer` signed it, it is consistent, and it holds at `now_unix`
    /// (the proxy's time as this router knows it): issued no later than `now_unix +
    /// max_skew_s`, and `now_unix` before `expires_at + max_skew_s`. The cheap refusals
    /// (key id, times) come before the signature check, so stale or misdirected ratings
    /// cost no check; a tampered time still fails the signature.
    pub fn verify_fresh(
        &self,
        issuer: &IssuerKey,
        now_unix: u64,
        max_skew_s: u64,
    ) -> Result<Rating, VerifyError> {
        use rating_field as f;
        let b = &self.bytes;
        if get_u32(b, f::KEY_ID) != issuer.id() {
            return Err(VerifyError::UnknownIssuer);
        }
        let r = Rating {
            member: get_u32(b, f::MEMBER),
            window_start: get_u64(b, f::WINDOW_START),
            window_end: get_u64(b, f::WINDOW_END),
            bytes_offered: get_u64(b, f::OFFERED),
            bytes_delivered: get_u64(b, f::DELIVERED),
            uptime_permille: get_u16(b, f::UPTIME),
            line_rate: get_u32(b, f::LINE_RATE),
            issued_at: get_u64(b, f::ISSUED_AT),
            expires_at: get_u64(b, f::EXPIRES_AT),
        };
        if now_unix >= r.expires_at.saturating_add(max_skew_s) {
            return Err(VerifyError::Expired);
        }
        if r.issued_at > now_unix.saturating_add(max_skew_s) {
            return Err(VerifyError::FromTheFuture);
        }
        check_signature(issuer, RATING_CONTEXT, b, f::KEY_ID)?;
        r.check()?;
        Ok(r)
    }
}

impl fmt::Debug for SignedRating {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedRating")
            .field("member", &get_u32(&self.bytes, rating_field::MEMBER))
            .field("key_id", &format_args!("{:08x}", self.key_id()))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;

    /// The proxy's clock when every test starts, in seconds.
    const T0: u64 = 1_800_000_000;
    const SKEW: u64 = 30;

    fn issuer() -> CredentialIssuer {
        CredentialIssuer::from_proxy_key(&SecretKey::from_bytes([0x50; 32]))
    }

    fn other_proxy() -> CredentialIssuer {
        CredentialIssuer::from_proxy_key(&SecretKey::from_bytes([0x51; 32]))
    }

    fn statement() -> Statement {
        Statement {
            member: 7,
            period_start: T0 - 3600,
            period_end: T0,
            consumed_up: 1_234_567,
            consumed_down: 98_765_432_100,
            carried_up: 5_000_000_000,
            carried_down: 42,
            earned: 5_000,
            spent: 118_519,
            balance: -113_519,
            issued_at: T0 + 5,
        }
    }

    fn rating() -> Rating {
        Rating {
            member: 12,
            window_start: T0 - 86_400,
            window_end: T0,
            bytes_offered: 10_000_000,
            bytes_delivered: 9_876_543,
            uptime_permille: 998,
            line_rate: 2_500_000,
            issued_at: T0,
            expires_at: T0 + 3600,
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(STATEMENT_LEN, 153);
        assert_eq!(RATING_LEN, 127);
    }

    #[test]
    fn statements_round_trip() {
        let issuer = issuer();
        let signed = SignedStatement::sign(&issuer, &statement());
        let again = SignedStatement::from_bytes(&signed.to_bytes()).unwrap();
        assert_eq!(again, signed);
        assert_eq!(again.key_id(), issuer.issuer_key().id());
        assert_eq!(again.verify(&issuer.issuer_key()), Ok(statement()));
        // Deterministic (ed25519 is): the same statement, the same bytes.
        assert_eq!(SignedStatement::sign(&issuer, &statement()), signed);
        let b = signed.to_bytes();
        assert_eq!(b[0], VERSION);
        assert_eq!(&b[5..9], &7u32.to_be_bytes());
        assert_eq!(&b[73..81], &(-113_519i64).to_be_bytes());
    }

    #[test]
    fn ratings_round_trip() {
        let issuer = issuer();
        let signed = SignedRating::sign(&issuer, &rating());
        let again = SignedRating::from_bytes(&signed.to_bytes()).unwrap();
        assert_eq!(again, signed);
        let r = again.verify_fresh(&issuer.issuer_key(), T0 + 10, SKEW);
        assert_eq!(r, Ok(rating()));
        assert_eq!(rating().delivered_permille(), Some(987));
        let idle = Rating {
            bytes_offered: 0,
            bytes_delivered: 0,
            ..rating()
        };
        assert_eq!(idle.delivered_permille(), None);
    }

    #[test]
    fn a_flipped_bit_anywhere_is_refused() {
        let key = issuer().issuer_key();
        let s = SignedStatement::sign(&issuer(), &statement()).to_bytes();
        for bit in 0..s.len() * 8 {
            let mut b = s;
            b[bit / 8] ^= 1 << (bit % 8);
            let got = SignedStatement::from_bytes(&b).and_then(|s| s.verify(&key));
            assert!(got.is_err(), "statement bit {bit}");
        }
        let r = SignedRating::sign(&issuer(), &rating()).to_bytes();
        for bit in 0..r.len() * 8 {
            let mut b = r;
            b[bit / 8] ^= 1 << (bit % 8);
            let got = SignedRating::from_bytes(&b).and_then(|r| r.verify_fresh(&key, T0, SKEW));
            assert!(got.is_err(), "rating bit {bit}");
        }
        // A flipped bit in the body or the signature: a bad signature.
        let mut b = s;
        b[30] ^= 1;
        let got = SignedStatement::from_bytes(&b).unwrap().verify(&key);
        assert_eq!(got, Err(VerifyError::BadSignature));
        let mut b = r;
        b[RATING_LEN - 1] ^= 0x80;
        let got = SignedRating::from_bytes(&b)
            .unwrap()
            .verify_fresh(&key, T0, SKEW);
        assert_eq!(got, Err(VerifyError::BadSignature));
    }

    #[test]
    fn one_kind_never_passes_for_another() {
        let issuer = issuer();
        let key = issuer.issuer_key();
        let s = SignedStatement::sign(&issuer, &statement()).to_bytes();
        let r = SignedRating::sign(&issuer, &rating()).to_bytes();
        assert_eq!(SignedRating::from_bytes(&s), Err(VerifyError::BadLength));
        assert_eq!(SignedStatement::from_bytes(&r), Err(VerifyError::TooShort));
        // Cut to length, a statement's first bytes and its signature still do not pass.
        let mut forged = [0u8; RATING_LEN];
        forged[..rating_field::SIGNED_LEN].copy_from_slice(&s[..rating_field::SIGNED_LEN]);
        forged[rating_field::SIGNED_LEN..].copy_from_slice(&s[statement_field::SIGNED_LEN..]);
        let got = SignedRating::from_bytes(&forged)
            .unwrap()
            .verify_fresh(&key, T0, u64::MAX);
        assert_eq!(got, Err(VerifyError::BadSignature));
        // The same body signed as one kind does not verify as the other, nor as a mesh
        // credential: the contexts differ before either ends.
        let body = [0x5a; statement_field::SIGNED_LEN];
        let sig = issuer.sign_in_context(STATEMENT_CONTEXT, &body);
        assert!(key.verify_in_context(STATEMENT_CONTEXT, &body, &sig));
        assert!(!key.verify_in_context(RATING_CONTEXT, &body, &sig));
        let contexts: [&[u8]; 3] = [
            STATEMENT_CONTEXT,
            RATING_CONTEXT,
            b"linkpool mesh credential v1",
        ];
        for a in contexts {
            for b in contexts {
                assert!(a == b || !a.starts_with(b));
            }
        }
    }

    #[test]
    fn another_proxys_signature_is_refused() {
        let ours = issuer().issuer_key();
        let r = SignedRating::sign(&other_proxy(), &rating());
        assert_eq!(
            r.verify_fresh(&ours, T0, SKEW),
            Err(VerifyError::UnknownIssuer)
        );
        let s = SignedStatement::sign(&other_proxy(), &statement());
        assert_eq!(s.verify(&ours), Err(VerifyError::UnknownIssuer));
        // Even under our key id, its signature does not verify.
        let mut b = r.to_bytes();
        b[rating_field::KEY_ID].copy_from_slice(&ours.id().to_be_bytes());
        let got = SignedRating::from_bytes(&b)
            .unwrap()
            .verify_fresh(&ours, T0, SKEW);
        assert_eq!(got, Err(VerifyError::BadSignature));
    }

    #[test]
    fn stale_and_future_ratings_are_refused() {
        let issuer = issuer();
        let key = issuer.issuer_key();
        let r = SignedRating::sign(&issuer, &rating());
        let (issued, expires) = (rating().issued_at, rating().expires_at);
        assert!(r.verify_fresh(&key, expires - 1, 0).is_ok());
        assert_eq!(r.verify_fresh(&key, expires, 0), Err(VerifyError::Expired));
        assert!(r.verify_fresh(&key, expires + SKEW - 1, SKEW).is_ok());
        assert_eq!(
            r.verify_fresh(&key, expires + SKEW, SKEW),
            Err(VerifyError::Expired)
        );
        assert!(r.verify_fresh(&key, issued, 0).is_ok());
        assert_eq!(
            r.verify_fresh(&key, issued - 1, 0),
            Err(VerifyError::FromTheFuture)
        );
        assert!(r.verify_fresh(&key, issued - SKEW, SKEW).is_ok());
        assert_eq!(
            r.verify_fresh(&key, issued - SKEW - 1, SKEW),
            Err(VerifyError::FromTheFuture)
        );
        // Times near the end of u64 saturate rather than overflow.
        assert!(r.verify_fresh(&key, u64::MAX - 1, u64::MAX).is_ok());
    }

    #[test]
    fn inconsistent_contents_are_refused_even_when_signed() {
        let issuer = issuer();
        let key = issuer.issuer_key();
        let backwards = Statement {
            period_end: T0 - 7200,
            ..statement()
        };
        assert_eq!(backwards.check(), Err(VerifyError::Malformed));
        let s = SignedStatement::sign(&issuer, &backwards);
        assert_eq!(s.verify(&key), Err(VerifyError::Malformed));
        let negative = Statement {
            spent: -1,
            ..statement()
        };
        assert_eq!(negative.check(), Err(VerifyError::Malformed));
        for bad in [
            Rating {
                bytes_delivered: 10_000_001,
                ..rating()
            },
            Rating {
                uptime_permille: 1001,
                ..rating()
            },
            Rating {
                window_start: T0 + 1,
                ..rating()
            },
            Rating {
                expires_at: T0,
                ..rating()
            },
        ] {
            assert_eq!(bad.check(), Err(VerifyError::Malformed));
            let r = SignedRating::sign(&issuer, &bad);
            assert_eq!(
                r.verify_fresh(&key, T0 - 1, SKEW),
                Err(VerifyError::Malformed)
            );
        }
    }

    #[test]
    fn truncated_or_padded_input_is_an_error_never_a_panic() {
        let s = SignedStatement::sign(&issuer(), &statement()).to_bytes();
        for n in 0..STATEMENT_LEN {
            assert_eq!(
                SignedStatement::from_bytes(&s[..n]),
                Err(VerifyError::TooShort)
            );
        }
        let r = SignedRating::sign(&issuer(), &rating()).to_bytes();
        for n in 0..RATING_LEN {
            assert_eq!(
                SignedRating::from_bytes(&r[..n]),
                Err(VerifyError::TooShort)
            );
        }
        let mut long = s.to_vec();
        long.push(0);
        assert_eq!(
            SignedStatement::from_bytes(&long),
            Err(VerifyError::BadLength)
        );
        let mut b = r;
        b[0] = VERSION + 1;
        assert_eq!(
            SignedRating::from_bytes(&b),
            Err(VerifyError::UnknownVersion)
        );
    }
}
