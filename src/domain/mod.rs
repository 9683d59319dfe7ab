//! Typed values that the rest of the service works with: a request becomes
//! one of these at the edge, inner code never sees raw JSON.

mod channel_id;
mod report;
pub mod stats;
mod status;

pub use channel_id::ChannelId;
pub use report::{Report, ReportError};
pub use status::{Reported, Status};
