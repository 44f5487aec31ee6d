//! PostgreSQL as a target (`[target] kind = "postgresql"`): the schema
//! translated (`types`, `schema`), the full load through `COPY` (`load`),
//! the precheck of the target (`check`) and the row counts compared across
//! engines (`verify`).

pub mod check;
pub mod conn;
pub mod ddl;
pub mod load;
pub mod schema;
pub mod types;
pub mod verify;

pub use conn::{query_err, PgConnector, PgError};
