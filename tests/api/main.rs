//! HTTP and CLI tests against real PostgreSQL, each in its own database.

mod batching;
mod cli;
mod credentials;
mod health;
mod helpers;
mod read_api;
mod status_rules;
mod webhook;
