//! The rate-limit header parser never panics: the input is read as `name: value` lines, the
//! way a response's headers would come, with the names it knows mixed in.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use pacer_api::ratelimit::{RateLimitHeaders, parse_go_duration, parse_retry_after};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let headers: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|line| line.split_once(':'))
        .collect();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let _ = RateLimitHeaders::parse(headers.iter().copied(), now);
    for (_, value) in &headers {
        let _ = parse_retry_after(value, now);
        let _ = parse_go_duration(value);
    }
});
