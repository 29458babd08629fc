//! The gateway's HTTP server: accepting connections (as many as its cap, a 503 beyond), and
//! reading requests with time limits, so that clients that send nothing, or send headers or a
//! body a byte at a time, cannot hold the daemon's connections for ever.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::memory::{BodyBytes, BodyMemory};
use super::{Gateway, MAX_BODY};
use crate::accept::{self, Shutdown, Task};
use crate::throttle::Throttle;
use crate::warn_throttled;

/// How long a client may take to send a request's headers; also how long a kept-alive
/// connection may sit idle between requests.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a request body may stall between two pieces.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
static BUSY: Throttle = Throttle::new(Duration::from_secs(10));

/// Serves the gateway on `listener`, at most `max_connections` at once (a 503 beyond; see
/// [`crate::accept::serve`]), until the daemon stops.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    max_connections: usize,
    shutdown: Shutdown,
) {
    let front = Front {
        gateway,
        max_connections,
    };
    accept::serve(TcpListen(listener), front, shutdown).await;
}

struct TcpListen(TcpListener);

impl accept::Listen for TcpListen {
    type Conn = TcpStream;

    async fn next(&self) -> std::io::Result<TcpStream> {
        TcpListener::accept(&self.0)
            .await
            .map(|(stream, _peer)| stream)
    }
}

struct Front {
    gateway: Arc<Gateway>,
    max_connections: usize,
}

impl accept::Serve for Front {
    type Conn = TcpStream;

    fn admit(&self, stream: TcpStream, open: usize) -> Result<Task, Task> {
        let max = self.max_connections;
        if open >= max {
            warn_throttled!(
                BUSY,
                "the gateway serves {max} connections already: refusing more"
            );
            return Err(Box::pin(refuse_busy(stream, max)));
        }
        let _ = stream.set_nodelay(true);
        Ok(Box::pin(serve_connection(stream, self.gateway.clone())))
    }

    fn refused(&self) {
        self.gateway.hub.stats().count_refusal();
    }

    fn name(&self) -> &'static str {
        "the gateway"
    }
}

async fn serve_connection(stream: TcpStream, gateway: Arc<Gateway>) {
    let service = hyper::service::service_fn(move |request| {
        let gateway = gateway.clone();
        async move { Ok::<_, Infallible>(gateway.handle(request).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(e) = connection.await {
        tracing::debug!("gateway connection ended: {e}");
    }
}

/// Answers a connection over the cap with a 503 in the API's error shape, and closes it.
async fn refuse_busy(mut stream: TcpStream, max_connections: usize) {
    let body = serde_json::json!({
        "type": "error",
        "error": {
            "type": "overloaded_error",
            "message": format!(
                "pacer gateway: {max_connections} connections are open already; try again shortly"
            ),
        },
    })
    .to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), write).await;
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body exceeds {MAX_BODY} bytes")]
    TooLarge,
    #[error("the request body stalled for {}s", BODY_IDLE_TIMEOUT.as_secs())]
    Stalled,
    #[error(
        "the request body arrives slower than {} KiB/s",
        BODY_MIN_RATE >> 10
    )]
    TooSlow,
    /// The bodies being read and held take all the memory they may (`[gateway] max_buffered`).
    #[error("request bodies being read hold {} MiB already, as much as they may", .0 >> 20)]
    Busy(usize),
    #[error("cannot read the request body: {0}")]
    Broken(#[from] hyper::Error),
}

/// After [`BODY_RATE_GRACE`], a body must average at least this many bytes a second: a client
/// that trickles a large body a few bytes at a time cannot hold its memory for ever.
pub const BODY_MIN_RATE: u64 = 16 << 10;
pub const BODY_RATE_GRACE: Duration = Duration::from_secs(30);

/// Reads a request body whole, up to [`MAX_BODY`], each piece within [`BODY_IDLE_TIMEOUT`], at
/// [`BODY_MIN_RATE`] or faster, in memory held from `memory` (as much as `declared` up front,
/// when the request says its length).
pub async fn read_body(
    body: &mut Incoming,
    memory: &Arc<BodyMemory>,
    declared: Option<usize>,
) -> Result<(Bytes, BodyBytes), BodyError> {
    let mut held = memory.hold();
    let mut out = bytes::BytesMut::new();
    if let Some(declared) = declared.filter(|&d| d > 0) {
        if !held.grow_to(declared) {
            return Err(BodyError::Busy(memory.limit()));
        }
        out.reserve(declared);
    }
    let started = tokio::time::Instant::now();
    loop {
        let frame = tokio::time::timeout(BODY_IDLE_TIMEOUT, body.frame())
            .await
            .map_err(|_| BodyError::Stalled)?;
        let Some(frame) = frame else {
            return Ok((out.freeze(), held));
        };
        if let Ok(data) = frame?.into_data() {
            let needed = out.len() + data.len();
            if needed > MAX_BODY {
                return Err(BodyError::TooLarge);
            }
            if needed > out.capacity() {
                let capacity = needed.max(out.capacity() * 2).min(MAX_BODY);
                if !held.grow_to(capacity) {
                    return Err(BodyError::Busy(memory.limit()));
                }
                out.reserve(capacity - out.len());
            }
            out.extend_from_slice(&data);
            let elapsed = started.elapsed();
            if elapsed > BODY_RATE_GRACE
                && (out.len() as f64) < BODY_MIN_RATE as f64 * elapsed.as_secs_f64()
            {
                return Err(BodyError::TooSlow);
            }
        }
    }
}

/// A request body to stream upstream unread, failing if it stalls for [`BODY_IDLE_TIMEOUT`].
pub fn streaming_body(body: Incoming) -> reqwest::Body {
    reqwest::Body::wrap_stream(idle_timeout(
        http_body_util::BodyDataStream::new(body),
        BODY_IDLE_TIMEOUT,
    ))
}

/// Ends `stream` with an error when it yields nothing for `idle`.
fn idle_timeout<S, E>(
    stream: S,
    idle: Duration,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    futures_util::stream::unfold(Some(stream), move |state| async move {
        let mut stream = state?;
        match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(Ok(bytes))) => Some((Ok(bytes), Some(stream))),
            Ok(Some(Err(e))) => Some((Err(std::io::Error::other(e)), None)),
            Ok(None) => None,
            Err(_) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the request body stalled for {}s", idle.as_secs()),
                )),
                None,
            )),
        }
    })
}

/// Reads and drops what is left of a refused request body (up to a bound), so that the client,
/// still sending, gets to read the refusal instead of a broken connection.
pub async fn discard(mut body: Incoming) {
    const MAX_DISCARD: usize = 4 * MAX_BODY;
    let mut discarded = 0;
    let drain = async {
        while let Some(Ok(frame)) = body.frame().await {
            discarded += frame.data_ref().map_or(0, Bytes::len);
            if discarded > MAX_DISCARD {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(30), drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_stalled_stream_ends_with_an_error() {
        let stalls =
            futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"abc"))])
                .chain(futures_util::stream::pending());
        let mut stream = Box::pin(idle_timeout(stalls, Duration::from_secs(30)));
        assert_eq!(stream.next().await.unwrap().unwrap(), "abc");
        let err = stream.next().await.unwrap().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(stream.next().await.is_none());
    }
}
