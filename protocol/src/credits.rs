//! The co-op's credit rules: what carrying earns, what borrowing costs, and who gets a
//! relay's spare capacity when its consumers want more than it has.
//!
//! Pure functions over integers: amounts are [`MilliCredits`] (`i64`), never floats, so a
//! ledger summed in any order comes out the same. The ledger itself (per member, per hour
//! row) is elsewhere; these are the rules it applies.
//!
//! # Rounding
//!
//! A rate is per GB (10^9 bytes), so most byte counts come to a fraction of a
//! milli-credit. [`Tariff::earned`] rounds down and [`Tariff::spent`] rounds up: splitting
//! the same bytes into many calls never earns more, nor costs less, than one call (floor
//! is superadditive, ceiling subadditive). The ledger is exact on top of that by charging
//! each hour row on its total: a row's credit is `earned(row's bytes)`, and bytes booked as
//! they come add [`Tariff::earned_on_row`] (`earned(total after) - earned(total before)`),
//! which sums to the same whatever the pieces were. One row has one local hour, so one
//! rate.
//!
//! # Contention
//!
//! The co-op picks how a relay's spare capacity is divided ([`Contention`]):
//! [`share_by_balance`] (weighted max-min fair shares, the default) or [`auction`] (a
//! sealed-bid second-price auction per relay per interval). Either way a member below the
//! co-op's floor ([`may_borrow`]) gets nothing from others' lines.

/// An amount of credit, in thousandths of a credit.
pub type MilliCredits = i64;

/// Bytes in the GB that rates are per: 10^9, as line rates and metered plans count.
pub const BYTES_PER_GB: u64 = 1_000_000_000;

/// The weight a member with a balance of at most this has in [`share_by_balance`], unless
/// the co-op chose otherwise: one credit. A member who has not earned yet still gets a
/// share of a contended line, but a small one beside members who have.
pub const DEFAULT_MIN_WEIGHT: MilliCredits = 1_000;

/// What a GB earns its carrier and costs its user, in milli-credits. A negative rate
/// counts as zero: carrying never costs and borrowing never pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rates {
    /// Earned per GB carried for others over one's own line.
    pub earn_per_gb: MilliCredits,
    /// Spent per GB of one's own traffic carried over others' lines.
    pub spend_per_gb: MilliCredits,
}

/// The local hours of the day at peak rates: from `start` (included) to `end` (excluded),
/// wrapping past midnight when `end` is before `start`. `18..23` is 18:00-22:59, `22..6`
/// is 22:00-05:59; `start == end` is no hour at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeakHours {
    start: u8,
    end: u8,
}

impl PeakHours {
    /// The hours from `start` to `end` (both 0..=23); `None` for an hour past 23.
    pub fn new(start: u8, end: u8) -> Option<PeakHours> {
        (start < 24 && end < 24).then_some(PeakHours { start, end })
    }

    /// The first peak hour.
    pub fn start(&self) -> u8 {
        self.start
    }

    /// The first hour after the peak.
    pub fn end(&self) -> u8 {
        self.end
    }

    /// Whether `local_hour` (taken modulo 24) is a peak hour.
    pub fn contains(&self, local_hour: u8) -> bool {
        let h = local_hour % 24;
        if self.start <= self.end {
            (self.start..self.end).contains(&h)
        } else {
            h >= self.start || h < self.end
        }
    }
}

/// Peak hours and their rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peak {
    /// When the peak is, in the co-op's local time.
    pub hours: PeakHours,
    /// The rates then.
    pub rates: Rates,
}

/// The co-op's rates: one set off-peak, and optionally another at peak hours (when lines
/// are scarce, carrying is worth more).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tariff {
    /// The rates outside the peak (all day without one).
    pub off_peak: Rates,
    /// The peak, if the co-op has one.
    pub peak: Option<Peak>,
}

impl Tariff {
    /// The same rates all day.
    pub fn flat(rates: Rates) -> Tariff {
        Tariff {
            off_peak: rates,
            peak: None,
        }
    }

    /// The rates at `local_hour` (taken modulo 24).
    pub fn rates_at(&self, local_hour: u8) -> Rates {
        match self.peak {
            Some(p) if p.hours.contains(local_hour) => p.rates,
            _ => self.off_peak,
        }
    }

    /// What carrying `bytes` for others earns at `local_hour`, rounded down.
    pub fn earned(&self, bytes: u64, local_hour: u8) -> MilliCredits {
        per_gb(bytes, self.rates_at(local_hour).earn_per_gb, Round::Down)
    }

    /// What having `bytes` carried over others' lines costs at `local_hour`, rounded up.
    pub fn spent(&self, bytes: u64, local_hour: u8) -> MilliCredits {
        per_gb(bytes, self.rates_at(local_hour).spend_per_gb, Round::Up)
    }

    /// What `bytes` more carried earn on an hour row already holding `row_bytes`: the
    /// row's credit stays exactly [`Tariff::earned`] of its total, however its bytes come.
    pub fn earned_on_row(&self, row_bytes: u64, bytes: u64, local_hour: u8) -> MilliCredits {
        let after = row_bytes.saturating_add(bytes);
        self.earned(after, local_hour) - self.earned(row_bytes, local_hour)
    }

    /// What `bytes` more borrowed cost on an hour row already holding `row_bytes`: the
    /// row's charge stays exactly [`Tariff::spent`] of its total.
    pub fn spent_on_row(&self, row_bytes: u64, bytes: u64, local_hour: u8) -> MilliCredits {
        let after = row_bytes.saturating_add(bytes);
        self.spent(after, local_hour) - self.spent(row_bytes, local_hour)
    }
}

#[derive(Clone, Copy)]
enum Round {
    Down,
    Up,
}

/// `bytes × rate / 10^9` in milli-credits, exact in i128 (u64 × i64 fits), saturated.
fn per_gb(bytes: u64, rate_per_gb: MilliCredits, round: Round) -> MilliCredits {
    let product = i128::from(bytes) * i128::from(rate_per_gb.max(0));
    let gb = i128::from(BYTES_PER_GB);
    let q = match round {
        Round::Down => product / gb,
        Round::Up => (product + gb - 1) / gb,
    };
    MilliCredits::try_from(q).unwrap_or(MilliCredits::MAX)
}

/// Whether a member with `balance` may use others' lines under the co-op's `floor`
/// (none by default): at or above it, yes; below it, only its own line.
pub fn may_borrow(balance: MilliCredits, floor: Option<MilliCredits>) -> bool {
    floor.is_none_or(|f| balance >= f)
}

/// The highest bid a member may make per GB (a million credits): bytes times price stay
/// far within 64 bits.
pub const MAX_BID_PER_GB: MilliCredits = 1_000_000_000;

/// A member that wants some of a relay's spare capacity this interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Consumer {
    /// Its member id.
    pub member: u32,
    /// How much it wants this interval, in bytes (or any unit the capacity is in, for
    /// [`share_by_balance`]; bytes for [`auction`], whose prices are per GB).
    pub demand: u64,
    /// Its credit balance now.
    pub balance: MilliCredits,
    /// The most its policy pays per GB ([`auction`] only): its bid, set automatically.
    pub ceiling_per_gb: MilliCredits,
}

/// A member's weight in [`share_by_balance`]: its balance, but never below `min_weight`
/// (itself at least 1), so that a member with nothing earned yet, or in debt, still gets
/// a share of a contended line instead of none.
pub fn balance_weight(balance: MilliCredits, min_weight: MilliCredits) -> u64 {
    balance.max(min_weight).max(1) as u64
}

/// Divides `capacity` among `consumers` in max-min fair shares weighted by
/// [`balance_weight`]: each gets `capacity × weight / total weight`, what a consumer
/// leaves unused (its demand is smaller) goes to the others by weight again, until all
/// are served or the capacity is gone. A consumer that may not borrow under `floor`
/// ([`may_borrow`]) gets nothing. Returns the grants in `consumers`' order; they never
/// exceed a demand, sum to at most `capacity`, and to all of it when demand exceeds it.
/// Integer shares: the units left by rounding go one each to the largest remainders
/// (ties to the lower member id), so the result is deterministic.
pub fn share_by_balance(
    capacity: u64,
    consumers: &[Consumer],
    min_weight: MilliCredits,
    floor: Option<MilliCredits>,
) -> Vec<u64> {
    let mut grants = vec![0u64; consumers.len()];
    let mut weights: Vec<u128> = consumers
        .iter()
        .map(|c| u128::from(balance_weight(c.balance, min_weight)))
        .collect();
    // Only ratios matter: scale weights down until their sum fits in 64 bits, so that
    // demand × total weight cannot overflow a u128.
    while weights.iter().sum::<u128>() > u128::from(u64::MAX) {
        for w in &mut weights {
            *w = (*w >> 1).max(1);
        }
    }
    let mut active: Vec<usize> = (0..consumers.len())
        .filter(|&i| consumers[i].demand > 0 && may_borrow(consumers[i].balance, floor))
        .collect();
    let mut left = u128::from(capacity);
    while !active.is_empty() && left > 0 {
        let total: u128 = active.iter().map(|&i| weights[i]).sum();
        // Whoever wants no more than its share of what is left is served in full; what it
        // leaves goes round again.
        let (served, wanting): (Vec<usize>, Vec<usize>) = active
            .iter()
            .partition(|&&i| u128::from(consumers[i].demand) * total <= left * weights[i]);
        if !served.is_empty() {
            for &i in &served {
                grants[i] = consumers[i].demand;
                left -= u128::from(consumers[i].demand);
            }
            active = wanting;
            continue;
        }
        // Everyone wants more than its share: split what is left by weight.
        let mut given = 0u128;
        let mut remainders = Vec::with_capacity(active.len());
        for &i in &active {
            let share = left * weights[i] / total;
            grants[i] = share as u64;
            given += share;
            remainders.push((left * weights[i] % total, i));
        }
        // Fewer units than consumers are left; each wanted more than its share, so one
        // more unit never exceeds a demand.
        remainders.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then(consumers[a.1].member.cmp(&consumers[b.1].member))
        });
        for &(_, i) in remainders.iter().take((left - given) as usize) {
            grants[i] += 1;
        }
        break;
    }
    grants
}

/// What one consumer got from a relay this interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Award {
    /// Its member id.
    pub member: u32,
    /// Bytes it may send through the relay this interval.
    pub bytes: u64,
    /// What the auction charges for them, in place of the tariff's spend rate; `None`
    /// when shared by balance (the tariff charges them as carried).
    pub payment: Option<MilliCredits>,
}

impl Award {
    /// The price it paid per GB on average, rounded down; `None` without a payment or
    /// bytes.
    pub fn price_per_gb(&self) -> Option<MilliCredits> {
        let payment = self.payment?;
        (self.bytes > 0).then(|| {
            let p = i128::from(payment) * i128::from(BYTES_PER_GB) / i128::from(self.bytes);
            MilliCredits::try_from(p).unwrap_or(MilliCredits::MAX)
        })
    }
}

/// The outcome of one relay's auction for one interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auction {
    /// One per consumer, in the consumers' order (nothing, for those who got nothing).
    pub awards: Vec<Award>,
    /// The highest bid not fully served, or the reserve when everyone fits: the most any
    /// winner pays per GB.
    pub clearing_price_per_gb: MilliCredits,
}

/// A sealed-bid second-price auction of a relay's `capacity` bytes for one interval.
///
/// Each consumer bids its policy's ceiling per GB for its whole demand; bids below
/// `reserve_per_gb` (the co-op's, 0 by default), without demand, or from members below
/// `floor` ([`may_borrow`]) are out. The capacity is divisible: bids are served from the
/// highest down (ties to the lower member id) until it runs out, the last one served
/// perhaps in part.
///
/// Each winner pays what its bytes are worth to the bids they displaced (the Vickrey-
/// Clarke-Groves price): for each of its bytes, the bid of whoever would have carried it
/// without the winner, or the reserve if nobody would. A single winner with a unit demand
/// pays exactly the second-highest bid (or the reserve); when everyone fits, everyone
/// pays the reserve. Every displaced bid is at most the clearing price and at most the
/// winner's own, so no winner pays more than either, and most of the time all pay the
/// clearing price. Why not charge every winner the clearing price outright: with a
/// divisible capacity, a winner could then bid just above the next-lower bid, become the
/// last one served in part, and set the price for itself; with this price, bidding one's
/// true ceiling is always best (tested), so the automatic bid is the honest one.
/// Payments round down, never above the bid.
pub fn auction(
    capacity: u64,
    consumers: &[Consumer],
    reserve_per_gb: MilliCredits,
    floor: Option<MilliCredits>,
) -> Auction {
    let reserve = reserve_per_gb.max(0);
    let mut order: Vec<usize> = (0..consumers.len())
        .filter(|&i| {
            let c = &consumers[i];
            c.demand > 0 && c.ceiling_per_gb >= reserve && may_borrow(c.balance, floor)
        })
        .collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&consumers[a], &consumers[b]);
        b.ceiling_per_gb
            .cmp(&a.ceiling_per_gb)
            .then(a.member.cmp(&b.member))
    });

    let mut bytes = vec![0u64; consumers.len()];
    let mut left = capacity;
    for &i in &order {
        let take = consumers[i].demand.min(left);
        bytes[i] = take;
        left -= take;
    }
    let clearing_price_per_gb = order
        .iter()
        .find(|&&i| bytes[i] < consumers[i].demand)
        .map_or(reserve, |&i| consumers[i].ceiling_per_gb);

    let awards = consumers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let payment = match order.iter().position(|&j| j == i) {
                Some(at) if bytes[i] > 0 => {
                    // Without this winner its bytes would go down the list, to the unmet
                    // demand of the bids after it, then to nobody (the reserve).
                    let mut displaced = u128::from(bytes[i]);
                    let mut worth = 0i128;
                    for &j in &order[at + 1..] {
                        let unmet = u128::from(consumers[j].demand - bytes[j]);
                        let moved = unmet.min(displaced);
                        worth += moved as i128 * i128::from(consumers[j].ceiling_per_gb);
                        displaced -= moved;
                        if displaced == 0 {
                            break;
                        }
                    }
                    worth += displaced as i128 * i128::from(reserve);
                    let p = worth / i128::from(BYTES_PER_GB);
                    MilliCredits::try_from(p).unwrap_or(MilliCredits::MAX)
                }
                _ => 0,
            };
            Award {
                member: c.member,
                bytes: bytes[i],
                payment: Some(payment),
            }
        })
        .collect();
    Auction {
        awards,
        clearing_price_per_gb,
    }
}

/// How the co-op divides a relay's spare capacity among its consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contention {
    /// Weighted max-min fair shares by balance ([`share_by_balance`]); the tariff charges
    /// what is carried.
    ByBalance {
        /// The weight of a member with this balance or less ([`balance_weight`]).
        min_weight: MilliCredits,
    },
    /// A sealed-bid second-price auction per relay per interval ([`auction`]); its
    /// payments replace the tariff's spend rate.
    Auction {
        /// No bytes go for less per GB.
        reserve_per_gb: MilliCredits,
    },
}

impl Default for Contention {
    fn default() -> Contention {
        Contention::ByBalance {
            min_weight: DEFAULT_MIN_WEIGHT,
        }
    }
}

impl Contention {
    /// Divides `capacity` among `consumers` the co-op's way; members below `floor` get
    /// nothing. One award per consumer, in their order.
    pub fn divide(
        &self,
        capacity: u64,
        consumers: &[Consumer],
        floor: Option<MilliCredits>,
    ) -> Vec<Award> {
        match *self {
            Contention::ByBalance { min_weight } => {
                share_by_balance(capacity, consumers, min_weight, floor)
                    .into_iter()
                    .zip(consumers)
                    .map(|(bytes, c)| Award {
                        member: c.member,
                        bytes,
                        payment: None,
                    })
                    .collect()
            }
            Contention::Auction { reserve_per_gb } => {
                auction(capacity, consumers, reserve_per_gb, floor).awards
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SplitMix;

    const GB: u64 = BYTES_PER_GB;

    fn consumer(member: u32, demand: u64, balance: MilliCredits) -> Consumer {
        Consumer {
            member,
            demand,
            balance,
            ceiling_per_gb: 0,
        }
    }

    fn bidder(member: u32, demand: u64, ceiling_per_gb: MilliCredits) -> Consumer {
        Consumer {
            member,
            demand,
            balance: 0,
            ceiling_per_gb,
        }
    }

    fn tariff() -> Tariff {
        Tariff {
            off_peak: Rates {
                earn_per_gb: 1_000,
                spend_per_gb: 1_200,
            },
            peak: Some(Peak {
                hours: PeakHours::new(18, 23).unwrap(),
                rates: Rates {
                    earn_per_gb: 3_000,
                    spend_per_gb: 3_333,
                },
            }),
        }
    }

    #[test]
    fn peak_hours_and_rates() {
        let t = tariff();
        assert_eq!(t.earned(GB, 17), 1_000);
        assert_eq!(t.earned(GB, 18), 3_000);
        assert_eq!(t.earned(GB, 22), 3_000);
        assert_eq!(t.earned(GB, 23), 1_000);
        assert_eq!(t.spent(2 * GB, 20), 6_666);
        let night = PeakHours::new(22, 6).unwrap();
        let hours: Vec<u8> = (0..24).filter(|&h| night.contains(h)).collect();
        assert_eq!(hours, [0, 1, 2, 3, 4, 5, 22, 23]);
        assert!(!PeakHours::new(5, 5).unwrap().contains(5));
        assert_eq!(PeakHours::new(18, 24), None);
        assert!(night.contains(22 + 24));
        assert_eq!(Tariff::default().earned(GB, 3), 0);
    }

    #[test]
    fn rounding_never_favours_splitting() {
        let t = tariff();
        // 1 byte earns 0.001 milli-credit: rounded down to nothing, up to one.
        assert_eq!(t.earned(1, 3), 0);
        assert_eq!(t.spent(1, 3), 1);
        assert_eq!(t.spent(0, 3), 0);
        let mut rng = SplitMix(7);
        for hour in [3, 19] {
            let mut row = 0u64;
            let (mut earned_split, mut spent_split) = (0, 0);
            let (mut earned_row, mut spent_row) = (0, 0);
            for _ in 0..1000 {
                let piece = rng.next_u64() % 3_000_000;
                earned_split += t.earned(piece, hour);
                spent_split += t.spent(piece, hour);
                earned_row += t.earned_on_row(row, piece, hour);
                spent_row += t.spent_on_row(row, piece, hour);
                row += piece;
            }
            assert!(earned_split <= t.earned(row, hour));
            assert!(spent_split >= t.spent(row, hour));
            // Booked per hour row, the pieces add up to exactly the whole.
            assert_eq!(earned_row, t.earned(row, hour));
            assert_eq!(spent_row, t.spent(row, hour));
        }
    }

    #[test]
    fn extreme_amounts_saturate_and_negative_rates_count_as_zero() {
        let t = Tariff::flat(Rates {
            earn_per_gb: MilliCredits::MAX,
            spend_per_gb: -5,
        });
        assert_eq!(t.earned(u64::MAX, 0), MilliCredits::MAX);
        assert_eq!(t.spent(u64::MAX, 0), 0);
        assert_eq!(t.earned_on_row(u64::MAX, 10, 0), 0);
    }

    #[test]
    fn floor() {
        assert!(may_borrow(-1_000_000, None));
        assert!(may_borrow(-5_000, Some(-5_000)));
        assert!(!may_borrow(-5_001, Some(-5_000)));
        assert!(!may_borrow(0, Some(1)));
    }

    #[test]
    fn shares_follow_balances() {
        let cs = [
            consumer(1, u64::MAX, 10_000),
            consumer(2, u64::MAX, 20_000),
            consumer(3, u64::MAX, 40_000),
        ];
        let capacity = 10_000_000;
        let g = share_by_balance(capacity, &cs, DEFAULT_MIN_WEIGHT, None);
        for (got, sevenths) in g.iter().zip([1.0, 2.0, 4.0]) {
            let want = capacity as f64 * sevenths / 7.0;
            assert!((*got as f64 - want).abs() <= want * 0.01, "{g:?}");
        }
        assert_eq!(g.iter().sum::<u64>(), capacity);
    }

    #[test]
    fn a_demand_limited_consumer_leaves_the_rest_to_the_others_by_weight() {
        let cs = [
            consumer(1, 100, 10_000),
            consumer(2, u64::MAX, 20_000),
            consumer(3, u64::MAX, 40_000),
        ];
        let g = share_by_balance(700_000, &cs, DEFAULT_MIN_WEIGHT, None);
        assert_eq!(g[0], 100);
        assert_eq!(g[1] + g[2], 700_000 - 100);
        assert!((g[2] as i64 - 2 * g[1] as i64).abs() <= 2, "{g:?}");
    }

    #[test]
    fn nothing_to_share_or_nobody_to_share_with() {
        let cs = [consumer(1, 500, 1_000), consumer(2, 500, 2_000)];
        assert_eq!(share_by_balance(0, &cs, DEFAULT_MIN_WEIGHT, None), [0, 0]);
        assert!(share_by_balance(1_000, &[], DEFAULT_MIN_WEIGHT, None).is_empty());
        // Everyone fits: everyone is served in full, the rest stays unused.
        assert_eq!(
            share_by_balance(5_000, &cs, DEFAULT_MIN_WEIGHT, None),
            [500, 500]
        );
    }

    #[test]
    fn a_new_member_is_not_starved_and_one_below_the_floor_gets_nothing() {
        let cs = [
            consumer(1, u64::MAX, 0),
            consumer(2, u64::MAX, 99_000),
            consumer(3, u64::MAX, -50_000),
        ];
        let g = share_by_balance(100_000, &cs, DEFAULT_MIN_WEIGHT, None);
        assert_eq!(g, [990, 98_020, 990]);
        let g = share_by_balance(100_000, &cs, DEFAULT_MIN_WEIGHT, Some(-10_000));
        assert_eq!(g, [1_000, 99_000, 0]);
        // Huge balances do not overflow.
        let rich = [
            consumer(1, u64::MAX, MilliCredits::MAX),
            consumer(2, u64::MAX, MilliCredits::MAX / 2),
        ];
        let g = share_by_balance(u64::MAX, &rich, DEFAULT_MIN_WEIGHT, None);
        assert_eq!(g[0].checked_add(g[1]), Some(u64::MAX));
    }

    #[test]
    fn shares_never_exceed_capacity_or_demand() {
        let mut rng = SplitMix(11);
        for _ in 0..500 {
            let n = (rng.next_u32() % 6) as usize;
            let cs: Vec<Consumer> = (0..n)
                .map(|i| {
                    let demand = rng.next_u64() % 1_000;
                    let balance = (rng.next_u64() % 20_000) as i64 - 5_000;
                    consumer(i as u32, demand, balance)
                })
                .collect();
            let capacity = rng.next_u64() % 3_000;
            let g = share_by_balance(capacity, &cs, DEFAULT_MIN_WEIGHT, None);
            let total: u64 = g.iter().sum();
            let wanted: u64 = cs.iter().map(|c| c.demand).sum();
            assert!(total <= capacity);
            assert_eq!(total, capacity.min(wanted), "work-conserving");
            assert!(g.iter().zip(&cs).all(|(g, c)| *g <= c.demand));
        }
    }

    fn payments(a: &Auction) -> Vec<(u64, MilliCredits)> {
        a.awards
            .iter()
            .map(|w| (w.bytes, w.payment.unwrap()))
            .collect()
    }

    #[test]
    fn a_single_winner_pays_the_second_price() {
        let bids = [
            bidder(1, GB, 5_000),
            bidder(2, GB, 7_000),
            bidder(3, GB, 6_000),
        ];
        let a = auction(GB, &bids, 0, None);
        assert_eq!(payments(&a), [(0, 0), (GB, 6_000), (0, 0)]);
        assert_eq!(a.clearing_price_per_gb, 6_000);
        assert_eq!(a.awards[1].price_per_gb(), Some(6_000));
    }

    #[test]
    fn three_bidders_share_a_divisible_capacity() {
        let bids = [
            bidder(1, 6 * GB, 5_000),
            bidder(2, 6 * GB, 4_000),
            bidder(3, 6 * GB, 3_000),
        ];
        let a = auction(10 * GB, &bids, 0, None);
        // 1 is served in full, 2 in part, 3 not at all: the clearing price is 2's bid.
        assert_eq!(a.clearing_price_per_gb, 4_000);
        // 1's 6 GB would have gone 2 GB to 2 (at 4) and 4 GB to 3 (at 3); 2's 4 GB to 3.
        assert_eq!(payments(&a), [(6 * GB, 20_000), (4 * GB, 12_000), (0, 0)]);
        for (w, b) in a.awards.iter().zip(&bids) {
            let price = w.price_per_gb().unwrap_or(0);
            assert!(price <= b.ceiling_per_gb && price <= a.clearing_price_per_gb);
        }
    }

    #[test]
    fn when_everyone_fits_everyone_pays_the_reserve() {
        let bids = [bidder(1, GB, 5_000), bidder(2, 2 * GB, 4_000)];
        let a = auction(10 * GB, &bids, 500, None);
        assert_eq!(a.clearing_price_per_gb, 500);
        assert_eq!(payments(&a), [(GB, 500), (2 * GB, 1_000)]);
        let free = auction(10 * GB, &bids, 0, None);
        assert_eq!(payments(&free), [(GB, 0), (2 * GB, 0)]);
    }

    #[test]
    fn ties_go_to_the_lower_member_id_and_pay_the_tied_bid() {
        let bids = [bidder(9, GB, 4_000), bidder(4, GB, 4_000)];
        let a = auction(GB, &bids, 0, None);
        assert_eq!(payments(&a), [(0, 0), (GB, 4_000)]);
        assert_eq!(a.clearing_price_per_gb, 4_000);
    }

    #[test]
    fn below_the_reserve_or_the_floor_nothing() {
        let mut poor = bidder(3, GB, 9_000);
        poor.balance = -20_000;
        let bids = [bidder(1, GB, 400), bidder(2, GB, 600), poor];
        let a = auction(3 * GB, &bids, 500, Some(-10_000));
        assert_eq!(payments(&a), [(0, 0), (GB, 500), (0, 0)]);
        let empty = auction(GB, &[], 500, None);
        assert!(empty.awards.is_empty());
        assert_eq!(empty.clearing_price_per_gb, 500);
        assert_eq!(payments(&auction(0, &bids[..2], 0, None)), [(0, 0), (0, 0)]);
        assert_eq!(auction(0, &bids[..2], 0, None).clearing_price_per_gb, 600);
    }

    /// What `who` gains bidding `bid` when its ceiling is really `value` (bytes in whole
    /// GB, so no rounding in the way).
    fn utility(
        bids: &[Consumer],
        capacity: u64,
        reserve: i64,
        who: usize,
        bid: i64,
        value: i64,
    ) -> i64 {
        let mut bids = bids.to_vec();
        bids[who].ceiling_per_gb = bid;
        let w = auction(capacity, &bids, reserve, None).awards[who];
        (w.bytes / GB) as i64 * value - w.payment.unwrap()
    }

    #[test]
    fn bidding_ones_true_ceiling_is_best() {
        // Charging every winner the clearing price would let bidder 0 gain here by
        // shading its bid to 3_100: it would be served 4 GB in part at 3.1 (utility 7.6
        // credits), against 6 GB at 4 (utility 6).
        let bids = [
            bidder(1, 6 * GB, 5_000),
            bidder(2, 6 * GB, 4_000),
            bidder(3, 6 * GB, 3_000),
        ];
        let truthful = utility(&bids, 10 * GB, 0, 0, 5_000, 5_000);
        assert_eq!(truthful, 10_000);
        assert!(utility(&bids, 10 * GB, 0, 0, 3_100, 5_000) <= truthful);

        let mut rng = SplitMix(3);
        for _ in 0..200 {
            let n = 2 + (rng.next_u32() % 4) as usize;
            let bids: Vec<Consumer> = (0..n)
                .map(|i| {
                    bidder(
                        i as u32,
                        (1 + rng.next_u64() % 5) * GB,
                        (rng.next_u64() % 10) as i64 * 500,
                    )
                })
                .collect();
            let capacity = (rng.next_u64() % 12) * GB;
            let reserve = (rng.next_u64() % 3) as i64 * 500;
            for who in 0..n {
                let value = bids[who].ceiling_per_gb;
                let truthful = utility(&bids, capacity, reserve, who, value, value);
                for bid in (0..=12).map(|k| k * 250) {
                    let lied = utility(&bids, capacity, reserve, who, bid, value);
                    assert!(
                        lied <= truthful,
                        "{bids:?} {capacity} {who} bids {bid}: {lied} > {truthful}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_co_op_chooses_how_to_divide() {
        let cs = [
            Consumer {
                member: 1,
                demand: 4 * GB,
                balance: 1_000,
                ceiling_per_gb: 2_000,
            },
            Consumer {
                member: 2,
                demand: 4 * GB,
                balance: 3_000,
                ceiling_per_gb: 1_000,
            },
        ];
        let by_balance = Contention::default().divide(4 * GB, &cs, None);
        assert_eq!(by_balance[0].bytes, GB);
        assert_eq!(by_balance[1].bytes, 3 * GB);
        assert!(by_balance.iter().all(|a| a.payment.is_none()));
        let auctioned = Contention::Auction { reserve_per_gb: 0 }.divide(4 * GB, &cs, None);
        assert_eq!(
            (auctioned[0].bytes, auctioned[0].payment),
            (4 * GB, Some(4_000))
        );
        assert_eq!((auctioned[1].bytes, auctioned[1].payment), (0, Some(0)));
        assert!(Contention::default().divide(4 * GB, &cs, Some(2_000))[0].bytes == 0);
    }
}
