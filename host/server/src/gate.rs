//! What stands between a signed request and the engine besides its
//! signature: a request must not count twice, and one key must not take the
//! host from everyone else.
//!
//! - [`ReplayGuard`]: a state-changing request whose signature was already
//!   accepted within the signature window is refused (`401
//!   replayed_signature`). A signature covers the timestamp, and a timestamp
//!   outside the window is refused anyway, so remembering each accepted
//!   signature until its timestamp leaves the window is exact, and bounded.
//! - [`KeyLimits`]: a token bucket per API key (`governor`), `429
//!   rate_limited` past it; a command that made a module fault costs many
//!   tokens, because the engine pays a rollback for it.
//! - Point-in-time rebuilds take a permit of a small semaphore.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};

/// Signatures remembered at most; past it the oldest expire first, and a
/// host that still cannot remember refuses (`unavailable`) rather than forget.
pub const REMEMBERED_SIGNATURES_MAX: usize = 4_000_000;

/// Accepted signatures of state-changing requests, until their timestamp
/// leaves the window.
pub struct ReplayGuard {
    window_ms: u64,
    seen: Mutex<Seen>,
}

struct Seen {
    /// SHA-256 of (API key, signature) to the time it may be forgotten (ms).
    forget_at_ms: HashMap<[u8; 32], u64>,
    /// When to sweep the map next (by its size).
    sweep_at_len: usize,
}

/// Why a request may not go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replay {
    /// Its signature was accepted before.
    Seen,
    /// The host remembers too many signatures to tell.
    Full,
}

impl ReplayGuard {
    pub fn new(window_ms: u64) -> ReplayGuard {
        ReplayGuard { window_ms, seen: Mutex::new(Seen { forget_at_ms: HashMap::new(), sweep_at_len: 1_024 }) }
    }

    /// Record the first use of `signature` by `api_key`, made at `timestamp_ms`;
    /// `Err` if it was used before.
    pub fn first_use(&self, api_key: &str, signature: &[u8], timestamp_ms: u64, now_ms: u64) -> Result<(), Replay> {
        let mut hasher = Sha256::new();
        hasher.update((api_key.len() as u64).to_be_bytes());
        hasher.update(api_key.as_bytes());
        hasher.update(signature);
        let key: [u8; 32] = hasher.finalize().into();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.forget_at_ms.contains_key(&key) {
            return Err(Replay::Seen);
        }
        if seen.forget_at_ms.len() >= seen.sweep_at_len {
            seen.forget_at_ms.retain(|_, forget_at_ms| *forget_at_ms > now_ms);
            // Sweep again when the map has doubled: amortised O(1) per request.
            seen.sweep_at_len = (seen.forget_at_ms.len() * 2).max(1_024);
            if seen.forget_at_ms.len() >= REMEMBERED_SIGNATURES_MAX {
                return Err(Replay::Full);
            }
        }
        // A timestamp up to a window in the future is accepted, so keep it a window past that.
        seen.forget_at_ms.insert(key, timestamp_ms.max(now_ms) + self.window_ms);
        Ok(())
    }

    pub fn remembered(&self) -> usize {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).forget_at_ms.len()
    }
}

/// A token bucket per API key.
pub struct KeyLimits {
    limiter: DefaultKeyedRateLimiter<String>,
    fault_cost: NonZeroU32,
}

impl KeyLimits {
    pub fn new(per_second: u32, burst: u32, fault_cost_requests: u32) -> KeyLimits {
        let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst.max(per_second.get())).unwrap_or(per_second);
        KeyLimits {
            limiter: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
            fault_cost: NonZeroU32::new(fault_cost_requests.min(burst.get())).unwrap_or(NonZeroU32::MIN),
        }
    }

    /// Take one request from the key's bucket; `false` if it is empty.
    pub fn allow(&self, api_key: &str) -> bool {
        self.limiter.check_key(&api_key.to_string()).is_ok()
    }

    /// Charge the key for a command that made a module fault (whatever is left, if less).
    pub fn charge_fault(&self, api_key: &str) {
        let key = api_key.to_string();
        for _ in 0..self.fault_cost.get() {
            if self.limiter.check_key(&key).is_err() {
                return;
            }
        }
    }

    /// Forget keys whose buckets are full again (memory stays bounded by active keys).
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
    }
}

/// Everything the gate keeps, for the handlers.
pub struct Gate {
    pub replay: ReplayGuard,
    pub limits: KeyLimits,
    /// Permits for point-in-time rebuilds.
    pub point_in_time: tokio::sync::Semaphore,
}

impl Gate {
    pub fn new(config: &crate::config::Config) -> Gate {
        Gate {
            replay: ReplayGuard::new(config.signature_window_ms),
            limits: KeyLimits::new(config.rate_limit_per_second, config.rate_limit_burst, config.fault_cost_requests),
            point_in_time: tokio::sync::Semaphore::new(config.point_in_time_concurrent_max.max(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_counts_once_until_it_leaves_the_window() {
        let guard = ReplayGuard::new(5_000);
        assert_eq!(guard.first_use("k", b"sig-1", 1_000, 1_000), Ok(()));
        assert_eq!(guard.first_use("k", b"sig-1", 1_000, 2_000), Err(Replay::Seen));
        assert_eq!(guard.first_use("other", b"sig-1", 1_000, 2_000), Ok(()), "per key");
        assert_eq!(guard.first_use("k", b"sig-2", 1_000, 2_000), Ok(()));
        // Many later requests make it sweep: what left the window is forgotten, the rest kept.
        for i in 0..5_000u32 {
            guard.first_use("k", &i.to_be_bytes(), 10_000, 10_000).unwrap();
        }
        assert!(guard.remembered() <= 5_000 + 3);
        assert_eq!(guard.first_use("k", &7u32.to_be_bytes(), 10_000, 11_000), Err(Replay::Seen));
    }

    #[test]
    fn one_key_is_limited_and_others_are_not() {
        let limits = KeyLimits::new(10, 20, 15);
        let allowed = (0..100).filter(|_| limits.allow("busy")).count();
        assert_eq!(allowed, 20, "the burst, then nothing within the same instant");
        assert!(limits.allow("quiet"), "another key has its own bucket");
        // A fault costs many requests' worth.
        let fresh = KeyLimits::new(10, 20, 15);
        fresh.charge_fault("faulty");
        assert_eq!((0..100).filter(|_| fresh.allow("faulty")).count(), 5);
    }
}
