//! keyhold's server: configuration, start-up, and the HTTP API and web UI
//! around keyhold-core. The `keyhold` binary calls [`run_init`] and [`run_serve`].
//!
//! The API's handlers (`http`) and the UI's (`ui`) call the same
//! `operations` and share `app` and `views`; neither imports the other (the
//! UI answers failures with the API's error mapping, `ApiError`). Every
//! route is assembled in `routes`.

mod app;
pub mod approval_webhook;
mod audit_checkpoints;
pub mod audit_stream;
pub mod backup;
mod client_address;
pub mod config;
pub mod connector;
#[cfg(feature = "crash-points")]
pub mod crash_points;
mod http;
pub mod jobs;
pub mod keystore_migration;
pub mod login_throttle;
mod metrics;
mod operations;
pub mod rotator;
mod routes;
mod serve;
pub mod startup;
pub mod tls;
mod ui;
mod views;
mod xks;

pub use config::{Config, EnvSecrets, KmsConfig, ServeArgs};
pub use http::errors::ApiError;
pub(crate) use http::errors::ApiResult;
pub use startup::Server;
/// The API's view of an audit verification; `keyhold audit verify --export`
/// reports its offline check in the same form.
pub use views::audit_verify as audit_verify_view;
/// The XKS proxy's test-only fault switch (`delay:<ms>`, `fail`, or `""`
/// to disarm), for the conformance suite: see `xks::fault`.
#[cfg(feature = "crash-points")]
pub use xks::fault::set as set_xks_fault;

use secrecy::SecretString;

/// A one-time password of a default administrator, shown once at initialisation.
pub struct InitialPassword {
    pub name: String,
    pub password: SecretString,
}

impl std::fmt::Debug for InitialPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitialPassword")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Test-only crash point outside jobs (backups, restores): with the
/// `crash-points` feature, `KEYHOLD_CRASH_AT=<point>` aborts the process
/// when it reaches `point`. A no-op in production builds.
pub(crate) fn crash_point(point: &str) {
    #[cfg(feature = "crash-points")]
    if std::env::var("KEYHOLD_CRASH_AT").is_ok_and(|wanted| wanted == point) {
        eprintln!("crash point: aborting at {point}");
        std::process::abort();
    }
    #[cfg(not(feature = "crash-points"))]
    let _ = point;
}

/// Like [`crash_point`], at the `count`-th pass of a loop:
/// `KEYHOLD_CRASH_AT=<point>:<count>`.
pub(crate) fn crash_point_after(point: &str, count: u64) {
    #[cfg(feature = "crash-points")]
    if let Ok(wanted) = std::env::var("KEYHOLD_CRASH_AT")
        && wanted == format!("{point}:{count}")
    {
        eprintln!("crash point: aborting at {point} after {count}");
        std::process::abort();
    }
    #[cfg(not(feature = "crash-points"))]
    let _ = (point, count);
}

fn resolve(args: ServeArgs) -> anyhow::Result<Config> {
    Ok(args.resolve(config::EnvSecrets::from_process_env())?)
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second initialisation (tests) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Initialises an empty data directory (keystore, database, default
/// administrators). Fails when it is already initialised.
pub async fn run_init(args: ServeArgs) -> anyhow::Result<Vec<InitialPassword>> {
    let config = resolve(args)?;
    init_logging(&config.log);
    let (_, passwords) = startup::open_data_dir(
        &config,
        startup::system_clock(),
        startup::InitMode::Required,
    )
    .await?;
    Ok(passwords)
}

/// Moves an initialised data directory's keys, credential secrets and audit
/// MAC key from the software keystore into the configured PKCS#11 token.
/// Resumable: run it again after an interruption.
pub async fn run_keystore_migrate(
    args: ServeArgs,
) -> anyhow::Result<keystore_migration::MigrationReport> {
    let config = resolve(args)?;
    init_logging(&config.log);
    keystore_migration::migrate(&config, startup::system_clock()).await
}

/// Restores the backup `file`, opened with `key` (combined from the shares
/// of `custodians`), into the empty data directory and database `args`
/// name. Run with the server stopped.
pub async fn run_backup_restore(
    args: ServeArgs,
    file: &std::path::Path,
    key: keyhold_backup::BackupKey,
    custodians: &[String],
) -> anyhow::Result<backup::restore::RestoreReport> {
    let config = resolve(args)?;
    init_logging(&config.log);
    backup::restore::restore(&config, startup::system_clock(), file, key, custodians).await
}

/// Runs the server until SIGINT or SIGTERM. On an empty data directory it
/// initialises it first and prints the one-time passwords to stdout, once.
pub async fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = resolve(args)?;
    init_logging(&config.log);
    let (server, passwords) = Server::build(&config, startup::system_clock()).await?;
    if !passwords.is_empty() {
        println!(
            "Initialised {}. One-time passwords (shown once; change them with `keyhold passwd`):",
            config.data_dir.display()
        );
        for p in &passwords {
            println!(
                "  {}  {}",
                p.name,
                secrecy::ExposeSecret::expose_secret(&p.password)
            );
        }
    }
    let addr = server.local_addr()?;
    tracing::info!(%addr, data_dir = %config.data_dir.display(), database = %config.database, "keyhold listening");
    println!("keyhold listening on {}://{addr}", server.scheme());
    server.run(shutdown_signal()).await
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
