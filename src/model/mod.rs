//! Domain types every part of the engine shares: binlog positions,
//! checkpoints, key values and chunk ranges, table plans, the session a
//! statement ran in, the clock and the rate limit. A leaf: it imports
//! nothing else of Ferry.

mod clock;
mod ghost;
mod position;
mod progress;
mod rate;
mod session;
mod state;
mod text;
mod xa;

pub use clock::now_ms;
pub use ghost::{Ghost, GhostStatement, Ghosts};
pub use position::BinlogPos;
pub use progress::TableProgress;
pub use rate::RateLimit;
pub use session::SessionContext;
pub use state::*;
pub use text::truncate;
pub use xa::*;
