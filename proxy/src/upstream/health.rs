//! Passive health: each worker counts its own consecutive connect failures per endpoint
//! and ejects an endpoint that keeps refusing, for a doubling time, never the last ones
//! of an upstream (the panic threshold); with `outlier:`, also one that keeps answering
//! 5xx or keeps failing with gateway errors (timeouts, resets). Beside it, what the
//! balancers need of the endpoints: each one's requests in flight on this worker
//! (`least_request`) and the worker's random numbers.
//!
//! Runs on: one worker; `!Send`. Nothing is shared between workers: each judges the
//! endpoints by what it saw itself, and counts only its own requests. The pick path pays
//! one `Cell` read while nothing is ejected.

use rustc_hash::FxHashMap;
use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use strait_discovery::spec::PassiveHealth;
use strait_discovery::{EndpointAddr, Upstream};

/// Why an endpoint was ejected (the metric's `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Consecutive connect failures.
    Connect,
    /// Consecutive 5xx responses.
    FiveXx,
    /// Consecutive gateway errors: response timeouts, resets, closed connections.
    Gateway,
}

/// What a response (or its absence) said of an endpoint, for outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// A response below 500.
    Ok,
    /// A 5xx response.
    ServerError,
    /// No usable response: a timeout, a reset, a connection closed early.
    GatewayError,
}

impl Observed {
    /// What a response with `status` says.
    pub fn of_status(status: u16) -> Observed {
        if status >= 500 {
            Observed::ServerError
        } else {
            Observed::Ok
        }
    }
}

/// Passive health of one worker's endpoints: consecutive connect failures and ejections.
/// Keyed by address, so an endpoint shared by upstreams is judged once.
#[derive(Debug, Default)]
pub struct Health {
    /// Endpoints with a failure streak or an ejection; empty while all is well.
    entries: RefCell<FxHashMap<EndpointAddr, EndpointHealth>>,
    /// Entries currently ejected, so the pick path skips the map lookup when none is.
    ejected: Cell<usize>,
    /// Requests in flight per endpoint on this worker (`least_request` upstreams only).
    inflight: RefCell<FxHashMap<EndpointAddr, u32>>,
    /// xorshift64 state for `random` and `least_request` (never 0).
    rng: Cell<u64>,
}

#[derive(Debug, Default, Clone, Copy)]
struct EndpointHealth {
    /// Connect failures since the last success or ejection.
    failures: u32,
    /// Out of rotation until then.
    ejected_until: Option<Instant>,
    /// Ejections in a row (no success between): the next one lasts base × 2^n.
    ejections: u32,
    /// Consecutive 5xx responses.
    server_errors: u32,
    /// Consecutive gateway errors.
    gateway_errors: u32,
}

/// One request in flight to an endpoint, counted until dropped.
#[derive(Debug)]
pub struct InFlight<'h> {
    health: &'h Health,
    addr: EndpointAddr,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut map = self.health.inflight.borrow_mut();
        if let Some(n) = map.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.addr);
            }
        }
    }
}

/// What a connect failure did to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Still in rotation.
    Kept,
    /// Out of this worker's rotation for this long.
    Ejected(Duration),
}

impl Health {
    /// A worker's health state; `seed` starts its random numbers (the worker's id).
    pub fn new(seed: u64) -> Health {
        Health {
            rng: Cell::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
            ..Health::default()
        }
    }

    /// A random number (xorshift64).
    pub fn random(&self) -> u64 {
        let mut x = self.rng.get();
        if x == 0 {
            x = 0x2545_f491_4f6c_dd1d;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        x
    }

    /// Counts a request to `addr` in flight until the guard drops.
    pub fn enter(&self, addr: EndpointAddr) -> InFlight<'_> {
        *self.inflight.borrow_mut().entry(addr).or_default() += 1;
        InFlight { health: self, addr }
    }

    /// Requests to `addr` in flight on this worker.
    pub fn in_flight(&self, addr: EndpointAddr) -> u32 {
        self.inflight.borrow().get(&addr).copied().unwrap_or(0)
    }

    /// Takes in what a response said of `addr` (upstream `up`); ejects it after
    /// `outlier.consecutive_5xx` server errors or `consecutive_gateway_errors` gateway
    /// errors in a row, within the same bounds as connect failures.
    pub fn observe(
        &self,
        addr: EndpointAddr,
        up: &Upstream,
        what: Observed,
        now: Instant,
    ) -> Option<(Reason, Duration)> {
        let o = &up.settings.outlier;
        if o.consecutive_5xx == 0 && o.consecutive_gateway_errors == 0 {
            return None;
        }
        if what == Observed::Ok {
            if !self.entries.borrow().is_empty() {
                if let Some(h) = self.entries.borrow_mut().get_mut(&addr) {
                    h.server_errors = 0;
                    h.gateway_errors = 0;
                }
            }
            return None;
        }
        let (count, limit, reason) = {
            let mut entries = self.entries.borrow_mut();
            let h = entries.entry(addr).or_default();
            if h.ejected_until.is_some() {
                return None;
            }
            match what {
                Observed::ServerError => {
                    h.server_errors += 1;
                    h.gateway_errors = 0;
                    (h.server_errors, o.consecutive_5xx, Reason::FiveXx)
                }
                _ => {
                    h.gateway_errors += 1;
                    (
                        h.gateway_errors,
                        o.consecutive_gateway_errors,
                        Reason::Gateway,
                    )
                }
            }
        };
        if limit == 0 || count < limit || !self.can_eject(up, now) {
            return None;
        }
        let length = self.eject(addr, o.base_ejection, up.settings.health.max_ejection, now);
        Some((reason, length))
    }

    /// Ejects `addr` for base × 2^(ejections in a row), at most `max`.
    fn eject(&self, addr: EndpointAddr, base: Duration, max: Duration, now: Instant) -> Duration {
        let mut entries = self.entries.borrow_mut();
        let h = entries.entry(addr).or_default();
        let factor = 1u32.checked_shl(h.ejections.min(16)).unwrap_or(u32::MAX);
        let length = base.saturating_mul(factor).min(max);
        h.ejected_until = Some(now + length);
        h.ejections = h.ejections.saturating_add(1);
        h.failures = 0;
        h.server_errors = 0;
        h.gateway_errors = 0;
        self.ejected.set(self.ejected.get() + 1);
        length
    }

    /// True when `addr` is ejected at `now`. An ejection that has run out ends here: the
    /// endpoint is back in rotation, one failure away from a longer ejection.
    pub fn is_ejected(&self, addr: EndpointAddr, now: Instant) -> bool {
        if self.ejected.get() == 0 {
            return false;
        }
        let mut entries = self.entries.borrow_mut();
        let Some(h) = entries.get_mut(&addr) else {
            return false;
        };
        match h.ejected_until {
            Some(until) if now < until => true,
            Some(_) => {
                h.ejected_until = None;
                h.failures = u32::MAX; // the next failure ejects again
                self.ejected.set(self.ejected.get() - 1);
                false
            }
            None => false,
        }
    }

    /// Records a successful connect (or exchange) with `addr`: its streak ends.
    pub fn success(&self, addr: EndpointAddr) {
        if self.entries.borrow().is_empty() {
            return;
        }
        let mut entries = self.entries.borrow_mut();
        if let Some(h) = entries.get_mut(&addr) {
            if h.ejected_until.take().is_some() {
                self.ejected.set(self.ejected.get() - 1);
            }
            h.failures = 0;
            h.ejections = 0;
            // What the responses said is counted apart (outlier detection).
            if h.server_errors == 0 && h.gateway_errors == 0 {
                entries.remove(&addr);
            }
        }
    }

    /// Records a failed connect to `addr` of upstream `up`; ejects it when the streak
    /// reaches the threshold and the upstream can spare it.
    pub fn failure(&self, addr: EndpointAddr, up: &Upstream, now: Instant) -> Verdict {
        let s: &PassiveHealth = &up.settings.health;
        if s.consecutive_failures == 0 {
            return Verdict::Kept;
        }
        let streak = {
            let mut entries = self.entries.borrow_mut();
            let h = entries.entry(addr).or_default();
            if h.ejected_until.is_some() {
                return Verdict::Kept; // a request that was already under way
            }
            h.failures = h.failures.saturating_add(1);
            h.failures
        };
        if streak < s.consecutive_failures || !self.can_eject(up, now) {
            return Verdict::Kept;
        }
        Verdict::Ejected(self.eject(addr, s.base_ejection, s.max_ejection, now))
    }

    /// The panic threshold: one more ejection must leave at least one endpoint of `up`
    /// that picks come from (its locality tier, past its health checks) and stay within
    /// `max_ejected_percent` (one is always allowed).
    fn can_eject(&self, up: &Upstream, now: Instant) -> bool {
        let in_rotation: Vec<EndpointAddr> = up
            .members
            .iter()
            .map(|i| up.endpoints[*i as usize].addr)
            .collect();
        let ejected = in_rotation
            .iter()
            .filter(|a| self.is_ejected(**a, now))
            .count();
        let allowed =
            (in_rotation.len() * usize::from(up.settings.health.max_ejected_percent) / 100).max(1);
        ejected + 1 < in_rotation.len() && ejected < allowed
    }

    /// Forgets endpoints that left the table.
    pub fn forget(&self, addrs: &[EndpointAddr]) {
        if self.entries.borrow().is_empty() {
            return;
        }
        let mut entries = self.entries.borrow_mut();
        for a in addrs {
            if let Some(h) = entries.remove(a) {
                if h.ejected_until.is_some() {
                    self.ejected.set(self.ejected.get() - 1);
                }
            }
        }
    }

    /// Endpoints ejected right now (for tests and metrics).
    pub fn ejected_count(&self) -> usize {
        self.ejected.get()
    }
}
