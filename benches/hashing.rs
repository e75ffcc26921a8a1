//! Hashing throughput: SHA-1 verification of one piece at three piece sizes (through the real check, which uses the
//! CPU's SHA extensions when it has them), bare sha1_smol beside toybt's SHA-1 on a 256 KiB piece (the first is the
//! ceiling issue 6 measures a leech against), and `create` on a 256 MiB file.
//! Run: `cargo bench --bench hashing` (throughput is printed in MB/s, 10^6 bytes per second).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use toybt::bencode::Encoder;
use toybt::create::{self, Options};
use toybt::metainfo::Metainfo;
use toybt::sha1::digest as sha1;

/// Deterministic bytes that do not compress or repeat.
fn data(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A one-piece torrent whose piece is `piece`, so the bench goes through the real verification call.
fn one_piece_torrent(piece: &[u8]) -> Metainfo {
    let mut out = Vec::new();
    let mut e = Encoder { out: &mut out };
    e.begin_dict().str("info").begin_dict().str("length").int(piece.len() as i64).str("name").str("p");
    e.str("piece length").int(piece.len() as i64).str("pieces").bytes(&sha1(piece)).end().end();
    Metainfo::from_bytes(&out).expect("valid torrent")
}

fn piece_verification(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify_piece");
    for (label, size) in [("16KiB", 16usize << 10), ("256KiB", 256 << 10), ("4MiB", 4 << 20)] {
        let piece = data(size);
        let torrent = one_piece_torrent(&piece);
        group.throughput(Throughput::BytesDecimal(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(label), &piece, |b, piece| {
            b.iter(|| assert!(torrent.piece_matches(0, black_box(piece))))
        });
    }
    group.finish();
}

fn sha1_implementations(c: &mut Criterion) {
    let piece = data(256 << 10);
    let mut group = c.benchmark_group("sha1_256KiB");
    group.throughput(Throughput::BytesDecimal(piece.len() as u64));
    group.bench_function("sha1_smol", |b| b.iter(|| toybt::sha1::portable(black_box(&piece))));
    println!("toybt's SHA-1 on this CPU: {}", toybt::sha1::implementation());
    group.bench_function("toybt", |b| b.iter(|| toybt::sha1::digest(black_box(&piece))));
    group.finish();
}

fn create_256_mib(c: &mut Criterion) {
    // `cargo test --all-targets` runs each bench once as a smoke test (no `--bench` argument): keep that quick.
    let measuring = std::env::args().any(|a| a == "--bench");
    let size: usize = if measuring { 256 << 20 } else { 1 << 20 };
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("big.bin");
    std::fs::write(&path, data(size)).expect("write the input");
    let content = create::scan(&path).expect("scan");
    let opts = Options { trackers: vec![vec!["http://127.0.0.1:6969/announce".into()]], ..Options::default() };

    let mut group = c.benchmark_group("create");
    // Each run hashes 256 MiB; the file stays in the page cache, so this measures hashing plus copying, not the disk.
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::BytesDecimal(size as u64));
    group.bench_function("256MiB_file", |b| {
        b.iter(|| create::create_from(&content, &opts, &mut |_, _| {}).expect("create"))
    });
    group.finish();
}

criterion_group!(benches, piece_verification, sha1_implementations, create_256_mib);
criterion_main!(benches);
