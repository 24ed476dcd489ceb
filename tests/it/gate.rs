//! A TCP forwarder the test can close and open, standing between the server and PostgreSQL: a
//! database outage without stopping the shared PostgreSQL.

use std::net::SocketAddr;

use std::time::Duration;

use spec_provider::config::{DatabaseUrl, Settings};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::app::test_settings;
use crate::db::TestDb;

/// Test settings for `db` (a PostgreSQL one) with the database behind a closed [`Gate`], and a
/// short acquire timeout so that RPCs fail fast while the gate is closed.
pub async fn behind_gate(db: &TestDb) -> (Gate, Settings) {
    let mut url = url::Url::parse(db.settings.url.expose()).unwrap();
    let upstream = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    let upstream = tokio::net::lookup_host(upstream)
        .await
        .unwrap()
        .next()
        .unwrap();
    let gate = Gate::new(upstream).await;
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(gate.addr.port())).unwrap();
    let mut settings = test_settings(db);
    settings.database.url = DatabaseUrl::new(url.as_str());
    settings.database.acquire_timeout = Duration::from_millis(500);
    (gate, settings)
}

/// Forwards connections to `upstream` while open; while closed, refuses new connections and has
/// cut the ones it had.
pub struct Gate {
    pub addr: SocketAddr,
    open: watch::Sender<bool>,
}

impl Gate {
    /// A closed gate in front of `upstream`.
    pub async fn new(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (open, _) = watch::channel(false);
        let state = open.subscribe();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut state = state.clone();
                if !*state.borrow_and_update() {
                    continue; // dropping the socket closes it
                }
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = state.wait_for(|open| !open) => {}
                    }
                });
            }
        });
        Self { addr, open }
    }

    /// Lets connections through.
    pub fn open(&self) {
        self.open.send_replace(true);
    }

    /// Cuts every connection and refuses new ones.
    pub fn close(&self) {
        self.open.send_replace(false);
    }
}
