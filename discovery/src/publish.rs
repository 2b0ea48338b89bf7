//! Hand-off from the control side to the workers: one crossbeam channel per worker plus
//! a wake-up socket.
//!
//! The publisher sends the same `Arc<Snapshot>` to every worker's channel and writes one
//! byte to that worker's wake socket; the worker awaits readability of its end (an
//! ordinary async read on its own runtime, no polling loop), then drains the channel.
//! A full wake socket means a wake-up is already pending, so the byte is simply dropped.
//! Dropping every [`Publisher`] closes the wake sockets, which workers read as "stop".

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::snapshot::{Snapshot, SnapshotVersion};

/// A worker's report that it swapped in a snapshot (sent once per swap, never per
/// request).
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    pub worker: usize,
    pub version: SnapshotVersion,
    /// When the change reached the control side ([`Snapshot::origin`]).
    pub origin: std::time::Instant,
    /// When the worker's view switched.
    pub swapped: std::time::Instant,
}

/// What the control side tells a worker.
#[derive(Debug, Clone)]
pub enum Update {
    /// Route new requests with this table.
    Snapshot(Arc<Snapshot>),
    /// Graceful stop: close the listeners, close idle client connections, answer the
    /// next request of every other one with `Connection: close`, and exit once none is
    /// left or at the deadline, whichever comes first.
    Drain(std::time::Instant),
    /// Stop now: exit without waiting for connections.
    Shutdown,
    /// Serve these certificates on the TLS listeners from the next handshake on.
    Tls(Arc<crate::tls::TlsSnapshot>),
}

#[derive(Debug)]
struct Link {
    tx: Sender<Update>,
    wake: UnixStream,
}

/// The sending half, shared by whoever publishes (config loader, discovery thread).
#[derive(Debug, Clone)]
pub struct Publisher {
    links: Arc<[Link]>,
    /// The last snapshot published, for the admin endpoints (read off the workers).
    last: Arc<Mutex<Option<Arc<Snapshot>>>>,
}

/// A worker's receiving half.
#[derive(Debug)]
pub struct Subscriber {
    id: usize,
    rx: Receiver<Update>,
    wake: Option<UnixStream>,
    acks: Sender<Ack>,
}

/// One publisher, `workers` subscribers, and the receiving end of their swap acks.
pub fn channel(workers: usize) -> io::Result<(Publisher, Vec<Subscriber>, Receiver<Ack>)> {
    let mut links = Vec::with_capacity(workers);
    let mut subs = Vec::with_capacity(workers);
    let (ack_tx, ack_rx) = crossbeam_channel::unbounded();
    for id in 0..workers {
        let (tx, rx) = crossbeam_channel::unbounded();
        let (ours, theirs) = UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        links.push(Link { tx, wake: ours });
        subs.push(Subscriber {
            id,
            rx,
            wake: Some(theirs),
            acks: ack_tx.clone(),
        });
    }
    Ok((
        Publisher {
            links: links.into(),
            last: Arc::default(),
        },
        subs,
        ack_rx,
    ))
}

impl Publisher {
    /// Sends `update` to every worker and wakes it. Workers that have exited are skipped.
    pub fn send(&self, update: Update) {
        for link in self.links.iter() {
            if link.tx.send(update.clone()).is_err() {
                continue;
            }
            match (&link.wake).write(&[1]) {
                Ok(_) => {}
                // A wake-up byte is already queued: the worker will drain this one too.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {} // worker gone
            }
        }
    }

    /// Publishes a snapshot to every worker.
    pub fn publish(&self, snapshot: Arc<Snapshot>) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(snapshot.clone());
        self.send(Update::Snapshot(snapshot));
    }

    /// The last snapshot published.
    pub fn last(&self) -> Option<Arc<Snapshot>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn workers(&self) -> usize {
        self.links.len()
    }
}

impl Subscriber {
    /// The wake socket, for the worker to register with its own runtime. Call once.
    pub fn take_wake(&mut self) -> Option<UnixStream> {
        self.wake.take()
    }

    /// The next pending update, if any; `Err(())` once every publisher is gone.
    #[allow(clippy::result_unit_err)]
    pub fn try_next(&self) -> Result<Option<Update>, ()> {
        match self.rx.try_recv() {
            Ok(u) => Ok(Some(u)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(()),
        }
    }

    /// Reports that `snapshot` is now the worker's view.
    pub fn ack(&self, snapshot: &Snapshot) {
        let _ = self.acks.send(Ack {
            worker: self.id,
            version: snapshot.version,
            origin: snapshot.origin,
            swapped: std::time::Instant::now(),
        });
    }

    /// Blocks for the next update (for non-async consumers and tests).
    pub fn recv(&self) -> Option<Update> {
        self.rx.recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn every_worker_gets_the_update_and_a_wake_byte() {
        let (publisher, mut subs, _acks) = channel(2).unwrap();
        publisher.send(Update::Shutdown);
        publisher.send(Update::Shutdown);
        for s in &mut subs {
            let mut wake = s.take_wake().unwrap();
            let mut b = [0u8; 8];
            assert!(wake.read(&mut b).unwrap() >= 1);
            assert!(matches!(s.try_next(), Ok(Some(Update::Shutdown))));
            assert!(matches!(s.try_next(), Ok(Some(Update::Shutdown))));
            assert!(matches!(s.try_next(), Ok(None)));
        }
        drop(publisher);
        assert!(subs[0].try_next().is_err());
    }
}
