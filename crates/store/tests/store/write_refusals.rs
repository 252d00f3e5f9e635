//! A database that cannot record changes, against the real backends: on
//! SQLite a genuine `SQLITE_FULL` (the `storage-limit` hook stops the file
//! from growing); on PostgreSQL a database turned read-only (SQLSTATE
//! 25006), the one write refusal a test can make on demand there (a full
//! disk cannot be, so `disk_full` and `out_of_memory` are covered by the
//! unit tests of the SQLSTATE classification in `src/error.rs`).
//!
//! Either way: the refusal is classified, the change and its audit entry are
//! rolled back together, readiness says so until a write succeeds again, and
//! the chain goes on intact.

use keyhold_core::ports::WRITE_PROBE_INTERVAL;
use keyhold_core::{StoreError, WriteRefusal};

use crate::common::{Fixture, at, credential, record, verify_chain};

/// Stops (or lets again) the fixture's database from recording changes.
async fn stop_writes(f: &Fixture, stop: bool) {
    if f.is_postgres() {
        let mut raw = f.raw().await;
        let name: String = f
            .url()
            .rsplit('/')
            .next()
            .unwrap()
            .split('?')
            .next()
            .unwrap()
            .to_owned();
        let value = if stop { "on" } else { "off" };
        // A new connection is read-only too once the database is.
        raw.execute("SET default_transaction_read_only = off")
            .await
            .unwrap();
        raw.execute(&format!(
            "ALTER DATABASE {name} SET default_transaction_read_only = {value}"
        ))
        .await
        .unwrap();
        // Connections opened from now on get the new default.
        raw.execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        ))
        .await
        .unwrap();
    } else {
        let marker = keyhold_store::storage_limit::marker(&f.db_path());
        if stop {
            std::fs::write(marker, b"").unwrap();
        } else {
            std::fs::remove_file(marker).unwrap();
        }
    }
}

fn refusal_of(f: &Fixture) -> WriteRefusal {
    if f.is_postgres() {
        WriteRefusal::ReadOnly
    } else {
        WriteRefusal::StorageFull
    }
}

#[tokio::test]
async fn a_database_that_cannot_record_changes_refuses_them_whole_and_readiness_follows() {
    let f = Fixture::new().await;
    let s = &f.store;
    s.append_audit(&record("before")).await.unwrap();
    assert!(s.writable(at(0)).await.is_ok());
    let expected = refusal_of(&f);

    stop_writes(&f, true).await;
    // SQLite fills the room left in the file's pages first; PostgreSQL
    // refuses the first write (after reconnecting: its connections were
    // ended, which the pool notices).
    let mut attempts = 0;
    let refused = loop {
        attempts += 1;
        assert!(attempts < 20_000, "the database never refused an entry");
        match s
            .append_audit(&record(&format!("filling {attempts}")))
            .await
        {
            Ok(()) => {}
            Err(StoreError::Unavailable(_)) if f.is_postgres() && attempts < 3 => {}
            Err(e) => break e,
        }
    };
    assert_eq!(refused.write_refusal(), Some(expected), "{refused:?}");
    let entries = f.audit_count().await;

    // A change and its entry: neither is written.
    let cred = credential("aws-full");
    let r = s
        .insert_credential(&cred, &record("Added credential"))
        .await;
    assert_eq!(
        r.as_ref().err().and_then(StoreError::write_refusal),
        Some(expected),
        "{r:?}"
    );
    assert_eq!(s.get_credential(&cred.name).await.unwrap(), None);
    assert_eq!(f.audit_count().await, entries);

    // Readiness: refused, probed once per interval, the reason kept between.
    let r = s.writable(at(100)).await;
    assert_eq!(
        r.as_ref().err().and_then(StoreError::write_refusal),
        Some(expected),
        "{r:?}"
    );
    stop_writes(&f, false).await;
    let r = s.writable(at(101)).await;
    assert_eq!(
        r.as_ref().err().and_then(StoreError::write_refusal),
        Some(expected),
        "no probe within the interval: {r:?}"
    );
    let later = at(100) + WRITE_PROBE_INTERVAL;
    let mut probe = s.writable(later).await;
    if f.is_postgres() && matches!(probe, Err(StoreError::Unavailable(_))) {
        // The pool found a connection that was ended: the next probe reconnects.
        probe = s.writable(later + WRITE_PROBE_INTERVAL).await;
    }
    probe.unwrap();
    // Writable again, and nothing is probed while it stays so.
    s.writable(later).await.unwrap();
    s.insert_credential(&cred, &record("Added credential"))
        .await
        .unwrap();
    assert_eq!(f.audit_count().await, entries + 1);
    assert_eq!(verify_chain(s).await, u64::try_from(entries + 1).unwrap());
}
