//! Sliding replay window over 64-bit counters (RFC 6479's bitmap ring).
//!
//! Packets of one session arrive over several paths with different delays, so the window
//! must be deeper than the deepest reordering: at 100 Mbit/s of 1400-byte packets, a
//! 100 ms skew between paths is about 900 packets; we keep 16384.

use crate::DropReason;

const WORD_BITS: u64 = 64;
const WORDS: usize = 256;
/// How far behind the newest counter a packet may be and still be accepted.
pub const WINDOW: u64 = (WORDS as u64 - 1) * WORD_BITS;
// The architecture asks for at least 8192.
const _: () = assert!(WINDOW >= 8192);

/// Remembers which counters were seen, within [`WINDOW`] of the newest.
#[derive(Clone)]
pub struct ReplayWindow {
    bits: [u64; WORDS],
    /// One past the highest counter accepted; 0 means none yet.
    next: u64,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            bits: [0; WORDS],
            next: 0,
        }
    }
}

impl std::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("next", &self.next)
            .finish()
    }
}

impl ReplayWindow {
    /// Whether `counter` would be accepted, without recording it. Call before the
    /// (costly) AEAD open, then [`ReplayWindow::commit`] after it verified.
    pub fn check(&self, counter: u64) -> Result<(), DropReason> {
        if counter == u64::MAX {
            // Never sent: sessions rekey long before; keeps `next` from overflowing.
            return Err(DropReason::Expired);
        }
        if counter >= self.next {
            return Ok(());
        }
        if self.next - 1 - counter > WINDOW {
            return Err(DropReason::TooOld);
        }
        let (word, bit) = Self::position(counter);
        if self.bits[word] & (1 << bit) != 0 {
            Err(DropReason::Replay)
        } else {
            Ok(())
        }
    }

    /// Records `counter` as seen. Only for counters that passed [`ReplayWindow::check`]
    /// and whose packet authenticated.
    pub fn commit(&mut self, counter: u64) {
        if counter >= self.next {
            // Clear the words the window slides over (all of them, after a big jump).
            let first = if self.next == 0 {
                0
            } else {
                (self.next - 1) / WORD_BITS + 1
            };
            let last = counter / WORD_BITS;
            if first <= last {
                if last - first >= WORDS as u64 {
                    self.bits = [0; WORDS];
                } else {
                    for w in first..=last {
                        self.bits[(w % WORDS as u64) as usize] = 0;
                    }
                }
            }
            self.next = counter + 1;
        }
        let (word, bit) = Self::position(counter);
        self.bits[word] |= 1 << bit;
    }

    /// Highest counter accepted so far, if any.
    pub fn highest(&self) -> Option<u64> {
        self.next.checked_sub(1)
    }

    fn position(counter: u64) -> (usize, u64) {
        (
            ((counter / WORD_BITS) % WORDS as u64) as usize,
            counter % WORD_BITS,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(w: &mut ReplayWindow, c: u64) -> Result<(), DropReason> {
        w.check(c)?;
        w.commit(c);
        Ok(())
    }

    #[test]
    fn in_order_then_replay() {
        let mut w = ReplayWindow::default();
        for c in 0..1000 {
            accept(&mut w, c).unwrap();
        }
        assert_eq!(accept(&mut w, 999), Err(DropReason::Replay));
        assert_eq!(accept(&mut w, 0), Err(DropReason::Replay));
        assert_eq!(w.highest(), Some(999));
    }

    #[test]
    fn out_of_order_within_window_accepted_once() {
        let mut w = ReplayWindow::default();
        accept(&mut w, 20_000).unwrap();
        // Everything up to WINDOW behind is new, once.
        for c in (20_000 - WINDOW..20_000).rev() {
            accept(&mut w, c).unwrap();
        }
        for c in 20_000 - WINDOW..=20_000 {
            assert_eq!(accept(&mut w, c), Err(DropReason::Replay), "{c}");
        }
    }

    #[test]
    fn window_edges() {
        let mut w = ReplayWindow::default();
        accept(&mut w, 0).unwrap();
        accept(&mut w, WINDOW + 5).unwrap();
        assert_eq!(w.check(5), Ok(()), "exactly WINDOW behind is still in");
        assert_eq!(w.check(4), Err(DropReason::TooOld));
        assert_eq!(w.check(0), Err(DropReason::TooOld));
    }

    #[test]
    fn slide_clears_stale_bits() {
        let mut w = ReplayWindow::default();
        for c in 0..64 {
            accept(&mut w, c).unwrap();
        }
        // Jump far ahead (more than the whole ring), then come back within the window:
        // the ring slot that held 0..64 must read as unseen for the new counters.
        let far = 64 * WORDS as u64 * 3;
        accept(&mut w, far).unwrap();
        accept(&mut w, far - 64 * 2).unwrap();
        assert_eq!(accept(&mut w, far - 64 * 2), Err(DropReason::Replay));
        // A moderate jump of a few words clears only those words.
        let mut w = ReplayWindow::default();
        for c in 0..200 {
            accept(&mut w, c).unwrap();
        }
        accept(&mut w, 200 + 64 * 3).unwrap();
        assert_eq!(w.check(199), Err(DropReason::Replay));
        assert_eq!(w.check(250), Ok(()));
    }

    #[test]
    fn huge_counters() {
        let mut w = ReplayWindow::default();
        accept(&mut w, u64::MAX - 1).unwrap();
        assert_eq!(accept(&mut w, u64::MAX - 1), Err(DropReason::Replay));
        accept(&mut w, u64::MAX - 2).unwrap();
    }
}
