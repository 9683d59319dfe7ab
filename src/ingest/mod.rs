//! Group commit of delivery reports: callbacks hand their report to the
//! [`Writer`], which writes them in batches (one statement, one transaction
//! each) and answers each callback once its batch is committed. The HTTP
//! side of the webhook is `api::webhook`.

mod batch;
mod reply;
mod writer;

pub use batch::WriteError;
pub use writer::Writer;
