//! `toybt tracker` as a process on 127.0.0.1: the protocol as clients see it, and hostile input it must survive.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Proc, port_from_line, run_toybt};
use toybt::bencode::{Value, decode};

const WAIT: Duration = Duration::from_secs(10);
const HASH: [u8; 20] = *b"toybt-tracker-test-1";

/// Starts `toybt tracker` on an ephemeral port of 127.0.0.1 with `args`; returns it and its address.
fn tracker(args: &[&str]) -> (Proc, SocketAddr) {
    let mut all = vec!["tracker", "--bind", "127.0.0.1", "--port", "0"];
    all.extend_from_slice(args);
    let p = Proc::toybt("tracker", &all);
    let line = p.wait_line("listening on", WAIT);
    assert!(line.contains("(announce http://127.0.0.1:"), "{line}");
    let addr = SocketAddr::from(([127, 0, 0, 1], port_from_line(&line)));
    (p, addr)
}

fn pct(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02x}")).collect()
}

fn peer_id(n: u32) -> [u8; 20] {
    let mut id = *b"-TT0001-\xff\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a";
    id[16..].copy_from_slice(&n.to_be_bytes());
    id
}

fn announce_target(hash: &[u8; 20], id: [u8; 20], port: u16, extra: &str) -> String {
    format!(
        "/announce?info_hash={}&peer_id={}&port={port}&uploaded=0&downloaded=0&left=100{extra}",
        pct(hash),
        pct(&id)
    )
}

fn get_request(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: toybt-test\r\n\r\n").into_bytes()
}

struct Response {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Response {
    fn value(&self) -> Value<'_> {
        decode(&self.body).unwrap_or_else(|e| panic!("body is not bencode ({e}): {:?}", self.body))
    }

    fn failure(&self) -> Option<String> {
        assert_eq!(self.status, 200, "{}", self.head);
        self.value().get("failure reason").map(|r| r.as_str().unwrap().to_string())
    }

    /// Peers of a compact answer.
    fn compact_peers(&self) -> Vec<SocketAddr> {
        assert_eq!(self.failure(), None);
        let v = self.value();
        let raw = v.get("peers").unwrap().as_bytes().expect("compact peers");
        raw.chunks(6).map(|c| SocketAddr::from(([c[0], c[1], c[2], c[3]], u16::from_be_bytes([c[4], c[5]])))).collect()
    }

    fn int(&self, key: &str) -> i64 {
        self.value().get(key).and_then(|v| v.as_int()).unwrap_or_else(|| panic!("no {key}"))
    }
}

/// A keep-alive HTTP connection with bounded reads.
struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).expect("connect to the tracker");
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.set_write_timeout(Some(WAIT)).unwrap();
        s.set_nodelay(true).unwrap();
        Conn { reader: BufReader::new(s) }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("write request");
    }

    fn read_response(&mut self) -> Response {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).expect("read response head");
            assert!(n > 0, "connection closed before a response; head so far: {head:?}");
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status code");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.trim().parse().ok())
            .expect("Content-Length");
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body).expect("read body");
        Response { status, head, body }
    }

    fn get(&mut self, target: &str) -> Response {
        self.send(&get_request(target));
        self.read_response()
    }

    /// True once the server has closed the connection (EOF or reset), within the read timeout.
    fn closed_by_server(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.reader.read(&mut b), Ok(0) | Err(_))
    }
}

fn get(addr: SocketAddr, target: &str) -> Response {
    Conn::open(addr).get(target)
}

/// A well-formed announce gets a well-formed answer: the tracker is alive and sane.
fn assert_healthy(addr: SocketAddr) {
    let r = get(addr, &announce_target(&HASH, peer_id(4_000_000), 1, "&compact=1&numwant=5"));
    assert_eq!(r.failure(), None);
    assert!(r.int("interval") > 0);
    assert!(r.compact_peers().len() <= 5);
}

#[test]
fn announces_in_compact_and_dictionary_forms() {
    let (_t, addr) = tracker(&["--open", "--interval", "60"]);
    let mut c = Conn::open(addr);
    let first = c.get(&announce_target(&HASH, peer_id(1), 6001, "&event=started&compact=1"));
    assert_eq!(first.compact_peers(), []);
    assert_eq!((first.int("interval"), first.int("complete"), first.int("incomplete")), (60, 0, 1));
    let second = c.get(&announce_target(&HASH, peer_id(2), 6002, "&event=started&compact=1&key=xyz"));
    assert_eq!(second.compact_peers(), [SocketAddr::from(([127, 0, 0, 1], 6001))]);

    let dict = c.get(&announce_target(&HASH, peer_id(2), 6002, "&compact=0"));
    let v = dict.value();
    let peers = v.get("peers").unwrap().as_list().expect("dictionary peers");
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].get("ip").unwrap().as_str(), Some("127.0.0.1"));
    assert_eq!(peers[0].get("port").unwrap().as_int(), Some(6001));
    assert_eq!(peers[0].get("peer id").unwrap().as_bytes(), Some(&peer_id(1)[..]));

    let no_id = c.get(&announce_target(&HASH, peer_id(2), 6002, "&compact=0&no_peer_id=1"));
    let v = no_id.value();
    let peers = v.get("peers").unwrap().as_list().unwrap();
    assert!(peers[0].get("peer id").is_none());

    // Transmission's extra parameters are ignored.
    let tr = c.get(&announce_target(&HASH, peer_id(3), 6003, "&compact=1&supportcrypto=1&requirecrypto=0&corrupt=0"));
    assert_eq!(tr.compact_peers().len(), 2);
    // A stopped peer is gone for the others.
    c.get(&announce_target(&HASH, peer_id(1), 6001, "&event=stopped"));
    let after = c.get(&announce_target(&HASH, peer_id(3), 6003, "&compact=1"));
    assert_eq!(after.compact_peers(), [SocketAddr::from(([127, 0, 0, 1], 6002))]);
}

#[test]
fn scrapes_one_several_and_all() {
    let (_t, addr) = tracker(&["--open"]);
    let other = *b"toybt-tracker-test-2";
    get(addr, &announce_target(&HASH, peer_id(1), 7001, "&left=0&event=completed"));
    get(addr, &announce_target(&HASH, peer_id(2), 7002, ""));
    get(addr, &announce_target(&other, peer_id(3), 7003, ""));
    let files = |r: &Response| -> Vec<(Vec<u8>, i64, i64, i64)> {
        let v = r.value();
        let Some(Value::Dict { entries, .. }) = v.get("files") else { panic!("no files: {:?}", r.body) };
        entries
            .iter()
            .map(|(k, f)| {
                let n = |key| f.get(key).unwrap().as_int().unwrap();
                (k.to_vec(), n("complete"), n("incomplete"), n("downloaded"))
            })
            .collect()
    };
    let one = get(addr, &format!("/scrape?info_hash={}", pct(&HASH)));
    assert_eq!(files(&one), [(HASH.to_vec(), 1, 1, 1)]);
    let several = get(addr, &format!("/scrape?info_hash={}&info_hash={}", pct(&other), pct(&HASH)));
    assert_eq!(files(&several), [(HASH.to_vec(), 1, 1, 1), (other.to_vec(), 0, 1, 0)]);
    let all = get(addr, "/scrape");
    assert_eq!(files(&all), files(&several));
}

#[test]
fn keep_alive_pipelining_and_split_requests() {
    let (_t, addr) = tracker(&["--open"]);
    let mut c = Conn::open(addr);
    for n in 0..3 {
        let r = c.get(&announce_target(&HASH, peer_id(10 + n), 8000 + n as u16, "&compact=1"));
        assert_eq!(r.compact_peers().len(), n as usize, "request {n} on the same connection");
        assert!(!r.head.contains("Connection: close"));
    }
    // Three requests in one write, answered in order.
    let mut batch = get_request(&announce_target(&HASH, peer_id(20), 8020, "&compact=1&numwant=1"));
    batch.extend(get_request("/scrape"));
    batch.extend(get_request("/nowhere"));
    c.send(&batch);
    assert_eq!(c.read_response().compact_peers().len(), 1);
    assert!(c.read_response().value().get("files").is_some());
    assert_eq!(c.read_response().status, 404);
    // One request dribbled out in 7-byte writes.
    let req = get_request(&announce_target(&HASH, peer_id(21), 8021, "&compact=1"));
    for chunk in req.chunks(7) {
        c.send(chunk);
    }
    assert_eq!(c.read_response().compact_peers().len(), 4);
    // HTTP/1.0 without keep-alive, and `Connection: close`, end the connection after the answer.
    for req in [&b"GET /scrape HTTP/1.0\r\n\r\n"[..], b"GET /scrape HTTP/1.1\r\nConnection: close\r\n\r\n"] {
        let mut c = Conn::open(addr);
        c.send(req);
        assert_eq!(c.read_response().status, 200);
        assert!(c.closed_by_server());
    }
}

/// Sends `raw` on a fresh connection and returns the answer.
fn answer_to(addr: SocketAddr, raw: &[u8]) -> Response {
    let mut c = Conn::open(addr);
    // The tracker may answer and close before taking all of a huge request: a failed write is fine then.
    let _ = c.reader.get_mut().write_all(raw);
    c.read_response()
}

#[test]
fn hostile_requests_get_clear_answers_and_do_no_harm() {
    let (_t, addr) = tracker(&["--open"]);
    let id = pct(&peer_id(1));
    let h = pct(&HASH);
    let mut flood = b"GET /announce HTTP/1.1\r\n".to_vec();
    for i in 0..200 {
        flood.extend(format!("X-Flood-{i}: {}\r\n", "v".repeat(20)).as_bytes());
    }
    flood.extend(b"\r\n");
    let mut huge_line = b"GET /announce?info_hash=".to_vec();
    huge_line.resize(1 << 20, b'A');
    huge_line.extend(b" HTTP/1.1\r\n\r\n");
    let http_errors: Vec<(&str, Vec<u8>, u16)> = vec![
        ("garbage first", [&b"\x16\x03\x01\x00\xa5\x01 hello\r\n"[..], &get_request("/scrape")].concat(), 400),
        ("1 MiB request line", huge_line, 431),
        ("header flood", flood, 431),
        ("POST", b"POST /announce HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_vec(), 405),
        ("DELETE", b"DELETE /announce HTTP/1.1\r\n\r\n".to_vec(), 405),
        ("a body", b"GET /announce HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc".to_vec(), 413),
        ("not HTTP at all", b"\x00\x00\x00\x13BitTorrent protocol\r\n\r\n".to_vec(), 400),
    ];
    for (what, raw, status) in http_errors {
        let r = answer_to(addr, &raw);
        assert_eq!(r.status, status, "{what}: {}", r.head);
        assert_healthy(addr);
    }
    let failures = [
        ("missing info_hash", format!("/announce?peer_id={id}&port=1"), "missing info_hash"),
        ("short info_hash", format!("/announce?info_hash=abc&peer_id={id}&port=1"), "info_hash must be 20 bytes"),
        ("long info_hash", format!("/announce?info_hash={h}%00&peer_id={id}&port=1"), "info_hash must be 20 bytes"),
        ("port 0", format!("/announce?info_hash={h}&peer_id={id}&port=0"), "port must be 1 to 65535"),
        ("port 70000", format!("/announce?info_hash={h}&peer_id={id}&port=70000"), "port must be 1 to 65535"),
        ("negative", format!("/announce?info_hash={h}&peer_id={id}&port=1&left=-1"), "left must be"),
        ("overflow", format!("/announce?info_hash={h}&peer_id={id}&port=1&uploaded=99999999999999999999"), "too large"),
        ("unknown event", format!("/announce?info_hash={h}&peer_id={id}&port=1&event=exploded"), "unknown event"),
        ("bad escape", format!("/announce?info_hash=%G1{h}&peer_id={id}&port=1"), "invalid percent-encoding"),
        ("bad escape at end", format!("/announce?info_hash={h}&peer_id={id}&port=1&key=%"), ""),
    ];
    for (what, target, want) in failures {
        let r = get(addr, &target);
        if want.is_empty() {
            assert_eq!(r.failure(), None, "{what}: unknown parameters are not even decoded");
        } else {
            let reason = r.failure().unwrap_or_else(|| panic!("{what}: no failure reason"));
            assert!(reason.contains(want), "{what}: {reason:?}");
        }
        assert_healthy(addr);
    }
    let many = get(addr, &announce_target(&HASH, peer_id(2), 2, "&compact=1&numwant=1000000000"));
    assert_eq!(many.failure(), None);
    assert_healthy(addr);
}

#[test]
fn ten_thousand_peers_then_a_normal_answer() {
    let (_t, addr) = tracker(&["--open"]);
    // 10 connections, 1000 pipelined announces each, all with distinct peer ids.
    let mut conns: Vec<Conn> = (0..10).map(|_| Conn::open(addr)).collect();
    for (c, conn) in conns.iter_mut().enumerate() {
        let mut batch = Vec::new();
        for i in 0..1000u32 {
            let n = c as u32 * 1000 + i;
            batch.extend(get_request(&announce_target(&HASH, peer_id(n), 10_000 + n as u16, "&compact=1&numwant=0")));
        }
        let mut writer = conn.reader.get_ref().try_clone().unwrap();
        // Written from another thread: the answers must be read while the requests are still going out.
        let sender = std::thread::spawn(move || writer.write_all(&batch));
        for _ in 0..1000 {
            assert_eq!(conn.read_response().failure(), None);
        }
        sender.join().unwrap().unwrap();
    }
    let r = get(addr, &announce_target(&HASH, peer_id(99_999), 9, "&compact=1&numwant=500"));
    assert_eq!(r.int("incomplete"), 10_001);
    let peers = r.compact_peers();
    assert_eq!(peers.len(), 200, "numwant is capped at 200");
    let distinct: std::collections::HashSet<_> = peers.iter().collect();
    assert_eq!(distinct.len(), 200);
}

#[test]
fn thousands_of_held_connections_do_not_lock_out_a_client() {
    let (_t, addr) = tracker(&["--open"]);
    let limit = toybt::reactor::raise_fd_limit().unwrap_or(1024) as usize;
    // Keep well under our own limit (each held connection costs this process a descriptor too).
    let count = 3000.min(limit.saturating_sub(200));
    assert!(count >= 500, "open-files limit {limit} is too low for this test");
    let held: Vec<TcpStream> = (0..count).map(|_| TcpStream::connect(addr).expect("connect")).collect();
    // Half of them start a request and stall in the middle of it.
    for s in held.iter().step_by(2) {
        let mut s = s;
        s.write_all(b"GET /announce?info_hash=").unwrap();
    }
    assert_healthy(addr);
    drop(held);
    assert_healthy(addr);
}

#[test]
fn stops_cleanly_on_sigterm() {
    let (mut t, addr) = tracker(&["--open"]);
    assert_healthy(addr);
    t.terminate();
    assert_eq!(t.wait_exit(WAIT), Some(0), "{}", t.output());
    // The reader thread may still be passing on the last lines when the exit is seen.
    t.wait_line("tracker stopped", WAIT);
}

#[test]
fn stops_cleanly_on_sigint() {
    let (mut t, addr) = tracker(&["--open"]);
    let _held = Conn::open(addr);
    let _ = std::process::Command::new("kill").arg("-INT").arg(t.child.id().to_string()).status();
    assert_eq!(t.wait_exit(WAIT), Some(0), "{}", t.output());
}

#[test]
fn help_and_usage_errors() {
    let (code, out, _) = run_toybt(&["tracker", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--interval SECS") && out.contains("--open"), "{out}");
    for args in [
        &["tracker"][..],
        &["tracker", "--open", "--interval", "0"],
        &["tracker", "--open", "--port", "70000"],
        &["tracker", "--open", "--bind", "localhost:1"],
        &["tracker", "--open", "--frobnicate"],
    ] {
        let (code, _, err) = run_toybt(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.starts_with("toybt: "), "{args:?}: {err}");
    }
    let started = Instant::now();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let (code, _, err) = run_toybt(&["tracker", "--open", "--bind", "127.0.0.1", "--port", &port]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{err}");
    assert!(started.elapsed() < WAIT);
}

#[test]
fn ipv6_peers_are_listed_in_peers6() {
    let p = Proc::toybt("tracker6", &["tracker", "--open", "--bind", "::1", "--port", "0"]);
    let line = p.wait_line("listening on", WAIT);
    assert!(line.contains("(announce http://[::1]:"), "{line}");
    let addr: SocketAddr = format!("[::1]:{}", port_from_line(&line)).parse().unwrap();
    get(addr, &announce_target(&HASH, peer_id(1), 1111, "&compact=1"));
    let r = get(addr, &announce_target(&HASH, peer_id(2), 2222, "&compact=1"));
    assert_eq!(r.compact_peers(), []);
    let v = r.value();
    let mut want = std::net::Ipv6Addr::LOCALHOST.octets().to_vec();
    want.extend_from_slice(&1111u16.to_be_bytes());
    assert_eq!(v.get("peers6").and_then(|p| p.as_bytes()), Some(&want[..]));
    let dict = get(addr, &announce_target(&HASH, peer_id(2), 2222, "&compact=0"));
    let v = dict.value();
    assert_eq!(v.get("peers").unwrap().as_list().unwrap()[0].get("ip").unwrap().as_str(), Some("::1"));
}

#[test]
fn serves_only_the_listed_torrents() {
    let dir = tempfile::tempdir().unwrap();
    let payload = dir.path().join("payload.bin");
    std::fs::write(&payload, common::pseudo_random_bytes(100_000, 7)).unwrap();
    let torrent = dir.path().join("payload.torrent");
    let made = std::process::Command::new("mktorrent")
        .args(["-a", "http://127.0.0.1:1/announce", "-l", "15", "-o"])
        .arg(&torrent)
        .arg(&payload)
        .output()
        .expect("run mktorrent");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    // The info hash, computed here from the raw `info` bytes, independently of the tracker.
    let bytes = std::fs::read(&torrent).unwrap();
    let info = decode(&bytes).unwrap().get("info").unwrap().raw_dict().unwrap().to_vec();
    let hash = sha1_smol::Sha1::from(&info).digest().bytes();
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();

    let (t, addr) = tracker(&[torrent.to_str().unwrap()]);
    let line = t.wait_line("tracker serving", WAIT);
    assert!(line.contains("payload.bin") && line.contains(&hex), "{line}");

    let r = get(addr, &announce_target(&hash, peer_id(1), 5000, "&compact=1"));
    assert_eq!(r.compact_peers(), []);
    assert_eq!(r.int("incomplete"), 1);
    let r = get(addr, &announce_target(&HASH, peer_id(1), 5000, "&compact=1"));
    assert_eq!(r.failure().as_deref(), Some("unregistered torrent"));
    let all = get(addr, "/scrape");
    let v = all.value();
    let Some(Value::Dict { entries, .. }) = v.get("files") else { panic!("no files") };
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0, &hash[..]);
}

#[test]
fn metrics_pass_promtool_and_stats_list_the_swarms() {
    assert!(common::which("promtool"), "promtool is not installed; the tests need Debian's prometheus package");
    let (_t, addr) = tracker(&["--open"]);
    let mut c = Conn::open(addr);
    c.get(&announce_target(&HASH, peer_id(1), 6001, "&event=started&compact=1"));
    c.get(&announce_target(&HASH, peer_id(2), 6002, "&event=completed&compact=1&left=0"));
    c.get("/scrape");

    let metrics = c.get("/metrics");
    assert_eq!(metrics.status, 200, "{}", metrics.head);
    assert!(metrics.head.contains("Content-Type: text/plain; version=0.0.4"), "{}", metrics.head);
    let text = String::from_utf8(metrics.body.clone()).unwrap();
    assert!(text.contains("toybt_tracker_announces_total{protocol=\"http\"} 2\n"), "{text}");
    assert!(text.contains("toybt_tracker_scrapes_total{protocol=\"http\"} 1\n"), "{text}");
    assert!(text.contains("toybt_tracker_swarms 1\n"), "{text}");
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    promtool.stdin.take().unwrap().write_all(&metrics.body).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let stats = c.get("/stats");
    assert_eq!(stats.status, 200, "{}", stats.head);
    assert!(stats.head.contains("Content-Type: text/html"), "{}", stats.head);
    let page = String::from_utf8(stats.body).unwrap();
    let hash_hex: String = HASH.iter().map(|b| format!("{b:02x}")).collect();
    assert!(page.contains(&format!("<tr><td>{hash_hex}</td><td>1</td><td>1</td><td>1</td></tr>")), "{page}");
}
