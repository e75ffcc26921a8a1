//! An in-process loopback swarm: a seed session and a leech session, each on its own reactor in its own thread (as
//! two `toybt` processes would be), trading over real 127.0.0.1 sockets. One iteration is one whole download into a
//! fresh folder, timed from the leech's start to its last verified piece.
//! Run: `cargo bench --bench swarm` (criterion prints MB/s, 10^6 bytes per second, as "thrpt").
//!
//! The files live on /dev/shm when it exists, so this measures the peer path (sockets, the loop, piece assembly,
//! hashing, the copy into the file) rather than the disk, which `benches/storage.rs` measures; in particular the
//! fsync at completion is free there. As a test (`cargo test --all-targets`) it moves 1 MiB once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use toybt::cli::swarm::{self, SwarmOptions};
use toybt::cli::{leech, seed};
use toybt::create::{self, Options};
use toybt::metainfo::Metainfo;

/// Deterministic bytes that do not compress or repeat.
fn data(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn scratch_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() }
}

/// A seed serving `bytes` of data from its own thread until the returned flag is set.
struct Seed {
    addr: std::net::SocketAddr,
    meta: Metainfo,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Seed {
    fn start(dir: &Path, bytes: usize) -> Seed {
        let content = dir.join("payload.bin");
        std::fs::write(&content, data(bytes)).expect("write the payload");
        // 256 KiB pieces, as the whole-process comparison uses.
        let opts = Options { piece_length: Some(256 << 10), ..Options::default() };
        let (_, meta) = create::create(&content, &opts, &mut |_, _| {}).expect("create the torrent");
        let plan = seed::plan(meta.clone(), content, SwarmOptions::loopback(), None).expect("seed plan");
        let (mut reactor, addr) = swarm::start_session(plan).expect("seed session");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                reactor.turn(Some(Duration::from_millis(20))).expect("seed loop");
            }
        });
        Seed { addr, meta, stop, thread: Some(thread) }
    }

    /// One whole download into a fresh folder under `root`; returns the time from the leech's start to complete.
    fn download(&self, root: &Path) -> Duration {
        let dir = tempfile::tempdir_in(root).expect("leech folder");
        let opts = SwarmOptions { peers: vec![self.addr], ..SwarmOptions::loopback() };
        let plan = leech::plan(self.meta.clone(), dir.path(), opts, Some(Duration::ZERO)).expect("leech plan");
        let started = Instant::now();
        let (mut reactor, _) = swarm::start_session(plan).expect("leech session");
        let give_up = started + Duration::from_secs(120);
        loop {
            reactor.turn(Some(Duration::from_millis(20))).expect("leech loop");
            let t = reactor.services.torrent().expect("the leech session");
            if t.is_complete() {
                break;
            }
            assert!(Instant::now() < give_up, "the download did not finish in 2 minutes");
        }
        started.elapsed()
    }
}

impl Drop for Seed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn loopback_swarm(c: &mut Criterion) {
    // `cargo test --all-targets` runs each bench once as a smoke test (no `--bench` argument): keep that quick.
    let measuring = std::env::args().any(|a| a == "--bench");
    let bytes: usize = if measuring { 64 << 20 } else { 1 << 20 };
    let root = scratch_root();
    let work = tempfile::tempdir_in(&root).expect("bench folder");
    let seed = Seed::start(work.path(), bytes);

    let mut group = c.benchmark_group("loopback_swarm");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::BytesDecimal(bytes as u64));
    group.bench_function(format!("{}MiB", bytes >> 20), |b| {
        b.iter_custom(|iters| (0..iters).map(|_| seed.download(work.path())).sum())
    });
    group.finish();
}

criterion_group!(benches, loopback_swarm);
criterion_main!(benches);
