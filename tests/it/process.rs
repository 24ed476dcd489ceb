//! The real `spec-provider` binary as a child process: started on ports 0 with JSON logs, its
//! address read from the log line that announces it, stopped with a signal.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::app::DEADLINE;

/// The binary with a clean environment: no settings leak in from the developer's shell.
pub fn spec_provider() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_spec-provider"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    command
}

/// A running server process; killed and reaped when dropped.
pub struct ServerProcess {
    child: Child,
    /// The gRPC listener's address.
    pub addr: SocketAddr,
    events: Receiver<serde_json::Value>,
}

impl ServerProcess {
    /// Serves an SQLite database in `dir` on ports 0, with `env` on top of that, and returns once
    /// the server announced its address (it may not be SERVING yet).
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Self {
        let mut command = spec_provider();
        command
            .env("SPEC_PROVIDER__SERVER__LISTEN", "127.0.0.1:0")
            .env("SPEC_PROVIDER__SERVER__METRICS_LISTEN", "127.0.0.1:0")
            .env(
                "SPEC_PROVIDER__DATABASE__URL",
                format!("sqlite://{}", dir.join("specs.db").display()),
            )
            .env("SPEC_PROVIDER__LOG__FORMAT", "json");
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting spec-provider");
        // A thread reads the log to its end, so the child never blocks on a full pipe.
        let (events_tx, events) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Ok(event) = serde_json::from_str(&line)
                    && events_tx.send(event).is_err()
                {
                    return;
                }
            }
        });
        let mut process = Self {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            events,
        };
        let listening = process.next_event("spec-provider listening", |e| {
            e["message"] == "spec-provider listening"
        });
        process.addr = listening["local_addr"]
            .as_str()
            .expect("local_addr in the listening line")
            .parse()
            .expect("a socket address");
        process
    }

    /// The next JSON log line for which `matches` holds; fails after [`DEADLINE`].
    pub fn next_event(
        &self,
        what: &str,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = self
                .events
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no log line {what} within {DEADLINE:?}"));
            if matches(&event) {
                return event;
            }
        }
    }

    /// A channel to the server.
    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .expect("connecting to spec-provider")
    }

    /// Waits on the health Watch stream, with a deadline, until the server is SERVING.
    pub async fn wait_serving(&self) {
        let mut watch = HealthClient::new(self.channel().await)
            .watch(HealthCheckRequest::default())
            .await
            .expect("health watch")
            .into_inner();
        let serving = async {
            while let Some(message) = watch.message().await.expect("health watch message") {
                if message.status() == ServingStatus::Serving {
                    return;
                }
            }
            panic!("the health watch ended before SERVING");
        };
        tokio::time::timeout(DEADLINE, serving)
            .await
            .expect("SERVING within the deadline");
    }

    /// Sends SIGTERM and waits, with a deadline, for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(sent.success(), "kill -TERM failed");
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for spec-provider") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "spec-provider did not exit within {DEADLINE:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
