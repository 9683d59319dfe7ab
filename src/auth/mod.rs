//! Webhook credentials: argon2id hashing and the verifier with its cache.

mod credentials;
pub mod limiter;
pub mod password;
pub mod tokens;
mod verifier;

pub use credentials::{AuthError, Credentials};
