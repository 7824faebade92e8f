//! Putting spread packets back in order per flow, over a fixed pool of buffers.
//!
//! A bulk flow spread per packet over paths with different delays arrives out of order,
//! and its TCP would read that as loss. Each spread packet carries its flow's slot at the
//! sender and a per-slot sequence. A packet ahead of the one expected waits in a pool
//! buffer until the gap fills, or until the oldest packet waiting behind the gap has
//! waited the timeout (set from the measured delay skew between the paths); then the
//! flow's packets come out in order. Flows have separate state: a loss in one never holds
//! another.
//!
//! Everything is allocated in [`Reorder::new`], in boxed slices that cannot grow:
//!
//! * per flow: the expected sequence, a ring of [`DUPLICATE_WINDOW`] × 2 bits saying which
//!   sequences around it were delivered, and the ends of its list of held packets;
//! * per buffer: `mtu` bytes, the packet's sequence, flow, length and arrival time, and
//!   two pairs of links: in its flow's list by sequence (to release in order) and in the
//!   pool-wide list by arrival. The timeout is the same for every flow, so the oldest
//!   packet held anywhere gives the next timer in O(1), and is the first to be let go
//!   when the pool runs out.
//!
//! Held packets only ever leave a flow's list from its front, in order.

use std::time::{Duration, Instant};

use crate::DropReason;

/// How far behind and ahead of the expected sequence deliveries are remembered, so that a
/// second copy is refused. A late packet further behind is delivered unchecked.
pub const DUPLICATE_WINDOW: u32 = 256;
/// A sequence this far from the expected one, either way, is not reordering: the sender
/// restarted (or another sender flow shares the slot), and the flow starts over.
pub const MAX_DISTANCE: u32 = 1 << 16;
/// The timeout until [`Reorder::set_timeout`] is first called.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);
/// Longest timeout taken: a longer skew is a dead path, not reordering.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(10);
/// The skew seen at this end (how long filled gaps were open) halves in this long unless
/// seen again: a queue that built up once on one path is not held against it for good.
const SKEW_HALF_LIFE: Duration = Duration::from_secs(4);
/// The most the skew seen here lengthens the timeout: packets later than this came after
/// a loss and its repair, not over a slower path.
const MAX_SEEN_SKEW: Duration = Duration::from_millis(300);
/// Packets later than their given-up gap lengthen the timeout (by about half) at most this
/// often.
const LATE_STEP: Duration = Duration::from_millis(500);

const RING_BITS: u32 = 2 * DUPLICATE_WINDOW;
const WORDS: usize = (RING_BITS / 64) as usize;
/// End of a list.
const NIL: u32 = u32::MAX;

/// What happened to the packets pushed. Every packet delivered is counted once in
/// `in_order`, `released`, `late` or `delivered_ahead`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReorderCounters {
    /// Delivered at once as the next expected in its flow (or a flow's first, also after
    /// a resync).
    pub in_order: u64,
    /// Held behind a gap, then released in order when the gap filled or was given up.
    pub released: u64,
    /// Gaps given up because the oldest packet held behind them waited the timeout.
    pub gaps_timed_out: u64,
    /// Arrived after their gap was given up: delivered at once, out of order.
    pub late: u64,
    /// Of `late`, those older than [`DUPLICATE_WINDOW`]: delivered without a duplicate
    /// check. Many of them mean the window is short for the paths' skew.
    pub late_unchecked: u64,
    /// Refused: a copy of a packet already delivered or held.
    pub duplicates: u64,
    /// A packet needed a buffer and none was free: the flow holding the oldest packet
    /// had a gap given up to free one.
    pub pool_exhausted: u64,
    /// Not to be held (`hold == false`) and ahead of the expected one: delivered at once.
    pub delivered_ahead: u64,
    /// A sequence [`MAX_DISTANCE`] or more from the expected one, or another sender flow
    /// in the same slot: what was held was released and the flow started over.
    pub resyncs: u64,
}

/// One flow's reordering state.
#[derive(Clone)]
struct FlowState {
    /// The sender's flow last seen in this slot; `None` before its first packet.
    flow: Option<u16>,
    /// Next sequence to deliver in order. Never delivered nor held itself.
    expected: u32,
    /// Which sequences of `expected - DUPLICATE_WINDOW .. expected + DUPLICATE_WINDOW`
    /// were delivered, at bit `seq % RING_BITS`.
    delivered: [u64; WORDS],
    /// Held packets by sequence, as buffer indices (`NIL` when none).
    first: u32,
    last: u32,
}

impl FlowState {
    const UNKNOWN: FlowState = FlowState {
        flow: None,
        expected: 0,
        delivered: [0; WORDS],
        first: NIL,
        last: NIL,
    };

    fn bit(seq: u32) -> (usize, u64) {
        let p = seq % RING_BITS;
        ((p / 64) as usize, 1 << (p % 64))
    }

    /// Only meaningful within the window around `expected`.
    fn is_delivered(&self, seq: u32) -> bool {
        let (w, b) = Self::bit(seq);
        self.delivered[w] & b != 0
    }

    fn mark_delivered(&mut self, seq: u32) {
        let (w, b) = Self::bit(seq);
        self.delivered[w] |= b;
    }

    /// Moves `expected` forward to `to`. The ring positions that enter the window ahead
    /// are the ones of the sequences that leave it behind: clear them.
    fn slide(&mut self, to: u32) {
        let n = to.wrapping_sub(self.expected);
        if n >= RING_BITS {
            self.delivered = [0; WORDS];
        } else {
            let entering = self.expected.wrapping_add(DUPLICATE_WINDOW);
            for i in 0..n {
                let (w, b) = Self::bit(entering.wrapping_add(i));
                self.delivered[w] &= !b;
            }
        }
        self.expected = to;
    }

    /// Marks `expected` delivered and moves past it.
    fn pass(&mut self) {
        self.mark_delivered(self.expected);
        self.slide(self.expected.wrapping_add(1));
    }

    /// A new start at `seq`, holding nothing.
    fn start(&mut self, flow: u16, seq: u32) {
        debug_assert_eq!(self.first, NIL);
        *self = FlowState {
            flow: Some(flow),
            expected: seq,
            ..FlowState::UNKNOWN
        };
    }
}

/// `a` comes before `b` (RFC 1982 serial-number order; both within 2^31 of each other).
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// A pool buffer's bookkeeping; its bytes are in [`Reorder::bytes`].
#[derive(Clone, Copy)]
struct Slot {
    seq: u32,
    len: u16,
    /// Index into [`Reorder::flows`].
    flow: u32,
    /// When it was held; `None` while free.
    arrived: Option<Instant>,
    /// Neighbours in its flow's list, by sequence. `next` also links the free list.
    prev: u32,
    next: u32,
    /// Neighbours in the pool-wide list, by arrival.
    older: u32,
    newer: u32,
}

impl Slot {
    const FREE: Slot = Slot {
        seq: 0,
        len: 0,
        flow: 0,
        arrived: None,
        prev: NIL,
        next: NIL,
        older: NIL,
        newer: NIL,
    };
}

/// Reorders spread packets per flow; see the [module documentation](self).
pub struct Reorder {
    flows: Box<[FlowState]>,
    slots: Box<[Slot]>,
    /// `slots.len()` buffers of `mtu` bytes.
    bytes: Box<[u8]>,
    mtu: usize,
    /// Free buffers, linked by `next`.
    free: u32,
    /// Ends of the pool-wide list by arrival.
    oldest: u32,
    newest: u32,
    held: usize,
    timeout: Duration,
    /// The longest a filled gap was open lately (decaying), and when it was last aged.
    skew: Duration,
    skew_at: Option<Instant>,
    late_at: Option<Instant>,
    counters: ReorderCounters,
}

impl std::fmt::Debug for Reorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reorder")
            .field("flows", &self.flows.len())
            .field("buffers", &self.slots.len())
            .field("held", &self.held)
            .field("timeout", &self.timeout)
            .field("counters", &self.counters)
            .finish()
    }
}

impl Reorder {
    /// State for `flows` flows (a packet's flow `f` uses entry `f % flows`: give at least
    /// as many as the sender's flow table has slots, or its flows will share entries and
    /// resync each other) and a pool of `buffers` held packets of at most `mtu` bytes.
    pub fn new(flows: usize, buffers: usize, mtu: usize) -> Self {
        assert!(
            (1..=1 << 16).contains(&flows),
            "flows: 1 to 65536 (the wire's flow is a u16)"
        );
        assert!(
            buffers > 0 && buffers < NIL as usize,
            "buffers: 1 to 2^32 - 2"
        );
        assert!(mtu <= usize::from(u16::MAX), "mtu: at most 65535");
        let mut slots = vec![Slot::FREE; buffers].into_boxed_slice();
        for (i, s) in slots.iter_mut().enumerate().take(buffers - 1) {
            s.next = i as u32 + 1;
        }
        Reorder {
            flows: vec![FlowState::UNKNOWN; flows].into_boxed_slice(),
            slots,
            bytes: vec![
                0;
                buffers
                    .checked_mul(mtu)
                    .expect("buffers × mtu fits in memory")
            ]
            .into_boxed_slice(),
            mtu,
            free: 0,
            oldest: NIL,
            newest: NIL,
            held: 0,
            timeout: DEFAULT_TIMEOUT,
            skew: Duration::ZERO,
            skew_at: None,
            late_at: None,
            counters: ReorderCounters::default(),
        }
    }

    /// Takes in packet `seq` of `flow`, and delivers through `deliver` what is now in
    /// order: this packet, at once or later, and the held ones it unblocks.
    ///
    /// `hold` is false for packets that must not wait (interactive ones, sent on two
    /// paths): they are delivered at once even ahead of a gap, and only their second copy
    /// is refused.
    ///
    /// Errors: [`DropReason::PacketTooLarge`] above the `mtu` given to
    /// [`Reorder::new`]; [`DropReason::Duplicate`] for a copy of a packet delivered or
    /// held. No packet is refused for want of a buffer: the oldest gap is given up.
    pub fn push(
        &mut self,
        now: Instant,
        flow: u16,
        seq: u32,
        hold: bool,
        packet: &[u8],
        deliver: &mut impl FnMut(&[u8]),
    ) -> Result<(), DropReason> {
        if packet.len() > self.mtu {
            return Err(DropReason::PacketTooLarge);
        }
        let f = usize::from(flow) % self.flows.len();
        // Loops only after freeing a buffer, which can change this flow's state.
        loop {
            let st = &self.flows[f];
            let distance = seq.wrapping_sub(st.expected) as i32;
            if st.flow != Some(flow) || distance.unsigned_abs() >= MAX_DISTANCE {
                if st.flow.is_some() {
                    self.counters.resyncs += 1;
                }
                self.release_all(f, deliver);
                self.flows[f].start(flow, seq);
                self.counters.in_order += 1;
                self.deliver_expected(f, packet, deliver);
                return Ok(());
            }
            if distance == 0 {
                let first = self.flows[f].first;
                if let Some(opened) = self.slots.get(first as usize).and_then(|s| s.arrived) {
                    self.on_skew(now, now.saturating_duration_since(opened));
                }
                self.counters.in_order += 1;
                self.deliver_expected(f, packet, deliver);
                return Ok(());
            }
            if distance < 0 {
                let behind = distance.unsigned_abs();
                if behind <= DUPLICATE_WINDOW {
                    if st.is_delivered(seq) {
                        return Err(self.duplicate());
                    }
                    self.flows[f].mark_delivered(seq);
                } else {
                    self.counters.late_unchecked += 1;
                }
                // Its gap was given up too soon: wait longer from now on, and again if it
                // goes on (one packet late now and then is no skew).
                if self
                    .late_at
                    .is_none_or(|t| now.saturating_duration_since(t) >= LATE_STEP)
                {
                    self.late_at = Some(now);
                    // A skew a quarter over the timeout, which the timeout then exceeds by
                    // a quarter again: about half as long again (a repair on a lossy path
                    // comes a round trip late, and a quarter was too little to catch up).
                    let timeout = self.timeout();
                    self.on_skew(now, timeout + timeout / 4);
                }
                self.counters.late += 1;
                deliver(packet);
                return Ok(());
            }
            let ahead = distance as u32;
            if ahead < DUPLICATE_WINDOW && st.is_delivered(seq) {
                return Err(self.duplicate());
            }
            let Some(after) = self.held_position(f, seq) else {
                return Err(self.duplicate());
            };
            if !hold {
                self.counters.delivered_ahead += 1;
                if self.flows[f].first == NIL || ahead >= DUPLICATE_WINDOW {
                    // Nothing waits on the gap (or the window cannot remember this far
                    // ahead): give it up; a copy arriving later is delivered as late.
                    self.jump(f, seq, packet, deliver);
                } else {
                    self.flows[f].mark_delivered(seq);
                    deliver(packet);
                }
                return Ok(());
            }
            if self.free == NIL {
                self.counters.pool_exhausted += 1;
                let oldest = self.slots[self.oldest as usize].flow as usize;
                self.give_up_gap(oldest, deliver);
                continue;
            }
            self.hold(now, f, seq, after, packet);
            return Ok(());
        }
    }

    /// Sets how long the oldest packet held behind a gap waits before the gap is given
    /// up: from the measured delay skew between the paths in use. Applies to the packets
    /// already held too. Capped at [`MAX_TIMEOUT`]. The buffer waits longer when it sees
    /// gaps fill later than that (queues on the far end's side of a path, which the
    /// paths' round trips measured here do not show), or packets come after their gap
    /// was given up.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout.min(MAX_TIMEOUT);
    }

    /// The timeout in force: the one set, or a quarter more than the skew seen lately.
    pub fn timeout(&self) -> Duration {
        self.timeout.max(self.skew + self.skew / 4).min(MAX_TIMEOUT)
    }

    /// The longest a gap stayed open before it filled, lately.
    pub fn skew(&self) -> Duration {
        self.skew
    }

    fn on_skew(&mut self, now: Instant, sample: Duration) {
        self.age_skew(now);
        self.skew = self.skew.max(sample).min(MAX_SEEN_SKEW);
    }

    fn age_skew(&mut self, now: Instant) {
        let last = *self.skew_at.get_or_insert(now);
        let elapsed = now.saturating_duration_since(last);
        if elapsed >= SKEW_HALF_LIFE / 16 {
            let halvings = elapsed.as_secs_f64() / SKEW_HALF_LIFE.as_secs_f64();
            self.skew = self.skew.mul_f64(0.5f64.powf(halvings));
            self.skew_at = Some(now);
        }
    }

    /// When [`Reorder::handle_timeout`] has a gap to give up: the oldest held packet's
    /// arrival plus the timeout. `None` while nothing is held.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline(self.oldest)
    }

    /// Gives up every gap whose oldest held packet has waited the timeout at `now`,
    /// delivering in order, per flow, what was held up to the next gap that has not.
    /// Afterwards [`Reorder::poll_timeout`] is later than `now`, or `None`.
    pub fn handle_timeout(&mut self, now: Instant, deliver: &mut impl FnMut(&[u8])) {
        self.age_skew(now);
        // Each round releases at least its flow's first held packet.
        while let Some(deadline) = self.deadline(self.oldest) {
            if deadline > now {
                break;
            }
            self.counters.gaps_timed_out += 1;
            let f = self.slots[self.oldest as usize].flow as usize;
            self.give_up_gap(f, deliver);
        }
    }

    /// Releases everything held, in order per flow, and forgets every flow: for when the
    /// sender's sequences start over (a new session).
    pub fn reset(&mut self, deliver: &mut impl FnMut(&[u8])) {
        while self.oldest != NIL {
            let f = self.slots[self.oldest as usize].flow as usize;
            self.release_all(f, deliver);
        }
        self.flows.fill(FlowState::UNKNOWN);
    }

    /// Packets held now.
    pub fn held(&self) -> usize {
        self.held
    }

    /// What happened so far.
    pub fn counters(&self) -> &ReorderCounters {
        &self.counters
    }

    fn duplicate(&mut self) -> DropReason {
        self.counters.duplicates += 1;
        DropReason::Duplicate
    }

    fn deadline(&self, slot: u32) -> Option<Instant> {
        let arrived = self.slots.get(slot as usize)?.arrived?;
        Some(arrived + self.timeout())
    }

    /// The held packet of flow `f` that `seq` goes after (`NIL`: first), or `None` when
    /// `seq` is held already. Searched from the newest end, where spread packets land.
    fn held_position(&self, f: usize, seq: u32) -> Option<u32> {
        let mut at = self.flows[f].last;
        while at != NIL {
            let s = &self.slots[at as usize];
            if s.seq == seq {
                return None;
            }
            if before(s.seq, seq) {
                break;
            }
            at = s.prev;
        }
        Some(at)
    }

    /// Copies `packet` into a free buffer (there must be one), after `after` in flow
    /// `f`'s list.
    fn hold(&mut self, now: Instant, f: usize, seq: u32, after: u32, packet: &[u8]) {
        let i = self.free;
        self.free = self.slots[i as usize].next;
        let st = &mut self.flows[f];
        let next = if after == NIL {
            st.first
        } else {
            self.slots[after as usize].next
        };
        self.slots[i as usize] = Slot {
            seq,
            len: packet.len() as u16,
            flow: f as u32,
            arrived: Some(now),
            prev: after,
            next,
            older: self.newest,
            newer: NIL,
        };
        if after == NIL {
            st.first = i;
        } else {
            self.slots[after as usize].next = i;
        }
        if next == NIL {
            st.last = i;
        } else {
            self.slots[next as usize].prev = i;
        }
        if self.newest == NIL {
            self.oldest = i;
        } else {
            self.slots[self.newest as usize].newer = i;
        }
        self.newest = i;
        self.bytes[i as usize * self.mtu..][..packet.len()].copy_from_slice(packet);
        self.held += 1;
    }

    /// Delivers flow `f`'s first held packet and returns its buffer to the pool.
    fn release_first(&mut self, f: usize, deliver: &mut impl FnMut(&[u8])) {
        let st = &mut self.flows[f];
        let i = st.first;
        let s = self.slots[i as usize];
        st.first = s.next;
        if s.next == NIL {
            st.last = NIL;
        } else {
            self.slots[s.next as usize].prev = NIL;
        }
        if s.older == NIL {
            self.oldest = s.newer;
        } else {
            self.slots[s.older as usize].newer = s.newer;
        }
        if s.newer == NIL {
            self.newest = s.older;
        } else {
            self.slots[s.newer as usize].older = s.older;
        }
        self.slots[i as usize] = Slot {
            next: self.free,
            ..Slot::FREE
        };
        self.free = i;
        self.held -= 1;
        self.counters.released += 1;
        deliver(&self.bytes[i as usize * self.mtu..][..usize::from(s.len)]);
    }

    /// Delivers `packet`, the expected one of flow `f`, and what follows it in order.
    fn deliver_expected(&mut self, f: usize, packet: &[u8], deliver: &mut impl FnMut(&[u8])) {
        deliver(packet);
        self.flows[f].pass();
        self.advance(f, deliver);
    }

    /// Releases flow `f`'s held packets from `expected` on while they are consecutive,
    /// stepping over those delivered ahead.
    fn advance(&mut self, f: usize, deliver: &mut impl FnMut(&[u8])) {
        loop {
            let st = &self.flows[f];
            if st.first != NIL && self.slots[st.first as usize].seq == st.expected {
                self.flows[f].pass();
                self.release_first(f, deliver);
            } else if st.is_delivered(st.expected) {
                self.flows[f].pass();
            } else {
                return;
            }
        }
    }

    /// Gives up the gap before flow `f`'s first held packet (there must be one) and
    /// releases up to the next gap.
    fn give_up_gap(&mut self, f: usize, deliver: &mut impl FnMut(&[u8])) {
        let first = self.slots[self.flows[f].first as usize].seq;
        self.flows[f].slide(first);
        self.advance(f, deliver);
    }

    fn release_all(&mut self, f: usize, deliver: &mut impl FnMut(&[u8])) {
        while self.flows[f].first != NIL {
            self.give_up_gap(f, deliver);
        }
    }

    /// Gives up every gap of flow `f` before `seq` (ahead, neither held nor delivered),
    /// then delivers `packet` as the expected one.
    fn jump(&mut self, f: usize, seq: u32, packet: &[u8], deliver: &mut impl FnMut(&[u8])) {
        // Releasing stops at `seq` at the latest: it is neither held nor delivered.
        while self.flows[f].first != NIL
            && before(self.slots[self.flows[f].first as usize].seq, seq)
        {
            self.give_up_gap(f, deliver);
        }
        self.flows[f].slide(seq);
        self.deliver_expected(f, packet, deliver);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SplitMix;

    const MS: Duration = Duration::from_millis(1);

    fn packet(flow: u16, seq: u32) -> [u8; 6] {
        let mut p = [0; 6];
        p[..2].copy_from_slice(&flow.to_be_bytes());
        p[2..].copy_from_slice(&seq.to_be_bytes());
        p
    }

    fn read(p: &[u8]) -> (u16, u32) {
        (
            u16::from_be_bytes([p[0], p[1]]),
            u32::from_be_bytes([p[2], p[3], p[4], p[5]]),
        )
    }

    /// A `Reorder` with a clock in milliseconds and what it delivered.
    struct Far {
        r: Reorder,
        t0: Instant,
        out: Vec<(u16, u32)>,
    }

    impl Far {
        fn new(flows: usize, buffers: usize) -> Far {
            Far {
                r: Reorder::new(flows, buffers, 6),
                t0: Instant::now(),
                out: Vec::new(),
            }
        }

        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }

        fn push(&mut self, ms: u64, flow: u16, seq: u32, hold: bool) -> Result<(), DropReason> {
            let now = self.at(ms);
            let out = &mut self.out;
            self.r
                .push(now, flow, seq, hold, &packet(flow, seq), &mut |p| {
                    out.push(read(p))
                })
        }

        /// Pushes held packets of flow 0.
        fn seqs(&mut self, ms: u64, seqs: &[u32]) {
            for &s in seqs {
                self.push(ms, 0, s, true).unwrap();
            }
        }

        fn handle_timeout(&mut self, ms: u64) {
            let now = self.at(ms);
            let out = &mut self.out;
            self.r.handle_timeout(now, &mut |p| out.push(read(p)));
            assert!(self.r.poll_timeout().is_none_or(|t| t > now));
        }

        /// Sequences delivered since last asked (of any flow).
        fn take(&mut self) -> Vec<u32> {
            self.out.drain(..).map(|(_, s)| s).collect()
        }
    }

    #[test]
    fn in_order_passes_straight_through() {
        let mut far = Far::new(4, 8);
        for s in 0..100 {
            far.push(s.into(), 0, s, true).unwrap();
            assert_eq!(far.take(), [s]);
        }
        assert_eq!(far.r.held(), 0);
        assert_eq!(far.r.poll_timeout(), None);
        assert_eq!(far.r.counters().in_order, 100);
    }

    #[test]
    fn a_swap_is_fixed() {
        let mut far = Far::new(4, 8);
        far.seqs(0, &[0, 2]);
        assert_eq!(far.take(), [0]);
        assert_eq!(far.r.held(), 1);
        far.seqs(1, &[1]);
        assert_eq!(far.take(), [1, 2]);
        assert_eq!(far.r.held(), 0);
        assert_eq!(far.r.poll_timeout(), None);
        let c = far.r.counters();
        assert_eq!((c.in_order, c.released, c.gaps_timed_out), (2, 1, 0));
        // A duplicate of a held packet is refused too.
        far.seqs(2, &[4]);
        assert_eq!(far.push(2, 0, 4, true), Err(DropReason::Duplicate));
        assert_eq!(far.r.counters().duplicates, 1);
    }

    #[test]
    fn a_lost_packet_is_given_up_after_the_timeout() {
        let mut far = Far::new(4, 8);
        far.r.set_timeout(30 * MS);
        far.seqs(0, &[0]);
        // 1 and 4 are lost.
        far.seqs(1, &[2]);
        far.seqs(2, &[3]);
        far.seqs(3, &[5]);
        assert_eq!(far.take(), [0]);
        assert_eq!(far.r.poll_timeout(), Some(far.at(31)));
        far.handle_timeout(30);
        assert_eq!(far.take(), [] as [u32; 0]);
        far.handle_timeout(31);
        // Up to the next gap, whose oldest packet (5) has not waited long enough.
        assert_eq!(far.take(), [2, 3]);
        assert_eq!(far.r.poll_timeout(), Some(far.at(33)));
        far.handle_timeout(33);
        assert_eq!(far.take(), [5]);
        assert_eq!(far.r.poll_timeout(), None);
        assert_eq!(far.r.counters().gaps_timed_out, 2);
        // What follows comes straight through.
        far.seqs(40, &[6]);
        assert_eq!(far.take(), [6]);
    }

    #[test]
    fn the_oldest_held_packet_of_a_flow_starts_its_timer() {
        let mut far = Far::new(4, 8);
        far.r.set_timeout(30 * MS);
        far.seqs(0, &[0, 3]);
        far.seqs(10, &[2]);
        // 3 arrived first: its wait counts, though 2 is first in sequence.
        assert_eq!(far.r.poll_timeout(), Some(far.at(30)));
        far.handle_timeout(30);
        assert_eq!(far.take(), [0, 2, 3]);
        assert_eq!(far.r.counters().gaps_timed_out, 1);
    }

    #[test]
    fn the_timeout_follows_set_timeout() {
        let mut far = Far::new(4, 8);
        far.r.set_timeout(100 * MS);
        far.seqs(0, &[0, 2]);
        assert_eq!(far.r.poll_timeout(), Some(far.at(100)));
        // Shorter: applies to what is held already.
        far.r.set_timeout(10 * MS);
        assert_eq!(far.r.poll_timeout(), Some(far.at(10)));
        far.r.set_timeout(50 * MS);
        far.handle_timeout(49);
        assert_eq!(far.take(), [0]);
        far.handle_timeout(50);
        assert_eq!(far.take(), [2]);
        far.r.set_timeout(Duration::MAX);
        assert_eq!(far.r.timeout(), MAX_TIMEOUT);
    }

    #[test]
    fn a_past_timer_is_always_consumed() {
        let mut far = Far::new(4, 8);
        far.r.set_timeout(Duration::ZERO);
        far.seqs(5, &[0, 2, 4]);
        assert_eq!(far.r.poll_timeout(), Some(far.at(5)));
        far.handle_timeout(5);
        assert_eq!(far.r.poll_timeout(), None);
        // Held long ago under a long timeout, then the timeout shrinks: one call at `now`
        // gives up every gap that is due, however many.
        far.r.set_timeout(1000 * MS);
        far.seqs(10, &[6, 8, 10, 12]);
        far.r.set_timeout(MS);
        far.handle_timeout(500);
        assert_eq!(far.take(), [0, 2, 4, 6, 8, 10, 12]);
        assert_eq!(far.r.counters().gaps_timed_out, 6);
    }

    #[test]
    fn a_late_packet_is_delivered_once() {
        let mut far = Far::new(4, 8);
        far.r.set_timeout(30 * MS);
        far.seqs(0, &[0, 2]);
        far.handle_timeout(30);
        assert_eq!(far.take(), [0, 2]);
        far.seqs(40, &[1]);
        assert_eq!(far.take(), [1]);
        assert_eq!(far.r.counters().late, 1);
        for s in [1, 0, 2] {
            assert_eq!(far.push(41, 0, s, true), Err(DropReason::Duplicate), "{s}");
        }
        assert_eq!(far.r.counters().duplicates, 3);
        assert_eq!(far.take(), [] as [u32; 0]);
    }

    #[test]
    fn a_late_packet_older_than_the_window_is_delivered_unchecked() {
        let mut far = Far::new(4, 8);
        far.seqs(0, &[0]);
        far.seqs(0, &(2..DUPLICATE_WINDOW + 3).collect::<Vec<_>>());
        far.handle_timeout(100);
        far.take();
        far.seqs(100, &[1]);
        assert_eq!(far.take(), [1]);
        let c = far.r.counters();
        assert_eq!((c.late, c.late_unchecked), (1, 1));
    }

    #[test]
    fn a_gap_in_one_flow_does_not_hold_another() {
        let mut far = Far::new(4, 8);
        far.push(0, 1, 0, true).unwrap();
        far.push(0, 1, 2, true).unwrap();
        for s in 0..4 {
            far.push(1, 2, s, true).unwrap();
        }
        assert_eq!(far.out, [(1, 0), (2, 0), (2, 1), (2, 2), (2, 3)]);
        assert_eq!(far.r.held(), 1);
        far.out.clear();
        far.handle_timeout(100);
        assert_eq!(far.out, [(1, 2)]);
    }

    #[test]
    fn unheld_packets_are_delivered_at_once_and_their_second_copy_refused() {
        let mut far = Far::new(4, 8);
        // Interactive: 1 lost on the first path, its copy comes on the second.
        for s in [0, 2, 3] {
            far.push(0, 0, s, false).unwrap();
        }
        assert_eq!(far.take(), [0, 2, 3]);
        assert_eq!(far.r.poll_timeout(), None);
        for s in [0, 2, 3] {
            assert_eq!(far.push(5, 0, s, false), Err(DropReason::Duplicate));
        }
        far.push(5, 0, 1, false).unwrap();
        assert_eq!(far.take(), [1]);
        assert_eq!(far.push(6, 0, 1, false), Err(DropReason::Duplicate));
        // In a flow holding packets: delivered, remembered, stepped over.
        far.seqs(10, &[5]);
        far.push(10, 0, 6, false).unwrap();
        assert_eq!(far.take(), [6]);
        assert_eq!(far.push(11, 0, 6, true), Err(DropReason::Duplicate));
        far.seqs(11, &[4]);
        assert_eq!(far.take(), [4, 5]);
        far.seqs(12, &[7]);
        assert_eq!(far.take(), [7]);
        let c = far.r.counters();
        assert_eq!((c.delivered_ahead, c.duplicates), (2, 5));
    }

    #[test]
    fn an_unheld_packet_beyond_the_window_releases_what_is_held_before_it() {
        let mut far = Far::new(4, 8);
        far.seqs(0, &[0, 2, 3]);
        far.push(1, 0, DUPLICATE_WINDOW + 10, false).unwrap();
        assert_eq!(far.take(), [0, 2, 3, DUPLICATE_WINDOW + 10]);
        assert_eq!(far.r.held(), 0);
        far.seqs(2, &[1]);
        assert_eq!(far.take(), [1]);
        assert_eq!(far.r.counters().late, 1);
    }

    #[test]
    fn sequences_wrap_at_u32_max() {
        let mut far = Far::new(4, 8);
        let m = u32::MAX;
        far.seqs(0, &[m - 2, m, 0, m - 1, 1]);
        assert_eq!(far.take(), [m - 2, m - 1, m, 0, 1]);
        assert_eq!(far.push(1, 0, m, true), Err(DropReason::Duplicate));
        far.seqs(1, &[3]);
        far.handle_timeout(200);
        assert_eq!(far.take(), [3]);
        far.seqs(201, &[2]);
        assert_eq!(far.take(), [2]);
        assert_eq!(far.r.counters().late, 1);
    }

    #[test]
    fn a_jump_far_either_way_resyncs() {
        let mut far = Far::new(4, 8);
        far.seqs(0, &[0, 1, 3]);
        far.seqs(1, &[1_000_000]);
        // What was held comes out first, then the flow starts over.
        assert_eq!(far.take(), [0, 1, 3, 1_000_000]);
        far.seqs(2, &[1_000_001]);
        assert_eq!(far.take(), [1_000_001]);
        far.seqs(3, &[5]);
        far.seqs(3, &[6]);
        assert_eq!(far.take(), [5, 6]);
        assert_eq!(far.r.counters().resyncs, 2);
        // Just within the distance is ahead, and held.
        far.seqs(4, &[7 + MAX_DISTANCE - 1]);
        assert_eq!(far.take(), [] as [u32; 0]);
        assert_eq!(far.r.held(), 1);
    }

    #[test]
    fn sender_flows_sharing_a_slot_do_not_wait_on_each_other() {
        let mut far = Far::new(4, 8);
        far.push(0, 1, 100, true).unwrap();
        far.push(0, 5, 7, true).unwrap();
        far.push(0, 1, 101, true).unwrap();
        assert_eq!(far.out, [(1, 100), (5, 7), (1, 101)]);
        assert_eq!(far.r.counters().resyncs, 2);
    }

    #[test]
    fn an_exhausted_pool_gives_up_the_oldest_flows_gap() {
        let mut far = Far::new(4, 4);
        for f in [1, 2] {
            far.push(0, f, 0, true).unwrap();
        }
        // Each flow lost its 1 and holds 2 and 3: the pool is full.
        far.push(1, 1, 2, true).unwrap();
        far.push(2, 1, 3, true).unwrap();
        far.push(3, 2, 2, true).unwrap();
        far.push(4, 2, 3, true).unwrap();
        far.out.clear();
        // Flow 1 holds the oldest packet: its gap goes.
        far.push(5, 2, 5, true).unwrap();
        assert_eq!(far.out, [(1, 2), (1, 3)]);
        assert_eq!(far.r.held(), 3);
        far.out.clear();
        // Now flow 2 does; once its gap went, the packet is next in order.
        far.push(6, 2, 6, true).unwrap();
        far.push(7, 2, 4, true).unwrap();
        assert_eq!(far.out, [(2, 2), (2, 3), (2, 4), (2, 5), (2, 6)]);
        assert_eq!(far.r.held(), 0);
        assert_eq!(far.r.counters().pool_exhausted, 2);
        // The lost ones, late, still come through once.
        far.out.clear();
        far.push(8, 1, 1, true).unwrap();
        far.push(8, 2, 1, true).unwrap();
        assert_eq!(far.out, [(1, 1), (2, 1)]);
        assert_eq!(far.push(8, 2, 1, true), Err(DropReason::Duplicate));
        let c = far.r.counters();
        assert_eq!((c.in_order, c.released, c.late), (3, 6, 2));
    }

    #[test]
    fn a_packet_longer_than_the_mtu_is_refused() {
        let mut r = Reorder::new(1, 1, 6);
        let now = Instant::now();
        let mut n = 0;
        assert_eq!(
            r.push(now, 0, 0, true, &[0; 7], &mut |_| n += 1),
            Err(DropReason::PacketTooLarge)
        );
        r.push(now, 0, 0, true, &[0; 6], &mut |_| n += 1).unwrap();
        r.push(now, 0, 2, true, &[0; 6], &mut |_| n += 1).unwrap();
        assert_eq!((n, r.held()), (1, 1));
    }

    /// The timeout follows the skew seen here: gaps that fill 40 ms late lengthen a 10 ms
    /// timeout to a quarter more than that, the skew halves every few seconds once gaps
    /// fill at once, and a packet later than its given-up gap lengthens the timeout by
    /// about half (1.25 × 1.25), at most twice a second.
    #[test]
    fn the_timeout_follows_the_skew_seen_here() {
        let t0 = Instant::now();
        let mut r = Reorder::new(4, 64, 6);
        r.set_timeout(Duration::from_millis(10));
        let mut out = 0;
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut push = |r: &mut Reorder, at: Instant, seq: u32| {
            r.push(at, 0, seq, true, &packet(0, seq), &mut |_| out += 1)
                .unwrap();
        };
        push(&mut r, ms(0), 0);
        // 2 arrives, 1 fills the gap 8 ms later (within the 10 ms timeout).
        push(&mut r, ms(1), 2);
        push(&mut r, ms(9), 1);
        assert_eq!(r.skew(), Duration::from_millis(8));
        assert_eq!(r.timeout(), Duration::from_millis(10));
        // Then gaps that fill later and later, each within the timeout then in force.
        let mut at = 10;
        let mut seq = 3;
        for wait in [9, 11, 13, 16, 20, 25, 31, 38, 40, 40] {
            push(&mut r, ms(at), seq + 1);
            push(&mut r, ms(at + wait), seq);
            at += wait + 1;
            seq += 2;
        }
        assert!(r.skew() >= Duration::from_millis(38), "{:?}", r.skew());
        assert!(
            r.timeout() >= Duration::from_millis(47),
            "{:?}",
            r.timeout()
        );
        assert_eq!(r.counters().gaps_timed_out, 0);
        // Four seconds of gaps that fill at once: the skew halves.
        let skew = r.skew();
        for k in 0..40u32 {
            at += 100;
            push(&mut r, ms(at), seq + 1);
            push(&mut r, ms(at), seq);
            seq += 2;
            assert!(k < 39 || r.skew() <= skew / 2 + Duration::from_millis(1));
        }
        // A gap given up, its packet late: about half as long again, once within half a
        // second.
        let before = r.timeout();
        push(&mut r, ms(at + 1), seq + 1);
        at += 1 + before.as_millis() as u64 + 1;
        r.handle_timeout(ms(at), &mut |_| {});
        assert_eq!(r.counters().gaps_timed_out, 1);
        push(&mut r, ms(at), seq);
        let longer = r.timeout();
        let most = (before + before / 4) + (before + before / 4) / 4 + Duration::from_millis(1);
        assert!(
            longer > before + before / 4 && longer <= most,
            "{longer:?} after {before:?}"
        );
        push(&mut r, ms(at + 10), seq + 3);
        r.handle_timeout(ms(at + 10) + longer, &mut |_| {});
        push(&mut r, ms(at + 10) + longer, seq + 2);
        assert_eq!(r.counters().late, 2);
        assert!(r.timeout() <= longer, "a second late packet within 500 ms");
    }

    #[test]
    fn reset_releases_what_is_held_and_forgets_flows() {
        let mut far = Far::new(4, 8);
        far.seqs(0, &[10, 12, 14]);
        far.out.clear();
        let out = &mut far.out;
        far.r.reset(&mut |p| out.push(read(p)));
        assert_eq!(far.take(), [12, 14]);
        assert_eq!((far.r.held(), far.r.poll_timeout()), (0, None));
        // A new session starts over at 0: not late, not a duplicate.
        far.seqs(1, &[0, 1]);
        assert_eq!(far.take(), [0, 1]);
        assert_eq!(far.r.counters().resyncs, 0);
    }

    /// 10 000 packets of 3 flows spread over a 5 ms and a 25 ms path (with up to 2 ms of
    /// jitter), starting near `u32::MAX`; 1% lost, 0.5% arrive 100 ms late, 1% are sent
    /// on both paths. Timers are stepped to like an event loop would.
    fn spread(buffers: usize, seed: u64) -> (ReorderCounters, usize) {
        const PACKETS: u32 = 10_000;
        const FLOWS: usize = 3;
        let base = u32::MAX - 2_000;
        let mut rng = SplitMix(seed);
        let mut next = [0u32; FLOWS];
        let mut arrivals = Vec::new();
        let mut lost = vec![[false; FLOWS]; PACKETS as usize];
        let mut delayed = vec![[false; FLOWS]; PACKETS as usize];
        let mut copies = 0;
        let delay = |path: u64, rng: &mut SplitMix| 5_000 + path * 20_000 + rng.next_u64() % 2_000;
        for i in 0..u64::from(PACKETS) {
            let f = (rng.next_u64() % FLOWS as u64) as usize;
            let n = next[f];
            next[f] += 1;
            let sent = i * 100;
            let path = rng.next_u64() % 2;
            let fate = rng.next_u64() % 1000;
            if fate < 10 {
                lost[n as usize][f] = true;
                continue;
            }
            let extra = if fate < 15 { 100_000 } else { 0 };
            delayed[n as usize][f] = extra > 0;
            arrivals.push((sent + delay(path, &mut rng) + extra, f, n));
            if (15..25).contains(&fate) {
                arrivals.push((sent + delay(1 - path, &mut rng), f, n));
                copies += 1;
            }
        }
        arrivals.sort_by_key(|a| a.0);

        let mut r = Reorder::new(FLOWS, buffers, 6);
        r.set_timeout(Duration::from_millis(30));
        let t0 = Instant::now();
        let mut out = Vec::new();
        let mut dups = 0;
        for &(at, f, n) in &arrivals {
            let now = t0 + Duration::from_micros(at);
            while let Some(t) = r.poll_timeout().filter(|&t| t <= now) {
                r.handle_timeout(t, &mut |p| out.push(read(p)));
                assert!(r.poll_timeout().is_none_or(|next| next > t));
            }
            let seq = base.wrapping_add(n);
            match r.push(now, f as u16, seq, true, &packet(f as u16, seq), &mut |p| {
                out.push(read(p))
            }) {
                Ok(()) => {}
                Err(DropReason::Duplicate) => dups += 1,
                Err(e) => panic!("{e}"),
            }
        }
        while let Some(t) = r.poll_timeout() {
            r.handle_timeout(t, &mut |p| out.push(read(p)));
        }
        assert_eq!(r.held(), 0);
        assert_eq!(dups, copies);

        let mut times = vec![[0u8; FLOWS]; PACKETS as usize];
        let mut first = [None::<u32>; FLOWS];
        let mut highest = [None::<u32>; FLOWS];
        let mut out_of_order = 0;
        for &(f, seq) in &out {
            let (f, n) = (usize::from(f), seq.wrapping_sub(base));
            times[n as usize][f] += 1;
            let first = *first[f].get_or_insert(n);
            if highest[f].is_some_and(|h| h > n) {
                out_of_order += 1;
                if buffers >= 1024 && n > first {
                    // Only a packet that came long after its gap was given up (or one
                    // sent before the flow's first arrival, which set the expectation).
                    assert!(delayed[n as usize][f], "flow {f} packet {n}");
                }
            } else {
                highest[f] = Some(n);
            }
        }
        for f in 0..FLOWS {
            for n in 0..next[f] as usize {
                let want = u8::from(!lost[n][f]);
                assert_eq!(times[n][f], want, "flow {f} packet {n}");
            }
        }
        let c = r.counters().clone();
        assert_eq!(c.late, out_of_order);
        assert_eq!(c.in_order + c.released + c.late, out.len() as u64);
        assert_eq!(c.duplicates, copies);
        (c, out.len())
    }

    #[test]
    fn spread_flows_come_out_in_order_exactly_once() {
        for seed in [1, 2, 3] {
            let (c, delivered) = spread(1024, seed);
            assert!(delivered > 9_700, "{delivered}");
            assert_eq!(c.pool_exhausted, 0);
            assert!(
                c.released > 1_000 && c.gaps_timed_out > 0 && c.late > 0,
                "{c:?}"
            );
        }
    }

    #[test]
    fn spread_flows_survive_a_small_pool() {
        let (c, _) = spread(16, 4);
        assert!(c.pool_exhausted > 0, "{c:?}");
    }
}
