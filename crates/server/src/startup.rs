//! Opening (or initialising) a data directory and running the server.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use keyhold_core::clock::{Clock, SystemClock};
use keyhold_core::ports::Keystore;
use keyhold_core::service::Keyhold;
use keyhold_keystore::{Pkcs11Keystore, SoftKeystore};
use tokio::net::TcpListener;

use crate::InitialPassword;
use crate::app::AppState;
use crate::audit_checkpoints::AuditCheckpoints;
use crate::audit_stream::AuditStreams;
use crate::config::{Config, KeystoreConfig};
use crate::connector::AwsConnector;
use crate::jobs::{JobHooksFactory, JobRunner, SHUTDOWN_GRACE};
use crate::login_throttle::LoginThrottle;
use crate::metrics::Metrics;
use crate::rotator::Rotator;
use crate::tls::{TlsConfig, TlsListener};

/// A server bound to its address, ready to run.
pub struct Server {
    listener: TcpListener,
    tls: Option<TlsConfig>,
    state: AppState,
    streams: AuditStreams,
}

impl Server {
    /// Opens the data directory, initialising it when it is empty, and binds
    /// the listener. Returns the one-time passwords when it initialised.
    pub async fn build(
        config: &Config,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<(Self, Vec<InitialPassword>)> {
        let mode = if config.require_initialised {
            InitMode::Never
        } else {
            InitMode::IfEmpty
        };
        let (keyhold, passwords) = open_data_dir(config, clock, mode).await?;
        let metrics = Arc::new(Metrics::default());
        let keyhold = keyhold.with_audit_fallback(Arc::new(metrics.audit_fallback()));
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let connector = Arc::new(AwsConnector::new(config.kms.clone()));
        metrics.watch_kms_pacing(connector.clone());
        let jobs = JobRunner::new(
            keyhold.clone(),
            connector,
            job_hooks()?,
            config.job_concurrency,
        );
        let rotator = Rotator::new(
            keyhold.clone(),
            jobs.clone(),
            config.node_id.clone(),
            config.scheduler_tick,
        );
        let checkpoints = Arc::new(AuditCheckpoints::open(keyhold.clone(), &config.audit));
        let streams = AuditStreams::open(&keyhold, &config.audit.stream, &config.node_id, &metrics)
            .map_err(anyhow::Error::msg)?;
        let approval_events =
            crate::approval_webhook::ApprovalEvents::start(config, metrics.approval_webhook())?;
        let backups = Arc::new(crate::backup::Backups::new(
            keyhold.clone(),
            config.backup_dir.clone(),
            config.audit_archive_dir.clone(),
            config.node_id.clone(),
            keyhold_store::DatabaseKind::of(config.database.expose())
                .map_err(anyhow::Error::msg)?,
        ));
        match backups.recover().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                backups = n,
                "backups interrupted by the last stop are marked failed"
            ),
            Err(error) => tracing::warn!(%error, "cannot look for interrupted backups"),
        }
        rotator.set_backups(backups.clone());
        // Over HTTPS the listener applies the stores' mTLS rules; over
        // plain HTTP no certificate arrives, and stores with a rule refuse.
        let client_rules = config.tls.as_ref().map_or_else(
            crate::xks::mtls::MtlsRules::new,
            crate::tls::TlsConfig::client_rules,
        );
        let xks = crate::xks::XksProxy::start(
            &config.xks,
            keyhold.clone(),
            config.node_id.clone(),
            metrics.clone(),
            client_rules,
        )
        .await?;
        let state = AppState {
            keyhold,
            metrics,
            jobs,
            rotator,
            checkpoints,
            streams: streams.board(),
            login_throttle: LoginThrottle::new(config.login_throttle),
            trusted_proxies: Arc::new(config.trusted_proxies.clone()),
            approval_events,
            backups,
            xks,
        };
        Ok((
            Self {
                listener,
                tls: config.tls.clone(),
                state,
                streams,
            },
            passwords,
        ))
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// `https` when a certificate is configured, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Takes up the jobs a previous run left unfinished, then serves until
    /// `shutdown` completes, finishes in-flight requests, and gives running
    /// jobs a grace period to end (those that do not resume at the next start).
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let jobs = self.state.jobs.clone();
        let rotator = self.state.rotator.clone();
        let xks = self.state.xks.clone();
        // Its ticks take up the unfinished jobs once this node is the rotator.
        // Dropped with this future (the process stopped from outside), the
        // background work stops too, as it would with the process.
        let mut background = Background {
            ticking: rotator.spawn(),
            checkpointing: self.state.checkpoints.spawn(),
            streaming: self.streams.spawn(),
            approving: crate::operations::approvals::spawn_resumer(self.state.clone()),
            xks: xks.spawn(),
            jobs: jobs.clone(),
        };
        let router = crate::routes::router(self.state);
        let served = match &self.tls {
            Some(tls) => {
                let listener = TlsListener::new(self.listener, tls)?;
                // Browsers that once reached keyhold over HTTPS never try
                // plain HTTP for it again (no downgrade on a hostile network).
                let router = router.layer(
                    tower_http::set_header::SetResponseHeaderLayer::if_not_present(
                        axum::http::header::STRICT_TRANSPORT_SECURITY,
                        axum::http::HeaderValue::from_static("max-age=31536000"),
                    ),
                );
                crate::serve::serve(listener, router, shutdown).await
            }
            None => crate::serve::serve(self.listener, router, shutdown).await,
        }
        .context("the HTTP server stopped");
        background.ticking.abort();
        background.checkpointing.abort();
        background.approving.abort();
        background.xks.iter().for_each(|task| task.abort());
        // The requests are answered: the last period's usage digest.
        xks.final_digest().await;
        // Each streamer ends after the batch it is delivering, its cursor
        // moved, so the node taking a receiver over resumes exactly after
        // it. One stuck past its send timeouts is cut off, and then may
        // send a batch again; all have stopped before the leases go.
        self.streams.stop();
        for mut task in std::mem::take(&mut background.streaming) {
            if tokio::time::timeout(crate::audit_stream::STOP_GRACE, &mut task)
                .await
                .is_err()
            {
                task.abort();
                let _ = task.await;
            }
        }
        self.streams.release().await;
        jobs.shutdown(SHUTDOWN_GRACE).await;
        rotator.step_down().await;
        served
    }
}

/// The tasks a running server owns besides its requests.
struct Background {
    ticking: tokio::task::JoinHandle<()>,
    checkpointing: tokio::task::JoinHandle<()>,
    /// One streamer per audit stream sink.
    streaming: Vec<tokio::task::JoinHandle<()>>,
    /// Runs approved requests a crash left unexecuted.
    approving: tokio::task::JoinHandle<()>,
    /// The XKS proxy's directory reloads, health check and usage digest.
    xks: Vec<tokio::task::JoinHandle<()>>,
    jobs: JobRunner,
}

impl Drop for Background {
    fn drop(&mut self) {
        // A no-op after a graceful shutdown, which stopped both already.
        self.ticking.abort();
        self.checkpointing.abort();
        self.approving.abort();
        self.streaming.iter().for_each(|task| task.abort());
        self.xks.iter().for_each(|task| task.abort());
        self.jobs.halt();
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum InitMode {
    /// Initialise only an empty data directory; open an initialised one.
    IfEmpty,
    /// Initialise, and fail if the directory is already initialised.
    Required,
    /// Open an initialised directory; refuse an empty one (`keyhold init`
    /// initialises it, showing the one-time passwords on a terminal).
    Never,
}

/// Opens the keystore and database of a data directory, creating them (and
/// the default administrators) when the directory is new.
pub async fn open_data_dir(
    config: &Config,
    clock: Arc<dyn Clock>,
    mode: InitMode,
) -> anyhow::Result<(Keyhold, Vec<InitialPassword>)> {
    create_private_dir(&config.data_dir)?;
    let not_initialised = || {
        anyhow::anyhow!(
            "{} is not initialised, and require_initialised is set: run `keyhold init` with the same configuration first (it creates the administrators and shows their one-time passwords on your terminal), then start the server again",
            config.data_dir.display()
        )
    };
    // Before the software keystore would be created: nothing is made here.
    if mode == InitMode::Never
        && matches!(config.keystore, KeystoreConfig::Software(_))
        && !SoftKeystore::is_initialised(&config.keystore_dir())
    {
        return Err(not_initialised());
    }
    let keystore = open_keystore(config)?;
    let store = keyhold_store::connect(config.database.expose(), keystore.clone())
        .await
        .map_err(|e| anyhow::anyhow!("database {}: {e}", config.database))?;
    if mode == InitMode::Never
        && store
            .list_identities()
            .await
            .map_err(|e| anyhow::anyhow!("database: {e}"))?
            .is_empty()
    {
        return Err(not_initialised());
    }
    if mode == InitMode::Required
        && !store
            .list_identities()
            .await
            .map_err(|e| anyhow::anyhow!("database: {e}"))?
            .is_empty()
    {
        anyhow::bail!(
            "{} is already initialised: its administrators exist already. Use `keyhold serve`, or point --data-dir at an empty directory",
            config.data_dir.display()
        );
    }
    let keyhold =
        Keyhold::new(store, keystore, clock).with_endpoint_policy(config.kms.endpoints.clone());
    let passwords = keyhold
        .bootstrap()
        .await
        .map_err(|e| anyhow::anyhow!("creating the default administrators: {e}"))?
        .into_iter()
        .map(|p| InitialPassword {
            name: p.name.to_string(),
            password: p.password,
        })
        .collect();
    Ok((keyhold, passwords))
}

/// Opens the configured keystore; the software one is created on first use.
fn open_keystore(config: &Config) -> anyhow::Result<Arc<dyn Keystore>> {
    match &config.keystore {
        KeystoreConfig::Software(master_key) => {
            let dir = config.keystore_dir();
            let keystore = if SoftKeystore::is_initialised(&dir) {
                SoftKeystore::open(&dir, master_key.clone())
            } else {
                SoftKeystore::init(&dir, master_key.clone())
            }
            .map_err(|e| anyhow::anyhow!("keystore in {}: {e}", dir.display()))?;
            Ok(Arc::new(keystore))
        }
        KeystoreConfig::Pkcs11 { token, .. } => {
            let keystore = Pkcs11Keystore::load(token.clone())
                .map_err(|e| anyhow::anyhow!("PKCS#11 keystore: {e}"))?;
            if let Err(e) = keystore.check() {
                tracing::warn!(
                    "the PKCS#11 keystore cannot be used now: {e}. keyhold starts anyway: /readyz reports the reason and jobs fail with it until the token answers"
                );
            }
            Ok(Arc::new(keystore))
        }
    }
}

/// Creates the data directory with mode 0700, and refuses one that group or
/// others can enter or read: it holds the database (password hashes, sealed
/// secrets) and, with the software keystore, the master key. Narrowing an
/// existing directory is left to the operator, who may have pointed keyhold
/// at a directory shared on purpose (a home directory, a mount point).
fn create_private_dir(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !path.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .with_context(|| format!("cannot create data directory {}", path.display()))?;
    }
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot inspect data directory {}", path.display()))?;
    if !meta.is_dir() {
        anyhow::bail!(
            "the data directory {} exists and is not a directory",
            path.display()
        );
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        anyhow::bail!(
            "the data directory {dir} is open to group or others (mode {mode:04o}), and it holds the database with the password hashes and the keystore: run `chmod 700 {dir}` and start again",
            dir = path.display()
        );
    }
    Ok(())
}

/// What jobs report their commits to: nothing in production; with the
/// `crash-points` feature, the pause point and trace the environment names.
fn job_hooks() -> anyhow::Result<Arc<dyn JobHooksFactory>> {
    #[cfg(feature = "crash-points")]
    if let Some(points) =
        crate::crash_points::CrashPoints::from_env().map_err(anyhow::Error::msg)?
    {
        tracing::warn!(
            ?points,
            "crash points armed: a job may stop at one until the process is killed"
        );
        return Ok(Arc::new(points));
    }
    Ok(Arc::new(crate::jobs::NoJobHooks))
}

/// The process clock.
pub fn system_clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}
