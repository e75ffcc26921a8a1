//! `cargo +nightly fuzz run metainfo -- -max_total_time=60` (from the repository root, after `cargo install
//! cargo-fuzz`). Any bytes must load as a torrent that keeps its promises or give an error; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toybt::metainfo::{Metainfo, component_problem};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Metainfo::from_bytes(data) else { return };
    assert!(m.total_length > 0);
    assert_eq!(m.pieces.len() as u64, m.total_length.div_ceil(m.piece_length as u64));
    assert!(component_problem(&m.name).is_none());
    let mut offset = 0;
    for f in &m.files {
        assert_eq!(f.offset, offset);
        offset += f.length;
        assert!(f.path.iter().all(|c| component_problem(c).is_none()));
    }
    assert_eq!(offset, m.total_length);
});
