//! `cargo +nightly fuzz run bencode -- -max_total_time=60`. The bencode decoder under every decoder of peer, tracker
//! and DHT answers: any input decodes within its limits or is refused; a prefix decode never claims more than it got.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toybt::bencode;

fuzz_target!(|data: &[u8]| {
    let _ = bencode::decode(data);
    if let Ok((_, used)) = bencode::decode_prefix(data) {
        assert!(used <= data.len());
    }
});
