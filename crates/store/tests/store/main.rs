//! SqlStore against a real database: a SQLite file in a temporary directory,
//! or with KEYHOLD_TEST_DATABASE=postgres a fresh PostgreSQL database per
//! test (see keyhold_store::testing). Tests of what only SQLite has open a
//! SQLite file whatever the backend of the run.

// clippy.toml allows these in #[test] functions only; the shared fixtures
// here fail a test the same way.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod approvals;
mod audit;
mod backups;
mod common;
mod credentials;
mod drift;
mod durability;
mod entities;
mod jobs;
mod races;
mod write_refusals;
mod xks;
