//! Property test for the metainfo loader: random bencode and mutations of real torrents must give an error or a
//! torrent that keeps every promise `Metainfo` makes, never a panic, and each within a time bound. Deterministic
//! (xorshift with fixed seeds), so a failure reproduces; the failing input is printed in the panic message.

mod common;

use std::time::{Duration, Instant};

use toybt::bencode::Encoder;
use toybt::metainfo::{Metainfo, component_problem};

/// One call must finish well within this even in a debug build; inputs here are at most a few hundred kB.
const TIME_LIMIT: Duration = Duration::from_secs(2);

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const KEYS: &[&str] = &[
    "info",
    "announce",
    "announce-list",
    "name",
    "length",
    "files",
    "path",
    "piece length",
    "pieces",
    "private",
    "attr",
    "comment",
    "created by",
    "creation date",
    "meta version",
    "file tree",
    "x",
];
const STRINGS: &[&[u8]] = &[b"", b".", b"..", b"a", b"a/b", b"/etc", b"a\0b", b"c\\d", b"\xff\xfe", b"p", b"px", b"ok"];
const INTS: &[i64] = &[0, 1, -1, 5, 16383, 16384, 16385, 1 << 20, 256 << 20, (256 << 20) + 1, i64::MAX, i64::MIN];

/// A random value shaped like a torrent often enough to get past the first checks.
fn random_value(rng: &mut Rng, e: &mut Encoder, depth: usize) {
    let kind = if depth > 6 { rng.below(2) } else { rng.below(5) };
    match kind {
        0 => {
            e.int(if rng.below(2) == 0 { *rng.pick(INTS) } else { rng.next() as i64 % 100_000 });
        }
        1 => {
            if rng.below(4) == 0 {
                let n = 20 * rng.below(8) + rng.below(3) / 2;
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                e.bytes(&bytes);
            } else {
                e.bytes(STRINGS[rng.below(STRINGS.len())]);
            }
        }
        2 | 3 => {
            e.begin_dict();
            let mut keys: Vec<&str> = (0..rng.below(6)).map(|_| *rng.pick(KEYS)).collect();
            if rng.below(4) != 0 {
                keys.sort_unstable();
            }
            for k in keys {
                e.str(k);
                random_value(rng, e, depth + 1);
            }
            e.end();
        }
        _ => {
            e.begin_list();
            for _ in 0..rng.below(5) {
                random_value(rng, e, depth + 1);
            }
            e.end();
        }
    }
}

/// Changes a valid torrent in one of the ways that break parsers: bit flips, lost or repeated bytes, other numbers.
fn mutate(rng: &mut Rng, base: &[u8], others: &[Vec<u8>]) -> Vec<u8> {
    let mut m = base.to_vec();
    for _ in 0..1 + rng.below(3) / 2 {
        let len = m.len().max(1);
        let at = rng.below(len);
        match rng.below(7) {
            0 => {
                if let Some(b) = m.get_mut(at) {
                    *b ^= 1 << rng.below(8);
                }
            }
            1 => m.insert(at.min(m.len()), *rng.pick(b"0123456789ilde:-")),
            2 => {
                let end = (at + 1 + rng.below(16)).min(m.len());
                m.drain(at.min(end)..end);
            }
            3 => m.truncate(at),
            4 => {
                let end = (at + 1 + rng.below(32)).min(m.len());
                let chunk = m[at.min(end)..end].to_vec();
                let to = rng.below(m.len() + 1);
                m.splice(to..to, chunk);
            }
            5 => {
                // Replace a run of digits (a length, an integer) with another number.
                if let Some(start) = (at..m.len()).find(|&i| m[i].is_ascii_digit()) {
                    let end = (start..m.len()).find(|&i| !m[i].is_ascii_digit()).unwrap_or(m.len());
                    let n = rng.pick(INTS).to_string();
                    m.splice(start..end, n.bytes());
                }
            }
            _ => {
                let other = rng.pick(others);
                let from = rng.below(other.len());
                let end = (from + rng.below(64)).min(other.len());
                let to = rng.below(m.len() + 1);
                m.splice(to..to, other[from..end].iter().copied());
            }
        }
    }
    m
}

/// Everything a caller of `Metainfo` relies on.
fn check_promises(m: &Metainfo, input: &[u8]) {
    let ctx = || String::from_utf8_lossy(input).into_owned();
    assert!(m.total_length > 0, "{}", ctx());
    assert!(m.piece_length >= 1 && m.piece_length <= 256 << 20, "{}", ctx());
    assert_eq!(m.pieces.len() as u64, m.total_length.div_ceil(m.piece_length as u64), "{}", ctx());
    let last = m.piece_count() - 1;
    assert!((1..=m.piece_length).contains(&m.piece_size(last)), "{}", ctx());
    assert!(component_problem(&m.name).is_none(), "{}", ctx());
    let mut offset = 0;
    for f in &m.files {
        assert_eq!(f.offset, offset, "{}", ctx());
        offset += f.length;
        assert!(!f.path.is_empty(), "{}", ctx());
        for c in &f.path {
            assert!(component_problem(c).is_none(), "{c:?} in {}", ctx());
        }
    }
    assert_eq!(offset, m.total_length, "{}", ctx());
    let mut paths: Vec<&Vec<String>> = m.files.iter().filter(|f| !f.padding).map(|f| &f.path).collect();
    paths.sort();
    for w in paths.windows(2) {
        assert!(!w[1].starts_with(w[0]), "{:?} collides with {:?} in {}", w[0], w[1], ctx());
    }
    if !m.multi_file {
        assert!(m.files.len() == 1 && m.files[0].path == [m.name.clone()], "{}", ctx());
    }
}

fn run(input: &[u8], stats: &mut (usize, usize)) {
    let start = Instant::now();
    let result = Metainfo::from_bytes(input);
    let took = start.elapsed();
    assert!(took < TIME_LIMIT, "took {took:?} on {:?}", String::from_utf8_lossy(input));
    match result {
        Ok(m) => {
            stats.0 += 1;
            check_promises(&m, input);
        }
        Err(e) => {
            stats.1 += 1;
            assert!(!e.to_string().is_empty());
        }
    }
}

/// The fixture torrents: (valid ones, malformed ones).
fn seed_torrents() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let read = |dir: std::path::PathBuf| {
        let mut paths: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "torrent"))
            .collect();
        paths.sort();
        paths.iter().map(|p| std::fs::read(p).unwrap()).collect::<Vec<_>>()
    };
    let mut valid = read(common::fixtures());
    valid.extend(read(common::fixtures().join("accepted")));
    let malformed = read(common::fixtures().join("malformed"));
    assert!(valid.len() >= 10 && malformed.len() >= 30, "the fixtures are the seeds");
    (valid, malformed)
}

#[test]
fn mutated_torrents_never_panic_and_keep_the_promises() {
    let (valid, malformed) = seed_torrents();
    let all: Vec<Vec<u8>> = valid.iter().chain(&malformed).cloned().collect();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut stats = (0, 0);
    for _ in 0..20_000 {
        let base = if rng.below(4) == 0 { rng.pick(&malformed) } else { rng.pick(&valid) };
        let input = mutate(&mut rng, base, &all);
        run(&input, &mut stats);
    }
    // Mutations that keep a torrent valid (a changed hash byte, a changed comment) must occur, or the test is weak.
    assert!(stats.0 > 1000 && stats.1 > 1000, "accepted {}, refused {}", stats.0, stats.1);
}

#[test]
fn random_bencode_never_panics() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut stats = (0, 0);
    for _ in 0..20_000 {
        let mut buf = Vec::new();
        let mut e = Encoder { out: &mut buf };
        // A top-level dictionary with an `info` dictionary most of the time, so the deeper checks get exercised.
        if rng.below(4) != 0 {
            e.begin_dict().str("info").begin_dict();
            let mut keys: Vec<&str> = ["name", "piece length", "pieces", "length", "files"]
                .into_iter()
                .filter(|_| rng.below(5) != 0)
                .collect();
            keys.sort_unstable();
            for k in keys {
                e.str(k);
                random_value(&mut rng, &mut e, 1);
            }
            e.end().end();
        } else {
            random_value(&mut rng, &mut e, 0);
        }
        run(&buf, &mut stats);
        let mut raw: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
        if rng.below(2) == 0 {
            raw.insert(0, b'd');
        }
        run(&raw, &mut stats);
    }
    assert!(stats.1 > 0);
}

#[test]
fn hostile_shapes_are_refused_quickly() {
    let mut stats = (0, 0);
    // Deep nesting, long flat lists, many files and a huge declared string length.
    let mut deep = b"d4:info".to_vec();
    deep.extend(std::iter::repeat_n(b'l', 1 << 20));
    run(&deep, &mut stats);
    let mut wide = b"d4:infod5:filesl".to_vec();
    for _ in 0..50_000 {
        wide.extend_from_slice(b"d6:lengthi1e4:pathl1:aee");
    }
    wide.extend_from_slice(b"e4:name1:a12:piece lengthi16384e6:pieces20:xxxxxxxxxxxxxxxxxxxxee");
    run(&wide, &mut stats);
    run(b"d4:info99999999999999:x", &mut stats);
    run(b"d4:infod6:lengthi9223372036854775807e4:name1:a12:piece lengthi1e6:pieces0:ee", &mut stats);
    assert_eq!(stats, (0, 4));
}
