//! `cargo +nightly fuzz run rpc_request -- -max_total_time=60`. Any body must parse to a request or give an RPC
//! error, and the error's response must be valid JSON; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toybt::daemon::rpc::{parse_request, response_body};

fuzz_target!(|data: &[u8]| {
    if let Err(e) = parse_request(data) {
        let body = response_body(&e.result, serde_json::Value::Null, e.tag.as_ref());
        assert!(serde_json::from_slice::<serde_json::Value>(&body).is_ok());
    }
});
