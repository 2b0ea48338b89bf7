//! Balancing tables, computed on the control side so that a worker picks with a lookup.
//!
//! [`schedule`] turns endpoint weights into a sequence of endpoint indices using nginx's
//! smooth weighted round-robin, so that a worker picks with one cursor increment and no
//! per-endpoint state. Weights are divided by their GCD first; a schedule longer than
//! [`MAX_SCHEDULE`] is produced from proportionally reduced weights.
//!
//! [`maglev`] builds Google's Maglev lookup table (weighted as Envoy weights it) from the
//! endpoints' addresses, and [`hash64`] hashes keys and names with a fixed function: the
//! same endpoints give the same table on every worker and every gateway replica, and an
//! endpoint that joins or leaves moves about 1/N of the keys.

/// Upper bound on a schedule's length (the sum of reduced weights).
pub const MAX_SCHEDULE: u64 = 4096;

/// The pick sequence for `weights` (0 = never picked). Empty when every weight is 0.
pub fn schedule(weights: &[u32]) -> Vec<u32> {
    let g = weights.iter().copied().filter(|w| *w > 0).fold(0u32, gcd);
    if g == 0 {
        return Vec::new();
    }
    let mut w: Vec<u64> = weights.iter().map(|x| u64::from(*x / g)).collect();
    let total: u64 = w.iter().sum();
    if total > MAX_SCHEDULE {
        // Scale down, keeping every non-zero weight at least 1.
        for x in &mut w {
            if *x > 0 {
                *x = (*x * MAX_SCHEDULE / total).max(1);
            }
        }
    }
    let total: i64 = w.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = usize::MAX;
        for (i, wi) in w.iter().enumerate() {
            if *wi == 0 {
                continue;
            }
            current[i] += *wi as i64;
            if best == usize::MAX || current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u32);
    }
    out
}

/// Entries of a Maglev table: a prime well above any upstream's endpoint count (Envoy's
/// default), so that each endpoint's share is within about 1% of its weight's.
pub const MAGLEV_SIZE: u64 = 65_537;

/// A fixed 64-bit hash (FNV-1a, then a splitmix64 finalizer to spread its bits): stable
/// across processes, builds and machines, unlike the standard library's.
pub fn hash64(bytes: &[u8]) -> u64 {
    hash64_seeded(bytes, 0xcbf2_9ce4_8422_2325)
}

fn hash64_seeded(bytes: &[u8], seed: u64) -> u64 {
    let mut h = seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The Maglev table for `(name, weight, index)` entries: [`MAGLEV_SIZE`] slots, each the
/// `index` of an entry, shares in proportion to the weights. Empty when no weight is > 0.
pub fn maglev(entries: &[(&[u8], u32, u32)]) -> Vec<u32> {
    let entries: Vec<&(&[u8], u32, u32)> = entries.iter().filter(|e| e.1 > 0).collect();
    let Some(max) = entries.iter().map(|e| u64::from(e.1)).max() else {
        return Vec::new();
    };
    let m = MAGLEV_SIZE;
    // Each entry's permutation: offset, skip (non-zero, so it visits every slot: m prime).
    let perm: Vec<(u64, u64)> = entries
        .iter()
        .map(|e| {
            let offset = hash64_seeded(e.0, 0x9e37_79b9_7f4a_7c15) % m;
            let skip = hash64_seeded(e.0, 0x1234_5678_9abc_def1) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; entries.len()];
    let mut target = vec![0u64; entries.len()];
    const EMPTY: u32 = u32::MAX;
    let mut table = vec![EMPTY; m as usize];
    let mut filled = 0u64;
    let mut iteration = 1u64;
    while filled < m {
        for (i, e) in entries.iter().enumerate() {
            if filled == m {
                break;
            }
            // An entry of the largest weight takes a slot every round, one of a third of
            // it every third round (Envoy's weighted Maglev).
            if iteration * u64::from(e.1) < target[i] {
                continue;
            }
            target[i] += max;
            let (offset, skip) = perm[i];
            loop {
                let c = ((offset + skip * next[i]) % m) as usize;
                next[i] += 1;
                if table[c] == EMPTY {
                    table[c] = e.2;
                    filled += 1;
                    break;
                }
            }
        }
        iteration += 1;
    }
    table
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_weights_rotate_in_order() {
        assert_eq!(schedule(&[1, 1, 1]), [0, 1, 2]);
        assert_eq!(schedule(&[5, 5, 5]), [0, 1, 2]);
    }

    #[test]
    fn weights_are_smooth_and_proportional() {
        let s = schedule(&[5, 1, 1]);
        assert_eq!(s, [0, 0, 1, 0, 2, 0, 0]);
        let s = schedule(&[3, 0, 1]);
        assert_eq!(s.iter().filter(|i| **i == 0).count(), 3);
        assert!(!s.contains(&1));
    }

    const PINNED: u64 = 8_797_103_408_588_478_355;

    fn names(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("10.0.{}.{}:8080", i / 250, i % 250 + 1))
            .collect()
    }

    fn table(names: &[String], weights: &[u32]) -> Vec<u32> {
        let entries: Vec<(&[u8], u32, u32)> = names
            .iter()
            .zip(weights)
            .enumerate()
            .map(|(i, (n, w))| (n.as_bytes(), *w, i as u32))
            .collect();
        maglev(&entries)
    }

    #[test]
    fn maglev_shares_follow_weights_and_a_removal_moves_about_one_nth_of_the_keys() {
        let n = names(10);
        let t = table(&n, &[1; 10]);
        assert_eq!(t.len() as u64, MAGLEV_SIZE);
        for i in 0..10u32 {
            let share = t.iter().filter(|x| **x == i).count() as f64 / t.len() as f64;
            assert!((share - 0.1).abs() < 0.01, "endpoint {i}: {share}");
        }
        // Endpoint 3 leaves: its keys move, and only a few others.
        let mut left = n.clone();
        left.remove(3);
        let idx: Vec<u32> = (0..10u32).filter(|i| *i != 3).collect();
        let entries: Vec<(&[u8], u32, u32)> = left
            .iter()
            .zip(&idx)
            .map(|(s, i)| (s.as_bytes(), 1, *i))
            .collect();
        let after = maglev(&entries);
        let moved = t.iter().zip(&after).filter(|(a, b)| a != b).count() as f64 / t.len() as f64;
        eprintln!("maglev: 1 of 10 removed, {moved:.4} of the table moved");
        assert!((0.1..0.13).contains(&moved), "moved {moved}");
        // Weights: 3:1.
        let w = table(&n[..2], &[3, 1]);
        let share = w.iter().filter(|x| **x == 0).count() as f64 / w.len() as f64;
        assert!((share - 0.75).abs() < 0.01, "{share}");
        // The same names give the same table: every worker, every replica.
        assert_eq!(table(&n, &[1; 10]), t);
        // The hash is pinned: a changed value would move every key of every replica.
        assert_eq!(hash64(b"user-42"), PINNED);
    }

    #[test]
    fn all_zero_is_empty_and_huge_weights_are_bounded() {
        assert!(schedule(&[0, 0]).is_empty());
        assert!(schedule(&[]).is_empty());
        let s = schedule(&[1_000_000, 999_999, 1]);
        assert!(s.len() as u64 <= MAX_SCHEDULE + 3);
        assert!(s.contains(&2));
    }
}
