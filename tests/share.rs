//! `toybt share PATH --hosts N`: one command makes the torrent, runs its tracker and seeds; three different clients
//! (toybt, libtorrent, aria2) get the data from nothing but the magnet link it prints, and it exits 0 once all three
//! have completed.

mod common;

use std::path::Path;
use std::time::Duration;

use common::clients::{self, assert_same_tree, write_random_tree};
use common::swarm as sw;
use common::{Proc, run_toybt};

const DONE: Duration = Duration::from_secs(120);

#[test]
fn share_serves_toybt_libtorrent_and_aria2_from_its_magnet_link_then_exits() {
    let dir = tempfile::Builder::new().prefix("toybt-share").tempdir().unwrap();
    let content = dir.path().join("artefact");
    write_random_tree(&content, &[("build.tar", 2 * 1024 * 1024 + 11), ("docs/README", 5000)], 61);
    let torrent = dir.path().join("artefact.torrent");
    let mut share = Proc::toybt(
        "share",
        &[
            "share",
            content.to_str().unwrap(),
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--tracker-port",
            "0",
            "--hosts",
            "3",
            "-o",
            torrent.to_str().unwrap(),
        ],
    );
    let magnet = share.wait_line("magnet:?xt=urn:btih:", sw::STEP).trim().to_string();
    assert!(magnet.contains("&tr=http%3A%2F%2F127.0.0.1%3A") && magnet.contains("&tr=udp%3A%2F%2F127.0.0.1%3A"));
    assert!(magnet.contains("&x.pe=127.0.0.1%3A"), "{magnet}");
    share.wait_line("torrent written to", sw::STEP);
    assert!(torrent.exists());

    let dirs: Vec<_> = (0..3).map(|i| dir.path().join(format!("host{i}"))).collect();
    for d in &dirs {
        std::fs::create_dir_all(d).unwrap();
    }
    let (mut toybt, _) = sw::leech("toybt-leech", Path::new(&magnet), &dirs[0], &["--seed-time", "0"]);
    let mut lt = clients::libtorrent_leech(&magnet, &dirs[1], &[]);
    let mut aria = clients::aria2_magnet_leech(&magnet, &dirs[2]);

    sw::assert_exits_0(&mut toybt, DONE);
    lt.wait_done(DONE);
    assert_eq!(aria.proc.wait_exit(DONE), Some(0), "aria2:\n{}", aria.proc.output());
    sw::assert_exits_0(&mut share, DONE);
    for d in &dirs {
        common::wait_until(Duration::from_secs(5), || clients::compare_trees(&content, &d.join("artefact")).is_ok());
        assert_same_tree(&content, &d.join("artefact"));
    }
    let totals = sw::totals(&share, sw::STEP);
    assert!(totals.uploaded >= 2 * 1024 * 1024, "the share served the data: {totals:?}");
}

#[test]
fn share_refuses_zero_hosts_and_a_missing_path() {
    let (code, _, err) = run_toybt(&["share", "/nonexistent/toybt-share", "--hosts", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--hosts must be at least 1"), "{err}");
    let (code, _, err) = run_toybt(&["share", "/nonexistent/toybt-share"]);
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/toybt-share"), "{err}");
}
