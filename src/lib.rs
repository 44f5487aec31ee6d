//! Ferry's engine: job files, the state store, precheck, schema copy and the
//! parallel, resumable full load. The `ferry` binary is a thin shell over it.
//!
//! Data from servers and the state file never panics the engine: every
//! unexpected shape is a typed error saying what to do. The lints below
//! hold that line outside tests; the engine never prints either (see
//! [`observe`]).

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented,
        clippy::indexing_slicing,
        clippy::print_stdout,
        clippy::print_stderr
    )
)]

pub mod catalog;
pub mod cdc;
pub mod check;
pub mod control;
pub mod db;
pub mod full;
pub mod job;
pub mod metrics;
pub mod model;
pub mod observe;
pub mod pg;
pub mod progress;
pub mod runner;
pub mod schema;
pub mod sink;
pub mod source;
pub mod sql;
pub mod state;
pub mod status;
pub mod verify;
