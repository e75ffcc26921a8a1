//! `cargo +nightly fuzz run peer_wire -- -max_total_time=60`. The peer wire codec on anything a peer can send: the
//! handshake, then messages decoded one after another as a connection reads them, against small and unknown piece
//! counts. A message never claims more bytes than it was given, and a decoded one encodes back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toybt::wire::{self, Handshake, Limits};

fuzz_target!(|data: &[u8]| {
    let _ = Handshake::decode(data);
    for limits in [Limits::new(1), Limits::new(1000), Limits::unknown_pieces()] {
        let mut rest = data;
        while let Ok(Some((msg, n))) = wire::decode(rest, &limits) {
            assert!(n > 0 && n <= rest.len() && n <= limits.max_frame_len());
            let mut again = Vec::new();
            msg.encode(&mut again);
            assert_eq!(again, rest[..n], "{msg:?}");
            rest = &rest[n..];
        }
    }
});
