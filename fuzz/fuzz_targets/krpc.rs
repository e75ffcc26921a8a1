//! `cargo +nightly fuzz run krpc -- -max_total_time=60`. Any datagram must decode as a KRPC message (BEP 5) that
//! re-encodes to bytes decoding the same, or give an error; never a panic. Feeding it to a node must not panic either.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use toybt::dht::krpc::{DecodeError, decode};
use toybt::dht::{Config, Node};

fuzz_target!(|data: &[u8]| {
    match decode(data) {
        Ok(m) => {
            let mut again = Vec::new();
            m.encode(&mut again);
            assert_eq!(decode(&again), Ok(m));
        }
        Err(DecodeError::Reply { tid, .. }) => assert!(tid.len() <= toybt::dht::krpc::MAX_TID_LEN),
        Err(DecodeError::Drop(_)) => {}
    }
    let now = Instant::now();
    let mut node = Node::new(now, Config { id: Some([7; 20]), seed: 1 });
    node.handle_datagram(now, "127.0.0.2:6881".parse().unwrap(), data);
    let mut out = Vec::new();
    while let Some(to) = node.poll_datagram(now, &mut out) {
        assert_ne!(to.port(), 0);
        assert!(out.len() <= toybt::dht::krpc::MAX_DATAGRAM);
        out.clear();
    }
    node.handle_timeout(now + Duration::from_secs(60));
});
