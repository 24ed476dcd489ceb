//! The limits on client connections: how many may be open at once (`server.max_connections`),
//! and how long a new one may take to send the HTTP/2 connection preface
//! (`server.preface_timeout`).
//!
//! It wraps a stream of accepted connections, whatever they are (plain TCP, or TLS once the
//! handshake is done), so it composes with the wrappers that make them.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::Connected;

/// The length of the HTTP/2 connection preface (RFC 9113, section 3.4), the first bytes a client
/// sends.
const PREFACE_LEN: usize = 24;

pin_project_lite::pin_project! {
    /// An accepted connection that holds one of the `server.max_connections` permits until it is
    /// dropped, i.e. closed, and whose reads fail with `TimedOut` once `server.preface_timeout`
    /// has passed without the client sending the 24 bytes of the HTTP/2 connection preface
    /// (the server then closes it).
    #[derive(Debug)]
    pub struct LimitedIo<IO> {
        #[pin]
        io: IO,
        _permit: OwnedSemaphorePermit,
        // Until the preface is in: what has come of it, and when it must have.
        preface: Option<Preface>,
    }
}

#[derive(Debug)]
struct Preface {
    received: usize,
    deadline: Instant,
    // Made when a read first has to wait.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<IO> LimitedIo<IO> {
    /// The connection itself.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

/// Passes accepted connections through while fewer than `max` of them are open. A connection
/// beyond the limit is closed at once (dropped), rather than left waiting in the listen backlog:
/// its client gets a clean, immediate end of the connection and can retry elsewhere, and the
/// connections being served are not slowed down. Accept errors pass through unchanged.
///
/// A connection passed through must send the HTTP/2 connection preface within
/// `preface_timeout`, so that clients that connect and say nothing cannot keep the permits
/// forever (HTTP/2 keepalive pings start only once the connection is established).
pub fn limit_connections<S, IO>(
    incoming: S,
    max: usize,
    preface_timeout: Duration,
) -> impl Stream<Item = io::Result<LimitedIo<IO>>> + Send + 'static
where
    S: Stream<Item = io::Result<IO>> + Send + 'static,
    IO: Send + 'static,
{
    let permits = Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS)));
    incoming.filter_map(move |accepted| {
        let limited = match accepted {
            Ok(io) => match permits.clone().try_acquire_owned() {
                Ok(permit) => Some(Ok(LimitedIo {
                    io,
                    _permit: permit,
                    preface: Some(Preface {
                        received: 0,
                        deadline: Instant::now() + preface_timeout,
                        timer: None,
                    }),
                })),
                Err(_) => {
                    tracing::debug!(
                        max,
                        "server.max_connections reached; closing a new connection"
                    );
                    None
                }
            },
            Err(err) => Some(Err(err)),
        };
        futures::future::ready(limited)
    })
}

impl<IO: Connected> Connected for LimitedIo<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead> AsyncRead for LimitedIo<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let filled = buf.filled().len();
        let polled = this.io.poll_read(cx, buf);
        let Some(preface) = this.preface.as_mut() else {
            return polled;
        };
        match &polled {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() - filled;
                preface.received += read;
                // The preface is in, or the client has closed its side: no more deadline.
                if read == 0 || preface.received >= PREFACE_LEN {
                    *this.preface = None;
                }
            }
            Poll::Ready(Err(_)) => {}
            Poll::Pending => {
                let deadline = preface.deadline;
                let timer = preface
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no HTTP/2 connection preface within server.preface_timeout",
                    )));
                }
            }
        }
        polled
    }
}

impl<IO: AsyncWrite> AsyncWrite for LimitedIo<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_beyond_the_limit_are_dropped_and_a_closed_one_frees_its_permit() {
        let accepted = futures::stream::iter((0..3).map(Ok::<_, io::Error>));
        let limited: Vec<_> = limit_connections(accepted, 2, Duration::from_secs(10))
            .collect()
            .await;
        // The stream holds all three at once: the third is over the limit.
        assert_eq!(limited.len(), 2);

        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<io::Result<u32>>();
        let mut limited = Box::pin(limit_connections(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
            1,
            Duration::from_secs(10),
        ));
        tx.send(Ok(1)).unwrap();
        let first = limited.next().await.unwrap().unwrap();
        assert_eq!(*first.get_ref(), 1);
        tx.send(Ok(2)).unwrap();
        drop(first);
        tx.send(Ok(3)).unwrap();
        // 2 was sent while 1 was open, but the limit applies when the server takes a connection
        // from the stream, by which time 1 was closed.
        let next = limited.next().await.unwrap().unwrap();
        assert_eq!(*next.get_ref(), 2);
        drop(tx);
        assert!(
            limited.next().await.is_none(),
            "3 is over the limit while 2 is open"
        );
    }

    /// One connection through `limit_connections` with a 10 s preface timeout, and its client.
    async fn one_connection() -> (LimitedIo<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (client, server) = tokio::io::duplex(1024);
        let accepted = futures::stream::iter([Ok::<_, io::Error>(server)]);
        let mut limited = Box::pin(limit_connections(accepted, 1, Duration::from_secs(10)));
        (limited.next().await.unwrap().unwrap(), client)
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_sends_no_preface_in_time_gets_its_reads_failed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut conn, mut client) = one_connection().await;
        // Part of the preface is not enough.
        client.write_all(&[0; PREFACE_LEN - 1]).await.unwrap();
        let mut buf = [0; 64];
        assert_eq!(conn.read(&mut buf).await.unwrap(), PREFACE_LEN - 1);
        let started = Instant::now();
        let err = conn.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("server.preface_timeout"), "{err}");
        // Paused time: the read failed exactly when the timeout (from the accept) ran out.
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn once_the_preface_is_in_a_quiet_connection_is_left_alone() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut conn, mut client) = one_connection().await;
        client.write_all(&[0; PREFACE_LEN]).await.unwrap();
        let mut buf = [0; 64];
        assert_eq!(conn.read(&mut buf).await.unwrap(), PREFACE_LEN);
        // Long past the preface timeout, a read still just waits for data.
        let waited = tokio::time::timeout(Duration::from_secs(3600), conn.read(&mut buf)).await;
        assert!(waited.is_err(), "the read ended: {waited:?}");
        client.write_all(b"more").await.unwrap();
        assert_eq!(conn.read(&mut buf).await.unwrap(), 4);
    }
}
