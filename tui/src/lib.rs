//! Ferry's terminal console (issue 5). It renders the runner's status model
//! and sends commands over the control socket; it never links mysql_async or
//! redb. For now it holds only the view-model vocabulary it will render.

use serde::{Deserialize, Serialize};

/// One job as the console shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRow {
    pub name: String,
    pub mode: String,
    pub state: String,
    pub rows_done: u64,
    pub rows_total: u64,
}

impl JobRow {
    /// Progress in 0..=1, for a gauge.
    pub fn ratio(&self) -> f64 {
        if self.rows_total == 0 {
            0.0
        } else {
            (self.rows_done as f64 / self.rows_total as f64).min(1.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_is_bounded() {
        let mut j = JobRow {
            name: "a".into(),
            mode: "full".into(),
            state: "full_load".into(),
            rows_done: 5,
            rows_total: 10,
        };
        assert_eq!(j.ratio(), 0.5);
        j.rows_done = 20;
        assert_eq!(j.ratio(), 1.0);
        j.rows_total = 0;
        assert_eq!(j.ratio(), 0.0);
    }
}
