//! A ring of fixed-size packet slots, allocated once: the core's send queue, and the
//! copies of what was sent that a failing path's traffic is re-sent from.
//!
//! Slots are numbered by a sequence that only grows. `tail..unsent` were sent and are
//! kept until their slot is needed again (the oldest goes first); `unsent..head` wait to
//! be sent. A packet that finds every slot waiting is refused: the queue is full.

use crate::DropReason;

/// Fixed slots, one allocation.
pub(crate) struct PacketRing {
    slot_len: usize,
    slots: Box<[u8]>,
    lens: Box<[u16]>,
    tail: u64,
    unsent: u64,
    head: u64,
}

impl PacketRing {
    /// `slots` packets of at most `slot_len` bytes each.
    pub(crate) fn new(slots: usize, slot_len: usize) -> Self {
        assert!(slots > 0 && slot_len <= usize::from(u16::MAX));
        PacketRing {
            slot_len,
            slots: vec![0; slots * slot_len].into_boxed_slice(),
            lens: vec![0; slots].into_boxed_slice(),
            tail: 0,
            unsent: 0,
            head: 0,
        }
    }

    /// Slots in all.
    pub(crate) fn capacity(&self) -> usize {
        self.lens.len()
    }

    fn slots_u64(&self) -> u64 {
        self.lens.len() as u64
    }

    fn index(&self, seq: u64) -> usize {
        (seq % self.slots_u64()) as usize
    }

    /// Queues a copy of `packet`; returns its sequence.
    pub(crate) fn push(&mut self, packet: &[u8]) -> Result<u64, DropReason> {
        if packet.len() > self.slot_len {
            return Err(DropReason::PacketTooLarge);
        }
        if self.head - self.unsent == self.slots_u64() {
            return Err(DropReason::QueueFull);
        }
        if self.head - self.tail == self.slots_u64() {
            self.tail += 1;
        }
        let i = self.index(self.head);
        self.slots[i * self.slot_len..][..packet.len()].copy_from_slice(packet);
        self.lens[i] = packet.len() as u16;
        self.head += 1;
        Ok(self.head - 1)
    }

    /// Packets waiting to be sent.
    pub(crate) fn waiting(&self) -> usize {
        (self.head - self.unsent) as usize
    }

    /// The next packet waiting, marked sent (it stays readable by [`PacketRing::get`]).
    pub(crate) fn pop(&mut self) -> Option<(u64, &[u8])> {
        if self.unsent == self.head {
            return None;
        }
        self.unsent += 1;
        let seq = self.unsent - 1;
        Some((seq, self.get(seq).expect("just sent")))
    }

    /// The packet `seq`, while its slot still holds it.
    pub(crate) fn get(&self, seq: u64) -> Option<&[u8]> {
        if seq < self.tail || seq >= self.head {
            return None;
        }
        let i = self.index(seq);
        Some(&self.slots[i * self.slot_len..][..usize::from(self.lens[i])])
    }

    /// Forgets everything, sent or not.
    pub(crate) fn clear(&mut self) {
        self.tail = self.head;
        self.unsent = self.head;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_keeps_sent_copies_and_refuses_when_full() {
        let mut r = PacketRing::new(3, 8);
        assert_eq!(r.push(b"a"), Ok(0));
        assert_eq!(r.push(b"bb"), Ok(1));
        assert_eq!(r.pop(), Some((0, &b"a"[..])));
        assert_eq!(r.push(b"ccc"), Ok(2));
        // Two wait, one sent is kept: the next push evicts the sent one.
        assert_eq!(r.push(b"dddd"), Ok(3));
        assert_eq!(r.get(0), None);
        assert_eq!(r.get(1), Some(&b"bb"[..]));
        // Three wait: full.
        assert_eq!(r.push(b"e"), Err(DropReason::QueueFull));
        assert_eq!(r.waiting(), 3);
        assert_eq!(r.pop().map(|p| p.0), Some(1));
        assert_eq!(r.get(1), Some(&b"bb"[..]));
        assert_eq!(r.push(&[0; 9]), Err(DropReason::PacketTooLarge));
        r.clear();
        assert_eq!((r.waiting(), r.get(3)), (0, None));
        assert_eq!(r.pop(), None);
    }
}
