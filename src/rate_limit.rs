//! Per-client rate limiting (GCRA, governor): per session when logged in, per client address
//! otherwise, at `ALPHABANK_RATE_LIMIT_PER_MIN`. The key table is bounded: idle keys are evicted,
//! and when the table is full of recent keys, further new clients share one overflow bucket —
//! memory stays bounded under a flood of distinct addresses. Over the limit a logged-in session
//! also ends (the original design's "bot killer"). This limiter is per instance by design; every
//! correctness-relevant limit (lockout, login throttling, captcha replay) lives in the database.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Most distinct clients tracked at once (about 100 bytes each).
pub const RATE_LIMIT_KEYS_MAX: usize = 65_536;
/// Key shared by new clients while the table is full.
const OVERFLOW_KEY: &str = "overflow";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Limited { retry_after: Duration },
}

pub struct ClientLimiter {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl std::fmt::Debug for ClientLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientLimiter({} keys)", self.limiter.len())
    }
}

impl ClientLimiter {
    pub fn per_minute(requests: u32) -> Self {
        let n = NonZeroU32::new(requests.max(1)).unwrap_or(NonZeroU32::MIN);
        ClientLimiter {
            limiter: RateLimiter::keyed(Quota::per_minute(n).allow_burst(n)),
            clock: DefaultClock::default(),
        }
    }

    /// Counts one request for `key`.
    pub fn check(&self, key: &str) -> Decision {
        let mut key = key.to_string();
        if self.limiter.len() >= RATE_LIMIT_KEYS_MAX {
            self.limiter.retain_recent();
            if self.limiter.len() >= RATE_LIMIT_KEYS_MAX {
                key = OVERFLOW_KEY.to_string();
            }
        }
        match self.limiter.check_key(&key) {
            Ok(()) => Decision::Allowed,
            Err(not_until) => Decision::Limited {
                retry_after: not_until.wait_time_from(self.clock.now()),
            },
        }
    }

    /// Evicts keys that are indistinguishable from new ones (run periodically).
    pub fn evict_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sixty_first_request_in_a_minute_is_limited() {
        let limiter = ClientLimiter::per_minute(60);
        for _ in 0..60 {
            assert_eq!(limiter.check("ip:1.2.3.4"), Decision::Allowed);
        }
        assert!(matches!(
            limiter.check("ip:1.2.3.4"),
            Decision::Limited { .. }
        ));
        assert_eq!(
            limiter.check("ip:5.6.7.8"),
            Decision::Allowed,
            "other clients are unaffected"
        );
    }

    #[test]
    fn a_flood_of_distinct_clients_keeps_the_table_bounded() {
        let limiter = ClientLimiter::per_minute(60);
        for i in 0..100_000u32 {
            let _ = limiter.check(&format!("ip:{}", std::net::Ipv4Addr::from(i)));
        }
        assert!(
            limiter.len() <= RATE_LIMIT_KEYS_MAX + 1,
            "{} keys",
            limiter.len()
        );
    }
}
