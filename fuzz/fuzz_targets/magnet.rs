//! `cargo +nightly fuzz run magnet -- -max_total_time=60`. Any text must parse to a bounded link that writes back to
//! a link parsing to the same thing, or give an error; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toybt::magnet::{MAX_PEERS, MAX_TRACKERS, Magnet};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(m) = Magnet::parse(text) else { return };
    assert!(m.trackers.len() <= MAX_TRACKERS && m.peers.len() <= MAX_PEERS);
    assert_eq!(Magnet::parse(&m.to_uri()).as_ref(), Ok(&m));
    let _ = m.peer_addrs();
});
