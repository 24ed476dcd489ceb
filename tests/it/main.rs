//! Integration tests, one binary: the store conformance suite on both backends, and end-to-end
//! gRPC tests against a real server on port 0.

/// Instantiates each named `async fn(Backend)` as a test on SQLite and one on PostgreSQL.
/// (Defined before the modules, so that every one of them can use it.)
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test] async fn $name() { super::$name(crate::db::Backend::Sqlite).await } )*
        }
        mod postgres {
            $( #[tokio::test] async fn $name() { super::$name(crate::db::Backend::Postgres).await } )*
        }
    };
}

mod app;
mod cache;
mod cli;
mod cli_client;
mod db;
mod deploy;
mod faults;
mod fixtures;
mod gate;
mod grpc;
mod health;
mod hostile;
mod model;
mod monitoring;
mod observability;
mod pg_cluster;
mod process;
mod security;
mod store;
mod traces;
mod transport;
