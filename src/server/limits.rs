//! The limit on open client connections (`server.max_connections`).
//!
//! It wraps a stream of accepted connections, whatever they are, so it composes with other
//! wrappers: the limit is taken on the plain TCP stream, and anything that wraps it afterwards
//! (TLS, say) keeps the permit alive inside it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::Connected;

pin_project_lite::pin_project! {
    /// An accepted connection that holds one of the `server.max_connections` permits until it is
    /// dropped, i.e. closed.
    #[derive(Debug)]
    pub struct LimitedIo<IO> {
        #[pin]
        io: IO,
        _permit: OwnedSemaphorePermit,
    }
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
pub fn limit_connections<S, IO>(
    incoming: S,
    max: usize,
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
        self.project().io.poll_read(cx, buf)
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
        let limited: Vec<_> = limit_connections(accepted, 2).collect().await;
        // The stream holds all three at once: the third is over the limit.
        assert_eq!(limited.len(), 2);

        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<io::Result<u32>>();
        let mut limited = Box::pin(limit_connections(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
            1,
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
}
