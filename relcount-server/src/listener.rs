//! The accept loop: HTTP/1.1 connections under a limit and a header timeout, and the
//! graceful stop.
//!
//! - A connection past `--max-connections` is answered 503 and closed at once, so
//!   idle or slow clients can never lock the others out.
//! - A client must send a request's headers within `--header-timeout` of the
//!   connection's start or of its previous answer (hyper's header read timeout), so
//!   a half-sent request or an idle kept-alive connection is closed after it.
//! - A client must take each answer: a write to it that makes no progress for
//!   `--write-timeout` closes the connection (a client that pipelines requests and
//!   never reads would otherwise hold its connection forever).
//! - On shutdown the listener closes, every connection is told to finish its request
//!   in flight and close; those still open at `--shutdown-timeout` are dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::routes::{self, App};

/// How the loop takes connections.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Time to send a request's headers (and the idle limit between requests).
    pub header_timeout: Duration,
    /// Time a write to a client may make no progress.
    pub write_timeout: Duration,
    /// How long a shutdown waits for the requests in flight.
    pub shutdown_timeout: Duration,
}

/// The body of the answer to a connection past the limit.
const BUSY: &str = r#"{"error":503,"error_text":"too many connections: try again later"}"#;

/// Serves `listener` until `stop` resolves, then stops gracefully: returns once every
/// connection has closed, or at the shutdown deadline (the rest are dropped).
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    policy: Policy,
    stop: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(policy.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(policy.header_timeout)
        .keep_alive(true);
    let mut connections = JoinSet::new();
    tokio::pin!(stop);
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, or a connection reset before it was taken:
                    // pause a moment rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let stream = Timed {
            inner: stream,
            timeout: policy.write_timeout,
            stalled: None,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            app.metrics.refused_connections.inc();
            tokio::spawn(refuse(stream.inner));
            continue;
        };
        let _ = stream.inner.set_nodelay(true);
        let app = Arc::clone(&app);
        let service = {
            let app = Arc::clone(&app);
            service_fn(move |req| routes::serve(Arc::clone(&app), req))
        };
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        connections.spawn(async move {
            app.metrics.open_connections.inc();
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended");
            }
            app.metrics.open_connections.dec();
            drop(slot);
        });
    }
    drop(listener);
    // From now on /health answers 503 and requests not yet at work are refused.
    app.closing.store(true, Ordering::Release);
    let open = graceful.count();
    tracing::info!(
        open,
        "shutting down: no new connections; waiting for the requests in flight"
    );
    if tokio::time::timeout(policy.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            still_open = connections.len(),
            "shutdown deadline passed: closing the connections left"
        );
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

/// Answers 503 to a connection past the limit and closes it (within a second: a
/// client that does not read is dropped).
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{BUSY}",
            BUSY.len()
        );
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// A connection whose writes fail once one has made no progress for `timeout`.
struct Timed {
    inner: TcpStream,
    timeout: Duration,
    /// Since when the write pending now has been waiting, as its deadline.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Timed {
    /// A write could not proceed: pending until the deadline, then an error.
    fn stall<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        let timeout = self.timeout;
        let deadline = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client took no answer within the write timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// The outcome of a write: progress clears the deadline.
    fn wrote<T>(
        &mut self,
        cx: &mut Context<'_>,
        done: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match done {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.stall(cx),
        }
    }
}

impl AsyncRead for Timed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Timed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let done = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(cx, done)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let done = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(cx, done)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let done = Pin::new(&mut this.inner).poll_flush(cx);
        this.wrote(cx, done)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
