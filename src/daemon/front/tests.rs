//! The front and the service together, without sockets: requests go through [`RpcConn`] or [`answer`], the
//! sessions live in a [`Services`] as in the loop, time is a virtual clock.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use super::*;
use crate::daemon::access::Access;
use crate::daemon::service::{Daemon, DaemonConfig};
use crate::daemon::store::Store;
use crate::reactor::{Ctl, Services};

struct World {
    dir: tempfile::TempDir,
    svc: Services,
    now: Instant,
}

fn config(dir: &Path) -> DaemonConfig {
    DaemonConfig {
        peer_port: 6881,
        peer_id: *b"-TB0100-testtesttest",
        max_peers: 40,
        max_upload_rate: None,
        max_download_rate: None,
        download_dir: dir.join("dl"),
        watch: None,
        pex: true,
        dht: false,
        state_dir: dir.join("state"),
    }
}

fn access() -> Access {
    Access { credentials: None, allowed_hosts: Vec::new(), session_id: "sid".into() }
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let svc = World::start(dir.path(), Instant::now());
        World { now: Instant::now(), dir, svc }
    }

    /// A daemon on the state folder under `dir`, restored from it.
    fn start(dir: &Path, now: Instant) -> Services {
        let store = Store::open(&dir.join("state")).unwrap();
        let settings = store.load_settings().unwrap();
        let mut d = Daemon::new(config(dir), access(), store.clone(), settings, now);
        let mut svc = Services::default();
        d.restore(store.load_all().0, now, &mut svc, &mut Ctl::default());
        svc.daemon = Some(Box::new(d));
        svc
    }

    fn call(&mut self, request: Value) -> Value {
        let mut d = self.svc.daemon.take().unwrap();
        let body = answer(&mut d, self.now, request.to_string().as_bytes(), &mut self.svc, &mut Ctl::default());
        self.svc.daemon = Some(d);
        serde_json::from_slice(&body).unwrap()
    }

    fn ok(&mut self, request: Value) -> Value {
        let r = self.call(request.clone());
        assert_eq!(r["result"], "success", "{request} -> {r}");
        r["arguments"].clone()
    }

    fn tick(&mut self, by: Duration) {
        self.now += by;
        timeout(&mut self.svc, self.now);
    }

    fn list(&mut self) -> Vec<Value> {
        let fields = [
            "id",
            "name",
            "status",
            "percentDone",
            "hashString",
            "error",
            "errorString",
            "eta",
            "isFinished",
            "leftUntilDone",
            "peersGettingFromUs",
            "peersSendingToUs",
            "rateDownload",
            "rateUpload",
            "sizeWhenDone",
            "uploadRatio",
        ];
        let args = self.ok(json!({"method": "torrent-get", "arguments": {"fields": fields}}));
        let rows = args["torrents"].as_array().unwrap().clone();
        for row in &rows {
            // transmission-remote drops a row that lacks any field it asked for.
            for f in fields {
                assert!(row.get(f).is_some(), "{f} missing in {row}");
            }
        }
        rows
    }
}

/// What the loop does when the daemon's deadline comes: its sessions' time, then the daemon's.
fn timeout(svc: &mut Services, now: Instant) {
    for s in svc.torrents.values_mut() {
        s.handle_timeout(now);
    }
    let mut d = svc.daemon.take().unwrap();
    d.handle_timeout(now, svc, &mut Ctl::default());
    svc.daemon = Some(d);
}

/// A two-file torrent whose content is written under `dir/src/NAME`; returns its metainfo bytes.
fn torrent(dir: &Path, name: &str) -> Vec<u8> {
    let root = dir.join("src").join(name);
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("a.bin"), crate::test_data::bytes(40_000, 1)).unwrap();
    std::fs::write(root.join("sub/b.bin"), crate::test_data::bytes(9_000, 2)).unwrap();
    let opts = crate::create::Options { piece_length: Some(16 * 1024), ..Default::default() };
    crate::create::create(&root, &opts, &mut |_, _| {}).unwrap().0
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn hash_of(bytes: &[u8]) -> String {
    crate::metainfo::Metainfo::from_bytes(bytes).unwrap().info_hash_hex()
}

#[test]
fn torrents_are_added_listed_stopped_started_and_removed_with_stable_ids() {
    let mut w = World::new();
    let first = torrent(w.dir.path(), "first");
    let second = torrent(w.dir.path(), "second");
    let a = w.ok(json!({"method": "torrent-add", "arguments": {"metainfo": b64(&first)}}));
    assert_eq!(a["torrent-added"]["id"], 1);
    assert_eq!(a["torrent-added"]["hashString"], hash_of(&first));
    let b = w.ok(json!({"method": "torrent-add", "arguments": {"metainfo": b64(&second), "paused": true}}));
    assert_eq!(b["torrent-added"]["id"], 2);
    let again = w.ok(json!({"method": "torrent-add", "arguments": {"metainfo": b64(&first)}}));
    assert_eq!(again["torrent-duplicate"]["id"], 1);

    let rows = w.list();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0]["name"].as_str(), rows[0]["status"].as_u64()), (Some("first"), Some(4)));
    assert_eq!((rows[1]["name"].as_str(), rows[1]["status"].as_u64()), (Some("second"), Some(0)));
    assert_eq!(rows[0]["leftUntilDone"], 49_000);
    assert_eq!(w.svc.torrents.len(), 1, "a paused torrent has no session");

    // Stopped by hash: it has no session once it said goodbye (no trackers: at once).
    w.ok(json!({"method": "torrent-stop", "arguments": {"ids": [hash_of(&first)]}}));
    w.tick(Duration::from_secs(1));
    assert!(w.svc.torrents.is_empty());
    assert_eq!(w.list()[0]["status"], 0);
    w.ok(json!({"method": "torrent-start", "arguments": {"ids": [1, 2]}}));
    assert_eq!(w.svc.torrents.len(), 2);
    assert!(w.list().iter().all(|r| r["status"] == 4));

    // Files of one torrent, as transmission-remote -f asks for them.
    let files = w.ok(json!({"method": "torrent-get", "arguments": {"ids": 1, "fields": ["files", "wanted"]}}));
    let names: Vec<&str> =
        files["torrents"][0]["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["first/a.bin", "first/sub/b.bin"]);

    w.ok(json!({"method": "torrent-remove", "arguments": {"ids": [1]}}));
    let rows = w.list();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], 2, "ids are not reused or renumbered");
    let unknown = w.call(json!({"method": "torrent-start", "arguments": {"ids": [1]}}));
    assert_eq!(unknown["result"], "no torrent with id 1");
}

#[test]
fn remove_with_local_data_deletes_only_what_the_torrent_names() {
    let mut w = World::new();
    let bytes = torrent(w.dir.path(), "content");
    let src = w.dir.path().join("src");
    std::fs::write(src.join("content/sub/mine.txt"), b"not the torrent's").unwrap();
    let dir = src.to_str().unwrap();
    w.ok(json!({"method": "torrent-add", "arguments": {"metainfo": b64(&bytes), "download-dir": dir}}));
    assert_eq!(w.list()[0]["percentDone"], 1.0, "the data was there already");
    w.ok(json!({"method": "torrent-remove", "arguments": {"ids": [1], "delete-local-data": true}}));
    assert!(!src.join("content/a.bin").exists() && !src.join("content/sub/b.bin").exists());
    assert!(src.join("content/sub/mine.txt").is_file(), "a file the torrent does not name stays, and its folder");
}

#[test]
fn verify_checks_a_slice_per_turn_and_finds_damage() {
    let mut w = World::new();
    let bytes = torrent(w.dir.path(), "checked");
    let src = w.dir.path().join("src");
    let args = json!({"metainfo": b64(&bytes), "download-dir": src.to_str().unwrap()});
    w.ok(json!({"method": "torrent-add", "arguments": args}));
    assert_eq!(w.list()[0]["percentDone"], 1.0);
    // One byte of the first piece changes behind the daemon's back.
    let a = src.join("checked/a.bin");
    let mut data = std::fs::read(&a).unwrap();
    data[100] ^= 1;
    std::fs::write(&a, data).unwrap();

    w.ok(json!({"method": "torrent-verify", "arguments": {"ids": [1]}}));
    assert_eq!(w.list()[0]["status"], 2, "checking");
    assert!(w.svc.torrents.is_empty(), "no session while its data is checked");
    let due = w.svc.daemon.as_ref().unwrap().poll_timeout().unwrap();
    assert!(due <= w.now, "a check asks for the next turn of the loop");
    w.tick(Duration::ZERO);
    let row = w.list().remove(0);
    assert_eq!(row["status"], 4, "downloading the damaged piece again: {row}");
    assert_eq!(row["leftUntilDone"], 16 * 1024, "{row}");
    assert_eq!(w.svc.torrents.len(), 1);

    // A stopped torrent is checked and stays stopped.
    w.ok(json!({"method": "torrent-stop", "arguments": {"ids": [1]}}));
    w.ok(json!({"method": "torrent-verify", "arguments": {"ids": [1]}}));
    w.tick(Duration::from_secs(1));
    let row = w.list().remove(0);
    assert_eq!((row["status"].as_u64(), row["leftUntilDone"].as_u64()), (Some(0), Some(16 * 1024)), "{row}");
    assert!(w.svc.torrents.is_empty());
}

#[test]
fn a_restarted_daemon_has_every_torrent_back_as_it_was() {
    let mut w = World::new();
    let first = torrent(w.dir.path(), "first");
    let second = torrent(w.dir.path(), "second");
    let dir = w.dir.path().join("src");
    let dir = dir.to_str().unwrap();
    w.ok(json!({"method": "torrent-add", "arguments": {"metainfo": b64(&first), "download-dir": dir}}));
    w.ok(json!({"method": "torrent-add", "arguments": {"metainfo": b64(&second), "download-dir": dir}}));
    let magnet = format!("magnet:?xt=urn:btih:{}&dn=later", "ab".repeat(20));
    w.ok(json!({"method": "torrent-add", "arguments": {"filename": magnet}}));
    w.ok(json!({"method": "torrent-stop", "arguments": {"ids": [1]}}));
    let before = w.list();

    let mut again = World { svc: World::start(w.dir.path(), w.now), now: w.now, dir: w.dir };
    let after = again.list();
    assert_eq!(after.len(), 3);
    for (b, a) in before.iter().zip(&after) {
        for f in ["id", "name", "hashString", "status", "percentDone"] {
            assert_eq!(a[f], b[f], "{f}: {b} then {a}");
        }
    }
    assert_eq!(after[0]["percentDone"], 1.0, "a stopped torrent shows what its resume record vouches for");
}

#[test]
fn a_torrent_whose_folder_cannot_be_made_reports_why_and_the_others_go_on() {
    let mut w = World::new();
    let blocker = w.dir.path().join("a-file");
    std::fs::write(&blocker, b"not a folder").unwrap();
    let bytes = torrent(w.dir.path(), "blocked");
    let dir = blocker.join("below");
    w.ok(
        json!({"method": "torrent-add", "arguments": {"metainfo": b64(&bytes), "download-dir": dir.to_str().unwrap()}}),
    );
    let fine = torrent(w.dir.path(), "fine");
    w.ok(json!({"method": "torrent-add", "arguments": {"metainfo": b64(&fine)}}));
    let rows = w.list();
    assert_eq!(rows[0]["error"], 3, "{}", rows[0]);
    assert!(rows[0]["errorString"].as_str().unwrap().contains("cannot create"), "{}", rows[0]);
    assert_eq!((rows[1]["error"].as_u64(), rows[1]["status"].as_u64()), (Some(0), Some(4)));
}

#[test]
fn bad_calls_get_a_result_and_change_nothing() {
    let mut w = World::new();
    for (request, want) in [
        (json!({"method": "torrent-add", "arguments": {"filename": "/nonexistent/x.torrent"}}), "cannot read"),
        (json!({"method": "torrent-add", "arguments": {"filename": "magnet:?xt=urn:btih:zz"}}), "bad magnet link"),
        (json!({"method": "torrent-add", "arguments": {"metainfo": b64(b"d4:infoi1ee")}}), "invalid"),
        (
            json!({"method": "torrent-add", "arguments": {"filename": format!("magnet:?xt=urn:btih:{}", "cd".repeat(20)),
                    "download-dir": "/srv/../etc"}}),
            "'..'",
        ),
        (json!({"method": "session-set", "arguments": {"peer-port": 1}}), "peer port"),
        (json!({"method": "torrent-set", "arguments": {"ids": [3], "files-unwanted": [0]}}), "no torrent with id 3"),
        (json!({"method": "torrent-verify", "arguments": {"ids": [7]}}), "no torrent with id 7"),
    ] {
        let r = w.call(request.clone());
        assert!(r["result"].as_str().unwrap().contains(want), "{request} -> {r}");
    }
    assert!(w.list().is_empty());
}

#[test]
fn files_unwanted_is_checked_kept_in_the_record_and_shown() {
    let mut w = World::new();
    let bytes = torrent(w.dir.path(), "one");
    w.ok(json!({"method": "torrent-add", "arguments": {"metainfo": b64(&bytes), "paused": true}}));
    let magnet = format!("magnet:?xt=urn:btih:{}", "cd".repeat(20));
    w.ok(json!({"method": "torrent-add", "arguments": {"filename": magnet, "paused": true}}));
    let r = w.call(json!({"method": "torrent-set", "arguments": {"ids": [1], "files-unwanted": [2]}}));
    assert!(r["result"].as_str().unwrap().contains("file 2 does not exist"), "{r}");
    let r = w.call(json!({"method": "torrent-set", "arguments": {"ids": [2], "files-unwanted": [0]}}));
    assert!(r["result"].as_str().unwrap().contains("metadata"), "{r}");

    // a.bin (40,000 bytes) fills pieces 0-1 alone and shares piece 2 with sub/b.bin (9,000 bytes).
    let fields = json!(["wanted", "sizeWhenDone", "leftUntilDone", "totalSize", "fileStats"]);
    let get = |w: &mut World| w.ok(json!({"method": "torrent-get", "arguments": {"ids": [1], "fields": fields}}));
    w.ok(json!({"method": "torrent-set", "arguments": {"ids": [1], "files-unwanted": [0]}}));
    let t = get(&mut w)["torrents"][0].clone();
    assert_eq!((&t["wanted"], &t["sizeWhenDone"]), (&json!([0, 1]), &json!(49_000 - 32_768)), "{t}");
    assert_eq!((&t["fileStats"][0]["wanted"], &t["fileStats"][1]["wanted"]), (&json!(false), &json!(true)));
    // An empty list is every file.
    w.ok(json!({"method": "torrent-set", "arguments": {"ids": [1], "files-unwanted": []}}));
    let t = get(&mut w)["torrents"][0].clone();
    assert_eq!((&t["wanted"], &t["sizeWhenDone"], &t["leftUntilDone"]), (&json!([0, 0]), &json!(0), &json!(0)), "{t}");

    let mut again = World { svc: World::start(w.dir.path(), w.now), now: w.now, dir: w.dir };
    assert_eq!(get(&mut again)["torrents"][0]["wanted"], json!([0, 0]), "the selection is in the record");
    again.ok(json!({"method": "torrent-set", "arguments": {"ids": [1], "files-wanted": []}}));
    let t = get(&mut again)["torrents"][0].clone();
    assert_eq!((&t["wanted"], &t["sizeWhenDone"]), (&json!([1, 1]), &t["totalSize"]), "{t}");
}

#[test]
fn session_settings_persist_and_limits_are_reported() {
    let mut w = World::new();
    w.ok(json!({"method": "session-set", "arguments": {"speed-limit-up": 50, "speed-limit-up-enabled": true,
                                                       "download-dir": "/srv/torrents", "start-added-torrents": false}}));
    let s = w.ok(json!({"method": "session-get"}));
    assert_eq!((s["speed-limit-up"].as_u64(), s["speed-limit-up-enabled"].as_bool()), (Some(50), Some(true)));
    assert_eq!(s["download-dir"], "/srv/torrents");
    assert_eq!(s["rpc-version"], 15);
    let bytes = torrent(w.dir.path(), "limited");
    w.ok(json!({"method": "torrent-add", "arguments": {"metainfo": b64(&bytes)}}));
    w.ok(json!({"method": "torrent-set", "arguments": {"ids": [1], "downloadLimit": 10, "downloadLimited": true}}));
    let fields = ["downloadLimit", "downloadLimited", "uploadLimited"];
    let t = w.ok(json!({"method": "torrent-get", "arguments": {"ids": [1], "fields": fields}}));
    assert_eq!(t["torrents"][0], json!({"downloadLimit": 10, "downloadLimited": true, "uploadLimited": false}));

    let mut again = World { svc: World::start(w.dir.path(), w.now), now: w.now, dir: w.dir };
    let t = again.ok(json!({"method": "torrent-get", "arguments": {"ids": [1], "fields": fields}}));
    assert_eq!(t["torrents"][0]["downloadLimit"], 10, "a torrent's limit is kept in its record");
    let s = again.ok(json!({"method": "session-get"}));
    assert_eq!((s["speed-limit-up"].as_u64(), s["start-added-torrents"].as_bool()), (Some(50), Some(false)));
    let stats = again.ok(json!({"method": "session-stats"}));
    assert_eq!(stats["torrentCount"], 1);
}

/// Feeds `request` to a fresh connection and returns the answer.
fn exchange(w: &mut World, request: &str) -> String {
    let mut c = RpcConn::new("127.0.0.1:5000".parse().unwrap(), w.now);
    let used = c.handle_bytes(w.now, request.as_bytes(), &mut w.svc, &mut Ctl::default());
    assert_eq!(used, request.len());
    let mut out = Vec::new();
    c.poll_transmit(w.now, &mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn routes_answer_with_transmissions_statuses() {
    let mut w = World::new();
    let body = r#"{"method":"session-get","tag":7}"#;
    let post = |session: &str| {
        format!(
            "POST /transmission/rpc/ HTTP/1.1\r\nHost: localhost:9091\r\nX-Transmission-Session-Id: {session}\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let denied = exchange(&mut w, &post("wrong"));
    assert!(denied.starts_with("HTTP/1.1 409 Conflict\r\n"), "{denied}");
    assert!(denied.contains("X-Transmission-Session-Id: sid\r\n"), "{denied}");
    let ok = exchange(&mut w, &post("sid"));
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\nContent-Type: application/json"), "{ok}");
    assert!(ok.ends_with(r#""result":"success","tag":7}"#), "{ok}");
    assert!(!ok.to_ascii_lowercase().contains("x-transmission-rpc-version"));

    let page = exchange(&mut w, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    assert!(page.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/html") && page.contains("<html"), "{page}");
    let get_rpc = exchange(&mut w, "GET /transmission/rpc HTTP/1.1\r\nX-Transmission-Session-Id: sid\r\n\r\n");
    assert!(get_rpc.starts_with("HTTP/1.1 405"), "{get_rpc}");
    let missing = exchange(&mut w, "GET /transmission/web/ HTTP/1.1\r\n\r\n");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    let rebinding = exchange(&mut w, "GET /metrics HTTP/1.1\r\nHost: attacker.example\r\n\r\n");
    assert!(rebinding.starts_with("HTTP/1.1 421"), "{rebinding}");
    let big = format!("POST /transmission/rpc HTTP/1.1\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1);
    assert!(exchange(&mut w, &big).starts_with("HTTP/1.1 413"));
}

#[test]
fn metrics_label_each_torrent_and_count_rpc_requests() {
    let mut w = World::new();
    let bytes = torrent(w.dir.path(), "we\"ird name");
    let dir = w.dir.path().join("src");
    w.ok(
        json!({"method": "torrent-add", "arguments": {"metainfo": b64(&bytes), "download-dir": dir.to_str().unwrap()}}),
    );
    let text = exchange(&mut w, "GET /metrics HTTP/1.1\r\n\r\n");
    let hash = hash_of(&bytes);
    assert!(
        text.contains(&format!("toybt_torrent_pieces_have{{hash=\"{hash}\",name=\"we\\\"ird name\"}} 3\n")),
        "{text}"
    );
    assert!(text.contains("toybt_torrents 1\n") && text.contains("toybt_torrents_running 1\n"), "{text}");
    assert!(text.contains("# TYPE toybt_rpc_requests_total counter\n"), "{text}");
}

#[test]
fn unknown_paths_in_a_watch_folder_are_never_touched_outside_it() {
    let dir = tempfile::tempdir().unwrap();
    let watch = dir.path().join("watch");
    std::fs::create_dir_all(watch.join("nested.torrent")).unwrap();
    std::fs::write(watch.join("good.torrent"), torrent(dir.path(), "watched")).unwrap();
    std::fs::write(watch.join("notes.txt"), b"left alone").unwrap();
    // A link that leads out of the folder is not followed.
    let outside = dir.path().join("outside.torrent");
    std::fs::write(&outside, torrent(dir.path(), "outside")).unwrap();
    std::os::unix::fs::symlink(&outside, watch.join("link.torrent")).unwrap();
    let store = Store::open(&dir.path().join("state")).unwrap();
    let now = Instant::now();
    let cfg = DaemonConfig { watch: Some(watch.clone()), ..config(dir.path()) };
    let daemon = Daemon::new(cfg, access(), store, Default::default(), now);
    let mut svc = Services { daemon: Some(Box::new(daemon)), ..Default::default() };
    timeout(&mut svc, now);
    let mut names: Vec<PathBuf> =
        std::fs::read_dir(&watch).unwrap().map(|e| PathBuf::from(e.unwrap().file_name())).collect();
    names.sort();
    let want: Vec<PathBuf> =
        ["good.torrent.added", "link.torrent", "nested.torrent", "notes.txt"].iter().map(PathBuf::from).collect();
    assert_eq!(names, want);
    assert_eq!(svc.daemon.as_ref().unwrap().entries().len(), 1);
    let next = svc.daemon.as_ref().unwrap().poll_timeout().unwrap();
    assert_eq!(next, now + crate::daemon::service::WATCH_EVERY, "one timer, every few seconds");
}
