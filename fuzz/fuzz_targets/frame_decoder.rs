//! The frame decoder never panics on any bytes, whichever side decodes them, and a frame it
//! accepts encodes back to a frame that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pacer_protocol::codec;
use pacer_protocol::message::{RequestFrame, ResponseFrame};

fuzz_target!(|data: &[u8]| {
    let mut at = 0;
    while at < data.len() {
        match codec::decode::<RequestFrame>(&data[at..]) {
            Ok(Some((frame, used))) => {
                assert!(used > 0 && used <= data.len() - at);
                let bytes = codec::encode_to_vec(&frame).expect("a decoded frame encodes");
                let (again, _) = codec::decode::<RequestFrame>(&bytes)
                    .expect("re-decodes")
                    .expect("whole");
                assert_eq!(format!("{frame:?}"), format!("{again:?}"));
                at += used;
            }
            Ok(None) | Err(_) => break,
        }
    }
    let _ = codec::decode::<ResponseFrame>(data);
});
