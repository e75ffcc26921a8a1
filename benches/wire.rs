//! Peer wire codec throughput: small control messages per second, and bytes per second for 16 KiB blocks, the hot
//! path of a transfer. Run: `cargo bench --bench wire`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use toybt::wire::{self, Limits, Message};

const BLOCK: usize = 16 * 1024;

fn control_stream() -> (Vec<u8>, u64) {
    let mut out = Vec::new();
    let mut count = 0;
    for i in 0..256u32 {
        wire::encode_have(&mut out, i);
        wire::encode_request(&mut out, i, 16384, 16384);
        wire::encode_cancel(&mut out, i, 0, 16384);
        wire::encode_bare(&mut out, wire::id::UNCHOKE);
        wire::encode_keep_alive(&mut out);
        count += 5;
    }
    (out, count)
}

/// Decodes every message in `buf`, folding a little of each into the result so nothing is optimised away.
fn decode_all(buf: &[u8], limits: &Limits) -> u64 {
    let mut at = 0;
    let mut sum = 0u64;
    while let Ok(Some((msg, used))) = wire::decode(&buf[at..], limits) {
        sum += match msg {
            Message::Have(i) => i as u64,
            Message::Request { length, .. } | Message::Cancel { length, .. } => length as u64,
            Message::Piece { data, .. } => data.len() as u64,
            _ => 1,
        };
        at += used;
    }
    sum
}

fn bench(c: &mut Criterion) {
    let limits = Limits::new(1000);

    let (stream, count) = control_stream();
    let mut g = c.benchmark_group("wire_control");
    g.throughput(Throughput::Elements(count));
    g.bench_function("decode", |b| b.iter(|| decode_all(black_box(&stream), &limits)));
    let mut out = Vec::with_capacity(stream.len());
    g.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            for i in 0..256u32 {
                wire::encode_have(&mut out, black_box(i));
                wire::encode_request(&mut out, i, 16384, 16384);
                wire::encode_cancel(&mut out, i, 0, 16384);
                wire::encode_bare(&mut out, wire::id::UNCHOKE);
                wire::encode_keep_alive(&mut out);
            }
            out.len()
        })
    });
    g.finish();

    let block: Vec<u8> = (0..BLOCK).map(|i| i as u8).collect();
    let mut pieces = Vec::new();
    for i in 0..64 {
        wire::encode_piece(&mut pieces, i, 0, &block);
    }
    let mut g = c.benchmark_group("wire_piece_16k");
    g.throughput(Throughput::Bytes(pieces.len() as u64));
    // Decoding borrows the block, so this is the framing cost alone.
    g.bench_function("decode", |b| b.iter(|| decode_all(black_box(&pieces), &limits)));
    // Decode and copy each block out, as a receiver does into its piece buffer.
    let mut piece_buf = vec![0u8; BLOCK];
    g.bench_function("decode_and_copy", |b| {
        b.iter(|| {
            let mut at = 0;
            while let Ok(Some((Message::Piece { data, .. }, used))) = wire::decode(&pieces[at..], &limits) {
                piece_buf[..data.len()].copy_from_slice(data);
                at += used;
            }
            piece_buf[7]
        })
    });
    let mut out = Vec::with_capacity(pieces.len());
    g.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            for i in 0..64 {
                wire::encode_piece(&mut out, i, 0, black_box(&block));
            }
            out.len()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
