//! Passive health: each worker counts its own consecutive connect failures per endpoint
//! and ejects an endpoint that keeps refusing, for a doubling time, never the last ones
//! of an upstream (the panic threshold).
//!
//! Runs on: one worker; `!Send`. Nothing is shared between workers: each judges the
//! endpoints by what it saw itself. The pick path pays one `Cell` read while nothing is
//! ejected.

use rustc_hash::FxHashMap;
use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use strait_discovery::spec::PassiveHealth;
use strait_discovery::{EndpointAddr, Upstream};

/// Passive health of one worker's endpoints: consecutive connect failures and ejections.
/// Keyed by address, so an endpoint shared by upstreams is judged once.
#[derive(Debug, Default)]
pub struct Health {
    /// Endpoints with a failure streak or an ejection; empty while all is well.
    entries: RefCell<FxHashMap<EndpointAddr, EndpointHealth>>,
    /// Entries currently ejected, so the pick path skips the map lookup when none is.
    ejected: Cell<usize>,
}

#[derive(Debug, Default, Clone, Copy)]
struct EndpointHealth {
    /// Connect failures since the last success or ejection.
    failures: u32,
    /// Out of rotation until then.
    ejected_until: Option<Instant>,
    /// Ejections in a row (no success between): the next one lasts base × 2^n.
    ejections: u32,
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
        if let Some(h) = self.entries.borrow_mut().remove(&addr) {
            if h.ejected_until.is_some() {
                self.ejected.set(self.ejected.get() - 1);
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
        let mut entries = self.entries.borrow_mut();
        let h = entries.entry(addr).or_default();
        let factor = 1u32.checked_shl(h.ejections.min(16)).unwrap_or(u32::MAX);
        let length = s.base_ejection.saturating_mul(factor).min(s.max_ejection);
        h.ejected_until = Some(now + length);
        h.ejections = h.ejections.saturating_add(1);
        h.failures = 0;
        self.ejected.set(self.ejected.get() + 1);
        Verdict::Ejected(length)
    }

    /// The panic threshold: one more ejection must leave at least one endpoint of `up`
    /// in rotation and stay within `max_ejected_percent` (one is always allowed).
    fn can_eject(&self, up: &Upstream, now: Instant) -> bool {
        let in_rotation: Vec<EndpointAddr> = up
            .endpoints
            .iter()
            .filter(|e| up.in_rotation(e))
            .map(|e| e.addr)
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
