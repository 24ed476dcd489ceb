//! Integration tests, one binary: the store conformance suite on both backends, and end-to-end
//! gRPC tests against a real server on port 0.

/// Instantiates each named case as one test on SQLite and one on PostgreSQL (`<module>::sqlite::
/// <case>` and `<module>::postgres::<case>`), each on a database of its own:
///
/// - `on_both_backends!(a, b)`: each case is an `async fn(Backend)`;
/// - `on_both_backends!(multi_thread; a, b)`: the same, on a runtime with two worker threads, so
///   that the case's tasks really run in parallel;
/// - `on_both_backends!(store; a, b)`: each case is an `async fn(Arc<dyn Store>)` given a migrated
///   store, on a runtime with two worker threads (the store conformance suite).
///
/// (Defined before the modules, so that every one of them can use it.)
macro_rules! on_both_backends {
    (store; $($case:ident),* $(,)?) => {
        on_both_backends!(@modules store [tokio::test(flavor = "multi_thread", worker_threads = 2)];
            $($case),*);
    };
    (multi_thread; $($case:ident),* $(,)?) => {
        on_both_backends!(@modules backend [tokio::test(flavor = "multi_thread", worker_threads = 2)];
            $($case),*);
    };
    ($($case:ident),* $(,)?) => {
        on_both_backends!(@modules backend [tokio::test]; $($case),*);
    };
    (@modules $kind:ident [$test:meta]; $($case:ident),*) => {
        mod sqlite {
            on_both_backends!(@tests $kind Sqlite [$test]; $($case),*);
        }
        mod postgres {
            on_both_backends!(@tests $kind Postgres [$test]; $($case),*);
        }
    };
    (@tests backend $backend:ident [$test:meta]; $($case:ident),*) => {
        $(
            #[$test]
            async fn $case() {
                super::$case(crate::db::Backend::$backend).await
            }
        )*
    };
    (@tests store $backend:ident [$test:meta]; $($case:ident),*) => {
        $(
            #[$test]
            async fn $case() {
                let db = crate::db::TestDb::new(crate::db::Backend::$backend).await;
                super::$case(db.store().await).await;
            }
        )*
    };
}

mod app;
mod authors;
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
mod registry;
mod registry_fixture;
mod security;
mod store;
mod traces;
mod transport;
mod verify;
