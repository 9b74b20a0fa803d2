//! Leadership as a lease in a JetStream KV bucket: the active node rewrites
//! its entry every `renew_every`, each write a compare-and-set on the last
//! revision; a standby that sees the entry unchanged for a whole `ttl` (by
//! its own monotonic clock) takes it with a compare-and-set of its own.
//!
//! Timing decides only *when* a node tries; it never decides safety. The
//! active node stops appending `ttl - margin` after the renewal it sent
//! last, before any standby can think the lease lapsed, and the command
//! stream's expected-last-sequence check refuses a deposed writer's append
//! even if that clock reasoning fails (a paused process, a jumping clock).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The lease's entry: who holds it, where it answers, for which term.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseValue {
    pub node: String,
    /// The holder's HTTP address, where other nodes forward writes.
    pub http: String,
    pub term: u64,
}

/// The lease timings.
#[derive(Clone, Copy, Debug)]
pub struct LeaseTiming {
    /// A lease not renewed for this long has lapsed.
    pub ttl: Duration,
    /// How often the holder renews.
    pub renew_every: Duration,
    /// The holder stops appending this long before a standby may see a lapse.
    pub margin: Duration,
    /// How often a standby reads the entry.
    pub watch_every: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming {
            ttl: Duration::from_millis(2_000),
            renew_every: Duration::from_millis(400),
            margin: Duration::from_millis(500),
            watch_every: Duration::from_millis(150),
        }
    }
}

impl LeaseTiming {
    /// Until when a holder whose renewal was sent at `sent` may append.
    pub fn holds_until(&self, sent: Instant) -> Instant {
        sent + self.ttl.saturating_sub(self.margin)
    }
}

/// What a standby last read of the lease entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// No entry, or a deleted one (a holder that let go): free at once.
    Free {
        revision: u64,
    },
    Held {
        revision: u64,
        value: LeaseValue,
    },
}

/// A standby's view of the lease: when the entry last changed, by its clock.
#[derive(Debug, Default)]
pub struct LeaseWatch {
    last: Option<(Observed, Instant)>,
}

impl LeaseWatch {
    /// Take a reading made at `now`; a changed entry restarts the lapse clock.
    pub fn observe(&mut self, observed: Observed, now: Instant) {
        if self.last.as_ref().is_none_or(|(last, _)| *last != observed) {
            self.last = Some((observed, now));
        }
    }

    /// The revision to compare-and-set against if the lease may be taken at
    /// `now`: free, or unchanged for a whole `ttl`.
    pub fn takeable(&self, now: Instant, ttl: Duration) -> Option<u64> {
        match &self.last {
            Some((Observed::Free { revision }, _)) => Some(*revision),
            Some((Observed::Held { revision, .. }, since)) if now.duration_since(*since) >= ttl => Some(*revision),
            _ => None,
        }
    }

    /// The holder as last read.
    pub fn holder(&self) -> Option<&LeaseValue> {
        match &self.last {
            Some((Observed::Held { value, .. }, _)) => Some(value),
            _ => None,
        }
    }

    /// The highest term seen, so a new holder takes the next one.
    pub fn term(&self) -> u64 {
        self.holder().map_or(0, |value| value.term)
    }

    pub fn forget(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(revision: u64, node: &str) -> Observed {
        Observed::Held { revision, value: LeaseValue { node: node.into(), http: "127.0.0.1:1".into(), term: revision } }
    }

    #[test]
    fn a_lease_is_takeable_only_when_free_or_unchanged_for_a_whole_ttl() {
        let ttl = Duration::from_secs(2);
        let t0 = Instant::now();
        let mut watch = LeaseWatch::default();
        assert_eq!(watch.takeable(t0, ttl), None, "nothing read yet");
        watch.observe(held(4, "a"), t0);
        assert_eq!(watch.takeable(t0 + Duration::from_millis(1_999), ttl), None);
        // The same reading again does not restart the clock...
        watch.observe(held(4, "a"), t0 + Duration::from_secs(1));
        assert_eq!(watch.takeable(t0 + ttl, ttl), Some(4));
        // ...a renewal does.
        watch.observe(held(5, "a"), t0 + ttl);
        assert_eq!(watch.takeable(t0 + ttl + Duration::from_secs(1), ttl), None);
        assert_eq!(watch.takeable(t0 + ttl * 2, ttl), Some(5));
        assert_eq!(watch.term(), 5);
        watch.observe(Observed::Free { revision: 6 }, t0 + ttl * 2);
        assert_eq!(watch.takeable(t0 + ttl * 2, ttl), Some(6), "a released lease is free at once");
        assert_eq!(watch.holder(), None);
    }

    #[test]
    fn the_holder_stops_before_any_standby_may_see_a_lapse() {
        let timing = LeaseTiming::default();
        let sent = Instant::now();
        // A standby reads the renewal no earlier than it was sent, and waits a whole ttl.
        let earliest_takeover = sent + timing.ttl;
        assert!(timing.holds_until(sent) + timing.margin <= earliest_takeover);
        assert!(timing.renew_every * 3 < timing.ttl - timing.margin, "several renewals fit in one lease");
    }
}
