//! The core's queue: packets waiting for a path, flow-queued and CoDel-managed (RFC 8290).
//!
//! Each path's congestion control bounds what is in flight on it; what waits beyond that
//! waits here, one queue per flow slot. Deficit round robin with a new-flows list gives a
//! sparse (interactive) flow its packet ahead of a bulk backlog, and CoDel (RFC 8289) on
//! each queue slows a bulk flow's sender with ECN marks or drops before a standing queue
//! builds, here or in the ISPs' buffers.
//!
//! Memory is fixed by [`FlowQueues::new`]: one block of `slots × slot_len` bytes for the
//! packets, per-slot metadata (length, enqueue time, next slot of its queue) and per-queue
//! state (head/tail, counts, deficit, CoDel state, DRR list links). Free slots form a
//! stack; each queue is a linked list of slots. Nothing allocates afterwards.
//!
//! Two departures from RFC 8290, both for the caller's scheduler and documented where
//! they apply: [`FlowQueues::dequeue`] skips queues the caller cannot send now, and
//! CoDel's "at most one packet left" test uses the queue's own bytes against `slot_len`.

use std::time::{Duration, Instant};

use crate::DropReason;

/// No slot, no queue: the end of a linked list.
const NONE: u32 = u32::MAX;
/// At most this many packets are dropped from the fattest queue for one arrival (Linux
/// `fq_codel_drop`): enough to pay for the search, few enough to bound the work.
const OVERFLOW_BATCH: usize = 64;
/// ECN field values (RFC 3168 §5).
const NOT_ECT: u8 = 0b00;
const CE: u8 = 0b11;

/// CoDel's parameters (RFC 8289 §4.2, §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodelParams {
    /// Acceptable standing delay: a queue whose packets wait less is left alone.
    pub target: Duration,
    /// How long the delay must stay above `target` before CoDel acts, and the base of its
    /// control law: about a worst-case round-trip time of the flows.
    pub interval: Duration,
}

impl Default for CodelParams {
    /// RFC 8289's 5 ms and 100 ms.
    fn default() -> Self {
        CodelParams {
            target: Duration::from_millis(5),
            interval: Duration::from_millis(100),
        }
    }
}

/// What the queues did since [`FlowQueues::new`] ([`FlowQueues::clear`] keeps them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FqCounters {
    /// Packets queued.
    pub enqueued_packets: u64,
    /// Bytes queued.
    pub enqueued_bytes: u64,
    /// Packets handed out by [`FlowQueues::dequeue`], CE-marked ones included.
    pub dequeued_packets: u64,
    /// Bytes handed out.
    pub dequeued_bytes: u64,
    /// Packets lost because every slot was taken ([`DropReason::QueueFull`]): dropped
    /// from the head of the fattest queue, or refused by [`FlowQueues::enqueue`].
    pub overflow_drops: u64,
    /// Packets CoDel dropped ([`DropReason::QueueDelay`]).
    pub codel_drops: u64,
    /// Packets CoDel marked CE instead of dropping them (and that were sent).
    pub ce_marks: u64,
}

/// A packet [`FlowQueues::dequeue`] copied out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dequeued {
    /// Its queue, in `0..queues`.
    pub queue: u16,
    /// Its length at the start of the caller's buffer.
    pub len: usize,
    /// CoDel asked for a drop and set CE in it instead (the IPv4 checksum is fixed).
    pub ce_marked: bool,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Always `Some` while the slot holds a packet (an `Instant` has no neutral value).
    enqueued: Option<Instant>,
    /// Next slot of the same queue, or of the free stack.
    next: u32,
    len: u16,
    /// Queued first ([`FlowQueues::enqueue_first`]): CoDel never drops it.
    first: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListId {
    New,
    Old,
}

/// RFC 8289's per-queue state.
#[derive(Debug, Clone, Copy)]
struct Codel {
    first_above: Option<Instant>,
    drop_next: Option<Instant>,
    count: u32,
    lastcount: u32,
    dropping: bool,
}

#[derive(Debug, Clone, Copy)]
struct FlowQueue {
    head: u32,
    tail: u32,
    packets: u32,
    bytes: usize,
    deficit: i32,
    /// The DRR list it is on; a queue with packets is always on one.
    on: Option<ListId>,
    prev: u32,
    next: u32,
    codel: Codel,
}

impl FlowQueue {
    const IDLE: FlowQueue = FlowQueue {
        head: NONE,
        tail: NONE,
        packets: 0,
        bytes: 0,
        deficit: 0,
        on: None,
        prev: NONE,
        next: NONE,
        codel: Codel {
            first_above: None,
            drop_next: None,
            count: 0,
            lastcount: 0,
            dropping: false,
        },
    };
}

#[derive(Debug, Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
}

const EMPTY_LIST: List = List {
    head: NONE,
    tail: NONE,
};

/// CoDel's decision on a queue's head.
enum Verdict {
    Send {
        ce_marked: bool,
    },
    Empty,
    /// The head is longer than the caller's buffer.
    TooSmall,
}

/// What serving one queue gave.
enum Served {
    Packet(Dequeued),
    Empty,
    /// The packet due next is longer than the caller's buffer.
    TooSmall,
}

/// Packets waiting for a path, in per-flow queues: DRR with a new-flows list, CoDel on
/// each queue (RFC 8290).
pub struct FlowQueues {
    slot_len: usize,
    storage: Box<[u8]>,
    slots: Box<[Slot]>,
    queues: Box<[FlowQueue]>,
    /// Top of the free-slot stack.
    free: u32,
    new_flows: List,
    old_flows: List,
    codel: CodelParams,
    packets: usize,
    bytes: usize,
    counters: FqCounters,
}

impl std::fmt::Debug for FlowQueues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowQueues")
            .field("slots", &self.slots.len())
            .field("slot_len", &self.slot_len)
            .field("queues", &self.queues.len())
            .field("waiting", &self.packets)
            .field("bytes", &self.bytes)
            .field("counters", &self.counters)
            .finish()
    }
}

impl FlowQueues {
    /// `slots` packets of at most `slot_len` bytes each, shared by `queues` queues. The
    /// DRR quantum is `slot_len`: one full packet per round.
    ///
    /// Panics unless `slots` is in `1..u32::MAX`, `slot_len` in `1..=65535` and `queues`
    /// in `1..=65536` (queues are numbered by `u16`).
    pub fn new(slots: usize, slot_len: usize, queues: usize, codel: CodelParams) -> Self {
        assert!(slots > 0 && slots < NONE as usize, "slots: {slots}");
        assert!(
            slot_len > 0 && slot_len <= usize::from(u16::MAX),
            "slot_len: {slot_len}"
        );
        assert!(queues > 0 && queues <= 1 << 16, "queues: {queues}");
        let bytes = slots.checked_mul(slot_len).expect("slots × slot_len");
        let mut fq = FlowQueues {
            slot_len,
            storage: vec![0; bytes].into_boxed_slice(),
            slots: vec![
                Slot {
                    enqueued: None,
                    next: NONE,
                    len: 0,
                    first: false,
                };
                slots
            ]
            .into_boxed_slice(),
            queues: vec![FlowQueue::IDLE; queues].into_boxed_slice(),
            free: NONE,
            new_flows: EMPTY_LIST,
            old_flows: EMPTY_LIST,
            codel,
            packets: 0,
            bytes: 0,
            counters: FqCounters::default(),
        };
        fq.clear();
        fq
    }

    /// Changes CoDel's target and interval, for the packets dequeued from now on.
    pub fn set_codel(&mut self, codel: CodelParams) {
        self.codel = codel;
    }

    /// CoDel's target and interval.
    pub fn codel(&self) -> CodelParams {
        self.codel
    }

    /// Slots in all.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Packets waiting, in all queues.
    pub fn waiting(&self) -> usize {
        self.packets
    }

    /// Bytes waiting, in all queues.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Packets waiting in `queue` (taken modulo the number of queues, as by `enqueue`).
    pub fn queue_len(&self, queue: u16) -> usize {
        self.queues[self.index(queue)].packets as usize
    }

    /// Bytes waiting in `queue` (taken modulo the number of queues).
    pub fn queue_bytes(&self, queue: u16) -> usize {
        self.queues[self.index(queue)].bytes
    }

    /// How long the longest-waiting head of a queue has waited; `None` when nothing waits.
    /// Walks the active queues: for status, not for every packet.
    pub fn oldest(&self, now: Instant) -> Option<Duration> {
        [self.new_flows, self.old_flows]
            .into_iter()
            .flat_map(|list| self.walk(list))
            .filter_map(|q| {
                let head = self.queues[q as usize].head;
                (head != NONE).then(|| self.sojourn(head, now))
            })
            .max()
    }

    /// What the queues did so far.
    pub fn counters(&self) -> &FqCounters {
        &self.counters
    }

    /// Forgets every packet and all per-queue state (counters stay).
    pub fn clear(&mut self) {
        let n = self.slots.len();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            *slot = Slot {
                enqueued: None,
                next: if i + 1 < n { (i + 1) as u32 } else { NONE },
                len: 0,
                first: false,
            };
        }
        self.free = 0;
        self.queues.fill(FlowQueue::IDLE);
        self.new_flows = EMPTY_LIST;
        self.old_flows = EMPTY_LIST;
        self.packets = 0;
        self.bytes = 0;
    }

    /// Queues a copy of `packet` on `queue` (the caller's flow slot, taken modulo the
    /// number of queues). A queue that had nothing goes onto the new-flows list.
    ///
    /// When every slot is taken, the queue with the most bytes (this packet counted in
    /// its own) pays, from its head (RFC 8290 §4.1): up to half its backlog, at most 64
    /// packets, so the search is paid once per batch. Those drops are counted in
    /// [`FqCounters::overflow_drops`] only. `Err(QueueFull)` means this packet itself was
    /// refused: its queue held nothing and the packet alone outweighed every backlog; it
    /// is counted there too. `Err(PacketTooLarge)` (longer than `slot_len`) is not counted here.
    pub fn enqueue(&mut self, now: Instant, queue: u16, packet: &[u8]) -> Result<(), DropReason> {
        self.push(now, queue, packet, false)
    }

    /// [`FlowQueues::enqueue`] at the head of its queue: a TCP retransmission fills a hole
    /// the receiver waits on, and behind the flow's backlog it would make it wait for all
    /// of it (a path's cut, or a CoDel drop, then cost a whole queue's time again). CoDel
    /// never drops it (a lost retransmission costs TCP a timeout) and goes on judging the
    /// rest of the queue as before.
    pub fn enqueue_first(
        &mut self,
        now: Instant,
        queue: u16,
        packet: &[u8],
    ) -> Result<(), DropReason> {
        self.push(now, queue, packet, true)
    }

    fn push(
        &mut self,
        now: Instant,
        queue: u16,
        packet: &[u8],
        first: bool,
    ) -> Result<(), DropReason> {
        if packet.len() > self.slot_len {
            return Err(DropReason::PacketTooLarge);
        }
        let q = self.index(queue);
        let quantum = self.quantum();
        if self.free == NONE {
            self.make_room(q, packet.len())?;
        }
        let s = self.free;
        self.free = self.slots[s as usize].next;
        self.storage[s as usize * self.slot_len..][..packet.len()].copy_from_slice(packet);
        self.slots[s as usize] = Slot {
            enqueued: Some(now),
            next: NONE,
            len: packet.len() as u16,
            first,
        };
        let fq = &mut self.queues[q];
        if fq.tail == NONE {
            fq.head = s;
            fq.tail = s;
        } else if first {
            self.slots[s as usize].next = fq.head;
            fq.head = s;
        } else {
            self.slots[fq.tail as usize].next = s;
            fq.tail = s;
        }
        fq.packets += 1;
        fq.bytes += packet.len();
        if fq.on.is_none() {
            fq.deficit = quantum;
            self.push_back(ListId::New, q as u32);
        }
        self.packets += 1;
        self.bytes += packet.len();
        self.counters.enqueued_packets += 1;
        self.counters.enqueued_bytes += packet.len() as u64;
        Ok(())
    }

    /// Copies the next packet into `out[..len]`: DRR over the new-flows list, then the
    /// old-flows list (RFC 8290 §4.2), with CoDel on the chosen queue.
    ///
    /// Queues for which `eligible(queue, bytes_waiting_in_it)` is false are skipped (say,
    /// a flow pinned to another path): they keep their place on their list and their deficit. The search
    /// visits each active queue at most three times.
    ///
    /// CoDel runs on each head packet's sojourn time. When it asks for a drop, an
    /// ECN-capable IPv4 or IPv6 packet is marked CE and sent (`ce_marked`); any other is
    /// dropped ([`FqCounters::codel_drops`], [`DropReason::QueueDelay`]) and the next one
    /// is considered.
    ///
    /// `None` when no eligible queue holds a packet, or when the packet due next is longer
    /// than `out`: it then stays queued, CoDel's verdict on it not yet taken (packets
    /// CoDel dropped before reaching it stay dropped). A buffer of `slot_len` bytes always
    /// suffices.
    pub fn dequeue(
        &mut self,
        now: Instant,
        mut eligible: impl FnMut(u16, usize) -> bool,
        out: &mut [u8],
    ) -> Option<Dequeued> {
        let quantum = self.quantum();
        let mut cursor = self.new_flows.head;
        while cursor != NONE {
            let q = cursor;
            cursor = self.queues[q as usize].next;
            if !eligible(q as u16, self.queues[q as usize].bytes) {
                continue;
            }
            if self.queues[q as usize].deficit <= 0 {
                self.queues[q as usize].deficit += quantum;
                self.move_to_old(q);
                continue;
            }
            match self.serve(q, now, out) {
                Served::Packet(d) => return Some(d),
                Served::TooSmall => return None,
                // To the old list, not off: a flow that keeps emptying its queue would
                // re-enter the new list each time and starve the old ones (RFC 8290 §4.2).
                Served::Empty => self.move_to_old(q),
            }
        }
        let mut cursor = self.old_flows.head;
        while cursor != NONE {
            let q = cursor;
            let next = self.queues[q as usize].next;
            if !eligible(q as u16, self.queues[q as usize].bytes) {
                cursor = next;
                continue;
            }
            if self.queues[q as usize].deficit <= 0 {
                // A deficit never falls to -quantum, so q is served when next reached.
                self.queues[q as usize].deficit += quantum;
                self.move_to_old(q);
                cursor = if next == NONE { q } else { next };
                continue;
            }
            match self.serve(q, now, out) {
                Served::Packet(d) => return Some(d),
                Served::TooSmall => return None,
                Served::Empty => {
                    self.unlink(q);
                    cursor = next;
                }
            }
        }
        None
    }

    fn quantum(&self) -> i32 {
        self.slot_len as i32
    }

    fn index(&self, queue: u16) -> usize {
        usize::from(queue) % self.queues.len()
    }

    fn sojourn(&self, slot: u32, now: Instant) -> Duration {
        self.slots[slot as usize]
            .enqueued
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
    }

    fn walk(&self, list: List) -> impl Iterator<Item = u32> + '_ {
        std::iter::successors((list.head != NONE).then_some(list.head), |&q| {
            let next = self.queues[q as usize].next;
            (next != NONE).then_some(next)
        })
    }

    fn list_mut(&mut self, id: ListId) -> &mut List {
        match id {
            ListId::New => &mut self.new_flows,
            ListId::Old => &mut self.old_flows,
        }
    }

    fn push_back(&mut self, id: ListId, q: u32) {
        let tail = self.list_mut(id).tail;
        let fq = &mut self.queues[q as usize];
        fq.on = Some(id);
        fq.prev = tail;
        fq.next = NONE;
        if tail == NONE {
            self.list_mut(id).head = q;
        } else {
            self.queues[tail as usize].next = q;
        }
        self.list_mut(id).tail = q;
    }

    fn unlink(&mut self, q: u32) {
        let FlowQueue { on, prev, next, .. } = self.queues[q as usize];
        let Some(id) = on else { return };
        if prev == NONE {
            self.list_mut(id).head = next;
        } else {
            self.queues[prev as usize].next = next;
        }
        if next == NONE {
            self.list_mut(id).tail = prev;
        } else {
            self.queues[next as usize].prev = prev;
        }
        let fq = &mut self.queues[q as usize];
        fq.on = None;
        fq.prev = NONE;
        fq.next = NONE;
    }

    fn move_to_old(&mut self, q: u32) {
        self.unlink(q);
        self.push_back(ListId::Old, q);
    }

    /// Takes the head slot off `q` (not yet freed: its bytes are still readable).
    fn pop_head(&mut self, q: u32) -> u32 {
        let fq = &mut self.queues[q as usize];
        let s = fq.head;
        let slot = self.slots[s as usize];
        fq.head = slot.next;
        if fq.head == NONE {
            fq.tail = NONE;
        }
        fq.packets -= 1;
        fq.bytes -= usize::from(slot.len);
        self.packets -= 1;
        self.bytes -= usize::from(slot.len);
        s
    }

    fn free_slot(&mut self, s: u32) {
        self.slots[s as usize] = Slot {
            enqueued: None,
            next: self.free,
            len: 0,
            first: false,
        };
        self.free = s;
    }

    fn drop_head(&mut self, q: u32) -> usize {
        let s = self.pop_head(q);
        let len = usize::from(self.slots[s as usize].len);
        self.free_slot(s);
        len
    }

    /// Frees slots for a packet of `len` bytes bound for `q` by dropping from the fattest
    /// queue's head; `Err` when that is `q` and it holds nothing to drop.
    fn make_room(&mut self, q: usize, len: usize) -> Result<(), DropReason> {
        // Every queue holding packets is on a list. Ties go to the queue found first, and
        // an empty `q` is looked at last: dropping a queued packet beats refusing.
        let mut fattest = NONE;
        let mut most = 0;
        for f in self.walk(self.new_flows).chain(self.walk(self.old_flows)) {
            let fq = &self.queues[f as usize];
            let bytes = fq.bytes + if f as usize == q { len } else { 0 };
            if fq.packets > 0 && (fattest == NONE || bytes > most) {
                fattest = f;
                most = bytes;
            }
        }
        if fattest == NONE || (self.queues[q].packets == 0 && len > most) {
            self.counters.overflow_drops += 1;
            return Err(DropReason::QueueFull);
        }
        let mut dropped = 0;
        for _ in 0..OVERFLOW_BATCH {
            dropped += self.drop_head(fattest);
            self.counters.overflow_drops += 1;
            if dropped >= most / 2 || self.queues[fattest as usize].packets == 0 {
                break;
            }
        }
        Ok(())
    }

    /// RFC 8289's `dodequeue` test on `q`'s head, without taking it off: has its sojourn
    /// been above target for an interval?
    fn ok_to_drop(&self, q: u32, now: Instant, c: &mut Codel) -> bool {
        let fq = &self.queues[q as usize];
        if self.slots[fq.head as usize].first {
            // Not CoDel's to judge: its state stays as the rest of the queue left it.
            return false;
        }
        let sojourn = self.sojourn(fq.head, now);
        let after = fq.bytes - usize::from(self.slots[fq.head as usize].len);
        // A queue holding at most one more packet is not a standing queue.
        if sojourn < self.codel.target || after <= self.slot_len {
            c.first_above = None;
            return false;
        }
        match c.first_above {
            None => {
                c.first_above = Some(now + self.codel.interval);
                false
            }
            Some(t) => now >= t,
        }
    }

    /// `t + interval / sqrt(count)` (RFC 8289 §5.4), in integers.
    fn control_law(&self, t: Instant, count: u32) -> Instant {
        // isqrt(count << 64) is sqrt(count) in 32.32 fixed point.
        let root = (u128::from(count.max(1)) << 64).isqrt();
        let nanos = (self.codel.interval.as_nanos() << 32) / root;
        t + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    fn mark_ce(&mut self, slot: u32) -> bool {
        let len = usize::from(self.slots[slot as usize].len);
        set_ce(&mut self.storage[slot as usize * self.slot_len..][..len])
    }

    fn codel_drop(&mut self, q: u32) {
        self.drop_head(q);
        self.counters.codel_drops += 1;
    }

    /// RFC 8289's `dequeue` on `q` (as Linux's `codel_dequeue`, with ECN), deciding on
    /// the head in place so that a packet longer than `room` is left untouched. On
    /// `Send`, the head is the packet to send.
    fn codel_dequeue(&mut self, q: u32, now: Instant, room: usize, c: &mut Codel) -> Verdict {
        let head = |fq: &Self| fq.queues[q as usize].head;
        let fits = |fq: &Self| usize::from(fq.slots[head(fq) as usize].len) <= room;
        if head(self) == NONE {
            c.first_above = None;
            c.dropping = false;
            return Verdict::Empty;
        }
        if !fits(self) {
            return Verdict::TooSmall;
        }
        let ok = self.ok_to_drop(q, now, c);
        if c.dropping {
            if !ok {
                c.dropping = false;
            }
            while c.dropping {
                let Some(due) = c.drop_next.filter(|&t| now >= t) else {
                    break;
                };
                c.count = c.count.wrapping_add(1);
                if self.mark_ce(head(self)) {
                    c.drop_next = Some(self.control_law(due, c.count));
                    return Verdict::Send { ce_marked: true };
                }
                self.codel_drop(q);
                if head(self) == NONE {
                    c.first_above = None;
                    c.dropping = false;
                    return Verdict::Empty;
                }
                if !fits(self) {
                    // As if the next head were above target too: the next call decides.
                    c.drop_next = Some(self.control_law(due, c.count));
                    return Verdict::TooSmall;
                }
                if self.ok_to_drop(q, now, c) {
                    c.drop_next = Some(self.control_law(due, c.count));
                } else {
                    c.dropping = false;
                }
            }
        } else if ok {
            let ce_marked = self.mark_ce(head(self));
            if !ce_marked {
                self.codel_drop(q);
            }
            c.dropping = true;
            // Resume near the last drop rate if dropping stopped only recently.
            let delta = c.count.wrapping_sub(c.lastcount);
            let recent = c
                .drop_next
                .is_some_and(|t| now.saturating_duration_since(t) < 16 * self.codel.interval);
            c.count = if delta > 1 && recent { delta } else { 1 };
            c.drop_next = Some(self.control_law(now, c.count));
            c.lastcount = c.count;
            if ce_marked {
                return Verdict::Send { ce_marked };
            }
            if head(self) == NONE {
                c.first_above = None;
                return Verdict::Empty;
            }
            if !fits(self) {
                return Verdict::TooSmall;
            }
            // RFC 8289's dodequeue of the next packet: it only updates first_above here.
            self.ok_to_drop(q, now, c);
        }
        Verdict::Send { ce_marked: false }
    }

    /// CoDel on `q`, then the copy of what it lets through into `out`.
    fn serve(&mut self, q: u32, now: Instant, out: &mut [u8]) -> Served {
        let mut codel = self.queues[q as usize].codel;
        let verdict = self.codel_dequeue(q, now, out.len(), &mut codel);
        self.queues[q as usize].codel = codel;
        let ce_marked = match verdict {
            Verdict::Send { ce_marked } => ce_marked,
            Verdict::Empty => return Served::Empty,
            Verdict::TooSmall => return Served::TooSmall,
        };
        if ce_marked {
            self.counters.ce_marks += 1;
        }
        let s = self.pop_head(q);
        let len = usize::from(self.slots[s as usize].len);
        out[..len].copy_from_slice(&self.storage[s as usize * self.slot_len..][..len]);
        self.free_slot(s);
        self.queues[q as usize].deficit -= len as i32;
        self.counters.dequeued_packets += 1;
        self.counters.dequeued_bytes += len as u64;
        Served::Packet(Dequeued {
            queue: q as u16,
            len,
            ce_marked,
        })
    }
}

/// Sets CE in an ECN-capable IPv4 or IPv6 packet (RFC 3168 §5, §6.1.1), fixing the IPv4
/// header checksum incrementally. True if the packet now carries CE (it may have already);
/// false for Not-ECT and for anything that is not an IP packet.
fn set_ce(packet: &mut [u8]) -> bool {
    match packet.first().map(|b| b >> 4) {
        Some(4) if packet.len() >= 20 => {
            let ecn = packet[1] & 0b11;
            if ecn == NOT_ECT {
                return false;
            }
            if ecn != CE {
                let old = u16::from_be_bytes([packet[0], packet[1]]);
                packet[1] |= CE;
                let new = u16::from_be_bytes([packet[0], packet[1]]);
                let check = u16::from_be_bytes([packet[10], packet[11]]);
                packet[10..12].copy_from_slice(&checksum_update(check, old, new).to_be_bytes());
            }
            true
        }
        Some(6) if packet.len() >= 40 => {
            // The traffic class straddles bytes 0 and 1; its ECN bits are byte 1's 0x30.
            if (packet[1] >> 4) & 0b11 == NOT_ECT {
                return false;
            }
            packet[1] |= CE << 4;
            true
        }
        _ => false,
    }
}

/// RFC 1624 eqn. 3: `HC' = ~(~HC + ~m + m')`, for one 16-bit word `m` changed to `m'`.
fn checksum_update(check: u16, old: u16, new: u16) -> u16 {
    let mut sum = u32::from(!check) + u32::from(!old) + u32::from(new);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SplitMix;
    use crate::ip::tests::ipv4;

    const MS: Duration = Duration::from_millis(1);

    fn all(_: u16, _: usize) -> bool {
        true
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The one's complement sum of an IPv4 header, checksum field included: 0xffff when
    /// the checksum is right.
    fn header_sum(p: &[u8]) -> u16 {
        let ihl = usize::from(p[0] & 0x0f) * 4;
        let mut sum: u32 = p[..ihl]
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    /// An IPv4 packet with ECN field `ecn`, a DSCP and a correct checksum.
    fn ipv4_ecn(len: usize, tag: u8, ecn: u8) -> Vec<u8> {
        let mut p = ipv4(len, [10, 0, 0, tag], [192, 0, 2, 1]);
        p[1] = 0xb8 | ecn; // EF
        p[4..6].copy_from_slice(&u16::from(tag).to_be_bytes());
        p[10..12].copy_from_slice(&[0, 0]);
        let check = !header_sum(&p);
        p[10..12].copy_from_slice(&check.to_be_bytes());
        assert_eq!(header_sum(&p), 0xffff);
        p
    }

    /// An IPv6 packet with traffic class `tc` and flow label 0xabcde.
    fn ipv6(len: usize, tc: u8) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x60 | (tc >> 4);
        p[1] = (tc << 4) | 0x0a;
        p[2] = 0xbc;
        p[3] = 0xde;
        p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        p[6] = 17;
        p[7] = 64;
        p
    }

    /// Walks every structure and checks it against the counts.
    fn check_invariants(fq: &FlowQueues) {
        let mut free = 0;
        let mut s = fq.free;
        while s != NONE {
            assert!(fq.slots[s as usize].enqueued.is_none());
            free += 1;
            s = fq.slots[s as usize].next;
        }
        let (mut packets, mut bytes) = (0, 0);
        for (i, q) in fq.queues.iter().enumerate() {
            let (mut n, mut b, mut last) = (0, 0, NONE);
            let mut s = q.head;
            while s != NONE {
                assert!(fq.slots[s as usize].enqueued.is_some());
                n += 1;
                b += usize::from(fq.slots[s as usize].len);
                last = s;
                s = fq.slots[s as usize].next;
            }
            assert_eq!((n, b, last), (q.packets, q.bytes, q.tail), "queue {i}");
            assert!(
                n == 0 || q.on.is_some(),
                "queue {i} holds packets off the lists"
            );
            assert!(q.deficit > -fq.quantum() && q.deficit <= fq.quantum());
            packets += n as usize;
            bytes += b;
        }
        assert_eq!(free + packets, fq.capacity());
        assert_eq!((packets, bytes), (fq.waiting(), fq.bytes()));
        let mut listed = 0;
        for (id, list) in [(ListId::New, fq.new_flows), (ListId::Old, fq.old_flows)] {
            let mut prev = NONE;
            for q in fq.walk(list) {
                assert_eq!(fq.queues[q as usize].on, Some(id));
                assert_eq!(fq.queues[q as usize].prev, prev);
                prev = q;
                listed += 1;
            }
            assert_eq!(list.tail, prev);
        }
        assert_eq!(listed, fq.queues.iter().filter(|q| q.on.is_some()).count());
    }

    /// Dequeues with every queue eligible; the packet's queue and bytes.
    fn next(fq: &mut FlowQueues, now: Instant) -> Option<(u16, Vec<u8>)> {
        let mut out = [0u8; 1500];
        let d = fq.dequeue(now, all, &mut out)?;
        Some((d.queue, out[..d.len].to_vec()))
    }

    #[test]
    fn fifo_within_a_queue() {
        let t = Instant::now();
        let mut fq = FlowQueues::new(16, 1500, 4, CodelParams::default());
        let packets: Vec<_> = (0..10)
            .map(|i| ipv4(40 + i * 100, [10, 0, 0, i as u8], [1; 4]))
            .collect();
        for p in &packets {
            fq.enqueue(t, 6, p).unwrap(); // queue 6 is queue 2 of 4
        }
        assert_eq!(
            (fq.queue_len(2), fq.queue_len(6), fq.waiting()),
            (10, 10, 10)
        );
        assert_eq!(
            fq.queue_bytes(2),
            packets.iter().map(Vec::len).sum::<usize>()
        );
        for p in &packets {
            assert_eq!(next(&mut fq, t), Some((2, p.clone())));
        }
        assert_eq!(next(&mut fq, t), None);
        assert_eq!(
            fq.enqueue(t, 0, &[0; 1501]),
            Err(DropReason::PacketTooLarge)
        );
        let c = fq.counters();
        assert_eq!((c.enqueued_packets, c.dequeued_packets), (10, 10));
        assert_eq!(c.enqueued_bytes, c.dequeued_bytes);
        check_invariants(&fq);
    }

    /// A retransmission goes out before the backlog of its own queue, and CoDel, which
    /// drops from a standing queue's head, neither drops it nor changes its course for
    /// the rest.
    #[test]
    fn a_packet_queued_first_leaves_first_and_is_not_dropped() {
        let t = Instant::now();
        let backlog: Vec<_> = (0..20).map(|i| ipv4(1000, [10, 0, 0, i], [1; 4])).collect();
        // A standing queue: above target since 200 ms, CoDel drops from 300 ms on.
        let standing = || {
            let mut fq = FlowQueues::new(64, 1500, 4, CodelParams::default());
            for p in &backlog {
                fq.enqueue(t, 1, p).unwrap();
            }
            assert_eq!(next(&mut fq, t + ms(200)), Some((1, backlog[0].clone())));
            fq
        };
        let later = t + ms(300);
        let mut fq = standing();
        assert_eq!(next(&mut fq, later), Some((1, backlog[2].clone())));
        assert_eq!(fq.counters().codel_drops, 1);
        let mut fq = standing();
        let resent = ipv4(600, [10, 0, 0, 99], [1; 4]);
        fq.enqueue_first(later - ms(250), 1, &resent).unwrap();
        assert_eq!(fq.queue_len(1), 20);
        assert_eq!(next(&mut fq, later), Some((1, resent)));
        assert_eq!(fq.counters().codel_drops, 0);
        // Then the backlog, with the drop it would have had.
        assert_eq!(next(&mut fq, later), Some((1, backlog[2].clone())));
        assert_eq!(fq.counters().codel_drops, 1);
        check_invariants(&fq);
        // Into an empty queue, it is just the head.
        let mut fq = FlowQueues::new(4, 1500, 4, CodelParams::default());
        fq.enqueue_first(t, 2, &backlog[1]).unwrap();
        fq.enqueue(t, 2, &backlog[2]).unwrap();
        assert_eq!(next(&mut fq, t), Some((2, backlog[1].clone())));
        assert_eq!(next(&mut fq, t), Some((2, backlog[2].clone())));
        check_invariants(&fq);
    }

    #[test]
    fn drr_shares_bytes_between_bulk_queues() {
        let t = Instant::now();
        let mut fq = FlowQueues::new(1200, 1500, 8, CodelParams::default());
        for _ in 0..200 {
            fq.enqueue(t, 1, &[0; 1500]).unwrap();
        }
        for _ in 0..1000 {
            fq.enqueue(t, 2, &[0; 300]).unwrap();
        }
        let mut sent = [0usize; 8];
        while fq.queue_len(1) > 0 && fq.queue_len(2) > 0 {
            let (q, p) = next(&mut fq, t).unwrap();
            sent[usize::from(q)] += p.len();
            // Within one quantum of each other at every step.
            assert!(sent[1].abs_diff(sent[2]) <= 1500, "{sent:?}");
        }
        assert_eq!(sent[1], 200 * 1500);
        assert!(sent[2] >= 200 * 1500 - 1500);
        check_invariants(&fq);
    }

    #[test]
    fn sparse_flow_goes_before_bulk() {
        let t = Instant::now();
        let mut fq = FlowQueues::new(600, 1500, 64, CodelParams::default());
        let bulk = ipv4(1500, [10, 0, 0, 1], [192, 0, 2, 1]);
        let sparse = ipv4(100, [10, 0, 0, 2], [192, 0, 2, 2]);
        for _ in 0..500 {
            fq.enqueue(t, 7, &bulk).unwrap();
        }
        for step in 0..50u64 {
            let now = t + ms(20 * step);
            // The path takes five packets per 20 ms, the bulk sender keeps its 500 queued.
            while fq.queue_len(7) < 500 {
                fq.enqueue(now, 7, &bulk).unwrap();
            }
            fq.enqueue(now, 9, &sparse).unwrap();
            let served: Vec<u16> = (0..5).map(|_| next(&mut fq, now).unwrap().0).collect();
            let at = served.iter().position(|&q| q == 9);
            assert!(at.is_some_and(|i| i <= 1), "step {step}: {served:?}");
        }
        check_invariants(&fq);
    }

    #[test]
    fn skipped_queue_keeps_place_and_deficit() {
        let t = Instant::now();
        let mut fq = FlowQueues::new(64, 1000, 8, CodelParams::default());
        let (a, b, c) = (0u16, 1u16, 2u16);
        for q in [a, b, c] {
            for _ in 0..10 {
                fq.enqueue(t, q, &[q as u8; 400]).unwrap();
            }
        }
        let mut out = [0u8; 1000];
        let mut take = |fq: &mut FlowQueues, b_ok: bool| {
            fq.dequeue(t, |q, _| b_ok || q != b, &mut out)
                .map(|d| d.queue)
        };
        assert_eq!(take(&mut fq, true), Some(a));
        // b is pinned elsewhere: a and c go on as DRR has them.
        let seq: Vec<_> = (0..6).map(|_| take(&mut fq, false).unwrap()).collect();
        assert_eq!(seq, [a, a, c, c, c, a]);
        assert_eq!(fq.queues[1].deficit, 1000);
        assert_eq!(
            fq.new_flows.head, 1,
            "b is still first on the new-flows list"
        );
        // Eligible again: b has its new flow's full quantum, 400 + 400 + 400 bytes.
        let seq: Vec<_> = (0..4).map(|_| take(&mut fq, true).unwrap()).collect();
        assert_eq!(seq, [b, b, b, a]);
        // Only b holds packets, and is not eligible: nothing, and nothing moves.
        while fq.queue_len(a) + fq.queue_len(c) > 0 {
            assert_ne!(take(&mut fq, false), Some(b));
        }
        let before = (fq.queues[1].deficit, fq.queues[1].on, fq.queue_len(b));
        assert_eq!(take(&mut fq, false), None);
        assert_eq!(
            before,
            (fq.queues[1].deficit, fq.queues[1].on, fq.queue_len(b))
        );
        check_invariants(&fq);
        assert_eq!(take(&mut fq, true), Some(b));
    }

    #[test]
    fn overflow_drops_from_the_fattest_head() {
        let t = Instant::now();
        let mut fq = FlowQueues::new(10, 100, 8, CodelParams::default());
        for i in 0..6 {
            fq.enqueue(t, 0, &[i; 100]).unwrap();
        }
        for i in 0..3 {
            fq.enqueue(t, 1, &[10 + i; 100]).unwrap();
        }
        fq.enqueue(t, 2, &[20; 100]).unwrap();
        // Full: queue 0 (600 bytes) pays half its backlog, from its head.
        fq.enqueue(t, 2, &[21; 100]).unwrap();
        assert_eq!(fq.counters().overflow_drops, 3);
        assert_eq!(
            (fq.queue_len(0), fq.queue_len(1), fq.queue_len(2)),
            (3, 3, 2)
        );
        assert_eq!(fq.waiting(), 8);
        check_invariants(&fq);
        let mut firsts = Vec::new();
        while let Some((q, p)) = next(&mut fq, t) {
            if q == 0 {
                firsts.push(p[0]);
            }
        }
        assert_eq!(firsts, [3, 4, 5]);

        // Its own queue the fattest, with packets: its head goes, the packet is queued.
        let mut fq = FlowQueues::new(4, 100, 8, CodelParams::default());
        for i in 0..3 {
            fq.enqueue(t, 0, &[i; 100]).unwrap();
        }
        fq.enqueue(t, 1, &[9; 100]).unwrap();
        fq.enqueue(t, 0, &[3; 100]).unwrap();
        assert_eq!(fq.counters().overflow_drops, 2);
        let got: Vec<_> = std::iter::from_fn(|| next(&mut fq, t)).collect();
        assert_eq!(
            got,
            [(0, vec![2; 100]), (1, vec![9; 100]), (0, vec![3; 100])]
        );

        // An empty queue whose one packet outweighs every other queue: refused.
        let mut fq = FlowQueues::new(4, 200, 8, CodelParams::default());
        for q in 0..4 {
            fq.enqueue(t, q, &[q as u8; 50]).unwrap();
        }
        assert_eq!(fq.enqueue(t, 5, &[5; 200]), Err(DropReason::QueueFull));
        assert_eq!((fq.counters().overflow_drops, fq.waiting()), (1, 4));
        // A small one takes the head of the first fattest (queue 0).
        fq.enqueue(t, 5, &[5; 10]).unwrap();
        assert_eq!((fq.queue_len(0), fq.queue_len(5)), (0, 1));
        assert_eq!(fq.counters().overflow_drops, 2);
        check_invariants(&fq);
    }

    /// Packets dequeued, with the tick they left at.
    type Sent = Vec<(u64, Dequeued, Vec<u8>)>;

    /// One arrival and one departure per millisecond on queue 0, after `standing` ms of
    /// arrivals only; returns the ticks (ms from start) at which CoDel dropped or marked,
    /// and each dequeued packet with its tick.
    fn drive(
        fq: &mut FlowQueues,
        t: Instant,
        ticks: std::ops::Range<u64>,
        standing: u64,
        packet: &dyn Fn(u64) -> Vec<u8>,
    ) -> (Vec<u64>, Sent) {
        let mut acts = Vec::new();
        let mut sent = Vec::new();
        let mut out = [0u8; 1500];
        for tick in ticks {
            let now = t + ms(tick);
            fq.enqueue(now, 0, &packet(tick)).unwrap();
            if tick < standing {
                continue;
            }
            let before = fq.counters().codel_drops + fq.counters().ce_marks;
            if let Some(d) = fq.dequeue(now, all, &mut out) {
                sent.push((tick, d, out[..d.len].to_vec()));
            }
            let after = fq.counters().codel_drops + fq.counters().ce_marks;
            acts.extend(std::iter::repeat_n(tick, (after - before) as usize));
        }
        (acts, sent)
    }

    /// Drop or mark ticks follow the control law: the first after an interval above
    /// target, then each `interval / sqrt(count)` after the previous one was due.
    fn assert_control_law(acts: &[u64], first: u64, n: usize) {
        assert!(acts.len() >= n, "{acts:?}");
        assert_eq!(acts[0], first);
        let mut due = first as f64;
        for (k, &tick) in acts.iter().enumerate().take(n).skip(1) {
            due += 100.0 / (k as f64).sqrt();
            let late = tick as f64 - due;
            assert!(
                (-1e-3..1.0 + 1e-3).contains(&late),
                "drop {k} at {tick}, due {due}: {acts:?}"
            );
        }
    }

    #[test]
    fn codel_drops_at_the_control_law_rate_and_stops_below_target() {
        let t = Instant::now();
        let mut fq = FlowQueues::new(2000, 100, 4, CodelParams::default());
        let packet = |_| ipv4(100, [10, 0, 0, 1], [192, 0, 2, 1]);
        // 40 ms standing: above target from the first departure (tick 40), so dropping
        // starts one interval later.
        let (drops, sent) = drive(&mut fq, t, 0..1000, 40, &packet);
        assert_eq!(fq.counters().ce_marks, 0);
        assert_eq!(fq.counters().codel_drops as usize, drops.len());
        assert_control_law(&drops, 140, drops.len());
        assert!(drops.len() >= 15, "{drops:?}");
        assert!(sent.iter().all(|(_, d, _)| !d.ce_marked));
        assert!(fq.queues[0].codel.dropping);
        check_invariants(&fq);

        // The path catches up: three packets left, 3 ms of sojourn, below target.
        let now = t + ms(1000);
        while fq.queue_len(0) > 3 {
            next(&mut fq, now).unwrap();
        }
        let drops_before = fq.counters().codel_drops;
        let (drops, sent) = drive(&mut fq, t, 1001..3000, 0, &packet);
        assert_eq!(drops, []);
        assert_eq!(sent.len(), 1999);
        assert_eq!(fq.counters().codel_drops, drops_before);
        assert!(!fq.queues[0].codel.dropping);
        assert!(fq.oldest(t + ms(2999)) < Some(CodelParams::default().target));
        check_invariants(&fq);
    }

    #[test]
    fn codel_marks_ect_packets_instead() {
        let t = Instant::now();
        let mut fq = FlowQueues::new(2000, 100, 4, CodelParams::default());
        let ecn = [0b10, 0b01]; // ECT(0), ECT(1)
        let packet = |tick: u64| ipv4_ecn(100, tick as u8, ecn[tick as usize % 2]);
        let (marks, sent) = drive(&mut fq, t, 0..1000, 40, &packet);
        assert_eq!(fq.counters().codel_drops, 0);
        assert_eq!(fq.counters().ce_marks as usize, marks.len());
        // Marks do not shorten the queue: the schedule is the same.
        assert_control_law(&marks, 140, 15);
        let marked: Vec<_> = sent.iter().filter(|(_, d, _)| d.ce_marked).collect();
        assert_eq!(marked.len(), marks.len());
        for (tick, d, p) in &sent {
            assert_eq!(
                header_sum(p),
                0xffff,
                "checksum of the packet sent at {tick}"
            );
            let mut original = packet(u64::from(p[5]));
            assert_eq!(p[1] & 0b11 == CE, d.ce_marked);
            if d.ce_marked {
                // Only the ECN field and the checksum changed; the DSCP is kept.
                assert_eq!(p[1], original[1] | CE);
                original[1] = p[1];
                original[10..12].copy_from_slice(&p[10..12]);
            }
            assert_eq!(p, &original);
        }

        // IPv6: the same, in the traffic class.
        let mut fq = FlowQueues::new(2000, 100, 4, CodelParams::default());
        let packet = |_| ipv6(100, 0xb8 | 0b10);
        let (marks, sent) = drive(&mut fq, t, 0..400, 40, &packet);
        assert_control_law(&marks, 140, 4);
        for (_, d, p) in &sent {
            let tc = (p[0] << 4) | (p[1] >> 4);
            assert_eq!(tc, if d.ce_marked { 0xbb } else { 0xba });
            assert_eq!((p[0] >> 4, p[1] & 0x0f, p[2], p[3]), (6, 0x0a, 0xbc, 0xde));
        }
        assert_eq!(
            sent.iter().filter(|(_, d, _)| d.ce_marked).count(),
            marks.len()
        );
    }

    #[test]
    fn set_ce_only_on_ecn_capable_ip() {
        for ecn in 0..4u8 {
            let mut p = ipv4_ecn(60, 1, ecn);
            assert_eq!(set_ce(&mut p), ecn != NOT_ECT);
            assert_eq!(p[1] & 0b11, if ecn == NOT_ECT { 0 } else { CE });
            assert_eq!(header_sum(&p), 0xffff);
            let mut p = ipv6(48, ecn);
            assert_eq!(set_ce(&mut p), ecn != NOT_ECT);
        }
        assert!(!set_ce(&mut []));
        assert!(!set_ce(&mut [0x45, 0x02, 0, 19])); // truncated header
        assert!(!set_ce(&mut [0x00; 60]));
        // The incremental update agrees with a full recomputation, over many headers.
        let mut rng = SplitMix(7);
        for _ in 0..10_000 {
            let mut p = ipv4(20, [0; 4], [0; 4]);
            for b in &mut p[1..] {
                *b = rng.next_u32() as u8;
            }
            p[1] = (p[1] & !0b11) | 0b10;
            p[10..12].copy_from_slice(&[0, 0]);
            let check = !header_sum(&p);
            p[10..12].copy_from_slice(&check.to_be_bytes());
            assert!(set_ce(&mut p));
            assert_eq!(header_sum(&p), 0xffff, "{p:02x?}");
        }
    }

    #[test]
    fn out_too_small_leaves_the_packet_queued() {
        let t = Instant::now();
        let mut fq = FlowQueues::new(8, 1500, 4, CodelParams::default());
        fq.enqueue(t, 1, &[1; 100]).unwrap();
        fq.enqueue(t, 1, &[2; 50]).unwrap();
        let mut small = [0u8; 99];
        assert_eq!(fq.dequeue(t, all, &mut small), None);
        assert_eq!(
            (
                fq.waiting(),
                fq.queue_len(1),
                fq.counters().dequeued_packets
            ),
            (2, 2, 0)
        );
        assert_eq!(fq.queues[1].deficit, 1500);
        let mut out = [0u8; 100];
        let d = fq.dequeue(t, all, &mut out).unwrap();
        assert_eq!((d.queue, d.len, out), (1, 100, [1; 100]));
        assert_eq!(fq.dequeue(t, all, &mut small).map(|d| d.len), Some(50));
        check_invariants(&fq);
    }

    #[test]
    fn oldest_and_clear() {
        let t = Instant::now();
        let mut fq = FlowQueues::new(8, 100, 4, CodelParams::default());
        assert_eq!(fq.oldest(t), None);
        fq.enqueue(t, 0, &[0; 10]).unwrap();
        fq.enqueue(t + ms(5), 1, &[0; 10]).unwrap();
        fq.enqueue(t + ms(6), 0, &[0; 10]).unwrap();
        assert_eq!(fq.oldest(t + ms(10)), Some(ms(10)));
        next(&mut fq, t + ms(10)).unwrap();
        assert_eq!(fq.oldest(t + ms(10)), Some(ms(5)));
        fq.clear();
        assert_eq!((fq.waiting(), fq.bytes(), fq.oldest(t)), (0, 0, None));
        assert_eq!(next(&mut fq, t), None);
        check_invariants(&fq);
        assert_eq!(fq.counters().enqueued_packets, 3);
    }

    #[test]
    fn slots_are_reused_over_100_000_packets_without_leaks() {
        let t = Instant::now();
        let mut fq = FlowQueues::new(64, 256, 8, CodelParams::default());
        let mut rng = SplitMix(42);
        let mut now = t;
        let mut seq = 0u64;
        let mut refused = 0u64;
        let mut last_seen = [None::<u64>; 8];
        let mut out = [0u8; 256];
        let mut round = 0u64;
        while seq < 100_000 {
            round += 1;
            now += MS * (rng.next_u32() % 3);
            for _ in 0..rng.next_u32() % 4 {
                // Not an IP packet: CoDel drops, never marks, so the bytes stay as sent.
                let len = 10 + (rng.next_u32() % 247) as usize;
                let mut p = [0u8; 256];
                let queue = (rng.next_u32() % 12) as u16;
                p[1] = (queue % 8) as u8;
                p[2..10].copy_from_slice(&seq.to_be_bytes());
                seq += 1;
                match fq.enqueue(now, queue, &p[..len]) {
                    Ok(()) => {}
                    Err(DropReason::QueueFull) => refused += 1,
                    Err(e) => panic!("{e}"),
                }
            }
            let pinned = (rng.next_u32() % 8) as u16;
            for _ in 0..rng.next_u32() % 4 {
                let Some(d) = fq.dequeue(now, |q, _| q != pinned, &mut out) else {
                    break;
                };
                assert_ne!(d.queue, pinned);
                assert_eq!(out[1], d.queue as u8);
                let s = u64::from_be_bytes(out[2..10].try_into().unwrap());
                let q = usize::from(d.queue);
                assert!(last_seen[q].is_none_or(|l| l < s), "FIFO within queue {q}");
                last_seen[q] = Some(s);
            }
            if round % 997 == 0 {
                check_invariants(&fq);
            }
        }
        while fq.dequeue(now, all, &mut out).is_some() {}
        check_invariants(&fq);
        assert_eq!((fq.waiting(), fq.bytes()), (0, 0));
        assert_eq!((fq.new_flows.head, fq.old_flows.head), (NONE, NONE));
        let c = *fq.counters();
        assert!(c.overflow_drops > refused && c.codel_drops > 0, "{c:?}");
        assert_eq!(
            c.enqueued_packets,
            c.dequeued_packets + c.codel_drops + c.overflow_drops - refused
        );
        assert_eq!(c.enqueued_packets + refused, seq);
    }
}
