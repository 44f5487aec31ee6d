//! Ferry's terminal console (issue 5). It renders the runner's status model
//! (`ferry_proto::Status`) and turns keys into commands for the control
//! socket; it never links mysql_async or redb.
//!
//! State, input and view are separate: keys become an [`Action`],
//! [`App::update`] changes plain state (and may ask for a command to send),
//! [`ui::draw`] only renders.

pub mod app;
pub mod console;
pub mod ui;

pub use app::{Action, App, Connection, View};
