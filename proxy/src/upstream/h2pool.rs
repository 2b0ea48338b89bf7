//! The per-worker pool of HTTP/2 connections to upstream endpoints (`protocol: h2` or
//! `h2c`): several streams share one connection, up to the peer's
//! `MAX_CONCURRENT_STREAMS`; a new connection is opened (by `h2/upstream.rs`) when every
//! one is full. An endpoint that leaves the table is forgotten here: its connections take
//! no new stream and close once their streams end.
//!
//! Runs on: one worker.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use bytes::Bytes;
use h2::client::SendRequest;
use strait_discovery::EndpointAddr;

/// One pooled HTTP/2 connection to an endpoint.
pub struct H2Conn {
    pub send: SendRequest<Bytes>,
    /// Streams open on it now.
    pub streams: Rc<Cell<usize>>,
    /// Its connection task ended (closed, GOAWAY, error).
    pub dead: Rc<Cell<bool>>,
}

/// An endpoint and the TLS settings' id (0: plain text).
type Key = (EndpointAddr, u64);

/// This worker's HTTP/2 upstream connections, by endpoint and TLS settings.
#[derive(Default)]
pub struct H2Pool {
    conns: RefCell<HashMap<Key, Vec<Rc<H2Conn>>>>,
}

impl std::fmt::Debug for H2Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Pool")
            .field("endpoints", &self.conns.borrow().len())
            .finish()
    }
}

impl H2Pool {
    /// Forgets the connections to endpoints that left the table: they take no new
    /// stream and close once their open streams end.
    pub fn close(&self, departed: &[EndpointAddr]) {
        if departed.is_empty() {
            return;
        }
        self.conns
            .borrow_mut()
            .retain(|(addr, _), _| !departed.contains(addr));
    }

    /// A connection with room for one more stream, if the pool has one.
    pub fn find(&self, key: Key) -> Option<Rc<H2Conn>> {
        let mut conns = self.conns.borrow_mut();
        let list = conns.get_mut(&key)?;
        list.retain(|c| !c.dead.get());
        list.iter()
            .find(|c| c.streams.get() < c.send.current_max_send_streams().max(1))
            .cloned()
    }

    pub fn add(&self, key: Key, conn: Rc<H2Conn>) {
        self.conns.borrow_mut().entry(key).or_default().push(conn);
    }
}
