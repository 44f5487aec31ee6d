//! A table's live full-load progress, shared by the load and whoever
//! reports it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Live progress of one table, shared with whoever reports it.
#[derive(Debug)]
pub struct TableProgress {
    pub table: String,
    pub rows_estimate: AtomicU64,
    pub rows_done: AtomicU64,
    pub chunks_total: u32,
    pub chunks_done: AtomicU64,
    pub done: AtomicBool,
    /// Unix ms of the first chunk of this run, 0 before.
    pub started_ms: AtomicU64,
    /// Unix ms when the last chunk committed, 0 before.
    pub finished_ms: AtomicU64,
    /// Rows done before this run (a resume), excluded from rates.
    pub rows_before: u64,
}

impl TableProgress {
    /// Back to nothing copied (the table is copied again).
    pub fn reset(&self) {
        self.rows_done.store(0, Ordering::Relaxed);
        self.chunks_done.store(0, Ordering::Relaxed);
        self.done.store(false, Ordering::Relaxed);
        self.finished_ms.store(0, Ordering::Relaxed);
    }
}
