//! koostatus: receives KooMessage WhatsApp delivery reports, keeps each
//! message's status and history in PostgreSQL under monotonic rules.

pub mod api;
pub mod auth;
pub mod body;
pub mod cli;
pub mod commands;
pub mod config;
pub mod console;
pub mod courier;
pub mod db;
pub mod domain;
pub mod error;
pub mod export;
pub mod forward;
pub mod ingest;
pub mod live;
pub mod metrics;
pub mod model;
pub mod operations;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod unreported;
