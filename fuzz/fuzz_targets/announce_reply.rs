//! `cargo +nightly fuzz run announce_reply -- -max_total_time=60`. A tracker's HTTP answer to our announce, whole or
//! cut short at any point: parsed or refused, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toybt::tracker::announce::parse_response;

fuzz_target!(|data: &[u8]| {
    let _ = parse_response(data, false);
    let _ = parse_response(data, true);
});
