//! SqlStore against real SQLite files in a temporary directory.

// clippy.toml allows these in #[test] functions only; the shared fixtures
// here fail a test the same way.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit;
mod common;
mod credentials;
mod durability;
mod entities;
mod jobs;
