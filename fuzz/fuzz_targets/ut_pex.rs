//! `cargo +nightly fuzz run ut_pex -- -max_total_time=60`. Any payload must decode to a bounded BEP 11 message with
//! no port 0 that survives an encode/decode round trip, or give an error; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toybt::peer::pex::{MAX_DECODED, MAX_SEND, Pex};

fuzz_target!(|data: &[u8]| {
    let Ok(pex) = Pex::decode(data) else { return };
    assert!(pex.added.len() <= 2 * MAX_DECODED && pex.dropped.len() <= 2 * MAX_DECODED);
    assert!(pex.added.iter().map(|(a, _)| a).chain(&pex.dropped).all(|a| a.port() != 0));
    let mut framed = Vec::new();
    pex.encode(1, &mut framed);
    let back = Pex::decode(&framed[6..]).expect("our own encoding decodes");
    assert_eq!(back.added.len(), pex.added.len().min(MAX_SEND));
    assert_eq!(back.dropped.len(), pex.dropped.len().min(MAX_SEND));
});
