//! The usage reader never panics on a response body, whatever its bytes, content type,
//! encoding, or the way it is cut into chunks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pacer_api::usage::UsageTap;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let content_type = match mode % 3 {
        0 => Some("text/event-stream"),
        1 => Some("application/json"),
        _ => None,
    };
    let encoding = match (mode / 3) % 3 {
        0 => None,
        1 => Some("gzip"),
        _ => Some("deflate"),
    };
    let mut tap = UsageTap::new(content_type, encoding);
    // Chunk sizes from the input itself: 1 to 64 bytes.
    let chunk = usize::from(mode % 64) + 1;
    for piece in rest.chunks(chunk) {
        tap.feed(piece);
    }
    let _ = tap.outcome(Vec::new());
});
