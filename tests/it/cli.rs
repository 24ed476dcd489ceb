//! The `spec-provider` binary itself: serve, migrate, health, and its exit codes.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::app::spawn_app;
use crate::db::Backend;

const BIN: &str = env!("CARGO_BIN_EXE_spec-provider");

/// The binary with a clean environment: no settings leak in from the developer's shell.
fn spec_provider() -> Command {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    command
}

/// Waits for a child to exit, with a deadline; kills it and fails if it does not.
fn wait_with_deadline(child: &mut Child, deadline: Duration) -> std::process::ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            panic!("spec-provider did not exit within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
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

#[test]
fn serve_with_no_subcommand_answers_health_and_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spec_provider()
        .env("SPEC_PROVIDER__SERVER__LISTEN", "127.0.0.1:0")
        .env("SPEC_PROVIDER__SERVER__METRICS_LISTEN", "127.0.0.1:0")
        .env(
            "SPEC_PROVIDER__DATABASE__URL",
            format!("sqlite://{}", dir.path().join("specs.db").display()),
        )
        .env("SPEC_PROVIDER__LOG__FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // The port is only known from the log line that announces it.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("spec-provider exited before announcing its address")
            .unwrap();
        let event: serde_json::Value = serde_json::from_str(&line).expect("json log lines");
        if event["message"] == "spec-provider listening" {
            break event["local_addr"].as_str().unwrap().to_owned();
        }
    };
    // Keep draining the log so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));

    let serving = (0..200).any(|_| {
        let ok = spec_provider()
            .args(["health", "--addr", &format!("http://{addr}")])
            .output()
            .unwrap()
            .status
            .success();
        if !ok {
            std::thread::sleep(Duration::from_millis(50));
        }
        ok
    });
    assert!(serving, "the server became SERVING");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = wait_with_deadline(&mut child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0));
}
