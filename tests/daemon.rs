//! `toybt daemon` as a process on 127.0.0.1: driven by Debian's transmission-remote 3.00 and by raw RPC requests,
//! downloading from `toybt seed`, restarted (SIGTERM, kill -9), refusing what it must, its status page rendered in
//! headless Chromium and its /metrics checked by promtool.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::clients::NOWHERE_ANNOUNCE;
use common::swarm::{STEP, create_torrent};
use common::{Proc, port_from_line, pseudo_random_bytes, wait_until, which};
use serde_json::{Value, json};
use tempfile::TempDir;

/// A transfer of a few hundred KiB on loopback, or a restart, finishes well within this.
const TRANSFER: Duration = Duration::from_secs(60);

struct Daemon {
    p: Proc,
    rpc: u16,
    peer: u16,
}

/// `toybt daemon` on ephemeral ports with its state in `state` and downloads in `dl`; returns once it listens.
fn daemon(name: &str, state: &Path, dl: &Path, extra: &[&str]) -> Daemon {
    let mut args = vec!["daemon", "--bind", "127.0.0.1", "--port", "0", "--rpc-port", "0"];
    args.extend(["--state-dir", state.to_str().unwrap(), "--download-dir", dl.to_str().unwrap()]);
    args.extend_from_slice(extra);
    let p = Proc::toybt(name, &args);
    let peer = port_from_line(&p.wait_line("peer listening on", STEP));
    let rpc = port_from_line(&p.wait_line("rpc listening on", STEP));
    Daemon { p, rpc, peer }
}

/// One HTTP exchange with `Connection: close`: the status, the head and the body.
fn http(port: u16, head: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(STEP)).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) and stop reading before the body is all sent.
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("no head in {out:?}"));
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap();
    (status, head, out[split + 4..].to_vec())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
}

fn post(port: u16, session: &str, extra: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let head = format!(
        "POST /transmission/rpc HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Transmission-Session-Id: {session}\r\n{extra}\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    http(port, &head, body)
}

/// An RPC call with the session id exchange; returns the response object.
fn rpc(port: u16, request: &Value) -> Value {
    let body = serde_json::to_vec(request).unwrap();
    let (status, head, _) = post(port, "", "", &body);
    assert_eq!(status, 409, "{head}");
    let session = header(&head, "X-Transmission-Session-Id").unwrap().to_string();
    let (status, head, body) = post(port, &session, "", &body);
    assert_eq!(status, 200, "{head}");
    serde_json::from_slice(&body).unwrap()
}

fn torrents(port: u16, fields: &[&str]) -> Vec<Value> {
    let r = rpc(port, &json!({"method": "torrent-get", "arguments": {"fields": fields}}));
    assert_eq!(r["result"], "success", "{r}");
    r["arguments"]["torrents"].as_array().unwrap().clone()
}

/// `transmission-remote 127.0.0.1:PORT ARGS`; panics unless it exits 0, returns its stdout.
fn remote(port: u16, args: &[&str]) -> String {
    let out = Command::new("transmission-remote")
        .arg(format!("127.0.0.1:{port}"))
        .args(args)
        .output()
        .expect("run transmission-remote");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "transmission-remote {args:?}: {stdout}{stderr}");
    assert!(!stderr.contains("Error"), "transmission-remote {args:?}: {stderr}");
    stdout.into_owned()
}

/// The `-l` row of the torrent named `name`.
fn list_row(port: u16, name: &str) -> Option<String> {
    remote(port, &["-l"]).lines().find(|l| l.ends_with(name)).map(str::to_string)
}

/// Waits until torrent `id` reports `percentDone` 1.
fn wait_complete(port: u16, id: u64) -> bool {
    wait_until(TRANSFER, || {
        torrents(port, &["id", "percentDone"]).iter().any(|t| t["id"] == id && t["percentDone"] == 1.0)
    })
}

/// A single-file torrent of `len` pseudo-random bytes in `dir/src/NAME`, with 16 KiB pieces.
fn make(dir: &Path, name: &str, len: usize, seed: u64) -> (PathBuf, PathBuf, Vec<u8>) {
    let src = dir.join("src").join(name);
    std::fs::create_dir_all(src.parent().unwrap()).unwrap();
    let data = pseudo_random_bytes(len, seed);
    std::fs::write(&src, &data).unwrap();
    let torrent = dir.join(format!("{name}.torrent"));
    create_torrent(&src, &torrent, "16K", Some(NOWHERE_ANNOUNCE));
    (torrent, src, data)
}

fn hash_of(torrent: &Path) -> String {
    toybt::metainfo::Metainfo::load(torrent).unwrap().info_hash_hex()
}

#[test]
fn transmission_remote_drives_the_daemon_which_downloads_byte_for_byte() {
    assert!(which("transmission-remote"), "the tests need Debian's transmission-cli");
    let dir = TempDir::new().unwrap();
    let (state, dl) = (dir.path().join("state"), dir.path().join("dl"));
    let d = daemon("daemon", &state, &dl, &[]);
    let (file_torrent, file_src, file_data) = make(dir.path(), "by-file.bin", 300_000, 1);
    let (mag_torrent, mag_src, mag_data) = make(dir.path(), "by-magnet.bin", 200_000, 2);

    // Added as a file (transmission-remote sends it base64) and as a magnet link naming the seed's address.
    remote(d.rpc, &["-a", file_torrent.to_str().unwrap()]);
    let file_seed = Proc::toybt(
        "seed-file",
        &["seed", file_torrent.to_str().unwrap(), file_src.to_str().unwrap(), "--port", "0", "--bind", "127.0.0.1"]
            .into_iter()
            .chain(["--peer", &format!("127.0.0.1:{}", d.peer)])
            .collect::<Vec<_>>(),
    );
    file_seed.wait_line("peer listening on", STEP);
    let mag_seed = Proc::toybt(
        "seed-magnet",
        &["seed", mag_torrent.to_str().unwrap(), mag_src.to_str().unwrap(), "--port", "0", "--bind", "127.0.0.1"],
    );
    let mag_seed_port = port_from_line(&mag_seed.wait_line("peer listening on", STEP));
    let magnet =
        format!("magnet:?xt=urn:btih:{}&dn=by-magnet.bin&x.pe=127.0.0.1:{mag_seed_port}", hash_of(&mag_torrent));
    remote(d.rpc, &["-a", &magnet]);

    // Both rows listed (transmission-remote drops a row silently when a field is missing).
    assert!(list_row(d.rpc, "by-file.bin").is_some(), "{}", remote(d.rpc, &["-l"]));
    assert!(list_row(d.rpc, "by-magnet.bin").is_some(), "{}", remote(d.rpc, &["-l"]));
    assert!(wait_complete(d.rpc, 1), "by file: {}", remote(d.rpc, &["-l"]));
    assert!(wait_complete(d.rpc, 2), "by magnet: {}", remote(d.rpc, &["-l"]));
    assert_eq!(std::fs::read(dl.join("by-file.bin")).unwrap(), file_data);
    assert_eq!(std::fs::read(dl.join("by-magnet.bin")).unwrap(), mag_data);
    // The magnet link's metadata was kept in the state folder.
    assert!(state.join("daemon/torrents").join(format!("{}.torrent", hash_of(&mag_torrent))).is_file());
    let row = list_row(d.rpc, "by-file.bin").unwrap();
    assert!(row.contains("100%"), "{row}");
    let status = torrents(d.rpc, &["id", "status"]);
    assert_eq!(status[0]["status"], 6, "seeding: {status:?}");

    let info = remote(d.rpc, &["-t", "1", "-i"]);
    assert!(info.contains("Name: by-file.bin"), "{info}");
    assert!(info.contains(&format!("Hash: {}", hash_of(&file_torrent))), "{info}");
    assert!(info.contains("Percent Done: 100%"), "{info}");
    let files = remote(d.rpc, &["-t", "2", "-f"]);
    assert!(files.contains("by-magnet.bin (1 files)") && files.contains("0: 100% Normal   Yes"), "{files}");
    let trackers = remote(d.rpc, &["-t", "1", "-it"]);
    assert!(trackers.contains("Tracker 0: 127.0.0.1:1"), "{trackers}");

    // Stop, start, verify: by id and by hash.
    remote(d.rpc, &["-t", "1", "-S"]);
    assert!(list_row(d.rpc, "by-file.bin").unwrap().contains("Stopped"));
    remote(d.rpc, &["-t", &hash_of(&file_torrent), "-s"]);
    assert!(!list_row(d.rpc, "by-file.bin").unwrap().contains("Stopped"));
    assert_eq!(torrents(d.rpc, &["id", "status"])[0]["status"], 6);
    remote(d.rpc, &["-t", "1", "-v"]);
    let row = list_row(d.rpc, "by-file.bin").unwrap();
    assert!(row.contains("100%"), "verify keeps the verified pieces: {row}");
    d.p.wait_line("re-hashed 19 piece(s)", STEP);

    // Session limits.
    remote(d.rpc, &["-d", "100", "-u", "50"]);
    let s = rpc(d.rpc, &json!({"method": "session-get"}));
    assert_eq!(s["arguments"]["speed-limit-down"], 100);
    assert_eq!(s["arguments"]["speed-limit-down-enabled"], true);
    assert_eq!(s["arguments"]["speed-limit-up"], 50);
    assert_eq!(s["arguments"]["speed-limit-up-enabled"], true);
    remote(d.rpc, &["-D", "-U"]);
    let s = rpc(d.rpc, &json!({"method": "session-get"}));
    assert_eq!(s["arguments"]["speed-limit-up-enabled"], false);
    assert!(remote(d.rpc, &["-st"]).contains("TOTAL"));

    // Remove keeps the data; remove-and-delete deletes exactly the torrent's file.
    remote(d.rpc, &["-t", "1", "-r"]);
    assert!(list_row(d.rpc, "by-file.bin").is_none());
    assert!(dl.join("by-file.bin").is_file());
    std::fs::write(dl.join("unrelated.txt"), b"keep me").unwrap();
    remote(d.rpc, &["-t", "2", "--remove-and-delete"]);
    assert!(list_row(d.rpc, "by-magnet.bin").is_none());
    assert!(!dl.join("by-magnet.bin").exists());
    assert!(dl.join("unrelated.txt").is_file() && dl.join("by-file.bin").is_file());
    assert!(!state.join("daemon/torrents").join(format!("{}.json", hash_of(&mag_torrent))).exists());
}

/// A daemon whose torrent `complete.bin` is complete (its data was in the download folder) and whose `stopped.bin`
/// was added paused.
fn daemon_with_two(dir: &Path) -> (Daemon, PathBuf, Vec<u8>) {
    let (state, dl) = (dir.join("state"), dir.join("dl"));
    let (complete, _, data) = make(dir, "complete.bin", 320_000, 3);
    std::fs::create_dir_all(&dl).unwrap();
    std::fs::write(dl.join("complete.bin"), &data).unwrap();
    let (stopped, _, _) = make(dir, "stopped.bin", 50_000, 4);
    let d = daemon("daemon", &state, &dl, &[]);
    let add = |path: &Path, paused: bool| {
        let r = rpc(
            d.rpc,
            &json!({"method": "torrent-add", "arguments": {"filename": path.to_str().unwrap(), "paused": paused}}),
        );
        assert_eq!(r["result"], "success", "{r}");
    };
    add(&complete, false);
    add(&stopped, true);
    assert!(wait_complete(d.rpc, 1));
    (d, dl, data)
}

fn assert_back_as_before(d: &Daemon) {
    let list = torrents(d.rpc, &["id", "name", "status", "percentDone", "haveValid"]);
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!((list[0]["name"].as_str(), list[0]["status"].as_u64()), (Some("complete.bin"), Some(6)), "{list:?}");
    assert_eq!(list[0]["percentDone"], 1.0);
    assert_eq!((list[1]["name"].as_str(), list[1]["status"].as_u64()), (Some("stopped.bin"), Some(0)), "{list:?}");
}

#[test]
fn a_restart_after_sigterm_brings_every_torrent_back_without_hashing() {
    let dir = TempDir::new().unwrap();
    let (mut d, dl, data) = daemon_with_two(dir.path());
    d.p.terminate();
    assert_eq!(d.p.wait_exit(STEP), Some(0), "{}", d.p.output());
    let d = daemon("daemon-again", &dir.path().join("state"), &dl, &[]);
    d.p.wait_line("2 torrent(s) restored", STEP);
    assert_back_as_before(&d);
    let hashed: Vec<String> = d.p.output().lines().filter(|l| l.contains("re-hashed")).map(str::to_string).collect();
    assert!(hashed.iter().all(|l| l.contains("re-hashed 0 piece(s)")), "{hashed:?}");
    assert_eq!(std::fs::read(dl.join("complete.bin")).unwrap(), data);
}

#[test]
fn after_kill_9_every_torrent_comes_back_with_its_verified_pieces() {
    let dir = TempDir::new().unwrap();
    let (mut d, dl, data) = daemon_with_two(dir.path());
    d.p.kill9();
    let d = daemon("daemon-again", &dir.path().join("state"), &dl, &[]);
    d.p.wait_line("2 torrent(s) restored", STEP);
    assert_back_as_before(&d);
    assert_eq!(std::fs::read(dl.join("complete.bin")).unwrap(), data);
}

#[test]
fn kill_9_in_the_middle_of_a_download_keeps_the_verified_pieces_and_the_download_goes_on() {
    let dir = TempDir::new().unwrap();
    let (state, dl) = (dir.path().join("state"), dir.path().join("dl"));
    let (torrent, src, data) = make(dir.path(), "slow.bin", 2 << 20, 6);
    // The seed serves 512 KiB a second, so the 2 MiB download lasts about four seconds.
    let seed = Proc::toybt(
        "seed",
        &["seed", torrent.to_str().unwrap(), src.to_str().unwrap(), "--port", "0", "--bind", "127.0.0.1"]
            .into_iter()
            .chain(["--max-upload-rate", "512K"])
            .collect::<Vec<_>>(),
    );
    let seed_port = port_from_line(&seed.wait_line("peer listening on", STEP));
    let magnet = format!("magnet:?xt=urn:btih:{}&x.pe=127.0.0.1:{seed_port}", hash_of(&torrent));
    let mut d = daemon("daemon", &state, &dl, &[]);
    let r = rpc(d.rpc, &json!({"method": "torrent-add", "arguments": {"filename": magnet}}));
    assert_eq!(r["result"], "success", "{r}");
    let have = || torrents(d.rpc, &["haveValid"])[0]["haveValid"].as_u64().unwrap();
    let quarter = (data.len() / 4) as u64;
    assert!(wait_until(TRANSFER, || have() >= quarter), "no progress");
    let before = have();
    assert!(before < data.len() as u64, "the download ended before the kill");
    d.p.kill9();

    let d = daemon("daemon-again", &state, &dl, &[]);
    d.p.wait_line("1 torrent(s) restored", STEP);
    let after = torrents(d.rpc, &["haveValid"])[0]["haveValid"].as_u64().unwrap();
    assert!(after >= before, "verified before the kill: {before}, after the restart: {after}");
    assert!(wait_complete(d.rpc, 1), "the download did not finish after the restart");
    assert_eq!(std::fs::read(dl.join("slow.bin")).unwrap(), data);
}

#[test]
fn the_download_limit_set_by_transmission_remote_holds() {
    assert!(which("transmission-remote"), "the tests need Debian's transmission-cli");
    let dir = TempDir::new().unwrap();
    let (torrent, src, data) = make(dir.path(), "capped.bin", 1 << 20, 7);
    let seed = Proc::toybt(
        "seed",
        &["seed", torrent.to_str().unwrap(), src.to_str().unwrap(), "--port", "0", "--bind", "127.0.0.1"],
    );
    let seed_port = port_from_line(&seed.wait_line("peer listening on", STEP));
    let dl = dir.path().join("dl");
    let d = daemon("daemon", &dir.path().join("state"), &dl, &[]);
    remote(d.rpc, &["-d", "256"]);
    let started = std::time::Instant::now();
    remote(d.rpc, &["-a", &format!("magnet:?xt=urn:btih:{}&x.pe=127.0.0.1:{seed_port}", hash_of(&torrent))]);
    assert!(wait_complete(d.rpc, 1), "the download did not finish");
    let took = started.elapsed();
    // 1 MiB at 256 KiB/s takes four seconds; unlimited, it takes a fraction of one on loopback.
    assert!(took >= Duration::from_millis(3500), "1 MiB under a 256 KiB/s cap took only {took:?}");
    assert_eq!(std::fs::read(dl.join("capped.bin")).unwrap(), data);
}

/// The tracker's count of seeders, from its /metrics.
fn tracker_seeders(tracker: std::net::SocketAddr) -> u64 {
    let (_, _, body) =
        http(tracker.port(), "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", b"");
    let text = String::from_utf8(body).unwrap();
    let line = text.lines().find(|l| l.starts_with("toybt_tracker_peers{role=\"seeder\"}")).unwrap();
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn a_stopped_torrent_tells_its_tracker_and_a_started_one_comes_back() {
    let dir = TempDir::new().unwrap();
    let (plain, _, data) = make(dir.path(), "tracked.bin", 100_000, 8);
    let (_tracker, tracker) = common::swarm::tracker(&plain);
    let torrent = common::clients::Torrent::load(&plain)
        .with_announce(&common::swarm::announce_url(tracker), &dir.path().join("announced.torrent"));
    let dl = dir.path().join("dl");
    std::fs::create_dir_all(&dl).unwrap();
    std::fs::write(dl.join("tracked.bin"), &data).unwrap();
    let d = daemon("daemon", &dir.path().join("state"), &dl, &[]);
    let r = rpc(d.rpc, &json!({"method": "torrent-add", "arguments": {"filename": torrent.path.to_str().unwrap()}}));
    assert_eq!(r["result"], "success", "{r}");
    assert!(wait_until(STEP, || tracker_seeders(tracker) == 1), "the seed was not announced");
    rpc(d.rpc, &json!({"method": "torrent-stop", "arguments": {"ids": [1]}}));
    assert!(wait_until(STEP, || tracker_seeders(tracker) == 0), "the stop was not announced");
    rpc(d.rpc, &json!({"method": "torrent-start", "arguments": {"ids": [1]}}));
    assert!(wait_until(STEP, || tracker_seeders(tracker) == 1), "the start was not announced");
}

#[test]
fn the_rpc_refuses_as_transmission_does_and_answers_bad_calls_with_a_result() {
    let dir = TempDir::new().unwrap();
    let d = daemon("daemon", &dir.path().join("state"), &dir.path().join("dl"), &[]);
    let (port, get) = (d.rpc, br#"{"method":"session-get"}"#);

    // No session id: 409 carrying it, and never the 4.x protocol's version header.
    let (status, head, _) = post(port, "", "", get);
    assert_eq!(status, 409, "{head}");
    let session = header(&head, "X-Transmission-Session-Id").unwrap().to_string();
    assert!(header(&head, "X-Transmission-Rpc-Version").is_none(), "{head}");
    let (status, head, _) = post(port, &session, "", get);
    assert_eq!(status, 200, "{head}");
    assert!(header(&head, "X-Transmission-Rpc-Version").is_none(), "{head}");

    // A page of another site rebinding its name to 127.0.0.1.
    let head = format!(
        "POST /transmission/rpc HTTP/1.1\r\nHost: evil.example\r\nX-Transmission-Session-Id: {session}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        get.len()
    );
    assert_eq!(http(port, &head, get).0, 421);
    let page = "GET / HTTP/1.1\r\nHost: evil.example:9091\r\nConnection: close\r\n\r\n";
    assert_eq!(http(port, page, b"").0, 421);

    // A body over 16 MiB is refused before it is read.
    let big = format!(
        "POST /transmission/rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Transmission-Session-Id: {session}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        (16 << 20) + 1
    );
    assert_eq!(http(port, &big, b"").0, 413);
    assert_eq!(http(port, "GET /nothing HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", b"").0, 404);

    // Bad calls: a result string, and the daemon goes on.
    let result = |body: &[u8]| {
        let (status, head, body) = post(port, &session, "", body);
        assert_eq!(status, 200, "{head}");
        let v: Value = serde_json::from_slice(&body).unwrap();
        v["result"].as_str().unwrap().to_string()
    };
    assert!(result(b"{not json").contains("not JSON"));
    assert!(result(br#"{"method":"torrent-explode"}"#).contains("not recognized"));
    assert!(result(br#"{"method":"torrent-get","arguments":{"fields":"name"}}"#).contains("fields"));
    assert!(result(br#"{"method":"torrent-stop","arguments":{"ids":[99]}}"#).contains("no torrent with id 99"));
    assert!(result(br#"{"method":"torrent-add","arguments":{"metainfo":"!!"}}"#).contains("base64"));
    assert!(result(br#"{"method":"torrent-add","arguments":{"metainfo":"aGVsbG8="}}"#).contains("invalid"));
    let climb = format!(
        r#"{{"method":"torrent-add","arguments":{{"filename":"magnet:?xt=urn:btih:{}","download-dir":"/tmp/../etc"}}}}"#,
        "ab".repeat(20)
    );
    assert!(result(climb.as_bytes()).contains(".."));
    assert!(result(br#"{"method":"session-set","arguments":{"download-dir":"relative/dir"}}"#).contains("absolute"));
    assert_eq!(result(br#"{"method":"torrent-get","arguments":{"fields":["id"]}}"#), "success");
    assert!(torrents(port, &["id"]).is_empty(), "nothing was added by the refused calls");
}

#[test]
fn rpc_auth_is_required_beyond_loopback_and_checked() {
    let dir = TempDir::new().unwrap();
    let (state, dl) = (dir.path().join("state"), dir.path().join("dl"));
    let (s, d) = (state.to_str().unwrap(), dl.to_str().unwrap());
    let (code, _, err) = common::run_toybt(&[
        "daemon",
        "--rpc-bind",
        "0.0.0.0",
        "--rpc-port",
        "0",
        "--port",
        "0",
        "--state-dir",
        s,
        "--download-dir",
        d,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--rpc-auth"), "{err}");

    let d = daemon("daemon", &state, &dl, &["--rpc-auth", "alice:secret", "--rpc-host", "nas.home"]);
    let get = br#"{"method":"session-get"}"#;
    let basic = |creds: &str| {
        use base64::Engine as _;
        format!("Authorization: Basic {}\r\n", base64::engine::general_purpose::STANDARD.encode(creds))
    };
    assert_eq!(post(d.rpc, "", "", get).0, 401);
    let (status, head, _) = post(d.rpc, "", &basic("alice:wrong"), get);
    assert_eq!(status, 401);
    assert!(header(&head, "WWW-Authenticate").is_some_and(|v| v.starts_with("Basic")), "{head}");
    let (status, head, _) = post(d.rpc, "", &basic("alice:secret"), get);
    assert_eq!(status, 409);
    let session = header(&head, "X-Transmission-Session-Id").unwrap().to_string();
    assert_eq!(post(d.rpc, &session, &basic("alice:secret"), get).0, 200);
    // A name given with --rpc-host is served; another is not.
    for (host, want) in [("nas.home:9091", 200), ("other.home", 421)] {
        let head = format!(
            "POST /transmission/rpc HTTP/1.1\r\nHost: {host}\r\nX-Transmission-Session-Id: {session}\r\n{}\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            basic("alice:secret"),
            get.len()
        );
        assert_eq!(http(d.rpc, &head, get).0, want, "Host: {host}");
    }
    if which("transmission-remote") {
        let out = Command::new("transmission-remote")
            .args([format!("127.0.0.1:{}", d.rpc), "--auth".into(), "alice:secret".into(), "-l".into()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn the_status_page_renders_in_headless_chromium_and_metrics_pass_promtool() {
    assert!(which("chromium"), "the tests need Debian's chromium");
    assert!(which("promtool"), "the tests need Debian's prometheus package");
    let dir = TempDir::new().unwrap();
    let (d, _, _) = daemon_with_two(dir.path());
    let url = format!("http://127.0.0.1:{}/", d.rpc);
    let chromium = |extra: &[&str], name: &str| {
        let mut cmd = Command::new("chromium");
        cmd.args(["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=4000"])
            .arg(format!("--user-data-dir={}", dir.path().join("chromium-profile").display()))
            .args(extra)
            .arg(&url);
        let mut p = Proc::spawn(name, cmd);
        assert_eq!(p.wait_exit(TRANSFER), Some(0), "{}", p.output());
        p.output()
    };
    let dom = chromium(&["--dump-dom"], "chromium-dom");
    assert!(dom.contains("data-loaded=\"1\""), "{dom}");
    for (name, pct) in [("complete.bin", "100.0%"), ("stopped.bin", "0.0%")] {
        let row = dom.split("<tr").find(|r| r.contains(&format!(">{name}<"))).unwrap_or_else(|| panic!("{dom}"));
        assert!(row.contains("class=\"torrent") && row.contains(&format!(">{pct}<")), "{row}");
    }
    let shot = dir.path().join("page.png");
    chromium(&[&format!("--screenshot={}", shot.display()), "--window-size=1100,500"], "chromium-shot");
    assert!(std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000), "no screenshot");

    let (status, head, body) =
        http(d.rpc, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", b"");
    assert_eq!(status, 200, "{head}");
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("toybt_torrent_pieces_have{hash=\""), "{text}");
    assert!(text.contains("name=\"complete.bin\"} 20"), "{text}");
    assert!(text.contains("toybt_rpc_requests_total "), "{text}");
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    check.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_watch_folder_adds_torrents_and_sets_bad_ones_aside() {
    let dir = TempDir::new().unwrap();
    let watch = dir.path().join("watch");
    std::fs::create_dir_all(&watch).unwrap();
    let d = daemon("daemon", &dir.path().join("state"), &dir.path().join("dl"), &["--watch", watch.to_str().unwrap()]);
    let (torrent, _, _) = make(dir.path(), "watched.bin", 40_000, 5);
    std::fs::copy(&torrent, watch.join("watched.torrent")).unwrap();
    std::fs::write(watch.join("broken.torrent"), b"d4:infoi3ee").unwrap();
    assert!(wait_until(TRANSFER, || watch.join("watched.torrent.added").is_file()));
    assert!(wait_until(TRANSFER, || watch.join("broken.torrent.invalid").is_file()));
    d.p.wait_line("broken.torrent", STEP);
    let list = torrents(d.rpc, &["name"]);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["name"], "watched.bin");
}

/// `toybt seed TORRENT DATA --peer 127.0.0.1:PEER`: a seed that connects to the daemon's peer port.
fn seed_towards(name: &str, torrent: &Path, data: &Path, peer: u16) -> Proc {
    let (t, d, to) = (torrent.to_str().unwrap(), data.to_str().unwrap(), format!("127.0.0.1:{peer}"));
    let p = Proc::toybt(name, &["seed", t, d, "--port", "0", "--bind", "127.0.0.1", "--peer", &to]);
    p.wait_line("peer listening on", STEP);
    p
}

#[test]
fn files_deselected_by_transmission_remote_are_not_downloaded_even_after_a_restart() {
    assert!(which("transmission-remote"), "the tests need Debian's transmission-cli");
    let dir = TempDir::new().unwrap();
    let (state, dl) = (dir.path().join("state"), dir.path().join("dl"));
    // Three files of 100,000 bytes in 16 KiB pieces: b.bin shares piece 6 with a.bin and piece 12 with c.bin.
    let src = dir.path().join("src").join("three");
    std::fs::create_dir_all(&src).unwrap();
    let datas: Vec<Vec<u8>> = (0..3).map(|i| pseudo_random_bytes(100_000, 20 + i)).collect();
    for (name, data) in ["a.bin", "b.bin", "c.bin"].iter().zip(&datas) {
        std::fs::write(src.join(name), data).unwrap();
    }
    let torrent = dir.path().join("three.torrent");
    create_torrent(&src, &torrent, "16K", Some(NOWHERE_ANNOUNCE));

    let mut d = daemon("daemon", &state, &dl, &[]);
    remote(d.rpc, &["-a", torrent.to_str().unwrap()]);
    // Deselected before any peer is there (the tracker is nowhere).
    remote(d.rpc, &["-t", "1", "-G", "1"]);
    let files = remote(d.rpc, &["-t", "1", "-f"]);
    assert!(files.contains("Normal   No") && files.matches("Normal   Yes").count() == 2, "{files}");
    let view = &torrents(d.rpc, &["wanted", "sizeWhenDone", "totalSize", "leftUntilDone"])[0];
    assert_eq!(view["wanted"], json!([1, 0, 1]), "{view}");
    // Pieces 0-6 and 12-18 of 19: every piece but the five only b.bin fills.
    assert_eq!(view["sizeWhenDone"], 300_000 - 5 * 16384, "{view}");
    assert_eq!(view["leftUntilDone"], view["sizeWhenDone"], "{view}");

    let mut seed = seed_towards("seed", &torrent, &src, d.peer);
    assert!(wait_complete(d.rpc, 1), "{}", remote(d.rpc, &["-l"]));
    let got = dl.join("three");
    assert_eq!(std::fs::read(got.join("a.bin")).unwrap(), datas[0]);
    assert_eq!(std::fs::read(got.join("c.bin")).unwrap(), datas[2]);
    // b.bin holds at most the bytes of the two pieces it shares: nothing between them was written.
    if let Ok(b) = std::fs::read(got.join("b.bin")) {
        let (first, last) = (7 * 16384 - 100_000, 12 * 16384 - 100_000);
        assert!(b[first..last].iter().all(|&x| x == 0), "b.bin holds bytes of pieces only it fills");
    }
    assert!(remote(d.rpc, &["-t", "1", "-f"]).contains("Normal   No"));
    seed.terminate();
    seed.wait_exit(STEP);

    // The selection is in the record: a restart keeps it, and the torrent is still done.
    d.p.terminate();
    assert_eq!(d.p.wait_exit(STEP), Some(0), "{}", d.p.output());
    let d = daemon("daemon-again", &state, &dl, &[]);
    d.p.wait_line("1 torrent(s) restored", STEP);
    let view = &torrents(d.rpc, &["wanted", "percentDone", "fileStats"])[0];
    assert_eq!((&view["wanted"], &view["percentDone"]), (&json!([1, 0, 1]), &json!(1.0)), "{view}");
    assert_eq!(view["fileStats"][1]["wanted"], false, "{view}");

    // `-g all` (an empty files-wanted list) wants every file again: b.bin is fetched.
    remote(d.rpc, &["-t", "1", "-g", "all"]);
    assert_eq!(torrents(d.rpc, &["wanted"])[0]["wanted"], json!([1, 1, 1]));
    let _seed = seed_towards("seed-again", &torrent, &src, d.peer);
    assert!(wait_complete(d.rpc, 1), "{}", remote(d.rpc, &["-l"]));
    assert_eq!(std::fs::read(got.join("b.bin")).unwrap(), datas[1]);
}

#[test]
fn one_dht_node_finds_the_seed_of_a_trackerless_magnet_and_keeps_its_table() {
    let dir = TempDir::new().unwrap();
    let (state, dl) = (dir.path().join("state"), dir.path().join("dl"));
    let table = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let node = Proc::toybt("dht", &["dht", "--bind", "127.0.0.1", "--port", "0", "--state", &table("node.dat")]);
    let node_addr = format!("127.0.0.1:{}", port_from_line(&node.wait_line("dht listening on", STEP)));

    // No tracker: the DHT node is the only way to the seed.
    let src = dir.path().join("src").join("trackerless.bin");
    std::fs::create_dir_all(src.parent().unwrap()).unwrap();
    let data = pseudo_random_bytes(200_000, 31);
    std::fs::write(&src, &data).unwrap();
    let torrent = dir.path().join("trackerless.torrent");
    create_torrent(&src, &torrent, "16K", None);
    let hex = hash_of(&torrent);
    let (t, s) = (torrent.to_str().unwrap(), src.to_str().unwrap());
    let seed_args = ["seed", t, s, "--port", "0", "--bind", "127.0.0.1", "--dht-bootstrap", &node_addr];
    let seed = Proc::toybt("seed", &[&seed_args[..], &["--dht-state", &table("seed.dat")]].concat());
    let announced = seed.wait_line(&format!("dht lookup for {hex} done"), STEP);
    assert!(!announced.contains("announced to 0 node"), "{announced}");

    let mut d = daemon("daemon", &state, &dl, &["--dht-bootstrap", &node_addr]);
    d.p.wait_line("dht listening on", STEP);
    let s = rpc(d.rpc, &json!({"method": "session-get"}));
    assert_eq!(s["arguments"]["dht-enabled"], true);
    remote(d.rpc, &["-a", &format!("magnet:?xt=urn:btih:{hex}&dn=trackerless.bin")]);
    assert!(wait_complete(d.rpc, 1), "{}", remote(d.rpc, &["-l"]));
    assert_eq!(std::fs::read(dl.join("trackerless.bin")).unwrap(), data);
    d.p.terminate();
    assert_eq!(d.p.wait_exit(STEP), Some(0), "{}", d.p.output());
    assert!(state.join("daemon/dht.dat").is_file(), "the daemon keeps its routing table in its state folder");
}

#[test]
fn a_tracker_named_by_host_is_resolved_off_the_loop_and_one_that_does_not_resolve_is_reported() {
    use std::net::ToSocketAddrs;
    let dir = TempDir::new().unwrap();
    let (state, dl) = (dir.path().join("state"), dir.path().join("dl"));
    // The tracker listens where "localhost" leads first on this machine (127.0.0.1 or ::1).
    let ip = ("localhost", 1).to_socket_addrs().unwrap().next().unwrap().ip().to_string();
    let (plain, src, data) = make(dir.path(), "by-name.bin", 150_000, 41);
    let tracker = Proc::toybt("tracker", &["tracker", plain.to_str().unwrap(), "--bind", &ip, "--port", "0"]);
    let port = port_from_line(&tracker.wait_line("tracker listening on", STEP));
    // The same content with the tracker by name: the same info hash (the announce URL is outside the info).
    let named = dir.path().join("by-name-localhost.torrent");
    create_torrent(&src, &named, "16K", Some(&format!("http://localhost:{port}/announce")));
    assert_eq!(hash_of(&named), hash_of(&plain));
    let (t, s) = (named.to_str().unwrap(), src.to_str().unwrap());
    let seed = Proc::toybt("seed", &["seed", t, s, "--port", "0", "--bind", "127.0.0.1"]);
    seed.wait_line("peer listening on", STEP);

    let d = daemon("daemon", &state, &dl, &[]);
    // Its only way to the seed is the tracker, reached by name.
    remote(d.rpc, &["-a", t]);
    assert!(wait_complete(d.rpc, 1), "{}\n{}", remote(d.rpc, &["-l"]), d.p.output());
    assert_eq!(std::fs::read(dl.join("by-name.bin")).unwrap(), data);

    // A name that does not resolve: said in the log, the daemon goes on answering.
    let (_, other_src, _) = make(dir.path(), "nowhere.bin", 20_000, 42);
    let nowhere = dir.path().join("nowhere.torrent");
    create_torrent(&other_src, &nowhere, "16K", Some("http://nonexistent.invalid:6969/announce"));
    remote(d.rpc, &["-a", nowhere.to_str().unwrap()]);
    d.p.wait_line("cannot resolve tracker host nonexistent.invalid", STEP);
    assert!(list_row(d.rpc, "nowhere.bin").is_some(), "{}", remote(d.rpc, &["-l"]));
    drop(seed);
}
