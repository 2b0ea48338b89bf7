//! Admission: every client connection is counted from its accept ([`Open`]) so that the
//! per-worker connection limit ([`Worker::slot_free`]) and a graceful stop (drained when
//! no listener and no connection is left) see the same number.
//!
//! Runs on: one worker. Cells and wakers of this worker only.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::Worker;
use crate::real_ip::Cidr;

impl Worker {
    /// Open client connections.
    pub fn connections(&self) -> usize {
        self.connections.get()
    }

    /// Resolves once the worker has fewer open client connections than
    /// `http.max_connections_per_worker`: an accept loop waits on it before accepting.
    pub fn slot_free(&self) -> SlotFree<'_> {
        SlotFree(self)
    }

    /// Starts a graceful stop (see [`Worker::draining`]).
    pub fn drain(&self) {
        self.draining.fire();
        self.check_drained();
    }

    /// Counts a listener its accept loop now owns (before the loop is spawned).
    pub fn listener_opened(&self) {
        self.listeners.set(self.listeners.get() + 1);
    }

    /// Counts a listener closed by its accept loop, after the connections it took from
    /// the queue were counted (their [`Open`] guards exist).
    pub fn listener_closed(&self) {
        self.listeners.set(self.listeners.get() - 1);
        self.check_drained();
    }

    /// Fires `drained` when a graceful stop has nothing left to wait for.
    fn check_drained(&self) {
        if self.draining.is_fired() && self.listeners.get() == 0 && self.connections.get() == 0 {
            self.drained.fire();
        }
    }
}

/// Counts a client connection open from its accept for as long as it lives. Made by the
/// accept loop before it spawns the connection's task, so that a connection whose task
/// has not run yet still keeps a draining worker alive. It also carries what the
/// listener says about the peers in front of it.
#[derive(Debug)]
pub struct Open(Rc<Worker>, Rc<[Cidr]>);

impl Open {
    /// A connection on `w` through a listener that trusts `trusted` proxies' forwarding
    /// headers.
    pub fn new(w: Rc<Worker>, trusted: Rc<[Cidr]>) -> Open {
        w.connections.set(w.connections.get() + 1);
        w.metrics.client_connections.inc();
        Open(w, trusted)
    }

    /// The worker the connection is counted on.
    pub fn worker(&self) -> &Rc<Worker> {
        &self.0
    }

    /// The listener's `trusted_proxies`.
    pub fn trusted(&self) -> &Rc<[Cidr]> {
        &self.1
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let w = &self.0;
        w.connections.set(w.connections.get() - 1);
        w.metrics.client_connections.dec();
        let paused = std::mem::take(&mut *w.paused.borrow_mut());
        for waker in paused {
            waker.wake();
        }
        w.check_drained();
    }
}

/// The future of [`Worker::slot_free`].
#[derive(Debug)]
pub struct SlotFree<'a>(&'a Worker);

impl Future for SlotFree<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let w = self.0;
        if w.connections.get() < w.http.max_connections_per_worker {
            return Poll::Ready(());
        }
        let mut paused = w.paused.borrow_mut();
        if !paused.iter().any(|p| p.will_wake(cx.waker())) {
            paused.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
