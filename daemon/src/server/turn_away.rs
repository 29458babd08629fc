//! Turning a connection away with a reason: the client's handshake is answered with an error
//! frame naming why (not allowed; too many connections), then the connection is closed.

use std::time::Duration;

use bytes::BytesMut;
use pacer_protocol::codec;
use pacer_protocol::io;
use pacer_protocol::message::{ErrorKind, RequestFrame, ResponseFrame};
use tokio::io::AsyncReadExt;

use super::listener::Stream;
use crate::hub::handlers;

/// How long a refused client gets to send its handshake, so that the answer carries its id.
const WAIT_FOR_HELLO: Duration = Duration::from_secs(2);

/// Reads the client's first frame (briefly), answers it with the error, and closes.
pub async fn refuse(stream: Stream, kind: ErrorKind, message: String) {
    let (mut reader, outbox) = io::split(stream);
    let mut buf = BytesMut::with_capacity(1024);
    let first_id = async {
        loop {
            match codec::decode::<RequestFrame>(&buf) {
                Ok(Some((frame, _))) => return frame.id,
                Ok(None) if buf.len() < 64 * 1024 => {}
                _ => return 0,
            }
            match reader.read_buf(&mut buf).await {
                Ok(n) if n > 0 => {}
                _ => return 0,
            }
        }
    };
    let id = tokio::time::timeout(WAIT_FOR_HELLO, first_id)
        .await
        .unwrap_or(0);
    let frame = ResponseFrame {
        id,
        response: handlers::error(kind, message),
    };
    let _ = outbox.send(&frame);
    outbox.close();
    let _ = tokio::time::timeout(WAIT_FOR_HELLO, outbox.flush()).await;
}
