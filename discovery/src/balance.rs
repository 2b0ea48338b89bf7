//! Weighted round-robin, computed on the control side.
//!
//! [`schedule`] turns endpoint weights into a sequence of endpoint indices using nginx's
//! smooth weighted round-robin, so that a worker picks with one cursor increment and no
//! per-endpoint state. Weights are divided by their GCD first; a schedule longer than
//! [`MAX_SCHEDULE`] is produced from proportionally reduced weights.

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

    #[test]
    fn all_zero_is_empty_and_huge_weights_are_bounded() {
        assert!(schedule(&[0, 0]).is_empty());
        assert!(schedule(&[]).is_empty());
        let s = schedule(&[1_000_000, 999_999, 1]);
        assert!(s.len() as u64 <= MAX_SCHEDULE + 3);
        assert!(s.contains(&2));
    }
}
