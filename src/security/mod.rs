//! Transport security and access control.
//!
//! - [`tls`]: the listeners' TLS (rustls), with certificates and the client CA reloaded from disk
//!   when they change, and the client certificate's identity handed to each request.
//! - [`auth`]: a tower layer that gives each request a role from its bearer token or client
//!   certificate and lets it through, or answers UNAUTHENTICATED or PERMISSION_DENIED.
//!
//! Both reload their files through [`watch_files`].

pub mod auth;
pub mod tls;

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Calls `reload` whenever the contents of any of `paths` change, checking every `interval`
/// until `cancel`.
///
/// Contents rather than modification times are compared: cert-manager and the kubelet replace
/// mounted files by swapping a symlink, which can leave times unchanged, and the files are
/// small. A file that cannot be read counts as changed too, so `reload` sees (and reports) it.
pub async fn watch_files(
    paths: Vec<PathBuf>,
    interval: Duration,
    cancel: CancellationToken,
    reload: impl Fn() + Send + 'static,
) {
    let read = |paths: &[PathBuf]| -> Vec<Option<Vec<u8>>> {
        paths.iter().map(|path| std::fs::read(path).ok()).collect()
    };
    let mut seen = read(&paths);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let now = read(&paths);
        if now != seen {
            seen = now;
            reload();
        }
    }
}
