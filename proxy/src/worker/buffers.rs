//! The worker's spare buffers: 64 KiB ones for body streaming and copies (taken for a
//! response or a busy copy, given back after), and small head buffers that an idle
//! keep-alive connection lends back between its requests.
//!
//! Runs on: one worker. A `RefCell` borrow lives only inside one call.

use super::Worker;

/// Size of a body-streaming read (and of a copy's buffer while it is busy).
pub const READ_CHUNK: usize = 64 * 1024;
/// 64 KiB buffers kept for reuse per worker.
const MAX_POOLED_BUFFERS: usize = 64;
/// Capacity of a head buffer.
const HEAD_BUF: usize = 1024;
/// A head buffer above this capacity is dropped rather than kept.
const MAX_KEPT_HEAD: usize = 16 * 1024;
/// Spare head buffers kept per worker.
const MAX_SPARE_HEADS: usize = 256;

impl Worker {
    /// A spare 64 KiB buffer (or a new one).
    pub fn take_buf(&self) -> Vec<u8> {
        self.bufs
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(READ_CHUNK))
    }

    /// Keeps `buf` for reuse when it is a 64 KiB one and fewer than
    /// `MAX_POOLED_BUFFERS` are spare.
    pub fn give_buf(&self, mut buf: Vec<u8>) {
        if buf.capacity() >= READ_CHUNK {
            buf.clear();
            let mut bufs = self.bufs.borrow_mut();
            if bufs.len() < MAX_POOLED_BUFFERS {
                bufs.push(buf);
            }
        }
    }

    /// Gives `buf` a head buffer again, when it lent its own while idle.
    pub fn lend_head(&self, buf: &mut Vec<u8>) {
        if buf.capacity() == 0 {
            *buf = self
                .heads
                .borrow_mut()
                .pop()
                .unwrap_or_else(|| Vec::with_capacity(HEAD_BUF));
        }
    }

    /// Takes an idle connection's head buffer (a grown one is dropped).
    pub fn reclaim_head(&self, buf: &mut Vec<u8>) {
        let mut buf = std::mem::take(buf);
        let mut heads = self.heads.borrow_mut();
        if buf.capacity() <= MAX_KEPT_HEAD && heads.len() < MAX_SPARE_HEADS {
            buf.clear();
            heads.push(buf);
        }
    }
}
