//! Disk throughput of storage: verified pieces written across file boundaries, and 16 KiB blocks read for serving.
//! Run: `cargo bench --bench storage` (criterion prints MiB/s as "thrpt").

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use toybt::metainfo::{FileEntry, Metainfo};
use toybt::storage::{MAX_BLOCK, OpenMode, Storage};

const PIECE: u32 = 256 * 1024;

/// 32 MiB over files whose sizes put a boundary inside most pieces, so most writes are split.
fn torrent() -> (Metainfo, Vec<u8>) {
    let sizes = [3_000_017u64, 5_242_881, 777_777, 9_999_991, 4_194_304, 10_339_462];
    let total: u64 = sizes.iter().sum();
    let data: Vec<u8> = (0..total).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut offset = 0;
    let files = sizes
        .iter()
        .enumerate()
        .map(|(i, &length)| {
            let f = FileEntry { path: vec![format!("file{i}.bin")], length, offset, padding: false };
            offset += length;
            f
        })
        .collect();
    let pieces = data.chunks(PIECE as usize).map(toybt::sha1::digest).collect();
    let meta = Metainfo::for_tests([0; 20], "bench", PIECE, pieces, files, true);
    (meta, data)
}

fn bench(c: &mut Criterion) {
    let (meta, data) = torrent();
    let dir = tempfile::tempdir().unwrap();
    let mut st = Storage::open(&meta, dir.path().join("bench"), OpenMode::Leech).unwrap();
    let mut group = c.benchmark_group("storage");
    group.throughput(Throughput::Bytes(meta.total_length));
    group.sample_size(10);

    group.bench_function("write_piece 256KiB across files", |b| {
        b.iter(|| {
            for (i, piece) in data.chunks(PIECE as usize).enumerate() {
                st.write_piece(i as u32, black_box(piece)).unwrap();
            }
        })
    });

    let mut send = Vec::with_capacity(MAX_BLOCK as usize + 13);
    group.bench_function("read_block 16KiB for serving", |b| {
        b.iter(|| {
            for index in 0..meta.piece_count() {
                let size = st.piece_size(index).unwrap();
                for begin in (0..size).step_by(MAX_BLOCK as usize) {
                    send.clear();
                    send.extend_from_slice(&[0; 13]);
                    st.read_block(index, begin, MAX_BLOCK.min(size - begin), &mut send).unwrap();
                    black_box(&send);
                }
            }
        })
    });

    let mut scratch = Vec::with_capacity(PIECE as usize);
    group.bench_function("verify_piece (pread + SHA-1)", |b| {
        b.iter(|| {
            for index in 0..meta.piece_count() {
                assert!(st.verify_piece(index, &mut scratch).unwrap());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
