//! Change data capture: the source's binlog applied to the target, one
//! source transaction per target transaction, in commit order.
//!
//! The stream is read by [`crate::source::binlog::BinlogReader`]; the
//! apply loop is [`engine::Engine`] over the [`engine::Target`] seam, with
//! [`follow::Follow`] deciding what each statement means for the selection.
//!
//! Exactly once in effect: each applied transaction also upserts the job's
//! row in `ferry_meta.checkpoints` on the target, in the same transaction,
//! and the checkpoint in redb is written after the commit. On restart the
//! later of the two is where streaming resumes, so a transaction committed
//! just before a crash is never applied twice, keyless tables included.
//! Between the positions recorded before and after the full load (the
//! hand-over) changes are applied in *safe mode*: INSERT becomes an upsert,
//! and an UPDATE that finds no row upserts its after image. (Not REPLACE:
//! its DELETE would cascade to child rows on the target.)

mod apply;
pub mod engine;
mod error;
pub mod event;
pub mod follow;
mod health;
mod pgapply;
mod run;
mod start;
pub mod subscribe;
#[cfg(test)]
mod testkit;
mod xa;

pub use error::CdcError;
pub use health::{sample_while_down, watch_retention, Live, SourceInfo};
pub use pgapply::MARKERS as PG_MARKERS;
pub use run::{decode_only, run, run_postgresql};
pub use start::{record_handover_end, record_start, record_start_postgresql, server_id};
