//! A TCP forwarder the test can close and open, standing between the server and PostgreSQL: a
//! database outage without stopping the shared PostgreSQL.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

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
