//! `cargo +nightly fuzz run http_request -- -max_total_time=60`. What an HTTP client sends toybt's tracker (and later
//! the RPC): a request head and a bounded body, then the announce and scrape queries in it. Never a panic, never a
//! request longer than the input, never a body past its limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toybt::http;
use toybt::tracker::query::{AnnounceQuery, scrape_hashes};

const MAX_BODY: usize = 4096;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(req)) = http::parse_request(data, MAX_BODY) {
        assert!(req.len <= data.len() && req.body.len() <= MAX_BODY);
        let _ = AnnounceQuery::from_query(req.query);
        let _ = scrape_hashes(req.query);
    }
    let _ = AnnounceQuery::from_query(data);
    let _ = scrape_hashes(data);
});
