//! Test databases: a fresh PostgreSQL database or SQLite file per test, removed when the test ends
//! (also when it panics).

use std::sync::Arc;
use std::time::Duration;

use spec_provider::config::{DatabaseSettings, DatabaseUrl};
use spec_provider::store::Store;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// The PostgreSQL server tests use when `DATABASE_URL` is not set.
const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Connections per test database: tests run in parallel (one per core), and PostgreSQL allows
/// 100 connections in all.
const MAX_CONNECTIONS: u32 = 5;

/// A database backend under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file in a temporary directory.
    Sqlite,
    /// A new database on the PostgreSQL server named by `DATABASE_URL`.
    Postgres,
}

/// A database of its own for one test; it is removed when this is dropped.
pub struct TestDb {
    /// Settings that open this database.
    pub settings: DatabaseSettings,
    /// The directory holding the SQLite file (and its WAL), deleted on drop.
    _sqlite_dir: Option<tempfile::TempDir>,
    /// The PostgreSQL database, dropped on drop.
    _postgres_database: Option<DropDatabase>,
}

impl TestDb {
    /// Creates an empty database on `backend` (no schema yet: see [`TestDb::store`]).
    pub async fn new(backend: Backend) -> TestDb {
        let (url, sqlite_dir, postgres_database) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("creating a temporary directory");
                let path = dir.path().join("specs.db");
                let url = format!(
                    "sqlite://{}",
                    path.to_str().expect("temporary paths are UTF-8")
                );
                (url, Some(dir), None)
            }
            Backend::Postgres => {
                let (url, database) = DropDatabase::create().await;
                (url, None, Some(database))
            }
        };
        TestDb {
            settings: DatabaseSettings {
                url: DatabaseUrl::new(url),
                run_migrations: true,
                max_connections: MAX_CONNECTIONS,
                // Generous: a loaded CI machine must not turn a slow test into a failing one.
                acquire_timeout: Duration::from_secs(30),
                // Likewise; the tests of the statement timeout set their own.
                statement_timeout: Duration::from_secs(30),
            },
            _sqlite_dir: sqlite_dir,
            _postgres_database: postgres_database,
        }
    }

    /// A store on this database, opened and migrated. Each call opens a new store (with its own
    /// pool) on the same database.
    pub async fn store(&self) -> Arc<dyn Store> {
        let store = spec_provider::store::open(&self.settings)
            .await
            .unwrap_or_else(|err| panic!("opening {:?}: {err:?}", self.settings.url));
        store
            .migrate()
            .await
            .unwrap_or_else(|err| panic!("migrating {:?}: {err:?}", self.settings.url));
        store
    }
}

/// A PostgreSQL database created for one test, dropped with this value.
struct DropDatabase {
    admin_url: String,
    name: String,
}

impl DropDatabase {
    /// Creates `sp_test_<uuid>` on the server of `DATABASE_URL`; returns its URL and its guard.
    async fn create() -> (String, DropDatabase) {
        let admin_url =
            std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned());
        let mut admin = PgConnection::connect(&admin_url).await.unwrap_or_else(|err| {
            panic!(
                "cannot connect to PostgreSQL at {admin_url} ({err}). Start it with `make db-up`, \
                 or `pg_ctlcluster --skip-systemctl-redirect 15 main start`, or point \
                 DATABASE_URL at a server where this user may create databases"
            )
        });
        let name = format!("sp_test_{}", uuid::Uuid::new_v4().simple());
        // The name is made here of hex digits, so formatting it into the statement is safe
        // (CREATE DATABASE takes no bind parameters).
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|err| panic!("creating database {name}: {err}"));
        admin.close().await.ok();

        let mut url = url::Url::parse(&admin_url).expect("DATABASE_URL is a valid URL");
        url.set_path(&name);
        (url.into(), DropDatabase { admin_url, name })
    }
}

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // A thread with its own runtime: this may run inside a test's runtime (which cannot
        // block on a future) or while it unwinds from a panic.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(sqlx::Error::Io)?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&admin_url).await?;
                // FORCE ends the connections a test's pool may still hold.
                sqlx::query(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await?;
                admin.close().await
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(err)) => eprintln!("warning: could not drop test database {}: {err}", self.name),
            Err(_) => eprintln!("warning: dropping test database {} panicked", self.name),
        }
    }
}
