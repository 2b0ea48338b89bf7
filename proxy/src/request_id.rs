//! Request ids: random UUIDs (version 4) from a per-worker xoshiro256++ generator,
//! seeded once from the OS.
//!
//! Runs on: a worker, per request (a few multiplications and a 36-byte copy: no
//! allocation, no lock, no atomic; the state is a `Cell`, so a generator is not `Sync`).
//! [`RequestIds::new`] reads `/dev/urandom` once, when the worker starts. The ids are
//! unique, not secret: do not use them as tokens.

use std::cell::Cell;
use std::fmt;
use std::io::Read;
use std::time::{SystemTime, UNIX_EPOCH};

/// Lowercase hex digits.
const HEX: &[u8; 16] = b"0123456789abcdef";

/// Where each of the 16 bytes of a UUID starts in its 36-byte text (hyphens at 8, 13,
/// 18 and 23).
const OFFSETS: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];

/// One worker's request id generator (not `Sync`; no shared state).
pub struct RequestIds {
    /// xoshiro256++ state; never all zero.
    state: Cell<[u64; 4]>,
}

impl RequestIds {
    /// A generator seeded from the OS (16 bytes of `/dev/urandom`) mixed with `worker`;
    /// if the OS cannot be read, from the time and the process id (still mixed with
    /// `worker`, so workers differ).
    pub fn new(worker: usize) -> RequestIds {
        RequestIds::from_seed(os_seed().unwrap_or_else(fallback_seed), worker)
    }

    /// The next id as UUID version 4 text: 36 bytes, lowercase hex, hyphens at 8, 13, 18
    /// and 23, the version nibble `4` and the RFC 9562 variant (`8`, `9`, `a` or `b`).
    pub fn next(&self) -> [u8; 36] {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next_u64().to_be_bytes());
        bytes[8..].copy_from_slice(&self.next_u64().to_be_bytes());
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        format_uuid(&bytes)
    }

    /// A generator from a 16-byte seed and the worker number (expanded by SplitMix64).
    fn from_seed(seed: [u8; 16], worker: usize) -> RequestIds {
        let [a, b] = [&seed[..8], &seed[8..]].map(|half| {
            let mut word = [0u8; 8];
            word.copy_from_slice(half);
            u64::from_le_bytes(word)
        });
        let mut x = a ^ (worker as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut y = b;
        // SplitMix64 is a bijection of its counter, so two outputs in a row are never
        // both zero: the state is never all zero.
        let state = [
            splitmix64(&mut x),
            splitmix64(&mut x),
            splitmix64(&mut y),
            splitmix64(&mut y),
        ];
        RequestIds {
            state: Cell::new(state),
        }
    }

    /// xoshiro256++ (Blackman and Vigna): the next 64 random bits.
    fn next_u64(&self) -> u64 {
        let mut s = self.state.get();
        let out = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        self.state.set(s);
        out
    }
}

impl fmt::Debug for RequestIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestIds").finish_non_exhaustive()
    }
}

/// 16 bytes as `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
fn format_uuid(bytes: &[u8; 16]) -> [u8; 36] {
    let mut text = [b'-'; 36];
    for (byte, at) in bytes.iter().zip(OFFSETS) {
        text[at] = HEX[usize::from(byte >> 4)];
        text[at + 1] = HEX[usize::from(byte & 0x0f)];
    }
    text
}

/// SplitMix64: the next output of the sequence at `x` (seed expansion only).
fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 16 bytes from `/dev/urandom`, or `None` if it cannot be read.
fn os_seed() -> Option<[u8; 16]> {
    let mut seed = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .ok()?;
    Some(seed)
}

/// A weak seed for when the OS has no randomness to give: the wall clock in
/// nanoseconds and the process id.
fn fallback_seed() -> [u8; 16] {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mixed = nanos ^ (u128::from(std::process::id()) << 96);
    mixed.to_le_bytes()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn assert_uuid_v4(id: &[u8; 36]) {
        let text = std::str::from_utf8(id).unwrap();
        for (i, c) in text.bytes().enumerate() {
            if [8, 13, 18, 23].contains(&i) {
                assert_eq!(c, b'-', "{text}");
            } else {
                assert!(matches!(c, b'0'..=b'9' | b'a'..=b'f'), "{text}");
            }
        }
        assert_eq!(id[14], b'4', "version: {text}");
        assert!(
            matches!(id[19], b'8' | b'9' | b'a' | b'b'),
            "variant: {text}"
        );
    }

    #[test]
    fn ids_are_version_4_uuids_in_lowercase_hex() {
        let ids = RequestIds::new(0);
        for _ in 0..1_000 {
            assert_uuid_v4(&ids.next());
        }
    }

    #[test]
    fn bytes_are_written_in_order_around_the_hyphens() {
        let bytes: [u8; 16] = std::array::from_fn(|i| (i as u8) * 0x11);
        assert_eq!(
            &format_uuid(&bytes),
            b"00112233-4455-6677-8899-aabbccddeeff"
        );
    }

    #[test]
    fn generators_of_different_workers_differ() {
        let (a, b) = (RequestIds::new(0), RequestIds::new(1));
        assert_ne!(a.next(), b.next());
        let seed = [7u8; 16];
        let (a, b) = (
            RequestIds::from_seed(seed, 0),
            RequestIds::from_seed(seed, 1),
        );
        assert_ne!(a.next(), b.next());
        let (a, b) = (
            RequestIds::from_seed(fallback_seed(), 2),
            RequestIds::from_seed(fallback_seed(), 3),
        );
        assert_ne!(a.next(), b.next());
    }

    #[test]
    fn ten_thousand_ids_are_unique() {
        let ids = RequestIds::new(3);
        let seen: HashSet<[u8; 36]> = (0..10_000).map(|_| ids.next()).collect();
        assert_eq!(seen.len(), 10_000);
    }

    #[test]
    fn an_all_zero_seed_still_generates() {
        let ids = RequestIds::from_seed([0; 16], 0);
        assert_ne!(ids.next(), ids.next());
        assert_uuid_v4(&ids.next());
    }
}
