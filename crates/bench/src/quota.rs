//! Scenario 3: many groups due at once against a KMS that enforces AWS's
//! default request quotas.

use std::time::Duration;

use crate::engine::{prepare_groups, rotate_all};
use crate::kms_peer::{AWS_DEFAULT_QUOTAS, KmsPeer};
use crate::report::{self, Bar, Chart, Section, Stat};
use crate::server::{KeyholdProcess, ServeOptions};
use crate::{Context, Sizes};

pub async fn run(ctx: &Context, sizes: &Sizes) -> anyhow::Result<Section> {
    let groups = sizes.quota_groups;
    eprintln!("quota-bound bulk rotation: {groups} groups");
    let peer = KmsPeer::start(true).await?;
    let data_dir = ctx
        .work
        .join(format!("quota-{}", uuid::Uuid::new_v4().simple()));
    let keyhold = KeyholdProcess::spawn(&ctx.keyhold, &data_dir, &ServeOptions::default())?;
    let token = keyhold.dual_session().await?;
    keyhold
        .import_credential(&token, "quota", &peer.endpoint)
        .await?;
    let names = prepare_groups(&keyhold, &token, "quota", "q", groups).await?;
    peer.reset_counts();
    let (wall, failed, first_error) =
        rotate_all(&keyhold, &token, &names, Duration::from_secs(7200)).await?;
    keyhold.stop()?;
    let _ = std::fs::remove_dir_all(&data_dir);

    let counts = peer.counts();
    // The fastest any client could go: each operation's calls at its quota,
    // the first second's burst (a full bucket) free.
    let mut minimum = 0.0_f64;
    let mut bottleneck = String::new();
    let mut per_op = Vec::new();
    for (op, c) in &counts {
        let rate = AWS_DEFAULT_QUOTAS
            .iter()
            .find(|(name, _)| name == op)
            .map(|(_, r)| *r)
            .unwrap_or(f64::INFINITY);
        let seconds = ((c.accepted as f64 - rate.max(1.0)) / rate).max(0.0);
        if seconds > minimum {
            minimum = seconds;
            bottleneck = op.clone();
        }
        per_op.push(vec![
            op.clone(),
            format!("{rate}"),
            c.accepted.to_string(),
            c.throttled.to_string(),
            format!("{seconds:.1}"),
        ]);
    }
    let throttled: u64 = counts.values().map(|c| c.throttled).sum();
    let actual = wall.as_secs_f64();
    let efficiency = if actual > 0.0 { minimum / actual } else { 0.0 };

    let mut section = Section::new("3. Quota-bound bulk rotation").headers(&[
        "Groups due at once",
        "Wall time (s)",
        "Minimum set by the quotas (s)",
        "Efficiency (minimum ÷ actual)",
        "Throttled calls",
        "Failed jobs",
    ]);
    section.text = format!(
        "{groups} key groups are Force-Rotated at once (one job each, submitted \
         together; the job runner works through them {concurrency} at a time) \
         against the benchmark's KMS peer in quota mode: a token bucket per \
         operation at AWS KMS's default request quota (per account and Region, \
         AWS KMS Developer Guide, *Request quotas*, \
         <https://docs.aws.amazon.com/kms/latest/developerguide/requests-per-second.html>), \
         holding one second's worth, answering `ThrottlingException` (HTTP 400, \
         `__type`) when empty. The peer answers itself instead of forwarding to \
         LocalStack, so that the only limit is the quotas (LocalStack's own latency \
         would add to the wall time). Each group's first rotation is measured: \
         CreateKey, GetParametersForImport, ImportKeyMaterial, UpdateAlias (which \
         finds no alias yet) and CreateAlias. The minimum is the slowest \
         operation's calls at its quota (the bucket's first second free): here \
         {bottleneck}. keyhold paces its own requests 2% under the same default \
         quotas (`crates/aws/src/rate_limit.rs`), so it should neither be \
         throttled nor leave much quota unused; a request throttled all the same \
         goes back to the pacer, which sends it again in a later turn.",
        concurrency = 8,
    );
    section.row(vec![
        groups.to_string(),
        format!("{actual:.1}"),
        format!("{minimum:.1}"),
        format!("{:.1}%", efficiency * 100.0),
        throttled.to_string(),
        failed.to_string(),
    ]);
    section.notes = format!(
        "Calls per operation:\n\n{}",
        report::table(
            &[
                "Operation",
                "Quota (req/s)",
                "Accepted",
                "Throttled",
                "Seconds at quota",
            ],
            &per_op,
        )
    );
    section.charts.push(Chart {
        slug: "quota-bound".into(),
        title: format!("{groups} rotations under AWS's default request quotas"),
        unit: "seconds; the closer the two bars, the better".into(),
        bars: vec![
            Bar {
                label: "minimum set by the quotas".into(),
                stat: Stat::of(&[minimum]),
            },
            Bar {
                label: "keyhold, wall time".into(),
                stat: Stat::of(&[actual]),
            },
        ],
    });
    if failed > 0 {
        section.notes.push_str(&format!(
            "\n**{failed} of {groups} rotations failed** (the target is none). The first \
             failure: `{}`.\n",
            first_error.unwrap_or_default()
        ));
        section.failure = Some(format!(
            "{failed} of {groups} rotations failed under the request quotas"
        ));
    }
    Ok(section)
}
