//! Where CDC starts: the server_id it reads as, the position recorded
//! before the full load, and the end of the hand-over window.

use mysql_async::prelude::*;
use tracing::info;

use crate::db::Connector;
use crate::job::{CdcStart, JobSpec};
use crate::model::Checkpoint;
use crate::source::position;
use crate::state::Store;

use super::error::CdcError;
use crate::model::BinlogPos;

pub fn server_id(job: &JobSpec) -> u32 {
    job.source
        .server_id
        .unwrap_or_else(|| 1_000_000 + crate::sql::fnv1a(job.name.as_bytes()) % 1_000_000_000)
}

/// Records where CDC starts, if it is not recorded yet: per `[cdc] start`,
/// the source's head now (`auto`, before the full load copies anything, and
/// `now`), a binlog file and position, or a GTID set.
pub async fn record_start(
    job: &JobSpec,
    source: &Connector,
    target: &Connector,
    store: &Store,
) -> Result<Checkpoint, CdcError> {
    if let Some(cp) = store.checkpoint(&job.name)? {
        return Ok(cp);
    }
    // A marker row left by an earlier job of the same name on this target
    // belongs to another history: forget it.
    let mut t = target.connect().await?;
    let exists: Option<String> = t
        .query_first(
            "SELECT TABLE_NAME FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = 'ferry_meta' AND TABLE_NAME = 'checkpoints'",
        )
        .await
        .map_err(target.query_err("looking for ferry_meta.checkpoints"))?;
    if exists.is_some() {
        t.exec_drop(
            "DELETE FROM ferry_meta.checkpoints WHERE job = ? OR job LIKE ?",
            (&job.name, format!("{}#%", job.name)),
        )
        .await
        .map_err(target.query_err("clearing an old checkpoint row"))?;
    }
    let _ = t.disconnect().await;
    first_checkpoint(job, source, store).await
}

/// [`record_start`] for a PostgreSQL target (its markers live in
/// `ferry.checkpoints` there).
pub async fn record_start_postgresql(
    job: &JobSpec,
    source: &Connector,
    target: &crate::pg::PgConnector,
    store: &Store,
) -> Result<Checkpoint, CdcError> {
    if let Some(cp) = store.checkpoint(&job.name)? {
        return Ok(cp);
    }
    let t = target.connect().await?;
    t.batch_execute(super::pgapply::MARKERS)
        .await
        .map_err(crate::pg::query_err("creating ferry.checkpoints"))?;
    t.execute(
        "DELETE FROM ferry.checkpoints WHERE job = $1 OR job LIKE $2",
        &[&job.name, &format!("{}#%", job.name)],
    )
    .await
    .map_err(crate::pg::query_err("clearing an old checkpoint row"))?;
    first_checkpoint(job, source, store).await
}

/// The start position as `[cdc] start` says, recorded.
async fn first_checkpoint(
    job: &JobSpec,
    source: &Connector,
    store: &Store,
) -> Result<Checkpoint, CdcError> {
    let (position, gtid) = start_position(job, source).await?;
    let cp = Checkpoint::start(position, gtid);
    store.put_checkpoint(&job.name, &cp)?;
    info!(at = %cp.position, "CDC start position recorded");
    Ok(cp)
}

/// Where `[cdc] start` says the stream begins: the source's head (`auto`,
/// `now`), a file and position, or a GTID set.
pub(super) async fn start_position(
    job: &JobSpec,
    source: &Connector,
) -> Result<(BinlogPos, Option<String>), CdcError> {
    Ok(match &job.cdc.start {
        CdcStart::Auto | CdcStart::Now => {
            let mut conn = source.connect().await?;
            let (pos, gtid) = position::head(&mut conn, source).await?;
            let _ = conn.disconnect().await;
            (pos, (!gtid.is_empty()).then_some(gtid))
        }
        CdcStart::FilePos { file, pos } => (
            BinlogPos {
                file: file.clone(),
                pos: *pos,
            },
            None,
        ),
        // No file yet: the stream starts by GTID and learns the file from
        // the server's first ROTATE.
        CdcStart::Gtid(set) => (
            BinlogPos {
                file: String::new(),
                pos: 4,
            },
            Some(set.clone()),
        ),
    })
}

/// Records the end of the hand-over window (the head after the full load).
pub async fn record_handover_end(
    job: &JobSpec,
    source: &Connector,
    store: &Store,
) -> Result<(), CdcError> {
    let Some(mut cp) = store.checkpoint(&job.name)? else {
        return Ok(());
    };
    if cp.safe_until.is_some() {
        return Ok(());
    }
    let mut conn = source.connect().await?;
    let (pos, _) = position::head(&mut conn, source).await?;
    let _ = conn.disconnect().await;
    info!(from = %cp.position, until = %pos, "safe mode over the hand-over window");
    cp.safe_until = Some(pos);
    store.put_checkpoint(&job.name, &cp)?;
    Ok(())
}
