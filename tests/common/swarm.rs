//! `toybt seed`, `leech` and `tracker` as processes on 127.0.0.1 with ephemeral ports, torrents made with
//! `toybt create`, and the exact `totals:` figures a session prints when it ends.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::clients::Torrent;
use super::hostile::Content;
use super::{Proc, port_from_line, run_toybt};

/// Start-up (checking a few MiB, binding) and other single steps.
pub const STEP: Duration = Duration::from_secs(20);

/// `toybt create CONTENT -o OUT -l PIECE --no-date [-t URL]`; panics with its output if it fails.
pub fn create_torrent(content: &Path, out: &Path, piece: &str, tracker: Option<&str>) -> Torrent {
    let (c, o) = (content.to_str().unwrap(), out.to_str().unwrap());
    let mut args = vec!["create", c, "-o", o, "-l", piece, "--no-date"];
    if let Some(url) = tracker {
        args.extend(["-t", url]);
    }
    let (code, stdout, stderr) = run_toybt(&args);
    assert_eq!(code, 0, "toybt create failed:\n{stdout}{stderr}");
    Torrent::load(out)
}

/// The content of a single-file torrent whose data is `data`.
pub fn content_of(torrent: &Torrent, piece_len: u32, data: Vec<u8>) -> Content {
    Content { info_hash: torrent.info_hash, piece_len, data: std::sync::Arc::new(data) }
}

fn addr_of(line: &str) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port_from_line(line)))
}

/// `toybt tracker TORRENT` on an ephemeral port; returns it and its address.
pub fn tracker(torrent: &Path) -> (Proc, SocketAddr) {
    let p = Proc::toybt("tracker", &["tracker", torrent.to_str().unwrap(), "--bind", "127.0.0.1", "--port", "0"]);
    let addr = addr_of(&p.wait_line("tracker listening on", STEP));
    (p, addr)
}

pub fn announce_url(tracker: SocketAddr) -> String {
    format!("http://{tracker}/announce")
}

/// `toybt seed TORRENT DATA EXTRA...` on an ephemeral port; returns once it listens (its data is checked by then).
pub fn seed(name: &str, torrent: &Path, data: &Path, extra: &[&str]) -> (Proc, SocketAddr) {
    let mut args =
        vec!["seed", torrent.to_str().unwrap(), data.to_str().unwrap(), "--port", "0", "--bind", "127.0.0.1"];
    args.extend_from_slice(extra);
    let p = Proc::toybt(name, &args);
    let addr = addr_of(&p.wait_line("peer listening on", STEP));
    (p, addr)
}

/// `toybt leech TORRENT -o DIR EXTRA...` on an ephemeral port; returns once it listens.
pub fn leech(name: &str, torrent: &Path, dir: &Path, extra: &[&str]) -> (Proc, SocketAddr) {
    let mut args = vec!["leech", torrent.to_str().unwrap(), "-o", dir.to_str().unwrap()];
    args.extend_from_slice(&["--port", "0", "--bind", "127.0.0.1"]);
    args.extend_from_slice(extra);
    let p = Proc::toybt(name, &args);
    let addr = addr_of(&p.wait_line("peer listening on", STEP));
    (p, addr)
}

/// The figures of a session's closing `totals:` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub downloaded: u64,
    pub uploaded: u64,
    pub hash_failures: u64,
    pub complete: bool,
}

/// Waits for `p`'s `totals:` line (it prints it as it exits) and reads it.
pub fn totals(p: &Proc, timeout: Duration) -> Totals {
    let line = p.wait_line("totals:", timeout);
    let field = |key: &str| -> &str {
        let at = line.find(&format!("{key}=")).unwrap_or_else(|| panic!("{}: no {key} in {line:?}", p.name));
        line[at + key.len() + 1..].split_whitespace().next().unwrap()
    };
    let num = |key: &str| field(key).parse::<u64>().unwrap_or_else(|e| panic!("{}: {key} in {line:?}: {e}", p.name));
    Totals {
        downloaded: num("downloaded"),
        uploaded: num("uploaded"),
        hash_failures: num("hash_failures"),
        complete: field("complete") == "true",
    }
}

/// Waits for `p` to exit by itself with status 0; panics with its output otherwise.
pub fn assert_exits_0(p: &mut Proc, timeout: Duration) {
    match p.wait_exit(timeout) {
        Some(0) => {}
        Some(code) => panic!("{} exited with {code}; output:\n{}", p.name, p.output()),
        None => panic!("{} still running after {timeout:?}; output:\n{}", p.name, p.output()),
    }
}

/// SIGTERM, then the exit status 0 within `timeout`, and the totals it printed.
pub fn stop(p: &mut Proc, timeout: Duration) -> Totals {
    p.terminate();
    assert_exits_0(p, timeout);
    totals(p, Duration::from_secs(1))
}
