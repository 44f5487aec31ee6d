//! Row counts of every selected table on both sides: the cutover's check.

use mysql_async::prelude::*;

use crate::catalog::Catalog;
use crate::db::{qualified, Connector, DbError};
use crate::job::JobSpec;

/// Rows of every selected table on the source and on the target, as
/// (`db.table` on the source, source rows, target rows): the cutover's
/// check. The tables are read from the source now, so tables created since
/// the job started count.
pub async fn counts(
    job: &JobSpec,
    source: &Connector,
    target: &Connector,
) -> Result<Vec<(String, u64, u64)>, DbError> {
    let catalog = Catalog::read(job, source).await?;
    let mut s = source.connect().await?;
    let mut t = target.connect().await?;
    let mut out = Vec::with_capacity(catalog.tables.len());
    for table in &catalog.tables {
        let count = |db: &str| format!("SELECT COUNT(*) FROM {}", qualified(db, &table.name));
        let on_source: Option<u64> = s
            .query_first(count(&table.db))
            .await
            .map_err(source.query_err(format!("counting {}", table.id())))?;
        let on_target: Option<u64> = t
            .query_first(count(&table.target_db))
            .await
            .map_err(target.query_err(format!("counting {}", table.id())))?;
        out.push((table.id(), on_source.unwrap_or(0), on_target.unwrap_or(0)));
    }
    let _ = s.disconnect().await;
    let _ = t.disconnect().await;
    Ok(out)
}
