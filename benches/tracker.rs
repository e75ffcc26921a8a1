//! The tracker's announce handling without sockets: the query, the registry and the answer (`announce_query`: decode,
//! store the peer, pick and encode peers) and one HTTP connection's whole turn (`Client`: parse the request, answer,
//! frame the response). Same shape as benches/tracker_load.sh: 10,000 peers in 100 swarms, half of each swarm seeds,
//! every peer re-announcing in turn. Run: `cargo bench --bench tracker`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use toybt::tracker::{self, Client, Config, Registry};

const SWARMS: usize = 100;
const PEERS: usize = 10_000;

fn hash(swarm: usize) -> [u8; 20] {
    let mut h = [0x5Au8; 20];
    h[..8].copy_from_slice(&(swarm as u64).to_be_bytes());
    h
}

fn pct(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

/// The announce query of peer `p` (its swarm, seed or not, and its port follow from `p`, as in tracker_load.lua).
fn query(p: usize, extra: &str) -> String {
    let left = if (p / SWARMS).is_multiple_of(2) { 0 } else { 1_048_576 };
    format!(
        "info_hash={}&peer_id=-BENCH-{p:013}&port={}&uploaded=0&downloaded=0&left={left}{extra}",
        pct(&hash(p % SWARMS)),
        10_000 + p
    )
}

/// A tracker in which every peer has announced once, so swarms are full.
fn full_tracker(queries: &[String]) -> (Registry, Instant) {
    let now = Instant::now();
    let mut t = Registry::new(Config::default(), (0..SWARMS).map(hash), 1, now);
    let mut body = Vec::new();
    for q in queries {
        body.clear();
        tracker::announce_query(&mut t, now, q.as_bytes(), IpAddr::V4(Ipv4Addr::LOCALHOST), &mut body);
    }
    assert_eq!(t.peer_count(), PEERS);
    (t, now)
}

fn announce_query(c: &mut Criterion) {
    let mut g = c.benchmark_group("tracker_announce");
    g.throughput(Throughput::Elements(1));
    for (name, extra) in [("compact_numwant_50", "&compact=1&numwant=50"), ("dict_numwant_50", "&numwant=50")] {
        let queries: Vec<String> = (0..PEERS).map(|p| query(p, extra)).collect();
        let (mut t, now) = full_tracker(&queries);
        let mut body = Vec::new();
        let mut next = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                body.clear();
                tracker::announce_query(
                    &mut t,
                    now,
                    queries[next].as_bytes(),
                    IpAddr::V4(Ipv4Addr::LOCALHOST),
                    &mut body,
                );
                next = (next + 1) % PEERS;
                black_box(body.len())
            })
        });
    }
    g.finish();
}

fn http_turn(c: &mut Criterion) {
    let mut g = c.benchmark_group("tracker_http");
    g.throughput(Throughput::Elements(1));
    let queries: Vec<String> = (0..PEERS).map(|p| query(p, "&compact=1&numwant=50")).collect();
    let (mut t, now) = full_tracker(&queries);
    let requests: Vec<Vec<u8>> = queries
        .iter()
        .map(|q| format!("GET /announce?{q} HTTP/1.1\r\nHost: 127.0.0.1:6969\r\n\r\n").into_bytes())
        .collect();
    let from = SocketAddr::from(([127, 0, 0, 1], 40_000));
    let mut client = Client::new(from, now, t.config());
    let mut out = Vec::new();
    let mut next = 0;
    g.bench_function("keep_alive_announce", |b| {
        b.iter(|| {
            let used = client.handle_bytes(now, &requests[next], &mut t);
            out.clear();
            client.poll_transmit(now, &mut out);
            next = (next + 1) % PEERS;
            black_box((used, out.len()))
        })
    });
    g.finish();
}

criterion_group!(benches, announce_query, http_turn);
criterion_main!(benches);
