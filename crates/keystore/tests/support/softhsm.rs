//! Runs a test against its own fresh SoftHSM2 token.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` when a process first initialises the
//! module, and Rust 2024 makes changing a running process's environment
//! `unsafe`. So a test re-runs itself as a child process
//! (`current_exe() NAME --exact`) with `SOFTHSM2_CONF` naming a fresh token
//! directory: each test gets its own token and its own module state, and the
//! tests that log the module out or finalize it cannot disturb the others.
//! SoftHSM2 must be installed (Debian package `softhsm2`); the tests fail,
//! never skip, without it.
//!
//! Shared by `tests/pkcs11.rs` and the keystore's unit tests (`#[path]`).

// Each includer uses a part of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const LABEL: &str = "keyhold-test";
pub const PIN: &str = "1234";
pub const SO_PIN: &str = "5678";
/// Set in the child process that runs one test against its own token.
const CHILD: &str = "KEYHOLD_PKCS11_TEST_TOKEN_DIR";

/// Runs `body` in a child process with a fresh token `keyhold-test` (user
/// PIN 1234, SO PIN 5678). `test` is the test's name as libtest knows it
/// (`name` in an integration test, `module::path::name` in a unit test).
pub fn with_softhsm(test: &str, body: impl FnOnce()) {
    if std::env::var_os(CHILD).is_some() {
        // The keystore's log lines show up with a failing test's output.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "keyhold_keystore=debug".into()),
            )
            .with_test_writer()
            .try_init();
        body();
        return;
    }
    assert!(
        Path::new(MODULE).exists(),
        "the PKCS#11 tests need SoftHSM2's module {MODULE}: install the Debian package softhsm2"
    );
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let init = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", LABEL])
        .args(["--pin", PIN, "--so-pin", SO_PIN])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap_or_else(|e| {
            panic!("the PKCS#11 tests need softhsm2-util (Debian package softhsm2) on PATH: {e}")
        });
    assert!(
        init.status.success(),
        "softhsm2-util --init-token failed: {}{}",
        String::from_utf8_lossy(&init.stdout),
        String::from_utf8_lossy(&init.stderr)
    );
    let child = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("SOFTHSM2_CONF", &conf)
        .env(CHILD, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&child.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&child.stderr));
    assert!(
        child.status.success(),
        "test {test} failed in its child process"
    );
    assert!(
        stdout.contains("1 passed"),
        "the child process ran no test named {test}"
    );
}
