//! A one-shot, worker-local broadcast: fired once, awaited by any number of tasks.
//!
//! The worker uses one to tell its accept loops and idle connections that a graceful
//! stop began, and one for "the last connection ended". Runs on: one worker; `!Send`
//! (`Cell`, `RefCell`), no atomics. A waiting task holds a slot only while it waits,
//! so a connection that goes idle a million times leaves nothing behind.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Fired once; every [`Signal::wait`] resolves from then on.
#[derive(Debug, Default)]
pub struct Signal {
    fired: Cell<bool>,
    /// Wakers of the tasks waiting now; `None` marks a free slot.
    waiters: RefCell<Vec<Option<Waker>>>,
    /// Free slots of `waiters`, reused before the vector grows.
    free: RefCell<Vec<usize>>,
}

impl Signal {
    /// Fires the signal and wakes every waiting task. Later calls do nothing.
    pub fn fire(&self) {
        if self.fired.replace(true) {
            return;
        }
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        self.free.borrow_mut().clear();
        for w in waiters.into_iter().flatten() {
            w.wake();
        }
    }

    pub fn is_fired(&self) -> bool {
        self.fired.get()
    }

    /// Resolves once the signal has fired.
    pub fn wait(&self) -> Wait<'_> {
        Wait {
            signal: self,
            slot: None,
        }
    }

    fn register(&self, slot: &mut Option<usize>, waker: &Waker) {
        let mut waiters = self.waiters.borrow_mut();
        match *slot {
            Some(i) => match &mut waiters[i] {
                Some(w) if w.will_wake(waker) => {}
                entry => *entry = Some(waker.clone()),
            },
            None => {
                let i = match self.free.borrow_mut().pop() {
                    Some(i) => {
                        waiters[i] = Some(waker.clone());
                        i
                    }
                    None => {
                        waiters.push(Some(waker.clone()));
                        waiters.len() - 1
                    }
                };
                *slot = Some(i);
            }
        }
    }

    fn release(&self, slot: usize) {
        if self.fired.get() {
            return; // the slots were cleared when it fired
        }
        let mut waiters = self.waiters.borrow_mut();
        if let Some(entry) = waiters.get_mut(slot) {
            *entry = None;
            self.free.borrow_mut().push(slot);
        }
    }
}

/// The future of [`Signal::wait`].
#[derive(Debug)]
pub struct Wait<'a> {
    signal: &'a Signal,
    slot: Option<usize>,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.is_fired() {
            self.slot = None;
            return Poll::Ready(());
        }
        let signal = self.signal;
        signal.register(&mut self.slot, cx.waker());
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.signal.release(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll(f: &mut Wait<'_>, waker: &Waker) -> Poll<()> {
        Pin::new(f).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn every_waiter_wakes_once_and_dropped_waiters_free_their_slot() {
        let s = Signal::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        for _ in 0..1000 {
            let mut w = s.wait();
            assert!(poll(&mut w, &waker).is_pending());
        }
        assert_eq!(
            s.waiters.borrow().len(),
            1,
            "a dropped waiter's slot is reused"
        );
        let mut a = s.wait();
        let mut b = s.wait();
        assert!(poll(&mut a, &waker).is_pending());
        assert!(poll(&mut b, &waker).is_pending());
        assert!(
            poll(&mut b, &waker).is_pending(),
            "re-polling keeps one slot"
        );
        s.fire();
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert!(poll(&mut a, &waker).is_ready());
        assert!(poll(&mut s.wait(), &waker).is_ready());
        s.fire();
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
    }
}
