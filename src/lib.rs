//! Ferry's engine: job files, the state store, precheck, schema copy and the
//! parallel, resumable full load. The `ferry` binary is a thin shell over it.

pub mod catalog;
pub mod db;
pub mod job;
pub mod state;
pub mod check;
pub mod schema;
pub mod sql;
pub mod full;
pub mod progress;
pub mod runner;
