//! Properties of the wire format, over generated inputs: the decoder never panics on any bytes,
//! and every request and response encodes and decodes back to itself.

use std::time::{Duration, SystemTime};

use pacer_protocol::codec::{self, MAX_FRAME_LEN};
use pacer_protocol::message::{
    Acquire, Calibrate, ErrorKind, ErrorReply, EstimateInput, Granted, Hello, LeaseId, Outcome,
    Pause, RegisterRoute, Release, Report, Request, RequestFrame, Response, ResponseFrame, Usage,
};
use pacer_protocol::{KeyFingerprint, Priority};
use proptest::prelude::*;

fn priority() -> impl Strategy<Value = Priority> {
    prop_oneof![
        Just(Priority::Interactive),
        Just(Priority::Normal),
        Just(Priority::Batch)
    ]
}

fn duration() -> impl Strategy<Value = Duration> {
    (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n))
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((".{0,40}", ".{0,80}"), 0..8)
}

fn usage() -> impl Strategy<Value = Usage> {
    (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(i, o, cw, cr)| Usage {
        input_tokens: i,
        output_tokens: o,
        cache_creation_input_tokens: cw,
        cache_read_input_tokens: cr,
    })
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        (usage(), headers()).prop_map(|(usage, headers)| Outcome::Success { usage, headers }),
        (
            prop::option::of(duration()),
            headers(),
            prop::option::of(".{0,60}")
        )
            .prop_map(|(retry_after, headers, message)| Outcome::RateLimited {
                retry_after,
                headers,
                message,
            }),
        prop::option::of(duration()).prop_map(|retry_after| Outcome::Overloaded { retry_after }),
        Just(Outcome::Failed),
        Just(Outcome::Unknown),
    ]
}

fn key() -> impl Strategy<Value = KeyFingerprint> {
    ".{0,20}".prop_map(|k: String| KeyFingerprint::of(&k))
}

fn acquire() -> impl Strategy<Value = Request> {
    (
        key(),
        ".{0,130}",
        priority(),
        ".{0,40}",
        prop::option::of(any::<u64>()),
        prop::option::of(any::<u64>()),
        prop::option::of(any::<u64>()),
        prop::option::of(duration()),
        prop::option::of(duration()),
    )
        .prop_map(
            |(key, model, priority, client_id, input, output, max, deadline, ttl)| {
                Request::Acquire(Acquire {
                    key,
                    model,
                    priority,
                    client_id,
                    input_tokens: input,
                    output_tokens: output,
                    max_tokens: max,
                    deadline,
                    detached_ttl: ttl,
                    max_share_bp: None,
                })
            },
        )
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (any::<u32>(), ".{0,40}", any::<u32>()).prop_map(|(v, name, pid)| {
            Request::Hello(Hello {
                protocol_version: v,
                client_name: name,
                pid,
            })
        }),
        acquire(),
        (any::<u64>(), outcome()).prop_map(|(lease, outcome)| {
            Request::Report(Report {
                lease: LeaseId(lease),
                outcome,
            })
        }),
        any::<u64>().prop_map(|lease| Request::Release(Release {
            lease: LeaseId(lease)
        })),
        Just(Request::Status),
        any::<u32>().prop_map(Request::StatusPage),
        (key(), ".{0,40}", 0u64..4_000_000_000).prop_map(|(key, model, secs)| {
            Request::Pause(Pause {
                key,
                model,
                until: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            })
        }),
        Just(Request::Subscribe),
        Just(Request::GatewayInfo),
        (".{0,80}", ".{0,40}").prop_map(|(upstream, client)| Request::RegisterRoute(
            RegisterRoute { upstream, client }
        )),
        (".{0,40}", any::<u64>()).prop_map(|(client_id, body_bytes)| Request::Estimate(
            EstimateInput {
                client_id,
                body_bytes
            }
        )),
        (".{0,40}", any::<u64>(), any::<u64>()).prop_map(
            |(client_id, body_bytes, counted_input)| Request::Calibrate(Calibrate {
                client_id,
                body_bytes,
                counted_input,
            })
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_decoder_never_panics_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = codec::decode::<RequestFrame>(&bytes);
        let _ = codec::decode::<ResponseFrame>(&bytes);
    }

    #[test]
    fn a_frame_header_with_any_length_is_handled(
        len in any::<u32>(),
        tail in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend_from_slice(&tail);
        match codec::decode::<RequestFrame>(&bytes) {
            Ok(Some((_, used))) => prop_assert!(used <= bytes.len()),
            Ok(None) => prop_assert!(len as usize <= MAX_FRAME_LEN),
            Err(_) => {}
        }
    }

    #[test]
    fn requests_round_trip(id in any::<u64>(), request in request()) {
        let frame = RequestFrame { id, request };
        let bytes = codec::encode_to_vec(&frame).unwrap();
        let (decoded, used) = codec::decode::<RequestFrame>(&bytes).unwrap().unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(decoded, frame);
    }

    #[test]
    fn a_frame_cut_short_is_incomplete_not_an_error(
        request in request(),
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = codec::encode_to_vec(&RequestFrame { id: 7, request }).unwrap();
        let cut = cut.index(bytes.len());
        prop_assert!(codec::decode::<RequestFrame>(&bytes[..cut]).unwrap().is_none());
    }

    #[test]
    fn responses_round_trip(id in any::<u64>(), lease in any::<u64>(), message in ".{0,200}") {
        for response in [
            Response::Ack,
            Response::Error(ErrorReply { kind: ErrorKind::Busy, message: message.clone() }),
            Response::Granted(Granted {
                lease: LeaseId(lease),
                waited: Duration::from_millis(lease % 10_000),
            }),
        ] {
            let frame = ResponseFrame { id, response };
            let bytes = codec::encode_to_vec(&frame).unwrap();
            let (decoded, _) = codec::decode::<ResponseFrame>(&bytes).unwrap().unwrap();
            prop_assert_eq!(decoded, frame);
        }
    }
}
