//! Per-key rate limits (`--rate-limit-requests`, `--rate-limit-tokens`, per minute): two token
//! buckets per API key that refill continuously and hold at most a minute's worth. A request
//! takes one request token when it arrives; its prompt and generated tokens are charged when it
//! ends (the bucket may go negative: a key then waits until it refills). Refusals are 429 with
//! the seconds until the bucket allows the next request in `Retry-After`.

use parking_lot::Mutex;
use std::time::Instant;

/// Per-minute limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateLimits {
    pub requests_per_minute: Option<f64>,
    pub tokens_per_minute: Option<f64>,
}

#[derive(Debug)]
struct Bucket {
    level: f64,
    at: Instant,
}

impl Bucket {
    fn full(limit: f64) -> Self {
        Self {
            level: limit,
            at: Instant::now(),
        }
    }

    /// Refills at `limit` per minute up to `limit`.
    fn refill(&mut self, limit: f64, now: Instant) {
        let secs = (now - self.at).as_secs_f64();
        self.level = (self.level + secs * limit / 60.0).min(limit);
        self.at = now;
    }

    /// Seconds until the level reaches `need`.
    fn wait(&self, need: f64, limit: f64) -> u64 {
        ((need - self.level) * 60.0 / limit).ceil().max(1.0) as u64
    }
}

/// The buckets of every key (index into the server's key list).
#[derive(Debug)]
pub struct RateLimiter {
    limits: RateLimits,
    /// per key: (requests, tokens)
    buckets: Vec<Mutex<(Bucket, Bucket)>>,
}

impl RateLimiter {
    pub fn new(limits: RateLimits, num_keys: usize) -> Self {
        let full = |l: Option<f64>| Bucket::full(l.unwrap_or(0.0));
        Self {
            limits,
            buckets: (0..num_keys)
                .map(|_| {
                    Mutex::new((
                        full(limits.requests_per_minute),
                        full(limits.tokens_per_minute),
                    ))
                })
                .collect(),
        }
    }

    /// Takes one request for `key`, or the seconds to wait.
    pub fn admit(&self, key: usize) -> Result<(), u64> {
        let Some(b) = self.buckets.get(key) else {
            return Ok(());
        };
        let mut b = b.lock();
        let now = Instant::now();
        if let Some(limit) = self.limits.tokens_per_minute {
            b.1.refill(limit, now);
            if b.1.level < 1.0 {
                return Err(b.1.wait(1.0, limit));
            }
        }
        if let Some(limit) = self.limits.requests_per_minute {
            b.0.refill(limit, now);
            if b.0.level < 1.0 {
                return Err(b.0.wait(1.0, limit));
            }
            b.0.level -= 1.0;
        }
        Ok(())
    }

    /// Charges `tokens` (prompt + generated) to `key`.
    pub fn charge(&self, key: usize, tokens: usize) {
        if let (Some(limit), Some(b)) = (self.limits.tokens_per_minute, self.buckets.get(key)) {
            let mut b = b.lock();
            b.1.refill(limit, Instant::now());
            b.1.level -= tokens as f64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_tokens_run_out_per_key() {
        let r = RateLimiter::new(
            RateLimits {
                requests_per_minute: Some(2.0),
                tokens_per_minute: Some(100.0),
            },
            2,
        );
        assert!(r.admit(0).is_ok() && r.admit(0).is_ok());
        let wait = r.admit(0).unwrap_err();
        assert!((1..=30).contains(&wait), "{wait}");
        assert!(r.admit(1).is_ok(), "keys have their own buckets");
        r.charge(1, 150);
        let wait = r.admit(1).unwrap_err();
        assert!(
            (30..=31).contains(&wait),
            "51 tokens to refill at 100/min: {wait}"
        );
    }
}
