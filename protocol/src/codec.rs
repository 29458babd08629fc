//! Framing: each message is a 4-byte big-endian length followed by that many bytes of bincode.
//!
//! The decoder works on a byte buffer rather than a reader, so the daemon and the async client can
//! pull every complete frame out of one read, and the blocking client can use it too. Frames longer
//! than [`MAX_FRAME_LEN`] are refused from the length header alone, before anything is buffered.
//!
//! Two sizes bound a frame, and they are not the same measure: its encoded length
//! ([`MAX_FRAME_LEN`]) and the memory its decoding may claim (bincode's limit, which counts each
//! integer at its in-memory size: a `u64` of one varint byte claims eight). The second is set
//! to sixteen times the first ([`MAX_DECODED_LEN`]), the most any encoded byte can claim (a
//! `u128`), so the frame length is the one limit that binds, and a sender that checks it
//! (with [`fits`], as the status does before it sends thousands of sessions) knows the frame
//! will be read.

use bincode::config::{BigEndian, Configuration, Limit, Varint};
use serde::{Serialize, de::DeserializeOwned};

/// The largest frame payload accepted or produced: 1 MiB.
pub const MAX_FRAME_LEN: usize = 1 << 20;

/// The most memory decoding one frame may claim (bincode's limit): never reached by a frame
/// within [`MAX_FRAME_LEN`] (see the module documentation), but a bound on what a
/// length prefix inside a frame can make the receiver allocate.
pub const MAX_DECODED_LEN: usize = 16 * MAX_FRAME_LEN;

const HEADER_LEN: usize = 4;

type Config = Configuration<BigEndian, Varint, Limit<MAX_DECODED_LEN>>;

fn config() -> Config {
    bincode::config::standard()
        .with_big_endian()
        .with_limit::<MAX_DECODED_LEN>()
}

/// Whether `message` crosses the wire: it encodes within [`MAX_FRAME_LEN`] and decodes within
/// [`MAX_DECODED_LEN`], the receiver's own checks.
pub fn fits<T: Serialize + DeserializeOwned>(message: &T) -> bool {
    encode_to_vec(message).is_ok_and(|bytes| decode::<T>(&bytes).is_ok_and(|d| d.is_some()))
}

/// Why a frame could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length header announces more than the cap: the peer is not speaking this protocol, or
    /// is misbehaving.
    #[error("frame of {len} bytes exceeds the {MAX_FRAME_LEN}-byte limit")]
    TooLarge { len: usize },
    /// The payload is not a valid message of the expected type.
    #[error("malformed frame: {0}")]
    Malformed(#[from] bincode::error::DecodeError),
    /// The message could not be encoded (it would exceed the cap).
    #[error("cannot encode message: {0}")]
    Encode(#[from] bincode::error::EncodeError),
}

/// Appends `message` as one frame to `out`.
pub fn encode<T: Serialize>(message: &T, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    if let Err(e) = bincode::serde::encode_into_std_write(message, out, config()) {
        out.truncate(start);
        return Err(e.into());
    }
    let len = out.len() - start - HEADER_LEN;
    if len > MAX_FRAME_LEN {
        out.truncate(start);
        return Err(FrameError::TooLarge { len });
    }
    out[start..start + HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Encodes `message` as one frame in a new buffer.
pub fn encode_to_vec<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(64);
    encode(message, &mut out)?;
    Ok(out)
}

/// Reads one frame from the front of `buf`.
///
/// Returns the message and the number of bytes it took, or `None` when `buf` does not yet hold a
/// whole frame. An oversized length header is an error as soon as the header is complete.
pub fn decode<T: DeserializeOwned>(buf: &[u8]) -> Result<Option<(T, usize)>, FrameError> {
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*header) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge { len });
    }
    let Some(payload) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
        return Ok(None);
    };
    let (message, read) = bincode::serde::decode_from_slice(payload, config())?;
    if read != len {
        return Err(FrameError::Malformed(
            bincode::error::DecodeError::OtherString(format!(
                "{} trailing bytes after the message",
                len - read
            )),
        ));
    }
    Ok(Some((message, HEADER_LEN + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Hello, Request, RequestFrame, Response, ResponseFrame};

    fn hello() -> RequestFrame {
        RequestFrame {
            id: 7,
            request: Request::Hello(Hello {
                protocol_version: 1,
                client_name: "test".into(),
                pid: 42,
            }),
        }
    }

    #[test]
    fn a_frame_round_trips() {
        let bytes = encode_to_vec(&hello()).unwrap();
        let (back, used) = decode::<RequestFrame>(&bytes).unwrap().unwrap();
        assert_eq!(back, hello());
        assert_eq!(used, bytes.len());
    }

    #[test]
    fn partial_frames_wait_for_more_bytes() {
        let bytes = encode_to_vec(&hello()).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode::<RequestFrame>(&bytes[..cut]).unwrap().is_none());
        }
    }

    #[test]
    fn several_frames_in_one_buffer_are_read_in_order() {
        let mut buf = Vec::new();
        for id in 0..3 {
            let frame = ResponseFrame {
                id,
                response: Response::Ack,
            };
            encode(&frame, &mut buf).unwrap();
        }
        let mut at = 0;
        for id in 0..3 {
            let (frame, used) = decode::<ResponseFrame>(&buf[at..]).unwrap().unwrap();
            assert_eq!(frame.id, id);
            at += used;
        }
        assert_eq!(at, buf.len());
    }

    #[test]
    fn an_oversized_length_header_is_refused_before_the_payload_arrives() {
        let header = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes();
        let err = decode::<RequestFrame>(&header).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { len } if len == MAX_FRAME_LEN + 1));
    }

    #[test]
    fn every_frame_within_the_length_cap_decodes() {
        // The most each encoded byte can claim of the decoder's limit: one varint byte of a
        // zero that decodes as a u128 (sixteen), a u64 (eight); a list of them just under
        // the frame cap still decodes.
        let big = MAX_FRAME_LEN - 16;
        let wide: Vec<u128> = vec![0; big];
        assert!(fits(&wide), "u128 zeros");
        let narrow: Vec<u64> = vec![0; big];
        assert!(fits(&narrow), "u64 zeros");
        let strings: Vec<String> = vec![String::new(); big];
        assert!(fits(&strings), "empty strings");
        let long = "x".repeat(MAX_FRAME_LEN + 1);
        assert!(!fits(&long));
    }

    #[test]
    fn a_report_of_any_size_is_bounded_to_fit_one_frame() {
        use crate::message::{Outcome, Report, Request};
        let mut headers: Vec<(String, String)> = (0..10_000)
            .map(|i| (format!("x-junk-{i}"), "y".repeat(100)))
            .collect();
        headers.push(("x-huge".into(), "z".repeat(20 << 20)));
        headers.push(("retry-after".into(), "20".into()));
        let outcome = Outcome::RateLimited {
            retry_after: None,
            headers,
            message: Some("m".repeat(1_200_000)),
        };
        let unbounded = RequestFrame {
            id: 1,
            request: Request::Report(Report {
                lease: crate::budget::LeaseId(1),
                outcome: outcome.clone(),
            }),
        };
        assert!(!fits(&unbounded));
        let bounded = outcome.bounded();
        let Outcome::RateLimited {
            headers, message, ..
        } = &bounded
        else {
            unreachable!()
        };
        assert_eq!(
            headers[0],
            ("retry-after".into(), "20".into()),
            "kept first"
        );
        assert!(headers.len() <= crate::report::MAX_REPORT_HEADERS);
        assert!(message.as_ref().unwrap().len() <= crate::text::MAX_MESSAGE);
        let frame = RequestFrame {
            id: u64::MAX,
            request: Request::Report(Report {
                lease: crate::budget::LeaseId(u64::MAX),
                outcome: bounded,
            }),
        };
        assert!(fits(&frame));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let mut buf = 5u32.to_be_bytes().to_vec();
        buf.extend_from_slice(&[0xff; 5]);
        assert!(matches!(
            decode::<RequestFrame>(&buf),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn a_length_prefix_claiming_a_huge_string_is_refused_by_bincode_limit() {
        // A valid-looking frame whose inner string length claims far more than the frame cap.
        let mut payload = vec![0x07, 0x00]; // id = 7, Request::Hello
        payload.push(0x01); // protocol_version = 1
        payload.push(253); // varint u64 marker
        payload.extend_from_slice(&(u64::MAX / 2).to_be_bytes());
        let mut buf = (payload.len() as u32).to_be_bytes().to_vec();
        buf.extend_from_slice(&payload);
        assert!(matches!(
            decode::<RequestFrame>(&buf),
            Err(FrameError::Malformed(
                bincode::error::DecodeError::LimitExceeded
            ))
        ));
    }

    #[test]
    fn messages_over_the_cap_are_not_encoded() {
        let frame = RequestFrame {
            id: 1,
            request: Request::Hello(Hello {
                protocol_version: 1,
                client_name: "x".repeat(MAX_FRAME_LEN + 1),
                pid: 1,
            }),
        };
        let mut out = b"keep".to_vec();
        assert!(encode(&frame, &mut out).is_err());
        assert_eq!(out, b"keep", "a failed encode leaves the buffer as it was");
    }
}
