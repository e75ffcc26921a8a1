//! `toybt leech MAGNET`: the metadata fetched from peers (BEP 9), checked, kept for a restart, then the data; against
//! a toybt seed and a libtorrent seed, and a link that is not one.

mod common;

use std::time::Duration;

use common::clients::{Fixture, assert_same_tree, libtorrent_seed};
use common::run_toybt;
use common::swarm::{self as sw, STEP};

const DONE: Duration = Duration::from_secs(90);

fn magnet_of(torrent: &std::path::Path) -> String {
    let (code, out, err) = run_toybt(&["info", "--magnet", torrent.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    out.trim().to_string()
}

#[test]
fn toybt_leech_from_a_magnet_link_fetches_the_metadata_from_a_toybt_seed_and_keeps_it() {
    let f = Fixture::multi_file(31);
    let (_seed, seed_addr) = sw::seed("seed", &f.torrent.path, &f.seed_dir.join(f.torrent.name.as_str()), &[]);
    let link = format!("{}&x.pe={seed_addr}", magnet_of(&f.torrent.path));
    let (mut leech, _) = sw::leech("leech", std::path::Path::new(&link), &f.leech_dir, &["--seed-time", "0"]);
    leech.wait_line("metadata complete", DONE);
    sw::assert_exits_0(&mut leech, DONE);
    let t = sw::totals(&leech, STEP);
    assert!(t.complete && t.hash_failures == 0, "{t:?}");
    f.assert_leech_has_everything();

    // A restart needs no peer for the metadata: no seed is named this time, and the data is already there.
    let kept = std::fs::read_dir(&f.leech_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().ends_with(".torrent"))
        .expect("the metadata is kept beside the download");
    assert!(kept.file_name().to_string_lossy().starts_with(&format!(".{}", f.torrent.hex_hash())));
    let (mut again, _) =
        sw::leech("again", std::path::Path::new(&magnet_of(&f.torrent.path)), &f.leech_dir, &["--seed-time", "0"]);
    again.wait_line("kept from an earlier run", STEP);
    sw::assert_exits_0(&mut again, DONE);
    let t = sw::totals(&again, STEP);
    assert!(t.complete && t.downloaded == 0, "nothing fetched again: {t:?}");
}

#[test]
fn toybt_leech_from_a_magnet_link_with_a_libtorrent_seed() {
    let f = Fixture::single_file(32);
    let seed = libtorrent_seed(&f.torrent.path, &f.seed_dir, &[]);
    let link = format!("{}&x.pe={}", magnet_of(&f.torrent.path), seed.addr());
    let (mut leech, _) = sw::leech("leech", std::path::Path::new(&link), &f.leech_dir, &["--seed-time", "0"]);
    leech.wait_line("metadata complete", DONE);
    sw::assert_exits_0(&mut leech, DONE);
    assert!(sw::totals(&leech, STEP).complete);
    assert_same_tree(&f.seed_dir.join(f.torrent.name.as_str()), &f.leech_dir.join(f.torrent.name.as_str()));
}

#[test]
fn a_link_that_is_not_a_magnet_link_is_refused_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    for (link, says) in [
        ("magnet:?dn=nothing", "xt"),
        ("magnet:?xt=urn:btih:1234", "40 hex"),
        ("magnet:?xt=urn:btih:zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", "40 hex"),
        ("magnet:?xt=urn:sha1:0123456789012345678901234567890123456789", "btih"),
    ] {
        let (code, stdout, stderr) = run_toybt(&["leech", link, "-o", out, "--port", "0", "--bind", "127.0.0.1"]);
        assert_eq!(code, 2, "{link}: {stdout}{stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{link}: one line, got {stderr:?}");
        assert!(lines[0].to_lowercase().contains(says), "{link}: {stderr:?}");
    }
}
