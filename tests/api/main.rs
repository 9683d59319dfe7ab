//! HTTP and CLI tests against real PostgreSQL, each in its own database.

mod batching;
mod changes;
mod cli;
mod console;
mod credentials;
mod desktops;
mod export;
mod failover;
mod forward;
mod fuzz;
mod guessing;
mod health;
mod helpers;
mod instances;
mod metrics;
mod outage;
mod read_api;
mod request_ids;
mod resilience;
mod secrets;
mod slow_clients;
mod sse;
mod stats;
mod status_rules;
mod unreported;
mod webhook;
