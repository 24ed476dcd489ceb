//! The real `spec-provider` binary as a child process, for the tests that kill or signal it.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use spec_provider::proto::specprovider::v1::spec_admin_client::SpecAdminClient;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::app::{DEADLINE, wait_for_health};

const BIN: &str = env!("CARGO_BIN_EXE_spec-provider");

/// `spec-provider serve` on `database_url`, with port 0 listeners, a short health check interval,
/// nothing of this process's environment but `PATH` and `env`, and standard output piped (not a
/// terminal), killed when dropped.
pub fn command(database_url: &str, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("SPEC_PROVIDER__SERVER__LISTEN", "127.0.0.1:0")
        .env("SPEC_PROVIDER__SERVER__METRICS_LISTEN", "127.0.0.1:0")
        .env("SPEC_PROVIDER__DATABASE__URL", database_url)
        .env("SPEC_PROVIDER__HEALTH__CHECK_INTERVAL", "100ms")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    command
}

/// A running `spec-provider serve`, killed when dropped.
pub struct ServerProcess {
    /// The process (killed when this is dropped).
    pub child: Child,
    /// The gRPC listener.
    pub addr: SocketAddr,
    /// The metrics listener.
    pub metrics_addr: SocketAddr,
    /// Every further JSON log line.
    pub log: mpsc::UnboundedReceiver<serde_json::Value>,
}

impl ServerProcess {
    /// Starts the binary on `database_url` with port 0 listeners, JSON logs and the extra
    /// `SPEC_PROVIDER__…` variables in `env`; returns once it announced its addresses.
    pub async fn start(database_url: &str, env: &[(&str, &str)]) -> ServerProcess {
        let mut command = command(database_url, &[("SPEC_PROVIDER__LOG__FORMAT", "json")]);
        command.envs(env.iter().copied());
        let mut child = command.spawn().expect("starting spec-provider");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let announce = async {
            loop {
                let line = lines
                    .next_line()
                    .await
                    .unwrap()
                    .expect("spec-provider exited before announcing its address");
                let event: serde_json::Value = serde_json::from_str(&line).expect("json log lines");
                if event["message"] == "spec-provider listening" {
                    let addr = |key: &str| event[key].as_str().unwrap().parse().unwrap();
                    return (addr("local_addr"), addr("metrics_addr"));
                }
            }
        };
        let (addr, metrics_addr) = tokio::time::timeout(DEADLINE, announce)
            .await
            .expect("spec-provider announced its address within the deadline");
        // Keeps reading, so that the child never blocks on a full pipe.
        let (tx, log) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send(serde_json::from_str(&line).unwrap_or_default());
            }
        });
        ServerProcess {
            child,
            addr,
            metrics_addr,
            log,
        }
    }

    /// A new channel to the gRPC listener.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .expect("connecting to spec-provider")
    }

    /// An admin client with no message size limits of its own.
    pub async fn admin(&self) -> SpecAdminClient<Channel> {
        SpecAdminClient::new(self.channel().await).max_decoding_message_size(usize::MAX)
    }

    /// Waits, on the health Watch stream, until the server is SERVING.
    pub async fn wait_until_serving(&self) {
        wait_for_health(&self.channel().await, ServingStatus::Serving).await;
    }

    /// Waits until a log line with this message is written.
    pub async fn wait_for_log(&mut self, message: &str) {
        self.next_event(message, |event| event["message"] == message)
            .await;
    }

    /// Waits, with a deadline, for the next JSON log line for which `matches` holds.
    pub async fn next_event(
        &mut self,
        what: &str,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let wait = async {
            while let Some(event) = self.log.recv().await {
                if matches(&event) {
                    return event;
                }
            }
            panic!("spec-provider exited without logging {what:?}");
        };
        tokio::time::timeout(DEADLINE, wait)
            .await
            .unwrap_or_else(|_| panic!("no log line {what:?} within the deadline"))
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("the process is running");
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Waits for the process to exit within `deadline`; returns its exit code.
    pub async fn wait_for_exit(&mut self, deadline: Duration) -> Option<i32> {
        tokio::time::timeout(deadline, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("spec-provider did not exit within {deadline:?}"))
            .unwrap()
            .code()
    }

    /// Kills the process with SIGKILL and waits until it is gone.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("killing spec-provider");
    }
}

/// Fetches `path` from an HTTP/1.1 listener; returns the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// The sum of the samples of `metric` whose labels include `label` (e.g.
/// `grpc_method="PutSpec"`), in a Prometheus text exposition.
pub fn metric_sum(text: &str, metric: &str, label: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(&format!("{metric}{{")) && line.contains(label))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}
