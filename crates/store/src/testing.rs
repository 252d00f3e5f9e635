//! Test support (feature `testing`): a fresh database per test on the backend
//! that `KEYHOLD_TEST_DATABASE` names, so one test suite runs against each
//! backend in turn (a matrix, not copies of the tests).
//!
//! - unset or `sqlite`: SQLite, in a file the test chooses;
//! - `postgres`: a new database `keyhold_it_<uuid>` on the server at
//!   `KEYHOLD_TEST_POSTGRES_URL` (default [`DEFAULT_POSTGRES_URL`]), dropped
//!   again when the [`TestDatabase`] is dropped.
//!
//! A PostgreSQL run whose server cannot be reached fails: nothing is skipped.

use sqlx::Connection;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

use crate::{DatabaseKind, mask_url};

/// Names the backend of a test run: `sqlite` (the default) or `postgres`.
pub const BACKEND_VAR: &str = "KEYHOLD_TEST_DATABASE";
/// The PostgreSQL server on which each test creates its database.
pub const POSTGRES_URL_VAR: &str = "KEYHOLD_TEST_POSTGRES_URL";
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The backend this test run uses, from [`BACKEND_VAR`].
pub fn backend() -> Result<DatabaseKind, String> {
    match std::env::var(BACKEND_VAR).as_deref() {
        Err(std::env::VarError::NotPresent) | Ok("" | "sqlite") => Ok(DatabaseKind::Sqlite),
        Ok("postgres") => Ok(DatabaseKind::Postgres),
        Ok(other) => Err(format!(
            "{BACKEND_VAR}={other} is not a backend: use sqlite or postgres"
        )),
        Err(e) => Err(format!("{BACKEND_VAR}: {e}")),
    }
}

/// One test's database.
#[derive(Debug)]
pub enum TestDatabase {
    /// SQLite: the test's own file, wherever it puts it.
    Sqlite,
    /// A database of its own on a PostgreSQL server.
    Postgres {
        /// The URL of the test's database.
        url: String,
        /// The URL of the server's maintenance database, to drop it from.
        server: String,
        name: String,
    },
}

impl TestDatabase {
    /// A fresh database on this run's backend.
    pub async fn create() -> Result<Self, String> {
        match backend()? {
            DatabaseKind::Sqlite => Ok(Self::Sqlite),
            DatabaseKind::Postgres => {
                let server = std::env::var(POSTGRES_URL_VAR)
                    .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
                Self::create_postgres(&server).await
            }
        }
    }

    /// A fresh database on `kind`, whatever this run's backend: for tests
    /// that move data between backends (PostgreSQL's on the server at
    /// [`POSTGRES_URL_VAR`], default [`DEFAULT_POSTGRES_URL`]).
    pub async fn create_on(kind: DatabaseKind) -> Result<Self, String> {
        match kind {
            DatabaseKind::Sqlite => Ok(Self::Sqlite),
            DatabaseKind::Postgres => {
                let server = std::env::var(POSTGRES_URL_VAR)
                    .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
                Self::create_postgres(&server).await
            }
        }
    }

    /// Whether this run has a PostgreSQL server besides SQLite: its backend
    /// is PostgreSQL, or [`POSTGRES_URL_VAR`] names a server.
    pub fn postgres_available() -> bool {
        backend() == Ok(DatabaseKind::Postgres) || std::env::var_os(POSTGRES_URL_VAR).is_some()
    }

    async fn create_postgres(server: &str) -> Result<Self, String> {
        let name = format!("keyhold_it_{}", uuid::Uuid::new_v4().simple());
        with_database(server, &name)?;
        let mut admin = connect_postgres(server).await?;
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .map_err(|e| format!("cannot create database {name} on {}: {e}", mask_url(server)))?;
        let _ = admin.close().await;
        Ok(Self::Postgres {
            url: with_database(server, &name)?,
            server: server.to_owned(),
            name,
        })
    }

    /// The URL to give keyhold: the PostgreSQL database's, or for SQLite
    /// the file at `sqlite_path`.
    pub fn url(&self, sqlite_path: &std::path::Path) -> String {
        match self {
            Self::Sqlite => format!("sqlite://{}?mode=rwc", sqlite_path.display()),
            Self::Postgres { url, .. } => url.clone(),
        }
    }

    /// The URL to give keyhold when it should not use the SQLite file of its
    /// data directory, which it picks by itself.
    pub fn url_override(&self) -> Option<&str> {
        match self {
            Self::Sqlite => None,
            Self::Postgres { url, .. } => Some(url),
        }
    }

    pub fn kind(&self) -> DatabaseKind {
        match self {
            Self::Sqlite => DatabaseKind::Sqlite,
            Self::Postgres { .. } => DatabaseKind::Postgres,
        }
    }

    /// A connection of its own, behind keyhold's back, as an attacker with
    /// access to the database would have.
    pub async fn raw(&self, sqlite_path: &std::path::Path) -> Result<RawConnection, String> {
        match self {
            Self::Sqlite => SqliteConnection::connect_with(
                &SqliteConnectOptions::new()
                    .filename(sqlite_path)
                    .create_if_missing(true)
                    .foreign_keys(true),
            )
            .await
            .map(RawConnection::Sqlite)
            .map_err(|e| format!("cannot open {}: {e}", sqlite_path.display())),
            Self::Postgres { url, .. } => connect_postgres(url).await.map(RawConnection::Postgres),
        }
    }
}

/// `server` (a PostgreSQL URL) with its database replaced by `name`.
fn with_database(server: &str, name: &str) -> Result<String, String> {
    let (base, query) = match server.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (server, None),
    };
    let Some((scheme, rest)) = base.split_once("://") else {
        return Err(format!(
            "{POSTGRES_URL_VAR} {} is not a URL",
            mask_url(server)
        ));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let mut url = format!("{scheme}://{authority}/{name}");
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    Ok(url)
}

async fn connect_postgres(url: &str) -> Result<PgConnection, String> {
    PgConnection::connect(url).await.map_err(|e| {
        format!(
            "{BACKEND_VAR}=postgres, but PostgreSQL at {} cannot be reached: {e}",
            mask_url(url)
        )
    })
}

impl Drop for TestDatabase {
    /// Drops a PostgreSQL database, ending the connections still open to it.
    /// Best effort: a database left behind costs only disk space.
    fn drop(&mut self) {
        let Self::Postgres { server, name, .. } = self else {
            return;
        };
        let (server, name) = (server.clone(), name.clone());
        // Drop may run inside an async runtime, which cannot be blocked on:
        // the statement runs on a thread and runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut admin = connect_postgres(&server).await?;
                sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = admin.close().await;
                Ok::<(), String>(())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop a test database: {e}");
        }
    }
}

/// A connection straight to a test's database, on either backend.
pub enum RawConnection {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

impl RawConnection {
    /// Runs `sql` (one or more statements, no parameters); returns the rows changed.
    pub async fn execute(&mut self, sql: &str) -> Result<u64, sqlx::Error> {
        match self {
            Self::Sqlite(c) => Ok(sqlx::raw_sql(sql).execute(c).await?.rows_affected()),
            Self::Postgres(c) => Ok(sqlx::raw_sql(sql).execute(c).await?.rows_affected()),
        }
    }

    /// Applies the migrations in the folder `migrations` (for instance those
    /// of an earlier release), as that release would have at start-up.
    /// The first column of every row `sql` returns, as bytes.
    pub async fn fetch_bytes(&mut self, sql: &str) -> Result<Vec<Vec<u8>>, sqlx::Error> {
        match self {
            Self::Sqlite(c) => sqlx::query_scalar(sql).fetch_all(c).await,
            Self::Postgres(c) => sqlx::query_scalar(sql).fetch_all(c).await,
        }
    }

    /// The first column of every row `sql` returns, as integers.
    pub async fn fetch_i64(&mut self, sql: &str) -> Result<Vec<i64>, sqlx::Error> {
        match self {
            Self::Sqlite(c) => sqlx::query_scalar(sql).fetch_all(c).await,
            Self::Postgres(c) => sqlx::query_scalar(sql).fetch_all(c).await,
        }
    }

    pub async fn migrate(&mut self, migrations: &std::path::Path) -> Result<(), String> {
        let migrator = sqlx::migrate::Migrator::new(migrations)
            .await
            .map_err(|e| e.to_string())?;
        match self {
            Self::Sqlite(c) => migrator.run(c).await,
            Self::Postgres(c) => migrator.run(c).await,
        }
        .map_err(|e| e.to_string())
    }

    /// The folder of this backend's migrations in the source tree.
    pub fn migrations_dir(&self) -> std::path::PathBuf {
        let backend = match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        };
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(backend)
    }

    /// `bytes` as a literal of this database's SQL.
    pub fn bytes_literal(&self, bytes: &[u8]) -> String {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        match self {
            Self::Sqlite(_) => format!("x'{hex}'"),
            Self::Postgres(_) => format!("'\\x{hex}'::bytea"),
        }
    }

    /// The statements that remove the audit log's append-only guard, as an
    /// attacker with write access to the database would first.
    pub fn drop_audit_guard(&self) -> &'static [&'static str] {
        match self {
            Self::Sqlite(_) => &[
                "DROP TRIGGER IF EXISTS audit_log_no_edit",
                "DROP TRIGGER IF EXISTS audit_log_no_delete",
            ],
            Self::Postgres(_) => &[
                "DROP TRIGGER IF EXISTS audit_log_no_edit ON audit_log",
                "DROP TRIGGER IF EXISTS audit_log_no_delete ON audit_log",
            ],
        }
    }
}
