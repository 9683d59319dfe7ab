//! Retries: how long a subscription waits after a failed attempt, and
//! after an error of its own (the database).

use std::time::Duration;

/// After an error of the task itself (the database), before starting again.
pub(super) const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);
pub(super) const FIRST_BACKOFF: Duration = Duration::from_secs(1);
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Exponential from 1 s, doubling per failed attempt up to 5 min, each wait
/// between half and all of that (jitter: receivers coming back are not hit
/// by every sender at once).
pub(super) fn backoff(attempts: i32) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(0)
        .min(16);
    let full = (FIRST_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF);
    let mut random = [0u8; 2];
    getrandom::getrandom(&mut random).expect("the OS random source works");
    let fraction = 0.5 + f64::from(u16::from_le_bytes(random)) / f64::from(u16::MAX) / 2.0;
    full.mul_f64(fraction).max(FIRST_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_to_five_minutes_with_jitter() {
        for _ in 0..100 {
            assert_eq!(backoff(1), FIRST_BACKOFF);
            let third = backoff(3);
            assert!((Duration::from_secs(2)..=Duration::from_secs(4)).contains(&third));
            let late = backoff(40);
            assert!((Duration::from_secs(150)..=MAX_BACKOFF).contains(&late));
        }
    }
}
