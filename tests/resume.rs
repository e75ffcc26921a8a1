//! Resume and crash safety, with the real binary on 127.0.0.1: kill -9 at random moments, clean stops, data damaged
//! between runs, untrustworthy records, a full disk, a read-only folder, files changed under a running seed, signals.
//!
//! Transfers that must last long enough to be interrupted use a seed started with `--max-upload-rate` (a cap on what
//! it serves per second). Tests that mount a small tmpfs of their own need root; the mount is removed by a guard,
//! also when the test fails.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::clients::{self, assert_same_tree, write_random_tree};
use common::{Proc, wait_until};
use tempfile::TempDir;
use toybt::metainfo::Metainfo;

/// Any single step (a process starting, a small transfer, a stop) finishes well within this.
const STEP: Duration = Duration::from_secs(30);
/// The leecher keeps at most this many requests in flight per peer (the clamp in `Peer::request_depth`).
const MAX_REQUESTS_IN_FLIGHT: u64 = 250;
const PIECE: u64 = 16 * 1024;

/// A torrent made by `toybt create` with 16 KiB pieces, and its content in `seed/NAME`.
struct Swarm {
    dir: TempDir,
    torrent: PathBuf,
    content: PathBuf,
    meta: Metainfo,
}

impl Swarm {
    /// `files` (relative path, length) under a folder `name`; the lengths add up to whole pieces so that byte counts
    /// follow from piece counts.
    fn new(name: &str, files: &[(&str, usize)], seed: u64) -> Swarm {
        let total: usize = files.iter().map(|f| f.1).sum();
        assert_eq!(total as u64 % PIECE, 0, "test data must fill whole pieces");
        let dir = tempfile::Builder::new().prefix("toybt-resume").tempdir().unwrap();
        let content = dir.path().join("seed").join(name);
        write_random_tree(&content, files, seed);
        let torrent = dir.path().join(format!("{name}.torrent"));
        let (code, _, err) = common::run_toybt(&[
            "create",
            content.to_str().unwrap(),
            "-l",
            "16K",
            "-d",
            "-t",
            clients::NOWHERE_ANNOUNCE,
            "-o",
            torrent.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "toybt create: {err}");
        let meta = Metainfo::load(&torrent).unwrap();
        Swarm { dir, torrent, content, meta }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn total(&self) -> u64 {
        self.meta.total_length
    }

    fn pieces(&self) -> u64 {
        self.meta.piece_count() as u64
    }

    /// The pieces holding any byte of any of `ranges` of the torrent's byte space.
    fn pieces_over(&self, ranges: &[Range<u64>]) -> BTreeSet<u64> {
        ranges.iter().filter(|r| !r.is_empty()).flat_map(|r| r.start / PIECE..r.end.div_ceil(PIECE)).collect()
    }

    fn file_index(&self, rel: &str) -> usize {
        let parts: Vec<&str> = rel.split('/').collect();
        self.meta.files.iter().position(|f| f.path == parts).unwrap_or_else(|| panic!("no file {rel}"))
    }

    /// Where file `rel` (relative to the top folder) lies in the torrent's byte space.
    fn file_range(&self, rel: &str) -> Range<u64> {
        let f = &self.meta.files[self.file_index(rel)];
        f.offset..f.offset + f.length
    }

    /// A seed of the content; `extra` options are added (e.g. the upload cap). Returns once it listens.
    fn seed(&self, name: &str, extra: &[&str]) -> (Proc, SocketAddr) {
        let mut args = vec!["seed", self.torrent.to_str().unwrap(), self.content.to_str().unwrap()];
        args.extend_from_slice(&["--port", "0", "--bind", "127.0.0.1"]);
        args.extend_from_slice(extra);
        let p = Proc::toybt(name, &args);
        let addr = listening_addr(&p.wait_line("peer listening on", STEP));
        (p, addr)
    }

    /// A leech into `out` that dials `peers` and exits once complete.
    fn leech(&self, name: &str, out: &Path, peers: &[SocketAddr], extra: &[&str]) -> Proc {
        self.leech_torrent(name, &self.torrent, out, peers, extra)
    }

    fn leech_torrent(&self, name: &str, torrent: &Path, out: &Path, peers: &[SocketAddr], extra: &[&str]) -> Proc {
        let mut args = vec!["leech", torrent.to_str().unwrap(), "-o", out.to_str().unwrap()];
        args.extend_from_slice(&["--port", "0", "--bind", "127.0.0.1", "--seed-time", "0"]);
        let peer_args: Vec<String> = peers.iter().map(|a| a.to_string()).collect();
        for p in &peer_args {
            args.extend_from_slice(&["--peer", p]);
        }
        args.extend_from_slice(extra);
        Proc::toybt(name, &args)
    }

    /// `out` holds exactly the torrent's content, and its resume record is in the state folder.
    fn assert_downloaded(&self, out: &Path) {
        let name = &self.meta.name;
        assert_same_tree(&self.content, &out.join(name));
        let beside: Vec<String> =
            fs::read_dir(out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(beside, vec![name.clone()], "what the download folder holds");
        assert!(self.record_file(out).is_file(), "no record in the state folder");
    }

    /// Where the record of the download into `out` is kept (the state folder).
    fn record_file(&self, out: &Path) -> PathBuf {
        common::record_file(&self.meta, &out.join(&self.meta.name))
    }

    fn record(&self, out: &Path) -> toybt::resume::ResumeRecord {
        toybt::resume::decode(&fs::read(self.record_file(out)).unwrap()).unwrap()
    }
}

fn listening_addr(line: &str) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], common::port_from_line(line)))
}

/// What a session's start-up check said: pieces hashed, and pieces verified (trusted or hashed) of the total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Check {
    rehashed: u64,
    verified: u64,
}

fn start_check(p: &Proc) -> Check {
    let line = p.wait_line("re-hashed ", STEP);
    let after = line.split("re-hashed ").nth(1).unwrap();
    let rehashed = after.split_whitespace().next().unwrap().parse().unwrap();
    let verified = after.split("; ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    Check { rehashed, verified }
}

/// The figures of the `totals:` line a session prints as it ends.
#[derive(Debug, Clone, Copy)]
struct Totals {
    downloaded: u64,
    uploaded: u64,
    pieces: u64,
    complete: bool,
}

fn totals(p: &Proc) -> Totals {
    let line = p.wait_line("totals:", STEP);
    let field = |key: &str| -> String {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")).map(str::to_string))
            .unwrap_or_else(|| panic!("{}: no {key} in {line:?}", p.name))
    };
    Totals {
        downloaded: field("downloaded").parse().unwrap(),
        uploaded: field("uploaded").parse().unwrap(),
        pieces: field("pieces").parse().unwrap(),
        complete: field("complete") == "true",
    }
}

fn wait_exit(p: &mut Proc, timeout: Duration) -> i32 {
    p.wait_exit(timeout).unwrap_or_else(|| panic!("{} still running after {timeout:?}:\n{}", p.name, p.output()))
}

/// SIGTERM, then the exit status (within `STEP`) and the closing totals.
fn stop(p: &mut Proc) -> (i32, Totals) {
    p.terminate();
    let code = wait_exit(p, STEP);
    (code, totals(p))
}

/// A small random generator for kill moments; its seed is printed so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Ten files of odd sizes (boundaries fall inside pieces), 16 MiB in all.
fn sixteen_mib() -> Vec<(&'static str, usize)> {
    let mut files = vec![
        ("a.bin", 2_000_001),
        ("b.bin", 1_500_000),
        ("sub/c.bin", 3_000_003),
        ("sub/d.bin", 1_234_567),
        ("sub/deeper/e.bin", 2_333_333),
        ("f.bin", 999_999),
        ("g.bin", 1_222_222),
        ("h.bin", 1),
        ("sub/i.bin", 2_444_444),
    ];
    let sum: usize = files.iter().map(|f| f.1).sum();
    files.push(("j.bin", 16 * 1024 * 1024 - sum));
    files
}

#[test]
fn kill_9_at_random_moments_loses_only_what_was_in_flight() {
    const KILLS: usize = 20;
    let sw = Swarm::new("many", &sixteen_mib(), 11);
    // 1 MB/s: the runs below fetch about half of the torrent, the last run (from an uncapped seed) the rest.
    let (mut seed, seed_addr) = sw.seed("capped seed", &["--max-upload-rate", "1000000"]);
    let out = sw.path("leech");
    let rng_seed = std::env::var("TOYBT_RESUME_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("kill moments from TOYBT_RESUME_SEED={rng_seed}");
    let mut rng = Rng(rng_seed);
    let mut verified_before = 0;
    for run in 0..KILLS {
        let mut leech = sw.leech(&format!("leech run {run}"), &out, &[seed_addr], &[]);
        // The kill moment: now and then during start-up (before the check, after it, once listening), otherwise
        // once a random amount of data (up to ~0.8 s at the seed's rate) has reached the files since the transfer
        // began.
        if run % 5 == 4 {
            match rng.below(3) {
                0 => {}
                1 => _ = leech.wait_line("re-hashed ", STEP),
                _ => _ = leech.wait_line("peer listening on", STEP),
            }
        } else {
            leech.wait_line("(we leech)", STEP);
            let from = allocated(&out.join(&sw.meta.name));
            wait_data_written(&sw, &out, from + rng.below(800_000));
        }
        leech.kill9();
        if let Some(line) = leech.try_wait_line("re-hashed ", Duration::ZERO) {
            let check = start_check(&leech);
            assert!(check.verified >= verified_before, "run {run} lost verified pieces: {line}");
            verified_before = check.verified;
        }
    }
    // An uncapped seed of the same data finishes the job quickly.
    let (mut fast_seed, fast_addr) = sw.seed("fast seed", &[]);
    let mut last = sw.leech("last run", &out, &[fast_addr], &[]);
    assert_eq!(wait_exit(&mut last, STEP), 0, "last run:\n{}", last.output());
    let check = start_check(&last);
    assert!(check.verified >= verified_before, "the last run lost verified pieces");
    assert!(check.verified < sw.pieces(), "every kill must fall within the transfer");
    assert!(totals(&last).complete);
    sw.assert_downloaded(&out);

    let sent = stop(&mut seed).1.uploaded + stop(&mut fast_seed).1.uploaded;
    let slack = KILLS as u64 * MAX_REQUESTS_IN_FLIGHT * PIECE;
    eprintln!(
        "{KILLS} kills: seeds sent {sent} bytes for {} ({} more, {:.1} KiB per kill; allowed {} per kill)",
        sw.total(),
        sent - sw.total(),
        (sent - sw.total()) as f64 / 1024.0 / KILLS as f64,
        MAX_REQUESTS_IN_FLIGHT * PIECE
    );
    assert!(sent >= sw.total());
    assert!(sent <= sw.total() + slack, "sent {sent} bytes for a {} byte torrent", sw.total());
}

#[test]
fn a_clean_stop_resumes_without_hashing_or_downloading_anything_twice() {
    let sw = Swarm::new("calm", &sixteen_mib(), 12);
    let (mut seed, seed_addr) = sw.seed("capped seed", &["--max-upload-rate", "4000000"]);
    let out = sw.path("leech");
    let mut first = sw.leech("first run", &out, &[seed_addr], &[]);
    first.wait_line("(we leech)", STEP);
    wait_data_written(&sw, &out, 2 << 20); // some of the transfer, not all of it
    let asked = Instant::now();
    let (code, before) = stop(&mut first);
    assert_eq!(code, 0, "first run:\n{}", first.output());
    assert!(asked.elapsed() < Duration::from_secs(5), "a stop with no tracker to tell took {:?}", asked.elapsed());
    assert!(before.pieces > 0 && !before.complete, "{before:?}");
    assert_eq!(sw.record(&out).pieces.iter().map(|b| b.count_ones() as u64).sum::<u64>(), before.pieces);

    let mut second = sw.leech("second run", &out, &[seed_addr], &[]);
    assert_eq!(start_check(&second), Check { rehashed: 0, verified: before.pieces });
    assert_eq!(wait_exit(&mut second, STEP), 0, "second run:\n{}", second.output());
    let after = totals(&second);
    assert_eq!(after.downloaded, sw.total() - before.pieces * PIECE, "bytes downloaded by the second run");
    sw.assert_downloaded(&out);

    // A complete download restarted, and the seed restarted on data it checked before: neither hashes anything.
    let mut third = sw.leech("third run", &out, &[], &[]);
    assert_eq!(start_check(&third), Check { rehashed: 0, verified: sw.pieces() });
    assert_eq!(wait_exit(&mut third, STEP), 0);
    assert_eq!(totals(&third).downloaded, 0);
    assert_eq!(stop(&mut seed).0, 0);
    let (mut seed_again, _) = sw.seed("seed again", &[]);
    assert_eq!(start_check(&seed_again), Check { rehashed: 0, verified: sw.pieces() });
    assert_eq!(stop(&mut seed_again).0, 0);
}

#[test]
fn a_record_an_older_toybt_left_beside_the_download_is_read_once_and_moved_to_the_state_folder() {
    let sw = Swarm::new("olden", &[("a.bin", 16384 * 20)], 21);
    let (mut seed, seed_addr) = sw.seed("seed", &[]);
    let out = sw.path("leech");
    download(&sw, &out, seed_addr);
    assert_eq!(stop(&mut seed).0, 0);
    // Where toybt kept it before the state folder: beside the content.
    let legacy = out.join("olden.toybt");
    fs::rename(sw.record_file(&out), &legacy).unwrap();

    let mut again = sw.leech("with the old record", &out, &[], &[]);
    assert_eq!(start_check(&again), Check { rehashed: 0, verified: sw.pieces() }, "the old record was trusted");
    assert_eq!(wait_exit(&mut again, STEP), 0, "{}", again.output());
    assert!(again.output().contains("moved the resume record"), "{}", again.output());
    assert!(!legacy.exists(), "the old record is gone from the download folder");
    sw.assert_downloaded(&out);
    let mut third = sw.leech("with the moved record", &out, &[], &[]);
    assert_eq!(start_check(&third), Check { rehashed: 0, verified: sw.pieces() });
    assert_eq!(wait_exit(&mut third, STEP), 0);
    assert!(!third.output().contains("moved the resume record"), "moved once only");
}

/// Completes a download of `sw` into `out` from `seed` and checks it.
fn download(sw: &Swarm, out: &Path, seed: SocketAddr) {
    let mut p = sw.leech("download", out, &[seed], &[]);
    assert_eq!(wait_exit(&mut p, STEP), 0, "download:\n{}", p.output());
    sw.assert_downloaded(out);
}

/// Sets a file's modification time `secs` seconds away from what it is, so a change is visible to the record even if
/// it happened within the same clock tick as the download.
fn shift_mtime(path: &Path, secs: i64) {
    let f = fs::File::options().write(true).open(path).unwrap();
    let was = f.metadata().unwrap().modified().unwrap();
    let to = if secs >= 0 { was + Duration::from_secs(secs as u64) } else { was - Duration::from_secs(-secs as u64) };
    f.set_modified(to).unwrap();
}

fn flip_byte(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = fs::File::options().read(true).write(true).open(path).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x5a], at).unwrap();
}

#[test]
fn damage_after_a_complete_download_is_found_at_start_and_repaired() {
    let files = [("a.bin", 700_000), ("sub/b.bin", 900_000), ("c.bin", 16384 * 150 - 1_600_000)];
    let sw = Swarm::new("damaged", &files, 13);
    let (mut seed, seed_addr) = sw.seed("seed", &[]);
    let out = sw.path("leech");
    download(&sw, &out, seed_addr);
    let top = out.join("damaged");

    // a.bin loses its second half; b.bin gets one byte flipped (its mtime moves, as any write moves it; moved a
    // second further so the change shows even within the clock tick of the download).
    let a = sw.file_range("a.bin");
    fs::File::options().write(true).open(top.join("a.bin")).unwrap().set_len(350_000).unwrap();
    shift_mtime(&top.join("a.bin"), 1);
    let b = sw.file_range("sub/b.bin");
    flip_byte(&top.join("sub/b.bin"), 123_456);
    shift_mtime(&top.join("sub/b.bin"), 1);
    let flipped = b.start + 123_456;
    let lost = sw.pieces_over(&[a.start + 350_000..a.end, flipped..flipped + 1]).len() as u64;
    // Every piece of a changed file is hashed again; the others are trusted.
    let checked = sw.pieces_over(&[a.clone(), b.clone()]).len() as u64;

    let mut repair = sw.leech("repair", &out, &[seed_addr], &[]);
    assert_eq!(start_check(&repair), Check { rehashed: checked, verified: sw.pieces() - lost });
    repair.wait_line("a.bin changed since the resume record", STEP);
    repair.wait_line("b.bin changed since the resume record", STEP);
    assert_eq!(wait_exit(&mut repair, STEP), 0, "repair:\n{}", repair.output());
    assert_eq!(totals(&repair).downloaded, lost * PIECE);
    sw.assert_downloaded(&out);

    // A flip that keeps the size and sets the mtime back to the recorded one cannot be seen without hashing (see
    // src/resume.rs): the next start trusts it, --recheck hashes everything and repairs it.
    let c = top.join("c.bin");
    let recorded = sw.record(&out).files[sw.file_index("c.bin")].unwrap();
    flip_byte(&c, 77);
    let at = std::time::UNIX_EPOCH + Duration::from_nanos(recorded.mtime_ns as u64);
    fs::File::options().write(true).open(&c).unwrap().set_modified(at).unwrap();
    assert_eq!(toybt::resume::stamp(&c).unwrap(), Some(recorded));
    let mut trusting = sw.leech("trusting", &out, &[], &[]);
    assert_eq!(start_check(&trusting), Check { rehashed: 0, verified: sw.pieces() });
    assert_eq!(wait_exit(&mut trusting, STEP), 0);
    let mut rechecking = sw.leech("rechecking", &out, &[seed_addr], &["--recheck"]);
    assert_eq!(start_check(&rechecking), Check { rehashed: sw.pieces(), verified: sw.pieces() - 1 });
    assert_eq!(wait_exit(&mut rechecking, STEP), 0, "rechecking:\n{}", rechecking.output());
    assert_eq!(totals(&rechecking).downloaded, PIECE);
    sw.assert_downloaded(&out);

    // A folder where a data file belongs: the leech names it and stops; the seed names it and serves the rest.
    fs::remove_file(top.join("sub/b.bin")).unwrap();
    fs::create_dir(top.join("sub/b.bin")).unwrap();
    let mut refused = sw.leech("refused", &out, &[seed_addr], &[]);
    assert_eq!(wait_exit(&mut refused, STEP), 1);
    refused.wait_line("b.bin: is not a regular file", STEP);
    assert_eq!(stop(&mut seed).0, 0);
    let mut seed_of_damaged = Proc::toybt(
        "seed of damaged",
        &["seed", sw.torrent.to_str().unwrap(), top.to_str().unwrap(), "--port", "0", "--bind", "127.0.0.1"],
    );
    seed_of_damaged.wait_line("b.bin: is not a regular file", STEP);
    seed_of_damaged.wait_line("peer listening on", STEP);
    let without_b = sw.pieces() - sw.pieces_over(&[b]).len() as u64;
    assert_eq!(start_check(&seed_of_damaged).verified, without_b);
    assert_eq!(stop(&mut seed_of_damaged).0, 0);
}

#[test]
fn a_record_that_cannot_be_trusted_is_reported_and_the_data_checked() {
    let sw = Swarm::new("records", &[("x.bin", 300_000), ("y/z.bin", 16384 * 40 - 300_000)], 14);
    let other = Swarm::new("records", &[("x.bin", 300_000), ("y/z.bin", 16384 * 40 - 300_000)], 15);
    let (mut seed, seed_addr) = sw.seed("seed", &[]);
    let out = sw.path("leech");
    download(&sw, &out, seed_addr);
    let record = sw.record_file(&out);

    // Another torrent's record (same name, other content), then damaged ones: each is named and ignored, the data is
    // hashed, found complete, and nothing is downloaded.
    let mut other_seed = other.seed("other seed", &[]);
    download(&other, &other.path("leech"), other_seed.1);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("it belongs to another torrent", fs::read(other.record_file(&other.path("leech"))).unwrap()),
        ("not bencode", b"this is not a record".to_vec()),
        ("not bencode", fs::read(&record).unwrap()[..20].to_vec()),
        ("unknown version", b"d7:versioni99ee".to_vec()),
        ("its size does not match the torrent", {
            let mut r = sw.record(&out);
            r.pieces.push(0xff);
            toybt::resume::encode(&r)
        }),
    ];
    for (why, bytes) in cases {
        fs::write(&record, bytes).unwrap();
        let mut p = sw.leech(why, &out, &[], &[]);
        let line = p.wait_line("ignoring the resume record", STEP);
        assert!(line.contains(&record.display().to_string()) && line.contains(why), "{line}");
        assert_eq!(start_check(&p), Check { rehashed: sw.pieces(), verified: sw.pieces() });
        assert_eq!(wait_exit(&mut p, STEP), 0, "{why}:\n{}", p.output());
        assert_eq!(totals(&p).downloaded, 0);
        // The record was replaced by a good one at once: the next start trusts it.
        assert_eq!(sw.record(&out).info_hash, sw.meta.info_hash);
    }
    let mut p = sw.leech("repaired record", &out, &[], &[]);
    assert_eq!(start_check(&p), Check { rehashed: 0, verified: sw.pieces() });
    assert_eq!(wait_exit(&mut p, STEP), 0);
    assert_eq!(stop(&mut seed).0, 0);
    assert_eq!(stop(&mut other_seed.0).0, 0);
}

/// A tmpfs mounted on a folder of ours; unmounted when dropped, also when a test fails. Needs root.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir).status();
        assert!(
            st.is_ok_and(|s| s.success()),
            "cannot mount a tmpfs on {} (these tests need root, as in CI)",
            dir.display()
        );
        Tmpfs { dir: dir.to_path_buf() }
    }

    fn remount(&self, opts: &str) {
        let st = Command::new("mount").args(["-o", &format!("remount,{opts}")]).arg(&self.dir).status().unwrap();
        assert!(st.success(), "remount {opts} of {}", self.dir.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.dir).status().is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a process of a failed test not yet reaped): detach it now, it goes when unused.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

#[test]
fn a_full_disk_is_reported_keeps_what_is_verified_and_a_restart_completes() {
    let sw = Swarm::new("big", &[("one.bin", 3_000_000), ("two/two.bin", 16384 * 512 - 3_000_000)], 16);
    let (mut seed, seed_addr) = sw.seed("seed", &[]);
    let disk = Tmpfs::mount(&sw.path("small"), "4M");
    let out = disk.dir.join("downloads");

    let mut full = sw.leech("full disk", &out, &[seed_addr], &[]);
    let line = full.wait_line("cannot store piece", STEP);
    assert!(
        line.contains("No space left on device") && line.contains(&out.join("big").display().to_string()),
        "{line}"
    );
    assert!(line.contains("downloading stops, seeding goes on"), "{line}");
    assert!(full.child.try_wait().unwrap().is_none(), "the daemon must keep running:\n{}", full.output());
    let (code, kept) = stop(&mut full);
    assert_eq!(code, 1, "a session that stopped on a disk error exits 1");
    assert!(kept.pieces > 0 && !kept.complete, "{kept:?}");
    full.wait_line("toybt: cannot store piece", STEP);

    disk.remount("size=16M");
    let mut again = sw.leech("space freed", &out, &[seed_addr], &[]);
    let check = start_check(&again);
    assert_eq!(check.verified, kept.pieces, "every piece verified before the disk filled is still there");
    assert_eq!(wait_exit(&mut again, STEP), 0, "space freed:\n{}", again.output());
    assert_eq!(totals(&again).downloaded, sw.total() - kept.pieces * PIECE);
    sw.assert_downloaded(&out);
    assert_eq!(stop(&mut seed).0, 0);
}

/// Waits until at least `bytes` of verified data are on disk under `out` (pieces are written only once verified, into
/// sparse files, so allocated blocks count them).
fn wait_data_written(sw: &Swarm, out: &Path, bytes: u64) {
    let content = out.join(&sw.meta.name);
    let ok = wait_until(STEP, || allocated(&content) >= bytes);
    assert!(ok, "{} never held {bytes} bytes", content.display());
}

/// Bytes the file system holds for `path` (a file, or a folder and everything in it).
fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::read_dir(path).into_iter().flatten().flatten().map(|e| allocated(&e.path())).sum(),
        Ok(m) => m.blocks() * 512,
        Err(_) => 0,
    }
}

/// Waits until the record in `out` says at least `pieces` pieces are verified; returns how many it says.
fn wait_record(sw: &Swarm, out: &Path, pieces: u64) -> u64 {
    let path = sw.record_file(out);
    let mut seen = 0;
    let ok = wait_until(STEP, || {
        seen = fs::read(&path)
            .ok()
            .and_then(|b| toybt::resume::decode(&b).ok())
            .map_or(0, |r| r.pieces.iter().map(|b| b.count_ones() as u64).sum());
        seen >= pieces
    });
    assert!(ok, "{} says {seen} pieces, waited for {pieces}", path.display());
    seen
}

#[test]
fn a_read_only_folder_stops_downloading_but_not_seeding() {
    let sw = Swarm::new("frozen", &[("p.bin", 2_000_000), ("q/q.bin", 16384 * 400 - 2_000_000)], 17);
    let (mut seed, seed_addr) = sw.seed("capped seed", &["--max-upload-rate", "3000000"]);
    let disk = Tmpfs::mount(&sw.path("ro"), "16M");
    let out = disk.dir.join("downloads");
    let mut partial = sw.leech("partial", &out, &[seed_addr], &[]);
    partial.wait_line("(we leech)", STEP);
    wait_data_written(&sw, &out, 1 << 20); // part of the transfer
    let (code, part) = stop(&mut partial);
    assert_eq!(code, 0);
    assert!(part.pieces > 0 && !part.complete, "{part:?}");

    disk.remount("ro");
    // Without PEX: it would tell the seed of the leecher below, and the seed would dial it.
    let mut frozen = sw.leech("read-only", &out, &[seed_addr], &["--no-pex"]);
    assert_eq!(start_check(&frozen), Check { rehashed: 0, verified: part.pieces });
    let line = frozen.wait_line("cannot store piece", STEP);
    assert!(
        line.contains("Read-only file system") && line.contains(&out.join("frozen").display().to_string()),
        "{line}"
    );
    let frozen_addr = listening_addr(&frozen.wait_line("peer listening on", STEP));

    // Another leecher that knows only the read-only one gets every piece it has (and no more: without PEX neither
    // it nor the seed hears of the other).
    let other = sw.path("other");
    let mut fetch = sw.leech("from read-only", &other, &[frozen_addr], &["--no-pex"]);
    assert_eq!(wait_record(&sw, &other, part.pieces), part.pieces);
    assert_eq!(stop(&mut fetch).0, 0);
    let (code, _) = stop(&mut frozen);
    assert_eq!(code, 1);
    // The record is in the state folder, not the read-only one: still written, it vouches for what was there.
    let recorded: u64 = sw.record(&out).pieces.iter().map(|b| b.count_ones() as u64).sum();
    assert_eq!(recorded, part.pieces);

    disk.remount("rw");
    let mut thawed = sw.leech("writable again", &out, &[seed_addr], &[]);
    assert_eq!(start_check(&thawed).verified, part.pieces);
    assert_eq!(wait_exit(&mut thawed, STEP), 0, "writable again:\n{}", thawed.output());
    sw.assert_downloaded(&out);
    assert_eq!(stop(&mut seed).0, 0);
}

#[test]
fn files_truncated_or_deleted_under_a_running_seed_are_named_and_the_rest_served() {
    let files = [("keep.bin", 1_000_000), ("short.bin", 1_500_000), ("gone/gone.bin", 16384 * 200 - 2_500_000)];
    let sw = Swarm::new("shaky", &files, 18);
    assert_eq!(sw.file_index("short.bin"), 2, "short.bin must come last: its cut-off tail then shares no piece");
    // The seed serves a copy that is damaged under it; `sw.content` stays as it was.
    let served = sw.path("served");
    fs::create_dir_all(&served).unwrap();
    assert!(Command::new("cp").arg("-a").arg(&sw.content).arg(&served).status().unwrap().success());
    let top = served.join("shaky");
    let mut seed = Proc::toybt(
        "seed",
        &["seed", sw.torrent.to_str().unwrap(), top.to_str().unwrap(), "--port", "0", "--bind", "127.0.0.1"],
    );
    let seed_addr = listening_addr(&seed.wait_line("peer listening on", STEP));
    let short = top.join("short.bin");
    fs::File::options().write(true).open(&short).unwrap().set_len(500_000).unwrap();
    fs::remove_file(top.join("gone/gone.bin")).unwrap();

    // A leecher that asks for everything makes the seed read the cut-off part: one clear line naming the file.
    let mut asks_all = sw.leech("asks for all", &sw.path("all"), &[seed_addr], &[]);
    let line = seed.wait_line("cannot serve piece", STEP);
    assert!(line.contains(&short.display().to_string()) && line.contains("ends early"), "{line}");
    assert_eq!(stop(&mut asks_all).0, 0);
    seed.wait_line("short.bin changed size under us (500000 bytes, was 1500000)", STEP);
    seed.wait_line("gone.bin was deleted", STEP);

    // A leecher that lacks only what the seed can still read (keep.bin, and gone.bin, which the seed holds open)
    // completes from it.
    let out = sw.path("rest");
    fs::create_dir_all(out.join("shaky")).unwrap();
    fs::copy(sw.content.join("short.bin"), out.join("shaky/short.bin")).unwrap();
    let mut rest = sw.leech("the rest", &out, &[seed_addr], &[]);
    assert_eq!(wait_exit(&mut rest, STEP), 0, "the rest:\n{}", rest.output());
    sw.assert_downloaded(&out);
    assert_eq!(seed.count_lines("cannot serve piece"), 1, "one line per broken file");
    assert!(seed.child.try_wait().unwrap().is_none());
    assert_eq!(stop(&mut seed).0, 0);

    // The record the seed left vouches for neither file: both are checked at the next start.
    let mut again = Proc::toybt(
        "seed again",
        &["seed", sw.torrent.to_str().unwrap(), top.to_str().unwrap(), "--port", "0", "--bind", "127.0.0.1"],
    );
    again.wait_line("gone.bin: missing", STEP);
    let (s, g) = (sw.file_range("short.bin"), sw.file_range("gone/gone.bin"));
    let check = start_check(&again);
    // Pieces that touch the missing file cannot be had: they are not read at all.
    let read = sw.pieces_over(std::slice::from_ref(&s)).difference(&sw.pieces_over(std::slice::from_ref(&g))).count();
    assert_eq!(check.rehashed, read as u64);
    assert_eq!(check.verified, sw.pieces() - sw.pieces_over(&[s.start + 500_000..s.end, g]).len() as u64);
    again.wait_line("peer listening on", STEP);
    assert_eq!(stop(&mut again).0, 0);
}

#[test]
fn sigterm_writes_the_record_and_tells_the_tracker_at_once() {
    let sw = Swarm::new("told", &[("t.bin", 16384 * 300)], 19);
    let (mut seed, seed_addr) = sw.seed("capped seed", &["--max-upload-rate", "2000000", "--tracker-port", "0"]);
    let tracker = listening_addr(&seed.wait_line("tracker listening on", STEP));
    let torrent = clients::Torrent::load(&sw.torrent)
        .with_announce(&format!("http://{tracker}/announce"), &sw.path("tracked.torrent"));
    let out = sw.path("leech");
    let mut leech = sw.leech_torrent("leech", &torrent.path, &out, &[seed_addr], &[]);
    leech.wait_line("(we leech)", STEP);
    clients::wait_scrape(tracker, &sw.meta.info_hash, STEP, |s| s.incomplete == 1);
    let asked = Instant::now();
    let (code, t) = stop(&mut leech);
    let took = asked.elapsed();
    assert_eq!(code, 0);
    assert!(took < Duration::from_secs(3), "stopping took {took:?}");
    // `stopped` reached the tracker: the leecher is gone from the swarm now, not after it expires.
    assert_eq!(clients::scrape(tracker, &sw.meta.info_hash).unwrap().incomplete, 0);
    let pieces: u64 = sw.record(&out).pieces.iter().map(|b| b.count_ones() as u64).sum();
    assert_eq!(pieces, t.pieces);
    assert_eq!(stop(&mut seed).0, 0);
}

#[test]
fn a_stop_waits_a_bounded_time_for_a_silent_tracker_and_a_second_signal_ends_it_at_once() {
    let sw = Swarm::new("silent", &[("s.bin", 16384 * 300)], 20);
    let (mut seed, seed_addr) = sw.seed("capped seed", &["--max-upload-rate", "2000000"]);
    // A tracker that accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (listener, keep) = (silent.try_clone().unwrap(), held.clone());
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            keep.lock().unwrap().push(s);
        }
    });
    let url = format!("http://{}/announce", silent.local_addr().unwrap());
    let torrent = clients::Torrent::load(&sw.torrent).with_announce(&url, &sw.path("silent.torrent"));

    for second_signal in [false, true] {
        let out = sw.path(if second_signal { "twice" } else { "once" });
        let mut leech = sw.leech_torrent("leech", &torrent.path, &out, &[seed_addr], &[]);
        leech.wait_line("(we leech)", STEP);
        wait_data_written(&sw, &out, 1); // some pieces for the record
        leech.terminate();
        leech.wait_line("stopping on SIGTERM", STEP);
        // The record is written before the goodbye to the tracker starts.
        assert!(sw.record(&out).pieces.iter().any(|b| *b != 0));
        let asked = Instant::now();
        if second_signal {
            leech.terminate();
            assert_eq!(wait_exit(&mut leech, Duration::from_secs(2)), 128 + 15);
            assert!(asked.elapsed() < Duration::from_secs(1), "a second SIGTERM took {:?}", asked.elapsed());
        } else {
            assert_eq!(wait_exit(&mut leech, Duration::from_secs(15)), 0);
            let took = asked.elapsed();
            assert!(took < Duration::from_secs(8), "waited {took:?} for a tracker that never answers");
            totals(&leech);
        }
    }
    assert_eq!(stop(&mut seed).0, 0);
}
