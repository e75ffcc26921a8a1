//! `cargo +nightly fuzz run ut_metadata -- -max_total_time=60`. Any payload must decode to a BEP 9 message that keeps
//! its promises, or give an error; never a panic. A decoded data message also feeds a fetch of its size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toybt::peer::metadata::{MAX_METADATA_PIECES, MAX_METADATA_SIZE, MetadataFetch, MetadataMsg, piece_len};

fuzz_target!(|data: &[u8]| {
    match MetadataMsg::decode(data) {
        Ok(MetadataMsg::Data { piece, total_size, data }) => {
            assert!(total_size > 0 && total_size as usize <= MAX_METADATA_SIZE);
            assert_eq!(Some(data.len()), piece_len(total_size as usize, piece));
            let mut fetch = MetadataFetch::new([0; 20], total_size).expect("a decoded size is fetchable");
            while let Some(i) = fetch.next_piece_to_request(1) {
                if i == piece {
                    let _ = fetch.on_data(1, piece, data);
                    break;
                }
            }
        }
        Ok(MetadataMsg::Request { piece } | MetadataMsg::Reject { piece }) => assert!(piece < MAX_METADATA_PIECES),
        _ => {}
    }
});
