//! The deterministic data `/bytes`, `/stream-bytes` and `/close-delimited` serve, which a
//! test can check piece by piece without holding a whole body.
//!
//! Runs on: any thread. Pure.

/// SplitMix64's increment.
const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
/// Seed of the generator behind [`pattern_bytes`].
pub const PATTERN_SEED: u64 = 42;

/// Word `k` of the pattern: the `k`-th output (from 0) of SplitMix64 seeded with
/// [`PATTERN_SEED`].
fn pattern_word(k: u64) -> u64 {
    let mut z = PATTERN_SEED.wrapping_add(k.wrapping_add(1).wrapping_mul(GOLDEN_GAMMA));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fills `out` with the deterministic data that `/bytes`, `/stream-bytes` and
/// `/close-delimited` serve, starting at byte `offset` of the stream.
///
/// Byte `i` depends only on `i`: it is byte `i % 8` (little-endian) of the `i / 8`-th output of
/// SplitMix64 seeded with [`PATTERN_SEED`], so any window can be produced independently.
pub fn pattern_bytes(offset: u64, out: &mut [u8]) {
    let skip = (offset % 8) as usize;
    let lead = if skip == 0 {
        0
    } else {
        (8 - skip).min(out.len())
    };
    let (head, rest) = out.split_at_mut(lead);
    if lead > 0 {
        head.copy_from_slice(&pattern_word(offset / 8).to_le_bytes()[skip..skip + lead]);
    }
    let mut k = offset.wrapping_add(lead as u64) / 8;
    let mut words = rest.chunks_exact_mut(8);
    for word in &mut words {
        word.copy_from_slice(&pattern_word(k).to_le_bytes());
        k = k.wrapping_add(1);
    }
    let tail = words.into_remainder();
    if !tail.is_empty() {
        let n = tail.len();
        tail.copy_from_slice(&pattern_word(k).to_le_bytes()[..n]);
    }
}

/// Whether `data` equals the pattern starting at `offset` (for checking streamed bodies
/// piece by piece without holding them).
pub fn pattern_matches(offset: u64, data: &[u8]) -> bool {
    let mut expected = [0u8; 4096];
    let mut at = offset;
    data.chunks(expected.len()).all(|piece| {
        let want = &mut expected[..piece.len()];
        pattern_bytes(at, want);
        at = at.wrapping_add(piece.len() as u64);
        want == piece
    })
}
