//! `cargo +nightly fuzz run udp_tracker -- -max_total_time=60`. Any datagram must decode as a BEP 15 request or
//! response (either address family) that re-encodes to a packet decoding the same, or give an error; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toybt::tracker::udp::wire::{Request, Response, hashes, scrape_stats};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Request::decode(data) {
        if let Request::Scrape { info_hashes, .. } = &r {
            assert!(hashes(info_hashes).len() <= toybt::tracker::udp::wire::MAX_SCRAPE);
        }
        let mut again = Vec::new();
        r.encode(&mut again);
        assert_eq!(Request::decode(&again).as_ref(), Ok(&r));
    }
    for v6 in [false, true] {
        if let Ok(r) = Response::decode(data, v6) {
            match r {
                Response::Announce { peers, .. } => assert_eq!(peers.iter().count(), peers.len()),
                Response::Scrape { stats, .. } => assert_eq!(scrape_stats(stats).len() * 12, stats.len()),
                _ => {}
            }
            let mut again = Vec::new();
            r.encode(&mut again);
            assert_eq!(Response::decode(&again, v6), Ok(r));
        }
    }
});
