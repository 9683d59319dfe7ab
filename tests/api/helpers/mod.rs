//! Test harness: a database per test (db.rs), the service in-process
//! (app.rs), or the built binary as its own process (process.rs).

mod app;
pub mod certs;
mod db;
mod process;
pub mod receiver;

pub use app::*;
pub use db::*;
pub use process::*;
