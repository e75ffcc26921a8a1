//! Selective download with the real binary on 127.0.0.1: `toybt leech --select` fetches only the chosen files (and
//! the pieces they share with others), and a later run with more files selected completes them without hashing or
//! fetching again what the first run got.

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::clients::write_random_tree;
use common::run_toybt;
use common::swarm::{self as sw, STEP};
use toybt::metainfo::Metainfo;

/// A transfer of a few hundred KiB, with room for a loaded machine.
const DONE: Duration = Duration::from_secs(60);
const PIECE: u64 = 16 * 1024;

/// Three files whose boundaries fall inside pieces (16 KiB): the first shares piece 2 with the second, the second
/// shares piece 6 with the third.
const FILES: [(&str, usize); 3] = [("1-first.bin", 40_000), ("2-middle.bin", 70_000), ("3-last.bin", 50_000)];

/// The file numbers `toybt info` gives: its FILES lines in order, counted from 1.
fn info_numbering(torrent: &Path) -> Vec<String> {
    let (code, out, err) = run_toybt(&["info", torrent.to_str().unwrap()]);
    assert_eq!(code, 0, "toybt info: {err}");
    let files = out.split("\nFILES\n").nth(1).expect("a FILES section");
    files
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take_while(|l| !l.starts_with("WARNINGS"))
        .map(String::from)
        .collect()
}

#[test]
fn leech_select_fetches_chosen_files_and_a_wider_selection_later_completes_without_rehashing() {
    let dir = tempfile::Builder::new().prefix("toybt-select").tempdir().unwrap();
    let content = dir.path().join("seed").join("sel");
    write_random_tree(&content, &FILES, 14);
    let torrent = sw::create_torrent(&content, &dir.path().join("sel.torrent"), "16K", None);
    let meta = Metainfo::load(&torrent.path).unwrap();
    assert_eq!(meta.piece_length as u64, PIECE);
    // --select counts files as `toybt info` lists them.
    let listed = info_numbering(&torrent.path);
    assert_eq!(listed.len(), 3, "{listed:?}");
    for (i, (name, _)) in FILES.iter().enumerate() {
        assert!(listed[i].contains(name), "info's file {} is {:?}, not {name}", i + 1, listed[i]);
        assert_eq!(meta.files[i].path.last().unwrap(), name);
    }

    let out = dir.path().join("leech");
    let torrent_arg = torrent.path.to_str().unwrap();
    let out_arg = out.to_str().unwrap();
    // A bad list, or a file the torrent does not have, is a usage error before anything is created.
    for bad in ["4", "0", "1,x", "3-2"] {
        let (code, _, err) = run_toybt(&["leech", torrent_arg, "-o", out_arg, "--select", bad]);
        assert_eq!(code, 2, "--select {bad}: {err}");
        assert!(err.contains("--select"), "--select {bad}: {err}");
    }
    assert!(!out.exists());

    let (_seed, seed_addr) = sw::seed("seed", &torrent.path, &content, &[]);
    let peer = seed_addr.to_string();
    let (mut leech, _) =
        sw::leech("leech", &torrent.path, &out, &["--select", "1,3", "--seed-time", "0", "--peer", &peer]);
    sw::assert_exits_0(&mut leech, DONE);
    let t = sw::totals(&leech, STEP);
    assert!(t.complete && t.hash_failures == 0, "{t:?}");
    leech.wait_line("download complete", STEP);
    let got = out.join("sel");
    for f in [0, 2] {
        assert!(fs::read(got.join(FILES[f].0)).unwrap() == fs::read(content.join(FILES[f].0)).unwrap(), "file {f}");
    }
    // The middle file holds the bytes of the two pieces it shares with its neighbours, nothing of its own pieces.
    let middle = meta.files[1].offset;
    let want = fs::read(content.join(FILES[1].0)).unwrap();
    let mid = fs::read(got.join(FILES[1].0)).unwrap();
    assert_eq!(mid.len(), want.len());
    let shared_head = (3 * PIECE - middle) as usize; // the rest of piece 2
    let shared_tail = (6 * PIECE - middle) as usize; // where piece 6 starts
    assert_eq!(&mid[..shared_head], &want[..shared_head]);
    assert_eq!(&mid[shared_tail..], &want[shared_tail..]);
    assert!(mid[shared_head..shared_tail].iter().all(|&b| b == 0), "the middle file's own pieces were written");
    // Pieces 0..=2 and 6..=9 (the last one short): everything but pieces 3, 4 and 5.
    assert_eq!(t.downloaded, meta.total_length - 3 * PIECE, "{t:?}");

    // Everything selected: only the middle file's own pieces are fetched, and nothing is hashed again.
    let (mut again, _) =
        sw::leech("again", &torrent.path, &out, &["--select", "1,2,3", "--seed-time", "0", "--peer", &peer]);
    sw::assert_exits_0(&mut again, DONE);
    let t = sw::totals(&again, STEP);
    assert!(t.complete && t.hash_failures == 0, "{t:?}");
    assert_eq!(t.downloaded, 3 * PIECE, "{t:?}");
    let log = again.output();
    assert!(log.contains("re-hashed 0 piece(s)"), "{log}");
    assert!(!log.contains("changed since the resume record"), "{log}");
    for (name, _) in FILES {
        assert!(fs::read(got.join(name)).unwrap() == fs::read(content.join(name)).unwrap(), "{name}");
    }
}
