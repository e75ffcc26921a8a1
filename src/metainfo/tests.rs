use super::*;
use crate::bencode::Encoder;

/// A single-file torrent of `len` bytes with correct-sized (dummy) piece hashes, keys sorted.
fn single(name: &str, len: u64, piece_length: u64) -> Vec<u8> {
    let n = len.div_ceil(piece_length.max(1)) as usize;
    let mut out = Vec::new();
    let mut e = Encoder { out: &mut out };
    e.begin_dict().str("announce").str("http://127.0.0.1:6969/announce").str("info").begin_dict();
    e.str("length").int(len as i64).str("name").str(name).str("piece length").int(piece_length as i64);
    e.str("pieces").bytes(&vec![7u8; n * 20]).end().end();
    out
}

/// A multi-file torrent from (path, length, attr) with piece hashes sized for `piece_length`.
fn multi(files: &[(&[&str], i64, &str)], piece_length: i64) -> Vec<u8> {
    let total = files.iter().fold(0i64, |t, f| t.saturating_add(f.1));
    let n = (total.max(0) as u64).div_ceil(piece_length as u64).min(1000) as usize;
    let mut out = Vec::new();
    let mut e = Encoder { out: &mut out };
    e.begin_dict().str("info").begin_dict().str("files").begin_list();
    for (path, len, attr) in files {
        e.begin_dict();
        if !attr.is_empty() {
            e.str("attr").str(attr);
        }
        e.str("length").int(*len).str("path").begin_list();
        for c in *path {
            e.str(c);
        }
        e.end().end();
    }
    e.end().str("name").str("top").str("piece length").int(piece_length).str("pieces").bytes(&vec![1; n * 20]);
    e.end().end();
    out
}

fn err(buf: &[u8]) -> String {
    Metainfo::from_bytes(buf).expect_err("should be refused").to_string()
}

#[test]
fn loads_a_single_file_torrent() {
    let m = Metainfo::from_bytes(&single("a.bin", 40_000, 16384)).unwrap();
    assert_eq!(m.name, "a.bin");
    assert_eq!(m.piece_count(), 3);
    assert_eq!(m.piece_size(0), 16384);
    assert_eq!(m.piece_size(2), 40_000 - 2 * 16384);
    assert_eq!((m.piece_size(3), m.piece_size(u32::MAX)), (0, 0));
    assert_eq!(m.files, vec![FileEntry { path: vec!["a.bin".into()], length: 40_000, offset: 0, padding: false }]);
    assert!(!m.multi_file);
    assert_eq!(m.tracker_tiers(), vec![vec!["http://127.0.0.1:6969/announce".to_string()]]);
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    assert_eq!(m.relative_path(&m.files[0]), PathBuf::from("a.bin"));
}

#[test]
fn info_hash_covers_the_raw_info_bytes() {
    let buf = single("a", 10, 16384);
    let start = buf.windows(6).position(|w| w == b"4:info").unwrap() + 6;
    let m = Metainfo::from_bytes(&buf).unwrap();
    assert_eq!(m.info_hash, sha1(&buf[start..buf.len() - 1]));
    assert_eq!(m.info_hash_hex().len(), 40);
}

#[test]
fn unsorted_keys_load_and_keep_their_own_hash() {
    let info = format!("d12:piece lengthi16384e4:name1:a6:lengthi5e6:pieces20:{}e", "x".repeat(20));
    let buf = format!("d4:info{info}8:announce3:urle");
    let m = Metainfo::from_bytes(buf.as_bytes()).unwrap();
    assert_eq!(m.info_hash, sha1(info.as_bytes()));
    assert_eq!(m.announce.as_deref(), Some("url"));
    assert!(m.warnings.iter().any(|w| w.contains("not in sorted order")));
}

#[test]
fn multi_file_layout_and_padding() {
    let buf = multi(&[(&["a", "x"], 5, ""), (&[".pad", "16379"], 16379, "p"), (&["b"], 3, "x")], 16384);
    let m = Metainfo::from_bytes(&buf).unwrap();
    assert!(m.multi_file);
    assert_eq!(m.total_length, 16387);
    let offsets: Vec<u64> = m.files.iter().map(|f| f.offset).collect();
    assert_eq!(offsets, vec![0, 5, 16384]);
    assert!(m.files[1].padding && !m.files[0].padding);
    assert_eq!(m.relative_path(&m.files[0]), PathBuf::from("top/a/x"));
    assert!(m.warnings.iter().any(|w| w.contains("attr")));
    assert!(m.warnings.iter().any(|w| w.contains("no tracker")));
}

#[test]
fn padding_files_may_share_a_path() {
    let buf = multi(&[(&["a"], 5, ""), (&[".pad", "5"], 5, "p"), (&["b"], 5, ""), (&[".pad", "5"], 5, "p")], 8);
    assert!(Metainfo::from_bytes(&buf).is_ok());
}

#[test]
fn refuses_bad_paths() {
    let cases: &[(&[&str], &str)] = &[
        (&["a", "..", "b"], "`.` or `..`"),
        (&["."], "`.` or `..`"),
        (&[""], "is empty"),
        (&["/etc", "passwd"], "contains `/`"),
        (&["a/b"], "contains `/`"),
        (&["a\\..\\b"], "contains `\\`"),
        (&["a\0b"], "NUL"),
    ];
    for (path, want) in cases {
        let e = err(&multi(&[(path, 5, "")], 16384));
        assert!(e.contains(want), "{path:?}: {e}");
    }
    let long = "x".repeat(256);
    assert!(err(&multi(&[(&[&long], 5, "")], 16384)).contains("255"));
    let deep: Vec<String> = (0..2100).map(|_| "ab".to_string()).collect();
    let deep: Vec<&str> = deep.iter().map(String::as_str).collect();
    assert!(err(&multi(&[(&deep, 5, "")], 16384)).contains("longer than 4096"));
    assert!(err(&multi(&[(&[], 5, "")], 16384)).contains("empty list"));
}

#[test]
fn refuses_colliding_paths() {
    let e = err(&multi(&[(&["a", "b"], 5, ""), (&["a", "b"], 5, "")], 16384));
    assert!(e.contains("same path \"a/b\""), "{e}");
    let e = err(&multi(&[(&["a"], 5, ""), (&["c"], 1, ""), (&["a", "b"], 5, "")], 16384));
    assert!(e.contains("\"a\" is a file but also the folder of \"a/b\""), "{e}");
    let e = err(&multi(&[(&["a", "b", "c"], 5, ""), (&["a", "b"], 5, "")], 16384));
    assert!(e.contains("folder of"), "{e}");
    // A sibling whose name merely starts with the same letters is no folder.
    assert!(Metainfo::from_bytes(&multi(&[(&["a"], 5, ""), (&["ab", "c"], 5, "")], 16384)).is_ok());
}

#[test]
fn refuses_bad_names() {
    for (name, want) in [("..", "`.` or `..`"), ("a/b", "contains `/`"), ("", "is empty")] {
        let e = err(&single(name, 5, 16384));
        assert!(e.contains("`name`") && e.contains(want), "{name:?}: {e}");
    }
    let no_name = format!("d4:infod6:lengthi5e12:piece lengthi16384e6:pieces20:{}ee", "x".repeat(20));
    assert!(err(no_name.as_bytes()).contains("no `name`"));
}

#[test]
fn piece_length_rules() {
    assert!(err(&single("a", 5, 0)).contains("`piece length` is 0"));
    assert!(err(&single("a", 5, (256 << 20) + 1)).contains("between 1 byte and 256 MiB"));
    let m = Metainfo::from_bytes(&single("a", 100_000, 30_000)).unwrap();
    assert_eq!((m.piece_count(), m.piece_size(3)), (4, 10_000));
    assert!(Metainfo::from_bytes(&single("a", 5, 256 << 20)).is_ok());
}

#[test]
fn pieces_must_match_the_size() {
    let mut buf = single("a", 40_000, 16384);
    // Say 40,000 bytes need 3 pieces, then claim a smaller total.
    let at = buf.windows(10).position(|w| w == b"i40000e4:n").unwrap();
    buf.splice(at..at + 7, b"i10000e".iter().copied());
    assert!(err(&buf).contains("has 3 piece hash(es) but 10000 bytes in pieces of 16384 bytes need 1"));
    let odd = format!("d4:infod6:lengthi5e4:name1:a12:piece lengthi16384e6:pieces21:{}ee", "x".repeat(21));
    assert!(err(odd.as_bytes()).contains("21 bytes long, not a multiple of 20"));
}

#[test]
fn refuses_bad_lengths() {
    assert!(err(&multi(&[(&["a"], -1, "")], 16384)).contains("cannot be negative"));
    assert!(err(&multi(&[(&["a"], i64::MAX, ""), (&["b"], 1, "")], 16384)).contains("2^63"));
    assert!(err(&multi(&[(&["a"], 0, "")], 16384)).contains("total size is 0"));
    let both = format!("d4:infod5:filesle6:lengthi5e4:name1:a12:piece lengthi9e6:pieces20:{}ee", "x".repeat(20));
    assert!(err(both.as_bytes()).contains("both `length` and `files`"));
}

#[test]
fn refuses_structural_problems() {
    assert!(err(b"i3e").contains("top level is not a dictionary"));
    assert!(err(b"d8:announce3:urle").contains("no `info` dictionary"));
    assert!(err(b"d4:infoi3ee").contains("`info` is not a dictionary"));
    assert!(err(b"d4:info").contains("malformed bencode"));
    assert!(err(b"d1:ai1e1:ai2ee").contains("key \"a\" twice"));
    let mut deep = b"d4:info".to_vec();
    deep.extend(vec![b'l'; 200]);
    assert!(err(&deep).contains("nesting too deep"));
    let big = vec![b' '; MAX_TORRENT_BYTES as usize + 1];
    assert_eq!(Metainfo::from_bytes(&big), Err(MetainfoError::TooLarge(MAX_TORRENT_BYTES + 1)));
}

#[test]
fn reads_optional_fields_and_tiers() {
    let info = format!("d6:lengthi5e4:name1:a12:piece lengthi16384e6:pieces20:{}7:privatei1ee", "x".repeat(20));
    let buf = format!(
        "d8:announce5:http1\
         13:announce-listll5:http1el5:http2elee7:comment2:hi10:created by5:toybt13:creation datei99e4:info{info}e"
    );
    let m = Metainfo::from_bytes(buf.as_bytes()).unwrap();
    assert!(m.private);
    assert_eq!(m.tracker_tiers(), vec![vec!["http1".to_string()], vec!["http2".to_string()]]);
    assert_eq!((m.comment.as_deref(), m.created_by.as_deref(), m.creation_date), (Some("hi"), Some("toybt"), Some(99)));
    assert!(m.warnings.iter().any(|w| w.contains("part(s) of `announce-list` are ignored")));
}

#[test]
fn verifies_pieces() {
    let data = vec![3u8; 20_000];
    let mut out = Vec::new();
    let mut e = Encoder { out: &mut out };
    e.begin_dict().str("info").begin_dict().str("length").int(20_000).str("name").str("d");
    let mut pieces = sha1(&data[..16384]).to_vec();
    pieces.extend(sha1(&data[16384..]));
    e.str("piece length").int(16384).str("pieces").bytes(&pieces).end().end();
    let m = Metainfo::from_bytes(&out).unwrap();
    assert!(m.piece_matches(0, &data[..16384]));
    assert!(m.piece_matches(1, &data[16384..]));
    assert!(!m.piece_matches(1, &data[..16384 - 1]));
    assert!(!m.piece_matches(2, &data[16384..]));
    assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
}

#[test]
fn agrees_with_lava_torrent_on_canonical_input() {
    use lava_torrent::torrent::v1::Torrent;
    let mut out = Vec::new();
    let mut e = Encoder { out: &mut out };
    e.begin_dict().str("announce").str("http://a/announce").str("comment").str("c").str("info").begin_dict();
    e.str("files").begin_list();
    for (path, len) in [(&["x", "y"][..], 70_000), (&["z"][..], 1)] {
        e.begin_dict().str("length").int(len).str("path").begin_list();
        for c in path {
            e.str(c);
        }
        e.end().end();
    }
    let pieces: Vec<u8> = (0..5u8).flat_map(|i| sha1(&[i])).collect();
    e.end().str("name").str("top").str("piece length").int(16384).str("pieces").bytes(&pieces).end().end();

    let ours = Metainfo::from_bytes(&out).unwrap();
    let lava = Torrent::read_from_bytes(&out).unwrap();
    assert_eq!(ours.name, lava.name);
    assert_eq!(ours.piece_length as i64, lava.piece_length);
    assert_eq!(ours.total_length as i64, lava.length);
    assert_eq!(ours.pieces.iter().map(|p| p.to_vec()).collect::<Vec<_>>(), lava.pieces);
    assert_eq!(ours.announce, lava.announce);
    let lava_files = lava.files.unwrap();
    assert_eq!(ours.files.len(), lava_files.len());
    for (a, b) in ours.files.iter().zip(&lava_files) {
        assert_eq!(a.length as i64, b.length);
        assert_eq!(PathBuf::from_iter(&a.path), b.path);
    }
}
