//! A PostgreSQL server of a test's own, made with `initdb` in a temporary directory and run with
//! `pg_ctl` on a spare port, so that the test can stop it, kill it and start it again without
//! disturbing the shared server other tests use. It is stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian's `postgresql` package puts the server binaries; `PG_BIN_DIR` overrides it.
const DEFAULT_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// A private PostgreSQL server.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    /// `initdb` and `postgres` refuse to run as root: then they run as `postgres`.
    as_postgres: bool,
}

impl PgCluster {
    /// Creates and starts a server; it accepts connections when this returns.
    pub fn start() -> PgCluster {
        let bin = PathBuf::from(
            std::env::var("PG_BIN_DIR").unwrap_or_else(|_| DEFAULT_BIN_DIR.to_owned()),
        );
        assert!(
            bin.join("initdb").is_file(),
            "the fault tests need the PostgreSQL server binaries in {} (Debian: apt-get install \
             postgresql; or set PG_BIN_DIR)",
            bin.display()
        );
        let as_postgres = is_root();
        let dir = tempfile::tempdir().expect("creating a temporary directory");
        if as_postgres {
            run(Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path()));
        }
        // A port nothing listens on now; the server binds it a moment later.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = PgCluster {
            dir,
            bin,
            port,
            as_postgres,
        };
        run(cluster
            .command("initdb")
            .args(["--auth=trust", "--username=postgres", "--no-sync", "-D"])
            .arg(cluster.data_dir()));
        cluster.start_again();
        cluster
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the stopped (or killed) server, which recovers from its WAL first; returns when it
    /// accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log");
        run_explained(
            self.command("pg_ctl")
                .args(["start", "--wait", "--timeout=60", "-D"])
                .arg(self.data_dir())
                .arg("-l")
                .arg(&log)
                .args(["-o", &options]),
            || {
                format!(
                    "the server's log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            },
        );
    }

    /// Stops the server the way an administrator does (`pg_ctl stop -m fast`): sessions are
    /// ended, in-flight transactions rolled back.
    pub fn stop(&self) {
        run(self
            .command("pg_ctl")
            .args(["stop", "--wait", "-m", "fast", "-D"])
            .arg(self.data_dir()));
    }

    /// Kills the postmaster and every backend with SIGKILL at once, as a crash would; the next
    /// start recovers from the WAL. The postmaster is stopped (SIGSTOP) first, so that it forks
    /// no backend between the listing of its children and the kill: a backend left alive would
    /// keep the old shared memory attached, and the next start would refuse to run beside it.
    /// Returns once the postmaster is gone (reaped: the next start reads its pid from
    /// `postmaster.pid` and refuses to start while a process, a zombie included, has it) and no
    /// backend runs any more.
    pub fn kill(&self) {
        let pid_file = std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .expect("the server is running");
        let postmaster: u32 = pid_file.lines().next().unwrap().trim().parse().unwrap();
        signal("-STOP", &[postmaster]);
        let backends = children_of(postmaster);
        let mut pids = backends.clone();
        pids.push(postmaster);
        signal("-KILL", &pids);
        let gone = (0..1000).any(|_| {
            let reaped = !Path::new(&format!("/proc/{postmaster}")).exists();
            if !reaped || backends.iter().any(|&pid| is_running(pid)) {
                std::thread::sleep(std::time::Duration::from_millis(10));
                false
            } else {
                true
            }
        });
        assert!(gone, "a process of the server {pids:?} survived SIGKILL");
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Immediate: nothing in a test's throwaway cluster needs a clean shutdown. It fails
        // harmlessly when the server is already stopped.
        let _ = self
            .command("pg_ctl")
            .args(["stop", "--wait", "-m", "immediate", "-D"])
            .arg(self.data_dir())
            .output();
    }
}

fn is_root() -> bool {
    let output = Command::new("id")
        .arg("-u")
        .output()
        .expect("running id -u");
    String::from_utf8_lossy(&output.stdout).trim() == "0"
}

fn run(command: &mut Command) {
    run_explained(command, String::new);
}

/// Runs `command` and fails the test with its output, and what `explain` adds, unless it succeeds.
fn run_explained(command: &mut Command, explain: impl FnOnce() -> String) {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("running {command:?}: {err}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        explain()
    );
}

/// Sends `signal` to `pids`. A backend may have exited on its own in between, so `kill` may fail
/// for some; whether each is still running is checked after.
fn signal(signal: &str, pids: &[u32]) {
    let _ = Command::new("kill")
        .arg(signal)
        .args(pids.iter().map(u32::to_string))
        .status();
}

/// Whether `pid` exists and has not exited: a zombie (state `Z`) has released its memory,
/// shared memory included, and only waits to be reaped.
fn is_running(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|fields| fields.first().map(String::as_str) != Some("Z"))
}

/// The processes whose parent is `parent`, from `/proc`.
fn children_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|&pid| {
            stat_fields(pid)
                .and_then(|fields| fields.get(1)?.parse::<u32>().ok())
                .is_some_and(|ppid| ppid == parent)
        })
        .collect()
}

/// The fields of `/proc/<pid>/stat` after the command name (`pid (comm) state ppid ...`; comm
/// may hold spaces and parentheses), so state first and the parent's pid second; `None` once
/// the process is gone.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_comm) = stat.rsplit_once(')')?;
    Some(after_comm.split_whitespace().map(str::to_owned).collect())
}
