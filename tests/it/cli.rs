//! The `spec-provider` binary itself: serve, migrate, health, and its exit codes.

use std::process::Command;

use crate::app::{DEADLINE, spawn_app};
use crate::db::Backend;
use crate::process::ServerProcess;

/// The binary with a clean environment: no settings leak in from the developer's shell.
fn spec_provider() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_spec-provider"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    command
}

// Multi-threaded: the server keeps answering while this thread waits for the child process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_exits_zero_for_a_serving_server() {
    let app = spawn_app(Backend::Sqlite).await;
    let output = spec_provider()
        .args(["health", "--addr", &format!("http://{}", app.addr)])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "SERVING");

    let output = spec_provider()
        .args(["health", "--addr", &format!("http://{}", app.addr)])
        .args(["--service", "registryfacade.SpecProvider"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
}

#[test]
fn health_exits_one_and_says_so_when_nothing_listens() {
    // Bind and drop a listener to get a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = spec_provider()
        .args([
            "health",
            "--addr",
            &format!("http://127.0.0.1:{port}"),
            "--timeout",
            "2s",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot reach"), "{stderr}");
}

#[test]
fn usage_errors_exit_two_and_bad_settings_exit_one_naming_the_key() {
    let output = spec_provider().arg("no-such-command").output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");

    let output = spec_provider()
        .arg("serve")
        .env("SPEC_PROVIDER__SERVER__LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("server.listen"), "{stderr}");
}

#[test]
fn migrate_creates_the_sqlite_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("specs.db");
    let output = spec_provider()
        .arg("migrate")
        .env(
            "SPEC_PROVIDER__DATABASE__URL",
            format!("sqlite://{}", path.display()),
        )
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(path.exists());
    // Running it again is a no-op, not an error.
    let output = spec_provider()
        .arg("migrate")
        .env(
            "SPEC_PROVIDER__DATABASE__URL",
            format!("sqlite://{}", path.display()),
        )
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_no_subcommand_answers_health_and_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("specs.db").display());
    let mut server = ServerProcess::start(&url, &[]).await;
    server.wait_until_serving().await;

    // `health` is what a container probe runs.
    let output = spec_provider()
        .args(["health", "--addr", &format!("http://{}", server.addr)])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "SERVING");

    server.terminate();
    assert_eq!(server.wait_for_exit(DEADLINE).await, Some(0));
}
