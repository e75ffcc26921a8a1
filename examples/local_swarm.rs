//! A whole swarm on this machine in one command: `cargo run --release --example local_swarm [-- MIB]`.
//!
//! It makes a torrent of the built-in fixture folder (fixtures/multi) plus a generated file of MIB MiB (default 64)
//! so the transfer is long enough to watch, starts a seed that also runs the tracker, and three leechers that find
//! the seed and each other through it. Each node is its own event loop on its own thread, exactly as separate
//! `toybt seed` / `toybt leech` processes would be. At the end it checks every leecher's copy byte for byte.
//! Set RUST_LOG=info to watch the peers connect, trade and disconnect.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use toybt::cli::swarm::{self, SwarmOptions};
use toybt::cli::{leech, seed};
use toybt::create::{self, Options};
use toybt::metainfo::Metainfo;
use toybt::progress;

const LEECHERS: usize = 3;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let mib: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    if let Err(e) = run(mib) {
        eprintln!("local_swarm: {e}");
        std::process::exit(1);
    }
}

fn run(mib: u64) -> Result<(), String> {
    let work = std::env::temp_dir().join(format!("toybt-local-swarm-{}", std::process::id()));
    let result = swarm_in(&work, mib);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn swarm_in(work: &Path, mib: u64) -> Result<(), String> {
    let share = work.join("share");
    copy_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/multi"), &share).map_err(|e| e.to_string())?;
    write_payload(&share.join("payload.bin"), mib << 20).map_err(|e| e.to_string())?;

    // The tracker's port must be in the torrent, so take a free one now (the seed binds it a moment later).
    let tracker_port =
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
    let opts =
        Options { trackers: vec![vec![format!("http://127.0.0.1:{tracker_port}/announce")]], ..Options::default() };
    println!("== creating a torrent of {} (fixtures/multi + {mib} MiB payload)", share.display());
    let (bytes, _) = create::create(&share, &opts, &mut |_, _| {}).map_err(|e| e.to_string())?;
    let torrent_path = work.join("share.torrent");
    std::fs::write(&torrent_path, bytes).map_err(|e| e.to_string())?;
    let meta = Metainfo::load(&torrent_path).map_err(|e| e.to_string())?;
    println!(
        "   {} files, {} in {} pieces of {}, info hash {}",
        meta.files.len(),
        progress::bytes(meta.total_length),
        meta.piece_count(),
        progress::bytes(meta.piece_length as u64),
        meta.info_hash_hex()
    );

    println!("== starting the seed (with the tracker on port {tracker_port})");
    let plan = seed::plan(meta.clone(), share.clone(), SwarmOptions::loopback(), Some(tracker_port))
        .map_err(|e| e.to_string())?;
    let (mut seed_loop, _) = swarm::start_session(plan).map_err(|e| e.to_string())?;
    std::thread::spawn(move || seed_loop.run());

    println!("== starting {LEECHERS} leechers");
    let started = Instant::now();
    let leechers: Vec<_> = (0..LEECHERS)
        .map(|i| {
            let dir = work.join(format!("leecher{i}"));
            let meta = meta.clone();
            std::thread::spawn(move || -> Result<(u64, u64, Duration), String> {
                let plan = leech::plan(meta, &dir, SwarmOptions::loopback(), Some(Duration::ZERO))
                    .map_err(|e| e.to_string())?;
                let (mut lp, _) = swarm::start_session(plan).map_err(|e| e.to_string())?;
                lp.run().map_err(|e| e.to_string())?;
                let t = lp.services.torrent().ok_or("no session")?;
                if !t.is_complete() {
                    return Err(format!("leecher {i} stopped before finishing"));
                }
                Ok((t.downloaded(), t.uploaded(), started.elapsed()))
            })
        })
        .collect();

    let mut failures = 0;
    for (i, handle) in leechers.into_iter().enumerate() {
        match handle.join().map_err(|_| "leecher thread panicked".to_string())? {
            Ok((down, up, took)) => {
                let same = same_tree(&share, &work.join(format!("leecher{i}")).join(&meta.name));
                println!(
                    "   leecher {i}: downloaded {} and uploaded {} to the others in {:.2}s ({}/s); data {}",
                    progress::bytes(down),
                    progress::bytes(up),
                    took.as_secs_f64(),
                    progress::bytes((down as f64 / took.as_secs_f64().max(1e-3)) as u64),
                    if same { "identical to the seed's" } else { "DIFFERENT" }
                );
                failures += usize::from(!same);
            }
            Err(e) => {
                println!("   leecher {i}: {e}");
                failures += 1;
            }
        }
    }
    if failures > 0 {
        return Err(format!("{failures} leecher(s) failed"));
    }
    println!("== done: every leecher has a verified, byte-identical copy");
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Pseudo-random bytes, written in chunks so memory stays small whatever the size.
fn write_payload(path: &PathBuf, len: u64) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for word in chunk.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    f.flush()
}

fn same_tree(a: &Path, b: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(a) else { return false };
    entries.flatten().all(|e| {
        let (pa, pb) = (e.path(), b.join(e.file_name()));
        if pa.is_dir() { same_tree(&pa, &pb) } else { std::fs::read(&pa).ok() == std::fs::read(&pb).ok() }
    })
}
