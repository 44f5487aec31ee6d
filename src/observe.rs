//! How the engine tells its user what happens. The engine never prints:
//! it records events in the state (`ferry status`, the console) and tells
//! an [`Observer`] the binary supplies (the `ferry` binary writes lines to
//! stderr, or nothing while the console owns the terminal).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::model::TableProgress;

/// A report that runs beside a full load until the load is over.
pub type Watch = Pin<Box<dyn Future<Output = ()> + Send>>;

pub trait Observer: Send + Sync {
    /// A line for the operator about `job`: a stage, a pause, a retry, a
    /// summary.
    fn say(&self, job: &str, line: &str);

    /// A full load of `tables` begins; the returned report runs (and is
    /// awaited by the runner) until `done` fires.
    fn full_load(
        &self,
        job: &str,
        tables: Vec<Arc<TableProgress>>,
        done: CancellationToken,
    ) -> Watch {
        let _ = (job, tables);
        Box::pin(async move { done.cancelled().await })
    }
}

/// Tells nobody: for tests and for programs that read the state instead.
pub struct Silent;

impl Observer for Silent {
    fn say(&self, _job: &str, _line: &str) {}
}
