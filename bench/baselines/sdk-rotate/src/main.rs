//! Baseline: keyhold's rotation written directly against the AWS SDK for
//! Rust (`aws-sdk-kms`), with nothing else: no store, no audit, no pacing,
//! no crash recovery. It exists so that the side-by-side benchmark
//! (scenario 2 of docs/benchmarks.md, `crates/bench/src/side_by_side.rs`)
//! can show what keyhold's engine costs on top of the very SDK it uses: issue
//! #21 asks keyhold to reach at least 0.9 times this loop's rotations per
//! second against the same KMS at the same concurrency.
//!
//!     sdk-rotate ENDPOINT PREFIX COUNT STATE_FILE [CONCURRENCY]
//!
//! The same steps and arguments as `bench/baselines/boto3_rotate.py`: for each
//! of COUNT groups named PREFIX-00000, PREFIX-00001, ..., CreateKey (Origin
//! EXTERNAL, the benchmark's key policy, a `keyhold-group` tag),
//! GetParametersForImport (RSAES_OAEP_SHA_256, RSA_2048), 32 random bytes
//! wrapped with RSA-OAEP-SHA-256 (the `rsa` crate, as keyhold's software
//! keystore does), ImportKeyMaterial valid for a year, then UpdateAlias and
//! DisableKey of the group's previous key, or CreateAlias the first time.
//! STATE_FILE (JSON, `{"group": "key id"}`) remembers each group's current key
//! between passes. CONCURRENCY tokio tasks (default 1) share one client and
//! take the groups in order. Credentials and the Region (`AWS_REGION`,
//! eu-west-1 when unset) come from the environment, as for boto3.
//!
//! As boto3_rotate.py does, the last line of output times the rotations
//! alone, from the first request to the last answer (`rotations=N
//! seconds=S cpu_seconds=C`, CPU time of all the process's threads over that
//! stretch), the process's start and the client's set-up left out.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, anyhow, bail};
use aws_config::{BehaviorVersion, Region};
use aws_sdk_kms::error::DisplayErrorContext;
use aws_sdk_kms::primitives::{Blob, DateTime};
use aws_sdk_kms::types::{
    AlgorithmSpec, ExpirationModelType, KeySpec, KeyUsageType, OriginType, Tag, WrappingKeySpec,
};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use rsa::pkcs8::DecodePublicKey as _;
use rsa::rand_core::{OsRng, RngCore as _};
use rsa::{Oaep, RsaPublicKey};
use sha2::Sha256;

/// The key policy every contender of the benchmark sets (keyhold's groups
/// and the other baselines carry the same one).
const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"root","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}"#;

const USAGE: &str = "usage: sdk-rotate ENDPOINT PREFIX COUNT STATE_FILE [CONCURRENCY]";

struct Args {
    endpoint: String,
    prefix: String,
    count: usize,
    state_file: PathBuf,
    concurrency: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (endpoint, prefix, count, state_file, concurrency) = match args.as_slice() {
        [e, p, c, s] => (e, p, c, s, None),
        [e, p, c, s, n] => (e, p, c, s, Some(n)),
        _ => bail!("{USAGE}"),
    };
    let concurrency = match concurrency {
        Some(n) => n
            .parse::<usize>()
            .with_context(|| format!("CONCURRENCY {n}: {USAGE}"))?,
        None => 1,
    };
    Ok(Args {
        endpoint: endpoint.clone(),
        prefix: prefix.clone(),
        count: count
            .parse()
            .with_context(|| format!("COUNT {count}: {USAGE}"))?,
        state_file: PathBuf::from(state_file),
        concurrency: concurrency.max(1),
    })
}

/// One client for all tasks, built as keyhold's adapter builds its own
/// (rustls on ring, the SDK's latest behaviour version), so that the
/// comparison is of what surrounds the SDK.
async fn kms_client(endpoint: &str) -> aws_sdk_kms::Client {
    let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "eu-west-1".to_owned());
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let config = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region))
        .http_client(http_client)
        .endpoint_url(endpoint)
        .load()
        .await;
    aws_sdk_kms::Client::new(&config)
}

/// The end of the imported material's validity, as boto3_rotate.py computes
/// it: a year from now.
#[allow(clippy::disallowed_methods)] // a standalone baseline: no Clock port to read
fn a_year_from_now() -> DateTime {
    DateTime::from(SystemTime::now() + Duration::from_secs(365 * 24 * 3600))
}

/// An SDK error with its causes (the SDK's Display alone says "service error").
fn sdk_error<E: std::error::Error>(operation: &str, name: &str, error: E) -> anyhow::Error {
    anyhow!("{operation} for {name}: {}", DisplayErrorContext(error))
}

/// One rotation of group `name`; returns its new key's id.
async fn rotate(
    kms: &aws_sdk_kms::Client,
    name: &str,
    previous: Option<&str>,
) -> anyhow::Result<String> {
    let tag = Tag::builder()
        .tag_key("keyhold-group")
        .tag_value(name)
        .build()
        .map_err(|e| sdk_error("Tag", name, e))?;
    let created = kms
        .create_key()
        .origin(OriginType::External)
        .key_spec(KeySpec::SymmetricDefault)
        .key_usage(KeyUsageType::EncryptDecrypt)
        .description("benchmark data key")
        .policy(POLICY)
        .tags(tag)
        .send()
        .await
        .map_err(|e| sdk_error("CreateKey", name, e))?;
    let key_id = created
        .key_metadata()
        .map(|m| m.key_id().to_owned())
        .with_context(|| format!("CreateKey for {name} answered without key metadata"))?;

    let params = kms
        .get_parameters_for_import()
        .key_id(&key_id)
        .wrapping_algorithm(AlgorithmSpec::RsaesOaepSha256)
        .wrapping_key_spec(WrappingKeySpec::Rsa2048)
        .send()
        .await
        .map_err(|e| sdk_error("GetParametersForImport", name, e))?;
    let public_key_der = params
        .public_key()
        .with_context(|| format!("GetParametersForImport for {name}: no public key"))?;
    let import_token = params
        .import_token()
        .with_context(|| format!("GetParametersForImport for {name}: no import token"))?;

    let public_key = RsaPublicKey::from_public_key_der(public_key_der.as_ref())
        .map_err(|e| anyhow!("the wrapping public key for {name}: {e}"))?;
    let mut material = [0u8; 32];
    OsRng.fill_bytes(&mut material);
    let wrapped = public_key
        .encrypt(&mut OsRng, Oaep::new::<Sha256>(), &material)
        .map_err(|e| anyhow!("wrapping the key material for {name}: {e}"))?;

    kms.import_key_material()
        .key_id(&key_id)
        .import_token(import_token.clone())
        .encrypted_key_material(Blob::new(wrapped))
        .expiration_model(ExpirationModelType::KeyMaterialExpires)
        .valid_to(a_year_from_now())
        .send()
        .await
        .map_err(|e| sdk_error("ImportKeyMaterial", name, e))?;

    let alias = format!("alias/{name}");
    match previous {
        Some(previous) => {
            kms.update_alias()
                .alias_name(&alias)
                .target_key_id(&key_id)
                .send()
                .await
                .map_err(|e| sdk_error("UpdateAlias", name, e))?;
            kms.disable_key()
                .key_id(previous)
                .send()
                .await
                .map_err(|e| sdk_error("DisableKey", name, e))?;
        }
        None => {
            kms.create_alias()
                .alias_name(&alias)
                .target_key_id(&key_id)
                .send()
                .await
                .map_err(|e| sdk_error("CreateAlias", name, e))?;
        }
    }
    Ok(key_id)
}

/// CPU time of this process's threads so far: the sum of their run times
/// in /proc (nanoseconds, where /proc/self/stat counts 10 ms ticks).
fn process_cpu() -> anyhow::Result<Duration> {
    let mut nanos = 0u64;
    for task in std::fs::read_dir("/proc/self/task")? {
        // A thread that ended meanwhile has nothing left to read.
        let Ok(schedstat) = std::fs::read_to_string(task?.path().join("schedstat")) else {
            continue;
        };
        let run_time = schedstat
            .split_whitespace()
            .next()
            .context("an empty /proc/self/task/*/schedstat")?;
        nanos += run_time.parse::<u64>()?;
    }
    Ok(Duration::from_nanos(nanos))
}

fn read_state(path: &PathBuf) -> anyhow::Result<HashMap<String, String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is not the JSON this program writes", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashMap::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let state = Arc::new(read_state(&args.state_file)?);
    let kms = kms_client(&args.endpoint).await;
    let names: Arc<Vec<String>> = Arc::new(
        (0..args.count)
            .map(|i| format!("{}-{i:05}", args.prefix))
            .collect(),
    );

    // Each task takes the next group in order until none is left, as a
    // thread pool's workers take the next item of a map.
    let (started, cpu_started) = (Instant::now(), process_cpu()?);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.min(args.count) {
        let (kms, names, state, next) = (kms.clone(), names.clone(), state.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut rotated = Vec::new();
            loop {
                let Some(name) = names.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    return anyhow::Ok(rotated);
                };
                let key_id = rotate(&kms, name, state.get(name).map(String::as_str)).await?;
                rotated.push((name.clone(), key_id));
            }
        }));
    }
    let mut rotated = Vec::new();
    for task in tasks {
        rotated.extend(task.await.context("a rotation task")??);
    }
    let (seconds, cpu) = (
        started.elapsed(),
        process_cpu()?.saturating_sub(cpu_started),
    );
    let rotations = rotated.len();
    let mut state = HashMap::clone(&state);
    state.extend(rotated);
    std::fs::write(&args.state_file, serde_json::to_string(&state)?)
        .with_context(|| format!("writing {}", args.state_file.display()))?;
    println!(
        "rotations={rotations} seconds={:.6} cpu_seconds={:.6}",
        seconds.as_secs_f64(),
        cpu.as_secs_f64()
    );
    Ok(())
}
