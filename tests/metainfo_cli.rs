//! `toybt info` and `toybt create` as a user runs them, and their contract with real tools: mktorrent gives the same
//! info hash, libtorrent and transmission-show load what we make, every malformed fixture gives its documented error.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fixtures, pseudo_random_bytes, run_toybt, toybt_bin, which};
use toybt::metainfo::Metainfo;

const TRACKER: &str = "http://127.0.0.1:6969/announce";

fn require(program: &str, package: &str) {
    assert!(which(program), "{program} is not installed (apt-get install {package}); this test needs it");
}

/// (file name, rest of the line) for each non-comment line of a manifest.
fn manifest(path: &Path) -> Vec<(String, String)> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (file, rest) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
            (file.to_string(), rest.trim().to_string())
        })
        .collect()
}

/// Every `.torrent` in a folder, by name.
fn torrents_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".torrent"))
        .collect();
    names.sort();
    names
}

/// libtorrent's view of a torrent: (info hash, file count, total size, piece length, piece count).
fn libtorrent_view(torrent: &Path) -> (String, u64, u64, u64, u64) {
    require("/usr/bin/python3", "python3-libtorrent");
    let script = "import libtorrent as lt, sys\n\
                  ti = lt.torrent_info(sys.argv[1])\n\
                  print(ti.info_hash(), ti.num_files(), ti.total_size(), ti.piece_length(), ti.num_pieces())";
    let out = Command::new("/usr/bin/python3").args(["-c", script]).arg(torrent).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "libtorrent refused {}: {}", torrent.display(), String::from_utf8_lossy(&out.stderr));
    let f: Vec<&str> = stdout.split_whitespace().collect();
    let n = |i: usize| f[i].parse::<u64>().unwrap();
    (f[0].to_string(), n(1), n(2), n(3), n(4))
}

fn load(path: &Path) -> Metainfo {
    Metainfo::load(path).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `toybt create ARGS` in `dir`; returns (exit code, stdout, stderr).
fn create_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(toybt_bin()).arg("create").args(args).current_dir(dir).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn mktorrent(target: &Path, out: &Path, exponent: u32, private: bool) {
    require("mktorrent", "mktorrent");
    let mut cmd = Command::new("mktorrent");
    cmd.args(["-a", TRACKER, "-l", &exponent.to_string(), "-o"]).arg(out);
    if private {
        cmd.arg("-p");
    }
    let res = cmd.arg(target).output().unwrap();
    assert!(res.status.success(), "mktorrent failed: {}", String::from_utf8_lossy(&res.stderr));
}

/// A folder with what trips file ordering up: nested folders, an empty file, a hidden file, names whose order
/// differs by whole path vs by component (`a.txt` vs `a/x`) and by case, a symlink, sizes around a block.
fn awkward_folder(root: &Path) -> PathBuf {
    let top = root.join("content");
    let files: &[(&str, usize)] = &[
        ("a/x", 3),
        ("a.txt", 70_000),
        ("a-b", 16_385),
        ("Z/y", 16_383),
        ("nested/deeper/still/one.bin", 1),
        ("nested/empty", 0),
        (".hidden", 17),
        ("b", 100_001),
    ];
    for (i, (p, len)) in files.iter().enumerate() {
        let p = top.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, pseudo_random_bytes(*len, i as u64 + 10)).unwrap();
    }
    std::os::unix::fs::symlink("b", top.join("link-to-b")).unwrap();
    top
}

#[test]
fn create_matches_mktorrent_for_a_single_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("odd size.bin");
    fs::write(&file, pseudo_random_bytes(300_001, 7)).unwrap();
    for (exponent, private) in [(15u32, false), (18, true)] {
        let ours = dir.path().join(format!("ours-{exponent}.torrent"));
        let theirs = dir.path().join(format!("theirs-{exponent}.torrent"));
        let pl = (1u32 << exponent).to_string();
        let mut args = vec!["odd size.bin", "-t", TRACKER, "-l", &pl, "-o", ours.to_str().unwrap()];
        if private {
            args.push("--private");
        }
        let (code, _, err) = create_in(dir.path(), &args);
        assert_eq!(code, 0, "{err}");
        mktorrent(&file, &theirs, exponent, private);
        let (a, b) = (load(&ours), load(&theirs));
        assert_eq!(a.info_hash_hex(), b.info_hash_hex(), "piece length 2^{exponent}, private {private}");
        assert_eq!(a.private, private);
    }
}

#[test]
fn create_matches_mktorrent_for_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let top = awkward_folder(dir.path());
    for (exponent, private) in [(15u32, false), (15, true), (18, false)] {
        let ours = dir.path().join(format!("ours-{exponent}-{private}.torrent"));
        let theirs = dir.path().join(format!("theirs-{exponent}-{private}.torrent"));
        let pl = (1u32 << exponent).to_string();
        let mut args = vec!["content", "-t", TRACKER, "-l", &pl, "-o", ours.to_str().unwrap()];
        if private {
            args.push("-p");
        }
        let (code, out, err) = create_in(dir.path(), &args);
        assert_eq!(code, 0, "{err}");
        mktorrent(&top, &theirs, exponent, private);
        let (a, b) = (load(&ours), load(&theirs));
        assert_eq!(a.files, b.files, "same files in the same order");
        assert_eq!(a.info_hash_hex(), b.info_hash_hex(), "piece length 2^{exponent}, private {private}");
        assert!(out.contains(&a.info_hash_hex()), "create prints the info hash: {out}");
    }
}

#[test]
fn create_matches_transmission_create_where_they_can_agree() {
    // transmission-create skips hidden and empty files, sorts ignoring case and always writes `private`: on a folder
    // without those, a private torrent is the same.
    require("transmission-create", "transmission-cli");
    let dir = tempfile::tempdir().unwrap();
    let top = dir.path().join("plain");
    for (i, (p, len)) in [("a/x", 3usize), ("a.txt", 40_000), ("b/c/d", 16_385), ("e", 1)].iter().enumerate() {
        let p = top.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, pseudo_random_bytes(*len, i as u64)).unwrap();
    }
    let (code, _, err) = create_in(dir.path(), &["plain", "-t", TRACKER, "-l", "32K", "-p", "-o", "ours.torrent"]);
    assert_eq!(code, 0, "{err}");
    let theirs = dir.path().join("theirs.torrent");
    let res = Command::new("transmission-create")
        .args(["-p", "-t", TRACKER, "-s", "32", "-o"])
        .arg(&theirs)
        .arg(&top)
        .output()
        .unwrap();
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    assert_eq!(load(&dir.path().join("ours.torrent")).info_hash, load(&theirs).info_hash);
}

#[test]
fn libtorrent_and_transmission_show_load_our_torrents() {
    require("transmission-show", "transmission-cli");
    let dir = tempfile::tempdir().unwrap();
    awkward_folder(dir.path());
    fs::write(dir.path().join("single.bin"), pseudo_random_bytes(123_457, 3)).unwrap();
    for (target, extra) in
        [("content", &["-t", "http://127.0.0.1:1/a", "-c", "a \"quoted\" comment"][..]), ("single.bin", &[][..])]
    {
        let out = format!("{target}.torrent");
        let mut args = vec![target, "-t", TRACKER];
        args.extend_from_slice(extra);
        let (code, _, err) = create_in(dir.path(), &args);
        assert_eq!(code, 0, "{err}");
        let path = dir.path().join(&out);
        let m = load(&path);
        let (hash, files, total, pl, pieces) = libtorrent_view(&path);
        assert_eq!(hash, m.info_hash_hex());
        assert_eq!(
            (files, total, pl, pieces),
            (m.files.len() as u64, m.total_length, m.piece_length as u64, m.piece_count() as u64)
        );
        let show = Command::new("transmission-show").arg(&path).output().unwrap();
        let text = String::from_utf8_lossy(&show.stdout);
        assert!(show.status.success() && text.contains(&format!("Hash: {}", m.info_hash_hex())), "{text}");
    }
}

#[test]
fn fixture_torrents_are_reproducible_and_match_their_content() {
    let fx = fixtures();
    for (file, len, seed) in [
        ("sample.bin", 100_000, 1),
        ("multi/a/one.bin", 1, 2),
        ("multi/a/b/c/odd-16383.bin", 16_383, 3),
        ("multi/a/b/even-16385.bin", 16_385, 4),
        ("multi/z/70000.bin", 70_000, 5),
    ] {
        assert!(
            fs::read(fx.join(file)).unwrap() == pseudo_random_bytes(len, seed),
            "{file} is not its documented bytes"
        );
    }
    assert_eq!(fs::metadata(fx.join("multi/empty.dat")).unwrap().len(), 0);
    let dir = tempfile::tempdir().unwrap();
    for (content, pieces) in [("sample.txt", 1), ("sample.bin", 7), ("multi", 7)] {
        let committed = load(&fx.join(format!("{content}.torrent")));
        let out = dir.path().join(format!("{content}.torrent"));
        let src = fx.join(content);
        let args = [src.to_str().unwrap(), "-t", TRACKER, "-l", "16K", "--no-date", "-o", out.to_str().unwrap()];
        let (code, _, err) = create_in(dir.path(), &args);
        assert_eq!(code, 0, "{err}");
        let fresh = load(&out);
        assert_eq!(fresh.info_hash, committed.info_hash, "{content}.torrent is stale: see fixtures/README.md");
        assert_eq!(committed.piece_count(), pieces);
        assert_eq!(committed.tracker_tiers(), vec![vec![TRACKER.to_string()]]);
        assert_eq!(committed.creation_date, None);
        assert!(committed.warnings.is_empty(), "{:?}", committed.warnings);
        assert_eq!(libtorrent_view(&fx.join(format!("{content}.torrent"))).0, committed.info_hash_hex());
    }
    let multi = load(&fx.join("multi.torrent"));
    assert!(multi.files.iter().any(|f| f.length == 0) && multi.files.iter().any(|f| f.path.len() == 4));
}

#[test]
fn malformed_fixtures_give_their_documented_error() {
    let dir = fixtures().join("malformed");
    let cases = manifest(&dir.join("MANIFEST"));
    let listed: Vec<&String> = cases.iter().map(|(f, _)| f).collect();
    for name in torrents_in(&dir) {
        assert!(listed.contains(&&name), "{name} is missing from malformed/MANIFEST");
    }
    for (name, expected) in &cases {
        let path = dir.join(name);
        let (code, out, err) = run_toybt(&["info", path.to_str().unwrap()]);
        assert_eq!(code, 2, "{name}: exit code; stderr: {err}");
        assert!(out.is_empty(), "{name}: printed {out}");
        assert!(err.contains(path.to_str().unwrap()), "{name}: the error must name the file: {err}");
        assert!(err.contains(expected.as_str()), "{name}: expected {expected:?} in {err:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "{name}: one line: {err}");
        let (code, _, _) = run_toybt(&["info", "--json", path.to_str().unwrap()]);
        assert_eq!(code, 2);
    }
}

#[test]
fn a_torrent_over_64_mib_is_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.torrent");
    fs::File::create(&path).unwrap().set_len((64 << 20) + 1).unwrap();
    let (code, _, err) = run_toybt(&["info", path.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("huge.torrent") && err.contains("larger than the 64 MiB limit"), "{err}");
}

#[test]
fn accepted_fixtures_load_with_their_warning() {
    let dir = fixtures().join("accepted");
    let cases = manifest(&dir.join("MANIFEST"));
    assert_eq!(cases.len(), torrents_in(&dir).len(), "every accepted fixture is in accepted/MANIFEST");
    for (name, warning) in &cases {
        let path = dir.join(name);
        let (code, out, err) = run_toybt(&["info", path.to_str().unwrap()]);
        assert_eq!(code, 0, "{name}: {err}");
        let m = load(&path);
        if warning == "-" {
            assert!(m.warnings.is_empty(), "{name}: {:?}", m.warnings);
        } else {
            assert!(m.warnings.iter().any(|w| w.contains(warning.as_str())), "{name}: {:?}", m.warnings);
            assert!(out.contains("WARNINGS") && out.contains(warning.as_str()), "{name}: {out}");
        }
        assert_eq!(libtorrent_view(&path).0, m.info_hash_hex(), "{name}: libtorrent's info hash");
    }
    let padding = load(&dir.join("padding.torrent"));
    let flags: Vec<bool> = padding.files.iter().map(|f| f.padding).collect();
    assert_eq!(flags, [false, true, false, true, false]);
    assert_eq!(padding.files[2].offset, 16_384);
    let odd = load(&dir.join("piece-length-20000.torrent"));
    assert_eq!((odd.piece_count(), odd.piece_size(2)), (3, 10_000));
}

#[test]
fn info_prints_text_like_transmission_show_and_json() {
    let torrent = fixtures().join("multi.torrent");
    let t = torrent.to_str().unwrap();
    let m = load(&torrent);
    let (code, text, err) = run_toybt(&["info", t]);
    assert_eq!(code, 0, "{err}");
    for want in [
        "Name: multi".to_string(),
        format!("Hash: {}", m.info_hash_hex()),
        "Piece Count: 7".into(),
        "Piece Size: 16.00 KiB (16384 bytes)".into(),
        "Total Size: 100.59 KiB (103007 bytes)".into(),
        "Privacy: Public torrent".into(),
        "Created on: Unknown".into(),
        format!("Tier #1\n  {TRACKER}"),
        "multi/z/70000.bin (68.36 KiB)".into(),
        "multi/empty.dat (0 B)".into(),
    ] {
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }

    let (code, json, _) = run_toybt(&["info", "--json", t]);
    assert_eq!(code, 0);
    assert_eq!(json.lines().count(), 1, "one JSON object on one line");
    // Read it back with a real JSON parser.
    let script = "import json, sys\n\
                  d = json.load(sys.stdin)\n\
                  print(d['info_hash'], d['piece_count'], d['total_length'], d['private'], d['trackers'][0][0])\n\
                  for f in d['files']: print(f['path'], f['length'], f['offset'], f['padding'])";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), json.as_bytes()).unwrap();
    let parsed = child.wait_with_output().unwrap();
    assert!(parsed.status.success());
    let parsed = String::from_utf8_lossy(&parsed.stdout);
    let mut lines = parsed.lines();
    assert_eq!(lines.next().unwrap(), format!("{} 7 103007 False {TRACKER}", m.info_hash_hex()));
    let files: Vec<&str> = lines.collect();
    assert_eq!(files.len(), 6);
    assert_eq!(files[..2], ["multi/a/b/c/odd-16383.bin 16383 0 False", "multi/a/b/even-16385.bin 16385 16383 False"]);
}

#[test]
fn create_writes_name_dot_torrent_here_and_will_not_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("data.bin"), pseudo_random_bytes(50_000, 9)).unwrap();
    let (code, out, err) = create_in(dir.path(), &["data.bin", "-t", TRACKER, "-c", "hello"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("wrote data.bin.torrent"), "{out}");
    let first = fs::read(dir.path().join("data.bin.torrent")).unwrap();
    let m = load(&dir.path().join("data.bin.torrent"));
    assert_eq!(m.piece_length, 16384, "auto piece length for 50 kB");
    assert_eq!(m.comment.as_deref(), Some("hello"));
    assert_eq!(m.created_by.as_deref(), Some(concat!("toybt ", env!("CARGO_PKG_VERSION"))));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!(m.creation_date.is_some_and(|d| (now - d).abs() < 600), "{:?}", m.creation_date);

    let (code, _, err) = create_in(dir.path(), &["data.bin", "-t", TRACKER, "-l", "32K"]);
    assert_eq!(code, 2);
    assert!(err.contains("data.bin.torrent: already exists (use --force"), "{err}");
    assert_eq!(fs::read(dir.path().join("data.bin.torrent")).unwrap(), first, "left untouched");

    let (code, _, err) = create_in(dir.path(), &["data.bin", "-t", TRACKER, "-l", "32K", "--force", "--no-date"]);
    assert_eq!(code, 0, "{err}");
    let m = load(&dir.path().join("data.bin.torrent"));
    assert_eq!((m.piece_length, m.creation_date), (32768, None));
}

#[test]
fn create_and_info_refuse_bad_usage_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("f"), b"x").unwrap();
    fs::write(dir.path().join("empty"), b"").unwrap();
    for (args, want) in [
        (&["create"][..], "what should the torrent hold"),
        (&["create", "f", "-l", "1000"], "between 16 KiB and 256 MiB"),
        (&["create", "f", "-l", "lots"], "not a size"),
        (&["create", "f", "--bogus"], "unexpected argument(s): --bogus"),
        (&["create", "--bogus", "f"], "--bogus"),
        (&["info", "--bogus", "f"], "--bogus"),
        (&["create", "f", "g"], "unexpected argument"),
        (&["create", "missing"], "missing: no such file or folder"),
        (&["create", "empty"], "the file is empty"),
        (&["create", "f", "-t", "a,,b"], "empty tracker URL"),
        (&["info"], "which torrent"),
        (&["info", "missing.torrent"], "missing.torrent: no such file"),
        (&["info", "."], "is a folder"),
    ] {
        let out = Command::new(toybt_bin()).args(args).current_dir(dir.path()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: expected {want:?} in {err:?}");
    }
    for sub in ["info", "create"] {
        let (code, out, _) = run_toybt(&[sub, "--help"]);
        assert_eq!(code, 0);
        assert!(out.contains(&format!("Usage: toybt {sub}")), "{out}");
    }
}

#[test]
fn create_without_tracker_warns_and_makes_a_trackerless_torrent() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("f"), b"some bytes").unwrap();
    let (code, _, err) = create_in(dir.path(), &["f"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warning: no tracker"), "{err}");
    let m = load(&dir.path().join("f.torrent"));
    assert!(m.tracker_tiers().is_empty());
    assert!(m.warnings.iter().any(|w| w.contains("no tracker")));
}

#[test]
fn info_magnet_prints_a_link_that_reads_back_to_the_torrent() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a name & more é.bin"), pseudo_random_bytes(40_000, 3)).unwrap();
    let second = "udp://127.0.0.1:6970/announce?key=a b";
    let (code, _, err) =
        create_in(dir.path(), &["a name & more é.bin", "-t", TRACKER, "-t", second, "-o", "t.torrent"]);
    assert_eq!(code, 0, "{err}");
    let path = dir.path().join("t.torrent");
    let m = load(&path);
    let (code, out, err) = run_toybt(&["info", "--magnet", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1, "just the link: {out}");
    let link = toybt::magnet::Magnet::parse(out.trim_end()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(link.info_hash, m.info_hash);
    assert_eq!(link.name.as_deref(), Some("a name & more é.bin"));
    assert_eq!(link.trackers, m.tracker_tiers().concat());
    assert_eq!(link.trackers, [TRACKER, second]);

    // A bad torrent gives the same error as plain `info`; --json and --magnet together are a usage error.
    for (name, _) in manifest(&fixtures().join("malformed").join("MANIFEST")).iter().take(3) {
        let bad = fixtures().join("malformed").join(name);
        let plain = run_toybt(&["info", bad.to_str().unwrap()]);
        let (code, out, err) = run_toybt(&["info", "--magnet", bad.to_str().unwrap()]);
        assert_eq!((code, out.as_str(), err.as_str()), (plain.0, "", plain.2.as_str()), "{name}");
    }
    let (code, _, err) = run_toybt(&["info", "--json", "--magnet", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
}
