//! Scenario 5: the audit log, append throughput and `audit verify` of a
//! long chain.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use keyhold_core::audit::{AuditRecord, ChainHead, seal};
use keyhold_core::ports::SharedAuditMac;
use keyhold_keystore::{MasterKeySource, SoftKeystore};
use keyhold_store::SqlStore;
use sqlx::Connection;

use crate::report::{Section, Stat};
use crate::server::{KeyholdProcess, ServeOptions};
use crate::{Context, Sizes};

/// Entries sealed and inserted per transaction while seeding.
const SEED_BATCH: usize = 5_000;

/// The data directory's own audit MAC key, as `keyhold serve` holds it.
pub fn open_mac(data_dir: &std::path::Path) -> anyhow::Result<SharedAuditMac> {
    let keystore = SoftKeystore::open(&data_dir.join("keystore"), MasterKeySource::File)
        .map_err(|e| anyhow::anyhow!("opening the software keystore: {e}"))?;
    Ok(Arc::new(keystore))
}

pub fn sqlite_url(data_dir: &std::path::Path) -> String {
    format!(
        "sqlite://{}?mode=rwc",
        data_dir.join("keyhold.db").display()
    )
}

/// Appends `count` sealed entries to the chain with bulk inserts through
/// keyhold's schema (the same columns and sealing as the store's append),
/// many per transaction. Returns the number of entries in the log.
pub async fn seed_audit(url: &str, mac: &SharedAuditMac, count: usize) -> anyhow::Result<i64> {
    let mut conn = sqlx::SqliteConnection::connect(url).await?;
    let head: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut conn)
            .await?;
    let mut head = match head {
        Some((seq, hash)) => ChainHead {
            seq,
            hash: hash
                .try_into()
                .map_err(|_| anyhow::anyhow!("hash not 32 bytes"))?,
        },
        None => ChainHead::EMPTY,
    };
    let now = keyhold_core::clock::Clock::now(&keyhold_core::clock::SystemClock);
    let mut done = 0;
    while done < count {
        let n = SEED_BATCH.min(count - done);
        let mut entries = Vec::with_capacity(n);
        for i in 0..n {
            let record = AuditRecord::new(
                now,
                "Admin1,Admin2",
                format!("Benchmark entry {} of the seeded audit log.", done + i),
            );
            let entry =
                seal(head, &record, mac.as_ref()).map_err(|e| anyhow::anyhow!("sealing: {e}"))?;
            head = ChainHead {
                seq: entry.seq,
                hash: entry.hash,
            };
            entries.push(entry);
        }
        let mut tx = conn.begin().await?;
        // SQLite binds at most 32766 parameters per statement: 9 per row.
        for chunk in entries.chunks(1000) {
            let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO audit_log (seq, time, users, summary, details, archived, prev_hash, hash, mac) ",
            );
            qb.push_values(chunk, |mut b, e| {
                b.push_bind(e.seq)
                    .push_bind(e.time.clone())
                    .push_bind(e.users.clone())
                    .push_bind(e.summary.clone())
                    .push_bind(e.details.clone())
                    .push_bind(e.archived)
                    .push_bind(e.prev_hash.to_vec())
                    .push_bind(e.hash.to_vec())
                    .push_bind(e.mac.to_vec());
            });
            qb.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        done += n;
    }
    Ok(head.seq)
}

/// Appends through the store's own append (seal after the head, one write
/// transaction per entry), `tasks` at a time; returns entries per second.
async fn append_rate(store: &Arc<dyn SqlStore>, total: usize, tasks: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = store.clone();
        let share = total / tasks;
        handles.push(tokio::spawn(async move {
            for i in 0..share {
                let record = AuditRecord::new(
                    keyhold_core::clock::Clock::now(&keyhold_core::clock::SystemClock),
                    "Admin1",
                    format!("Benchmark append {t}/{i}."),
                );
                store
                    .append_audit(&record)
                    .await
                    .map_err(|e| anyhow::anyhow!("append: {e}"))?;
            }
            anyhow::Ok(())
        }));
    }
    for h in handles {
        h.await??;
    }
    Ok((total / tasks * tasks) as f64 / started.elapsed().as_secs_f64())
}

pub async fn run(ctx: &Context, sizes: &Sizes) -> anyhow::Result<Section> {
    eprintln!(
        "audit: append and verify of {} entries",
        sizes.audit_entries
    );
    let data_dir = ctx
        .work
        .join(format!("audit-{}", uuid::Uuid::new_v4().simple()));
    // Initialised by keyhold itself, so the keystore and schema are its own.
    let keyhold = KeyholdProcess::spawn(&ctx.keyhold, &data_dir, &ServeOptions::default())?;
    keyhold.dual_session().await?;
    keyhold.stop()?;

    let mac = open_mac(&data_dir)?;
    let url = sqlite_url(&data_dir);
    let store = keyhold_store::connect(&url, mac.clone())
        .await
        .map_err(|e| anyhow::anyhow!("opening the store: {e}"))?;
    let mut serial = Vec::new();
    let mut concurrent = Vec::new();
    for _ in 0..sizes.runs {
        serial.push(append_rate(&store, sizes.audit_appends, 1).await?);
        concurrent.push(append_rate(&store, sizes.audit_appends, 8).await?);
    }
    store.close().await;

    let seeding = Instant::now();
    let present = seed_audit(&url, &mac, sizes.audit_entries).await?;
    let seeded_in = seeding.elapsed();

    let keyhold = KeyholdProcess::spawn(&ctx.keyhold, &data_dir, &ServeOptions::default())?;
    let token = keyhold.dual_session().await?;
    let mut verify_s = Vec::new();
    let mut checked = 0;
    for _ in 0..sizes.runs.min(3) {
        let started = Instant::now();
        let report = keyhold.get("/audit/verify", &token).await?;
        verify_s.push(started.elapsed().as_secs_f64());
        if report["ok"] != true {
            bail!("audit verify found a break in the seeded chain: {report}");
        }
        checked = report["entries_checked"]
            .as_u64()
            .context("entries_checked")?;
    }
    let rss = keyhold.rss_bytes()?;
    keyhold.stop()?;
    let _ = std::fs::remove_dir_all(&data_dir);
    if checked < present as u64 {
        bail!("verify checked {checked} entries of {present}");
    }

    let verify = Stat::of(&verify_s);
    let mut section = Section::new("5. Audit log").headers(&["Measure", "Figure"]);
    section.text = format!(
        "SQLite, software keystore. Appends go through the store's own append \
         (`SqlStore::append_audit`: read the chain head, seal the entry with \
         SHA-256 and the keystore's HMAC key, insert, one write transaction each), \
         {appends} entries per run, one writer or 8 concurrent writers. The log is \
         then seeded to {entries} entries: sealed with the data directory's own \
         audit MAC key (opened from its keystore, as keyhold opens it) and inserted \
         through keyhold's schema {batch} rows per transaction ({seeded:.1} s). \
         `audit verify` is `GET /api/v1/audit/verify` of a real `keyhold serve` \
         over that log, timed at the client; it reads the chain in pages of 1,000 \
         and checks every hash and MAC.",
        appends = sizes.audit_appends,
        entries = present,
        batch = SEED_BATCH,
        seeded = seeded_in.as_secs_f64(),
    );
    section.row(vec![
        "Append, one writer (entries/s)".into(),
        Stat::of(&serial).show(0),
    ]);
    section.row(vec![
        "Append, 8 concurrent writers (entries/s)".into(),
        Stat::of(&concurrent).show(0),
    ]);
    section.row(vec![
        format!("`audit verify` of {checked} entries (s)"),
        verify.show(2),
    ]);
    section.row(vec![
        "`audit verify` rate (entries/s)".into(),
        format!("{:.0}", checked as f64 / verify.median),
    ]);
    section.row(vec![
        "Server RSS after verifying (MiB)".into(),
        format!("{:.1}", rss as f64 / 1_048_576.0),
    ]);
    section.charts.push(crate::report::Chart {
        slug: "audit-append".into(),
        title: "Audit append throughput".into(),
        unit: "entries/s, median with min–max over the runs; higher is better".into(),
        bars: vec![
            crate::report::Bar {
                label: "one writer".into(),
                stat: Stat::of(&serial),
            },
            crate::report::Bar {
                label: "8 concurrent writers".into(),
                stat: Stat::of(&concurrent),
            },
        ],
    });
    Ok(section)
}
