//! A rows-per-second limit shared by a job's workers, changeable live.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Rows-per-second limit shared by a job's workers; changeable live.
#[derive(Debug, Default)]
pub struct RateLimit {
    rate: AtomicU64,
    next_free: Mutex<Option<Instant>>,
}

impl RateLimit {
    pub fn new(rows_per_sec: u64) -> Self {
        let r = RateLimit::default();
        r.set(rows_per_sec);
        r
    }

    pub fn set(&self, rows_per_sec: u64) {
        self.rate.store(rows_per_sec, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    /// Waits until `rows` may pass; at most one second of burst.
    pub async fn acquire(&self, rows: u64) {
        let rate = self.get();
        if rate == 0 || rows == 0 {
            return;
        }
        let begin = {
            let now = Instant::now();
            let mut next = self.next_free.lock().unwrap_or_else(|p| p.into_inner());
            let floor = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
            let begin = next.map_or(now, |n| n.max(floor));
            *next = Some(begin + Duration::from_secs_f64(rows as f64 / rate as f64));
            begin
        };
        if begin > Instant::now() {
            tokio::time::sleep_until(begin.into()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rate_limit_spaces_batches() {
        let r = RateLimit::new(1000);
        let start = Instant::now();
        for _ in 0..5 {
            r.acquire(500).await;
        }
        // 2500 rows at 1000/s with one second of burst: at least 1.5 s.
        assert!(
            start.elapsed() >= Duration::from_millis(1400),
            "{:?}",
            start.elapsed()
        );
        r.set(0);
        let start = Instant::now();
        r.acquire(1_000_000).await;
        assert!(start.elapsed() < Duration::from_millis(100));
    }
}
