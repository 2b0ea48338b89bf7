//! Local rate limiting: one token bucket per key (a hash of the client address or of a
//! header value), kept as a GCRA "theoretical arrival time", one `u64` per key.
//!
//! Runs on: a worker, per request on a rate-limited route. Each worker owns its
//! [`Buckets`] (the caller keeps them in a `RefCell`) and limits its own share of the
//! traffic: no lock, no atomic, no cross-core state. Pure: time comes in as `now`.
//! Allocates only when a new key grows the map, which is bounded ([`MAX_KEYS`]).

use std::fmt;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

/// The most keys one [`Buckets`] remembers (one worker, one route).
pub const MAX_KEYS: usize = 65_536;

/// How far a full [`Buckets`] is emptied when no key can be dropped for free: one pass
/// over the map buys this many new keys before the next pass.
const EVICT_BATCH: usize = MAX_KEYS / 64;

/// A rate: `tokens` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// How many tokens are refilled each `per` (at least 1 to mean anything; 0 is
    /// treated as 1).
    pub tokens: u64,
    /// The period the `tokens` are spread over.
    pub per: Duration,
}

impl Rate {
    /// Parses `N/s`, `N/m` or `N/h`: N a whole decimal number ≥ 1 (no sign), per second,
    /// minute or hour. Surrounding whitespace is ignored. The error says the expected form.
    pub fn parse(text: &str) -> Result<Rate, String> {
        let refuse = || {
            format!(
                "expected a rate like `100/s`, `6000/m` or `10/h` \
                 (a whole number ≥ 1, then `/s`, `/m` or `/h`), got `{text}`"
            )
        };
        let (count, unit) = text.trim().split_once('/').ok_or_else(refuse)?;
        let per = match unit {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(refuse()),
        };
        if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
            return Err(refuse());
        }
        match count.parse::<u64>() {
            Ok(tokens) if tokens >= 1 => Ok(Rate { tokens, per }),
            _ => Err(refuse()),
        }
    }
}

/// One worker's buckets for one route: each key (a `u64` hash of the client address or
/// a header value) has its own bucket of `burst` tokens, refilled at `rate`.
///
/// A key's state is its theoretical arrival time (TAT), in nanoseconds since the first
/// `now` seen: the bucket is full when the TAT is not after `now`, so an absent key and a
/// key whose bucket has refilled are the same thing.
pub struct Buckets {
    /// Nanoseconds per token for this worker (the route's interval × workers); ≥ 1.
    interval: u64,
    /// `interval × burst`: how far ahead of `now` a TAT may run (a full burst's worth).
    horizon: u64,
    /// The instant TATs count from: the first `now` passed to [`Buckets::take`].
    epoch: Option<Instant>,
    /// Key → TAT (ns since `epoch`); at most [`MAX_KEYS`] entries.
    tats: FxHashMap<u64, u64>,
}

impl Buckets {
    /// This worker's buckets: the kernel spreads connections over `workers` workers, so
    /// each one gets its share, the rate and the burst divided by `workers` (the burst
    /// never below 1 token). `workers` of 0 counts as 1, as does a rate of 0 tokens.
    pub fn new(rate: Rate, burst: u64, workers: usize) -> Buckets {
        let workers = workers.max(1) as u64;
        let per_ns = rate.per.as_nanos().saturating_mul(u128::from(workers));
        let interval = per_ns.div_ceil(u128::from(rate.tokens.max(1)));
        let interval = u64::try_from(interval).unwrap_or(u64::MAX).max(1);
        let burst = (burst / workers).max(1);
        Buckets {
            interval,
            horizon: interval.saturating_mul(burst),
            epoch: None,
            tats: FxHashMap::default(),
        }
    }

    /// Takes a token for `key` at `now`: `Ok(())`, or `Err(wait)` with how long until a
    /// token is back (for `Retry-After`, which the caller rounds up to whole seconds).
    /// A refused request takes nothing.
    pub fn take(&mut self, key: u64, now: Instant) -> Result<(), Duration> {
        let now = self.nanos(now);
        if let Some(tat) = self.tats.get_mut(&key) {
            let next = (*tat).max(now).saturating_add(self.interval);
            let limit = now.saturating_add(self.horizon);
            if next > limit {
                return Err(Duration::from_nanos(next - limit));
            }
            *tat = next;
            return Ok(());
        }
        // An absent key has a full bucket (of at least one token): always admitted.
        if self.tats.len() >= MAX_KEYS {
            self.make_room(now);
        }
        self.tats.insert(key, now.saturating_add(self.interval));
        Ok(())
    }

    /// `now` as nanoseconds since the epoch (set by the first call; an earlier instant
    /// counts as the epoch itself).
    fn nanos(&mut self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(now);
        let since = now.saturating_duration_since(epoch).as_nanos();
        u64::try_from(since).unwrap_or(u64::MAX)
    }

    /// Frees room in a full map: first drops every key whose bucket is full by `now`
    /// (the same as absent); if that leaves fewer than [`EVICT_BATCH`] free slots, evicts
    /// arbitrary keys (hash-map order, not the least recently used) until it does. An
    /// evicted key starts again with a full bucket, so under a flood of distinct keys the
    /// limit is approximate; the memory bound holds.
    fn make_room(&mut self, now: u64) {
        self.tats.retain(|_, tat| *tat > now);
        let mut excess = self.tats.len().saturating_sub(MAX_KEYS - EVICT_BATCH);
        if excess > 0 {
            self.tats.retain(|_, _| {
                let keep = excess == 0;
                excess = excess.saturating_sub(1);
                keep
            });
        }
    }
}

impl fmt::Debug for Buckets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Buckets")
            .field("interval", &Duration::from_nanos(self.interval))
            .field("burst", &(self.horizon / self.interval))
            .field("keys", &self.tats.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    fn per_second(tokens: u64) -> Rate {
        Rate {
            tokens,
            per: SECOND,
        }
    }

    /// How many takes succeed in a row for `key` at `now`.
    fn drain(buckets: &mut Buckets, key: u64, now: Instant) -> u64 {
        let mut taken = 0;
        while buckets.take(key, now).is_ok() {
            taken += 1;
            assert!(taken <= 1_000_000, "the bucket never runs dry");
        }
        taken
    }

    #[test]
    fn a_burst_is_allowed_then_refused_with_the_wait_for_one_token() {
        let mut b = Buckets::new(per_second(10), 5, 1);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(b.take(1, t0), Ok(()));
        }
        assert_eq!(b.take(1, t0), Err(100 * MS));
        assert_eq!(b.take(1, t0 + 30 * MS), Err(70 * MS));
    }

    #[test]
    fn tokens_come_back_at_the_rate_and_never_beyond_the_burst() {
        let mut b = Buckets::new(per_second(10), 5, 1);
        let t0 = Instant::now();
        assert_eq!(drain(&mut b, 7, t0), 5);
        assert_eq!(drain(&mut b, 7, t0 + 100 * MS), 1);
        assert_eq!(drain(&mut b, 7, t0 + 350 * MS), 2);
        assert_eq!(b.take(7, t0 + 350 * MS), Err(50 * MS));
        assert_eq!(drain(&mut b, 7, t0 + 60 * SECOND), 5);
    }

    #[test]
    fn a_refused_request_takes_nothing() {
        let mut b = Buckets::new(per_second(1), 1, 1);
        let t0 = Instant::now();
        assert_eq!(b.take(1, t0), Ok(()));
        for ms in [100, 200, 900] {
            assert!(b.take(1, t0 + ms * MS).is_err());
        }
        assert_eq!(b.take(1, t0 + SECOND), Ok(()));
    }

    #[test]
    fn each_key_has_its_own_bucket() {
        let mut b = Buckets::new(per_second(1), 3, 1);
        let t0 = Instant::now();
        assert_eq!(drain(&mut b, 1, t0), 3);
        assert_eq!(drain(&mut b, 2, t0), 3);
        assert!(b.take(1, t0).is_err());
        assert_eq!(drain(&mut b, 3, t0 + MS), 3);
    }

    #[test]
    fn each_worker_gets_its_share_of_the_rate_and_the_burst() {
        let t0 = Instant::now();
        let mut two = Buckets::new(per_second(10), 5, 2);
        assert_eq!(drain(&mut two, 1, t0), 2);
        assert_eq!(two.take(1, t0), Err(200 * MS));

        let mut many = Buckets::new(per_second(10), 2, 4);
        assert_eq!(drain(&mut many, 1, t0), 1);
        assert_eq!(many.take(1, t0), Err(400 * MS));

        let mut none = Buckets::new(per_second(10), 5, 0);
        assert_eq!(drain(&mut none, 1, t0), 5);
    }

    #[test]
    fn an_instant_before_the_first_one_counts_as_the_first() {
        let t0 = Instant::now() + SECOND;
        let mut b = Buckets::new(per_second(1), 1, 1);
        assert_eq!(b.take(1, t0), Ok(()));
        assert_eq!(b.take(1, t0 - SECOND), Err(SECOND));
    }

    #[test]
    fn full_buckets_are_dropped_first_when_the_map_is_full() {
        let mut b = Buckets::new(per_second(1), 3, 1);
        let t0 = Instant::now();
        assert_eq!(drain(&mut b, u64::MAX, t0), 3);
        for key in 0..(MAX_KEYS - 1) as u64 {
            assert_eq!(b.take(key, t0), Ok(()));
        }
        assert_eq!(b.tats.len(), MAX_KEYS);
        // At t0 + 1 s every one-token key is full again; the drained one is not.
        assert_eq!(b.take(MAX_KEYS as u64, t0 + SECOND), Ok(()));
        assert_eq!(b.tats.len(), 2);
        assert_eq!(drain(&mut b, u64::MAX, t0 + SECOND), 1);
    }

    #[test]
    fn the_map_never_holds_more_than_max_keys() {
        let mut b = Buckets::new(per_second(1), 2, 1);
        let t0 = Instant::now();
        for key in 0..(3 * MAX_KEYS) as u64 {
            assert_eq!(b.take(key, t0), Ok(()));
            assert!(b.tats.len() <= MAX_KEYS);
        }
        assert!(b.tats.len() > MAX_KEYS - EVICT_BATCH);
    }

    #[test]
    fn rates_parse_per_second_minute_or_hour() {
        let rate = |tokens, secs| {
            Ok(Rate {
                tokens,
                per: Duration::from_secs(secs),
            })
        };
        assert_eq!(Rate::parse("100/s"), rate(100, 1));
        assert_eq!(Rate::parse("6000/m"), rate(6000, 60));
        assert_eq!(Rate::parse(" 10/h "), rate(10, 3600));
        assert_eq!(Rate::parse("1/s"), rate(1, 1));
    }

    #[test]
    fn malformed_rates_are_refused_with_the_expected_form() {
        for text in [
            "",
            "100",
            "/s",
            "0/s",
            "-1/s",
            "+1/s",
            "1.5/s",
            "10/d",
            "10/sec",
            "10 /s",
            "10/ s",
            "5/2s",
            "10/S",
            "1e3/s",
            "99999999999999999999/s",
        ] {
            let err = Rate::parse(text).unwrap_err();
            assert!(err.contains("`100/s`"), "{text}: {err}");
        }
    }
}
