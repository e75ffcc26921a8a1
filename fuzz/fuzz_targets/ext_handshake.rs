//! `cargo +nightly fuzz run ext_handshake -- -max_total_time=60`. Any payload must decode to a bounded BEP 10
//! handshake that survives an encode/decode round trip, or give an error; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toybt::peer::extension::{ExtHandshake, MAX_EXTENSIONS, MAX_NAME_LEN, MAX_VERSION_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(hs) = ExtHandshake::decode(data) else { return };
    assert!(hs.m.len() <= MAX_EXTENSIONS && hs.m.iter().all(|(n, _)| n.len() <= MAX_NAME_LEN));
    assert!(hs.v.as_ref().is_none_or(|v| v.len() <= MAX_VERSION_LEN));
    let mut framed = Vec::new();
    hs.encode(&mut framed);
    let back = ExtHandshake::decode(&framed[6..]).expect("our own encoding decodes");
    let mut sorted = hs.m.clone();
    sorted.sort();
    assert_eq!(back, ExtHandshake { m: sorted, ..hs });
});
