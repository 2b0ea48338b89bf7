//! A worker's state per route: the cursor of a weighted split over backends, the rate
//! limit's token buckets, and the router's regex search state ([`RouteLocals`]).
//!
//! Runs on: one worker; built with each [`super::View`], read per request. Buckets are
//! shared (`Rc`) with the previous view when the route and its limit are unchanged, so a
//! reload does not refill every bucket.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strait_discovery::balance::hash64;
use strait_discovery::route::{Caches, RouteEntry, Router};
use strait_discovery::spec::{RateKey, RateLimit};

use crate::ratelimit::{Buckets, Rate};

/// One route's state on this worker.
#[derive(Debug, Default)]
struct RouteLocal {
    /// The next position in the route's backend schedule.
    cursor: Cell<u32>,
    limit: Option<Limit>,
}

#[derive(Debug)]
struct Limit {
    spec: Arc<RateLimit>,
    buckets: Rc<RefCell<Buckets>>,
}

/// This worker's state for every route of a snapshot, indexed by
/// [`RouteEntry::stats`].
#[derive(Debug)]
pub struct RouteLocals {
    routes: Box<[RouteLocal]>,
    /// Regex search state for the snapshot's router.
    caches: RefCell<Caches>,
}

impl RouteLocals {
    /// The state for `router`'s routes on worker `worker` of `workers`. Buckets of a
    /// route (same service and route name) with the same limit in `previous` are kept.
    pub fn new(
        router: &Router,
        previous: Option<(&Router, &RouteLocals)>,
        worker: usize,
        workers: usize,
    ) -> RouteLocals {
        let mut routes: Box<[RouteLocal]> = router
            .routes()
            .iter()
            .map(|_| RouteLocal {
                cursor: Cell::new(worker as u32),
                limit: None,
            })
            .collect();
        let kept: HashMap<(&str, &str), &Limit> = previous
            .map(|(router, locals)| {
                router
                    .routes()
                    .iter()
                    .zip(locals.routes.iter())
                    .filter_map(|((s, r), l)| Some(((&**s, &**r), l.limit.as_ref()?)))
                    .collect()
            })
            .unwrap_or_default();
        for entry in router.entries() {
            let Some(spec) = &entry.rate_limit else {
                continue;
            };
            let buckets = match kept.get(&(&*entry.service, &*entry.route)) {
                Some(old) if old.spec == *spec => old.buckets.clone(),
                _ => {
                    let rate = Rate {
                        tokens: spec.tokens,
                        per: spec.per,
                    };
                    Rc::new(RefCell::new(Buckets::new(rate, spec.burst, workers)))
                }
            };
            routes[entry.stats as usize].limit = Some(Limit {
                spec: spec.clone(),
                buckets,
            });
        }
        RouteLocals {
            routes,
            caches: RefCell::new(router.caches()),
        }
    }

    /// The router's regex search state (borrowed for one lookup, never across an await).
    pub fn caches(&self) -> std::cell::RefMut<'_, Caches> {
        self.caches.borrow_mut()
    }

    /// The upstream a request on `route` goes to: its only one, or the backend its
    /// `hash` key (when the route has `hash` and the request the key) or the route's
    /// smooth weighted sequence picks.
    pub fn backend(&self, route: &RouteEntry, key: Option<u64>) -> u32 {
        let schedule = &route.schedule;
        if schedule.is_empty() {
            return route.upstream;
        }
        let slot = match key {
            Some(k) => (k % schedule.len() as u64) as usize,
            None => {
                let cursor = &self.routes[route.stats as usize].cursor;
                let c = cursor.get();
                cursor.set(c.wrapping_add(1));
                c as usize % schedule.len()
            }
        };
        route.backends[schedule[slot] as usize]
    }

    /// Takes a token from the route's rate limit for this request: `Err(wait)` when
    /// refused. Routes without a limit always pass.
    pub fn admit(
        &self,
        route: &RouteEntry,
        client: Option<IpAddr>,
        headers: &[httparse::Header<'_>],
        now: Instant,
    ) -> Result<(), Duration> {
        let Some(limit) = &self.routes[route.stats as usize].limit else {
            return Ok(());
        };
        let key = match &limit.spec.key {
            RateKey::ClientIp => client.map_or(0, ip_hash),
            RateKey::Header(name) => headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map_or(0, |h| hash64(h.value.trim_ascii())),
        };
        limit.buckets.borrow_mut().take(key, now)
    }
}

/// A client address's hash, from its octets (no formatting).
fn ip_hash(ip: IpAddr) -> u64 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => hash64(&v4.octets()),
        IpAddr::V6(v6) => hash64(&v6.octets()),
    }
}
