//! Departures: the endpoints some long-lived connection of this worker (a `tcp`
//! listener's) is open to, told when they leave the table so that those connections can
//! drain ([`crate::tcp`]).
//!
//! Runs on: one worker; `!Send`. An endpoint nobody watches costs nothing.

use rustc_hash::FxHashMap;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Instant;

use strait_discovery::EndpointAddr;

use crate::worker::signal::Signal;

/// The endpoints some long-lived connection of this worker is open to, each with the
/// [`Departure`] those connections wait on. An endpoint nobody watches costs nothing.
#[derive(Debug, Default)]
pub struct Departures {
    /// Keyed with FxHash: the keys are our own endpoint addresses, not attacker input.
    watched: RefCell<FxHashMap<EndpointAddr, Rc<Departure>>>,
}

/// An endpoint leaving the table, as its connections see it.
#[derive(Debug, Default)]
pub struct Departure {
    /// Fired when the endpoint leaves the table.
    left: Signal,
    /// When it left (set before `left` fires).
    at: Cell<Option<Instant>>,
}

impl Departures {
    /// Watches `addr` for as long as the returned guard lives. Connections to one
    /// endpoint share its entry.
    pub fn watch(&self, addr: EndpointAddr) -> Watch<'_> {
        let departure = self.watched.borrow_mut().entry(addr).or_default().clone();
        Watch {
            departures: self,
            addr,
            departure,
        }
    }

    /// Tells the connections to `addrs` that their endpoint left the table at `now`.
    /// Their entries go: a connection that finds the endpoint back later watches anew.
    pub fn depart(&self, addrs: &[EndpointAddr], now: Instant) {
        if self.watched.borrow().is_empty() {
            return;
        }
        for addr in addrs {
            let departure = self.watched.borrow_mut().remove(addr);
            if let Some(d) = departure {
                d.at.set(Some(now));
                d.left.fire();
            }
        }
    }

    /// Endpoints watched now (for tests and metrics).
    pub fn watched(&self) -> usize {
        self.watched.borrow().len()
    }
}

/// One connection's watch on its endpoint (see [`Departures::watch`]).
#[derive(Debug)]
pub struct Watch<'a> {
    departures: &'a Departures,
    addr: EndpointAddr,
    departure: Rc<Departure>,
}

impl Watch<'_> {
    /// Resolves with the time the endpoint left the table, once it has.
    pub async fn departed(&self) -> Instant {
        self.departure.left.wait().await;
        self.departure
            .at
            .get()
            .expect("invariant: the departure time is set before the signal fires")
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        // The last watcher of a departure still in the map removes it (the map holds the
        // other reference).
        let mut watched = self.departures.watched.borrow_mut();
        if let Some(d) = watched.get(&self.addr) {
            if Rc::ptr_eq(d, &self.departure) && Rc::strong_count(d) == 2 {
                watched.remove(&self.addr);
            }
        }
    }
}
