//! keyhold's integration suite: one test binary (fast to link), one module per
//! capability. Every test starts a real server on port 0 with a fresh data
//! directory and drives it over HTTP or through the real `keyhold` binary.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fault_proxy;
mod helpers;
mod kms;
mod report;
mod test_ca;

mod access;
mod approval_webhook;
mod approvals;
mod audit;
mod backup;
mod backup_cli;
mod backup_resume;
mod backup_schedule;
mod bad_input;
mod cancelled_rotation;
mod chain_credentials;
mod cli;
mod concurrency;
mod credentials;
mod custody;
mod drift;
mod engine;

mod groups;
mod hostile_input;
mod hostile_network;
mod hsm;
mod in_place;
mod pacing;

mod resume;
mod schedule;
mod secrets;
mod sessions;
mod siem;
mod soak;
mod storage_full;
mod ui;
mod ui_access;
mod ui_approvals;
mod ui_backups;
mod ui_drift;
mod ui_steps;
mod ui_xks;
mod webdriver;
mod xks;
mod xks_cluster;
mod xks_proxy;
