//! What the scheduler keeps per webhook besides its due time: the
//! webhook's own delivery settings (its ordering and rate limit), read once
//! and refreshed by every attempt, which loads the webhook anyway; and the
//! token bucket of its rate limit.

use crate::records::{DeliveryOrder, Webhook};

/// A webhook's delivery settings as the scheduler applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub rate_per_sec: Option<u32>,
    pub order: DeliveryOrder,
}

impl Limits {
    /// No limit beyond the gateway's: a webhook the store no longer has.
    pub const NONE: Limits = Limits {
        rate_per_sec: None,
        order: DeliveryOrder::Parallel,
    };

    pub fn of(webhook: &Webhook) -> Self {
        Self {
            rate_per_sec: webhook.rate_limit_per_sec,
            order: webhook.ordering,
        }
    }

    /// Attempts in flight at most: one for FIFO, else the gateway's cap.
    pub fn cap(&self, gateway_cap: usize) -> usize {
        match self.order {
            DeliveryOrder::Fifo => 1,
            DeliveryOrder::Parallel => gateway_cap,
        }
    }
}

/// A token bucket holding one second's worth of attempts (at least one),
/// refilled continuously. Attempts take a token when they are claimed, so
/// retries and redeliveries count like first attempts.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    at_ms: u64,
}

impl Bucket {
    /// A full bucket.
    pub fn full(rate: u32, now_ms: u64) -> Self {
        Self {
            tokens: f64::from(rate.max(1)),
            at_ms: now_ms,
        }
    }

    fn refill(&mut self, rate: u32, now_ms: u64) {
        let rate = f64::from(rate.max(1));
        let elapsed = now_ms.saturating_sub(self.at_ms) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.at_ms = self.at_ms.max(now_ms);
    }

    /// How many whole attempts may start now.
    pub fn available(&mut self, rate: u32, now_ms: u64) -> usize {
        self.refill(rate, now_ms);
        self.tokens.floor().max(0.0) as usize
    }

    pub fn take(&mut self, n: usize) {
        self.tokens -= n as f64;
    }

    /// When the next whole token is there (Unix ms).
    pub fn next_ms(&self, rate: u32) -> u64 {
        let missing = (1.0 - self.tokens).max(0.0);
        let wait = (missing * 1000.0 / f64::from(rate.max(1))).ceil() as u64;
        self.at_ms + wait.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_allows_one_seconds_worth_then_refills_at_the_rate() {
        let mut b = Bucket::full(4, 1_000);
        assert_eq!(b.available(4, 1_000), 4);
        b.take(4);
        assert_eq!(b.available(4, 1_000), 0);
        assert_eq!(b.next_ms(4), 1_250);
        assert_eq!(b.available(4, 1_249), 0);
        assert_eq!(b.available(4, 1_250), 1);
        // Never more than the burst, however long it was idle.
        assert_eq!(b.available(4, 100_000), 4);
    }

    #[test]
    fn a_slow_rate_still_allows_one() {
        let mut b = Bucket::full(1, 0);
        assert_eq!(b.available(1, 0), 1);
        b.take(1);
        assert_eq!(b.next_ms(1), 1_000);
        assert_eq!(b.available(1, 999), 0);
        assert_eq!(b.available(1, 1_000), 1);
    }
}
