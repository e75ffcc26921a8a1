use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::Path;

use super::*;
use crate::metainfo::FileEntry;

/// A file of a hand-made torrent: path below the top folder, length, BEP 47 padding.
type Spec<'a> = (&'a str, u64, bool);

/// Builds a Metainfo and its content (padding bytes are zeros) with real SHA-1 piece hashes.
fn torrent(piece_length: u32, specs: &[Spec], multi_file: bool) -> (Metainfo, Vec<u8>) {
    let mut data = Vec::new();
    let mut files = Vec::new();
    let mut seed = 0x2545_f491_u32;
    for &(path, length, padding) in specs {
        files.push(FileEntry {
            path: path.split('/').map(String::from).collect(),
            length,
            offset: data.len() as u64,
            padding,
        });
        for _ in 0..length {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            data.push(if padding { 0 } else { seed as u8 });
        }
    }
    let pieces = data.chunks(piece_length as usize).map(|c| sha1_smol::Sha1::from(c).digest().bytes()).collect();
    let meta = Metainfo::for_tests([7; 20], "content", piece_length, pieces, files, multi_file);
    (meta, data)
}

fn piece(meta: &Metainfo, data: &[u8], index: u32) -> Vec<u8> {
    let start = index as usize * meta.piece_length as usize;
    data[start..(start + meta.piece_length as usize).min(data.len())].to_vec()
}

fn write_all(st: &mut Storage, meta: &Metainfo, data: &[u8]) {
    // Reverse order, as pieces rarely arrive in order.
    for i in (0..meta.piece_count()).rev() {
        st.write_piece(i, &piece(meta, data, i)).unwrap();
    }
}

/// Writes the content the way another client would have left it, for seed tests.
fn lay_out(root: &Path, meta: &Metainfo, data: &[u8]) {
    for f in meta.files.iter().filter(|f| !f.padding) {
        let path = f.path.iter().fold(root.to_path_buf(), |p, c| p.join(c));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, &data[f.offset as usize..(f.offset + f.length) as usize]).unwrap();
    }
}

/// Odd sizes, a non-power-of-two piece length, an empty file mid-piece, a padding file, nested folders.
const MIXED: &[Spec] = &[
    ("a.bin", 1000, false),
    ("sub/empty", 0, false),
    ("sub/b.bin", 2500, false),
    (".pad/1500", 1500, true),
    ("sub/deeper/c.bin", 3001, false),
    ("d.bin", 1, false),
];
const MIXED_PIECE: u32 = 1000 * 3;

#[test]
fn leech_creates_sparse_files_and_empty_files_but_never_padding() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("content");
    let (meta, _) = torrent(16384, &[("big", 8 << 20, false), ("e", 0, false), (".pad/x", 100, true)], true);
    Storage::open(&meta, root.clone(), OpenMode::Leech).unwrap();
    let big = fs::metadata(root.join("big")).unwrap();
    assert_eq!(big.len(), 8 << 20);
    assert!(big.blocks() * 512 < 1 << 20, "the file was filled in: {} blocks", big.blocks());
    assert_eq!(fs::metadata(root.join("e")).unwrap().len(), 0);
    assert!(!root.join(".pad").exists());
}

#[test]
fn write_then_read_back_across_file_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("content");
    let (meta, data) = torrent(MIXED_PIECE, MIXED, true);
    let mut st = Storage::open(&meta, root.clone(), OpenMode::Leech).unwrap();
    write_all(&mut st, &meta, &data);
    for f in meta.files.iter().filter(|f| !f.padding) {
        let on_disk = fs::read(f.path.iter().fold(root.clone(), |p, c| p.join(c))).unwrap();
        assert_eq!(on_disk, &data[f.offset as usize..(f.offset + f.length) as usize], "{:?}", f.path);
    }
    assert!(!root.join(".pad").exists(), "a padding file was created");
    let mut out = Vec::new();
    for i in 0..meta.piece_count() {
        out.clear();
        st.read_piece(i, &mut out).unwrap();
        assert_eq!(out, piece(&meta, &data, i));
        assert!(st.verify_piece(i, &mut out).unwrap());
    }
    // Blocks of an odd size straddling every boundary, appended one after another like a send buffer.
    let mut served = Vec::new();
    for i in 0..meta.piece_count() {
        let size = st.piece_size(i).unwrap();
        let mut begin = 0;
        while begin < size {
            let len = 777.min(size - begin);
            st.read_block(i, begin, len, &mut served).unwrap();
            begin += len;
        }
    }
    assert_eq!(served, data);
}

#[test]
fn padding_reads_as_zeros_even_if_something_sits_there() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("content");
    let (meta, data) = torrent(MIXED_PIECE, MIXED, true);
    let mut st = Storage::open(&meta, root.clone(), OpenMode::Leech).unwrap();
    write_all(&mut st, &meta, &data);
    // Piece 1 holds bytes 3000..6000; the padding file spans 3500..5000.
    fs::create_dir_all(root.join(".pad")).unwrap();
    fs::write(root.join(".pad/1500"), vec![0xff; 1500]).unwrap();
    let mut out = vec![9];
    st.read_block(1, 400, 1200, &mut out).unwrap();
    assert_eq!(out[0], 9);
    assert_eq!(&out[1..101], &data[3400..3500]);
    assert!(out[101..].iter().all(|&b| b == 0));
    assert!(st.verify_piece(1, &mut out).unwrap());
    assert_eq!(fs::read(root.join(".pad/1500")).unwrap(), vec![0xff; 1500], "a padding file was written");
}

#[test]
fn read_block_range_checks() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, data) = torrent(40000, &[("f", 100_000, false)], false);
    let mut st = Storage::open(&meta, dir.path().join("f"), OpenMode::Leech).unwrap();
    write_all(&mut st, &meta, &data);
    let mut out = b"header".to_vec();
    let range = |r: Result<(), StorageError>| matches!(r, Err(StorageError::BlockRange { .. }));
    // The last piece is 20000 bytes.
    assert!(range(st.read_block(2, 20000 - 100, 101, &mut out)));
    assert!(range(st.read_block(2, 20000, 1, &mut out)));
    assert!(range(st.read_block(0, 0, MAX_BLOCK + 1, &mut out)));
    assert!(range(st.read_block(0, 0, 0, &mut out)));
    assert!(range(st.read_block(0, u32::MAX, 16, &mut out)));
    assert!(matches!(st.read_block(3, 0, 16, &mut out), Err(StorageError::PieceIndex { index: 3, count: 3 })));
    assert!(matches!(st.read_block(u32::MAX, 0, 16, &mut out), Err(StorageError::PieceIndex { .. })));
    assert_eq!(out, b"header", "a failed read changed the buffer");
    st.read_block(2, 20000 - 100, 100, &mut out).unwrap();
    st.read_block(0, 40000 - MAX_BLOCK, MAX_BLOCK, &mut out).unwrap();
    assert_eq!(&out[6..106], &data[100_000 - 100..]);
    assert_eq!(&out[106..], &data[40000 - MAX_BLOCK as usize..40000]);
}

#[test]
fn write_piece_checks_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, data) = torrent(1000, &[("f", 2500, false)], false);
    let mut st = Storage::open(&meta, dir.path().join("f"), OpenMode::Leech).unwrap();
    assert!(matches!(st.write_piece(2, &data[..1000]), Err(StorageError::PieceLength { expected: 500, .. })));
    assert!(matches!(st.write_piece(3, &data[..500]), Err(StorageError::PieceIndex { .. })));
    st.write_piece(2, &data[2000..]).unwrap();
}

#[test]
fn io_errors_name_the_file_and_keep_the_os_cause() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("content");
    let (meta, data) = torrent(1000, &[("a", 1500, false), ("b", 1500, false)], true);
    let mut st = Storage::open(&meta, root.clone(), OpenMode::Leech).unwrap();
    fs::remove_file(root.join("b")).unwrap();
    let err = st.write_piece(1, &piece(&meta, &data, 1)).unwrap_err();
    assert_eq!(err.io_kind(), Some(ErrorKind::NotFound));
    let text = err.to_string();
    assert!(text.contains(&root.join("b").display().to_string()), "{text}");
    let user: crate::error::Error = err.into();
    assert_eq!(user.exit_code(), 1);
}

#[test]
fn verify_detects_a_flipped_byte() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("content");
    let (meta, data) = torrent(MIXED_PIECE, MIXED, true);
    let mut st = Storage::open(&meta, root.clone(), OpenMode::Leech).unwrap();
    write_all(&mut st, &meta, &data);
    assert_eq!(st.check_all(|_, _| {}), vec![true; meta.piece_count() as usize]);
    // Byte 2000 of c.bin is torrent byte 7000: piece 2.
    let c = root.join("sub/deeper/c.bin");
    let mut bytes = fs::read(&c).unwrap();
    bytes[2000] ^= 0x01;
    fs::write(&c, bytes).unwrap();
    let mut scratch = Vec::new();
    assert!(!st.verify_piece(2, &mut scratch).unwrap());
    assert!(st.verify_piece(1, &mut scratch).unwrap());
    let mut calls = Vec::new();
    let have = st.check_all(|done, total| calls.push((done, total)));
    assert_eq!(have, vec![true, true, false]);
    assert_eq!(calls, vec![(1, 3), (2, 3), (3, 3)]);
}

#[test]
fn seed_with_a_missing_file_lacks_only_its_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("content");
    let specs: &[Spec] = &[("a", 2500, false), ("b", 1000, false), ("c", 3000, false), ("d", 10, false)];
    let (meta, data) = torrent(1000, specs, true);
    lay_out(&root, &meta, &data);
    fs::remove_file(root.join("b")).unwrap();
    let mut st = Storage::open(&meta, root.clone(), OpenMode::Seed).unwrap();
    assert_eq!(st.issues().len(), 1);
    assert_eq!(st.issues()[0].file, 1);
    assert!(matches!(st.issues()[0].problem, FileProblem::Missing));
    // b is bytes 2500..3500: pieces 2 and 3.
    let have = st.check_all(|_, _| {});
    assert_eq!(have, vec![true, true, false, false, true, true, true]);
    let mut out = Vec::new();
    assert!(st.read_block(0, 0, 1000, &mut out).is_ok());
    assert!(st.read_block(3, 0, 1000, &mut out).is_err());
    assert!(matches!(st.write_piece(0, &data[..1000]), Err(StorageError::ReadOnly)));
}

#[test]
fn seed_with_a_short_file_keeps_the_pieces_before_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, data) = torrent(1000, &[("f", 5500, false)], false);
    let path = dir.path().join("f");
    fs::write(&path, &data[..2600]).unwrap();
    let mut st = Storage::open(&meta, path, OpenMode::Seed).unwrap();
    assert!(matches!(st.issues()[0].problem, FileProblem::Short { actual: 2600, expected: 5500 }));
    assert_eq!(st.check_all(|_, _| {}), vec![true, true, false, false, false, false]);
}

#[test]
fn seed_with_nothing_there_lacks_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, _) = torrent(MIXED_PIECE, MIXED, true);
    let mut st = Storage::open(&meta, dir.path().join("absent"), OpenMode::Seed).unwrap();
    // Every data file, the empty one included; never the padding file.
    assert_eq!(st.issues().len(), 5, "{:?}", st.issues());
    assert!(st.issues().iter().all(|i| matches!(i.problem, FileProblem::Missing) && i.file != 3));
    assert_eq!(st.check_all(|_, _| {}), vec![false; 3]);
    assert!(!dir.path().join("absent").exists(), "a seed created something");
}

#[test]
fn leech_refuses_a_symlinked_folder_below_the_content_path() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("content");
    let outside = dir.path().join("outside");
    fs::create_dir_all(&root).unwrap();
    fs::create_dir_all(&outside).unwrap();
    symlink(&outside, root.join("sub")).unwrap();
    let (meta, _) = torrent(MIXED_PIECE, MIXED, true);
    let err = Storage::open(&meta, root.clone(), OpenMode::Leech).err().unwrap();
    assert!(matches!(&err, StorageError::Unsafe { path, .. } if *path == root.join("sub")), "{err}");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "something was written outside");
}

#[test]
fn leech_refuses_a_symlinked_file_even_a_dangling_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("content");
    fs::create_dir_all(&root).unwrap();
    let target = dir.path().join("victim");
    symlink(&target, root.join("a")).unwrap();
    let (meta, _) = torrent(1000, &[("a", 10, false)], true);
    assert!(matches!(Storage::open(&meta, root, OpenMode::Leech), Err(StorageError::Unsafe { .. })));
    assert!(!target.exists());
}

#[test]
fn a_symlink_swapped_in_after_open_is_refused_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("content");
    let outside = dir.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let (meta, data) = torrent(1000, &[("x/a", 1000, false), ("y/b", 1000, false)], true);
    let mut st = Storage::open(&meta, root.clone(), OpenMode::Leech).unwrap();
    st.set_max_open_files(1);
    st.write_piece(0, &data[..1000]).unwrap();
    st.write_piece(1, &data[1000..]).unwrap();
    // x/a's handle is closed now; replace its folder with a link to the outside.
    fs::remove_dir_all(root.join("x")).unwrap();
    fs::write(outside.join("a"), b"precious").unwrap();
    symlink(&outside, root.join("x")).unwrap();
    assert!(matches!(st.write_piece(0, &data[..1000]), Err(StorageError::Unsafe { .. })));
    assert_eq!(fs::read(outside.join("a")).unwrap(), b"precious");
}

#[test]
fn seed_reports_a_symlinked_file_and_does_not_read_through_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("content");
    let (meta, data) = torrent(1000, &[("a", 1000, false), ("b", 1000, false)], true);
    lay_out(&root, &meta, &data);
    let elsewhere = dir.path().join("elsewhere");
    fs::rename(root.join("b"), &elsewhere).unwrap();
    symlink(&elsewhere, root.join("b")).unwrap();
    let mut st = Storage::open(&meta, root, OpenMode::Seed).unwrap();
    assert!(matches!(st.issues()[0].problem, FileProblem::Unusable(StorageError::Unsafe { .. })));
    assert_eq!(st.check_all(|_, _| {}), vec![true, false]);
    let mut out = Vec::new();
    assert!(matches!(st.read_block(1, 0, 10, &mut out), Err(StorageError::Unsafe { .. })));
}

#[test]
fn the_content_path_itself_may_be_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    let (meta, data) = torrent(1000, &[("a", 1500, false)], true);
    lay_out(&real, &meta, &data);
    symlink(&real, dir.path().join("link")).unwrap();
    let mut st = Storage::open(&meta, dir.path().join("link"), OpenMode::Seed).unwrap();
    assert_eq!(st.check_all(|_, _| {}), vec![true, true]);
}

#[test]
fn unsafe_or_repeated_paths_are_refused_before_touching_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("content");
    for bad in [&["..", "x"][..], &["a/b"], &["."], &[""], &["a\0"], &[]] {
        let (mut meta, _) = torrent(1000, &[("f", 10, false)], true);
        meta.files[0].path = bad.iter().map(|s| s.to_string()).collect();
        let r = Storage::open(&meta, root.clone(), OpenMode::Leech);
        assert!(matches!(r, Err(StorageError::Layout(_))), "{bad:?}");
    }
    let (meta, _) = torrent(1000, &[("f", 10, false), ("f", 10, false)], true);
    assert!(matches!(Storage::open(&meta, root.clone(), OpenMode::Leech), Err(StorageError::Layout(_))));
    assert!(!root.exists());
}

#[test]
fn single_file_leech_creates_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("downloads/new/file.iso");
    let (meta, data) = torrent(1024, &[("file.iso", 5000, false)], false);
    let mut st = Storage::open(&meta, path.clone(), OpenMode::Leech).unwrap();
    write_all(&mut st, &meta, &data);
    assert_eq!(fs::read(&path).unwrap(), data);
    assert_eq!(st.path(0), path);
}

#[test]
fn handles_stay_under_the_cap_and_sync_reports_written_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("content");
    let names: Vec<String> = (0..20).map(|i| format!("f{i:02}")).collect();
    let specs: Vec<Spec> = names.iter().map(|n| (n.as_str(), 333, false)).collect();
    let (meta, data) = torrent(1000, &specs, true);
    let mut st = Storage::open(&meta, root, OpenMode::Leech).unwrap();
    st.set_max_open_files(3);
    assert_eq!(st.sync_all_dirty().unwrap(), Vec::<usize>::new());
    // Pieces 0 and 6 cover files 0..=3 and 18..=19.
    st.write_piece(6, &piece(&meta, &data, 6)).unwrap();
    st.write_piece(0, &piece(&meta, &data, 0)).unwrap();
    assert!(st.open_files() <= 3);
    assert_eq!(st.sync_all_dirty().unwrap(), vec![0, 1, 2, 3, 18, 19]);
    assert_eq!(st.sync_all_dirty().unwrap(), Vec::<usize>::new());
    write_all(&mut st, &meta, &data);
    assert!(st.open_files() <= 3);
    assert_eq!(st.sync_all_dirty().unwrap(), (0..20).collect::<Vec<_>>());
    assert_eq!(st.check_all(|_, _| {}), vec![true; 7]);
    assert!(st.open_files() <= 3);
}

#[test]
fn an_empty_torrent_opens_and_checks() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("content");
    let (meta, _) = torrent(1000, &[("e", 0, false)], true);
    let mut st = Storage::open(&meta, root.clone(), OpenMode::Leech).unwrap();
    assert_eq!(st.piece_count(), 0);
    assert_eq!(st.check_all(|_, _| {}), Vec::<bool>::new());
    assert!(root.join("e").is_file());
}

#[test]
fn marked_files_are_synced_and_reported_like_written_ones() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("content");
    let (meta, data) = torrent(1000, &[("a", 1500, false), ("b", 700, false)], true);
    lay_out(&root, &meta, &data);
    let mut st = Storage::open(&meta, root, OpenMode::Seed).unwrap();
    assert!(st.unsynced_files().is_empty());
    st.mark_unsynced(1);
    st.mark_unsynced(1);
    assert_eq!(st.unsynced_files(), &[1]);
    // A read-only seed can fsync what it read: Linux syncs a file through any descriptor.
    assert_eq!(st.sync_all_dirty().unwrap(), vec![1]);
    assert!(st.unsynced_files().is_empty());
}

#[test]
fn a_file_truncated_after_open_reads_as_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("content");
    let (meta, data) = torrent(1000, &[("a", 1500, false), ("b", 2500, false)], true);
    lay_out(&root, &meta, &data);
    let mut st = Storage::open(&meta, root.clone(), OpenMode::Seed).unwrap();
    fs::OpenOptions::new().write(true).open(root.join("b")).unwrap().set_len(100).unwrap();
    let err = st.read_block(3, 0, 500, &mut Vec::new()).unwrap_err();
    assert_eq!(err.io_kind(), Some(ErrorKind::UnexpectedEof));
    let msg = err.to_string();
    assert!(msg.contains(&root.join("b").display().to_string()) && msg.contains("ends early"), "{msg}");
    let mut out = Vec::new();
    st.read_block(0, 0, 1000, &mut out).unwrap();
    assert_eq!(out, &data[..1000]);
}

#[test]
fn direct_writes_of_aligned_pieces_read_back_through_the_page_cache_as_written() {
    // 8 KiB pieces; the second file starts mid-piece, so pieces across the boundary, pieces of the second file at
    // unaligned offsets and the short last piece go through the page cache, the rest past it (where the file system
    // takes direct writes at all: tmpfs does not, and then every piece is written the usual way).
    let (meta, data) = torrent(8192, &[("a", 5 * 8192 + 100, false), ("b", 3 * 8192, false)], true);
    let dir = tempfile::tempdir().unwrap();
    let mut reader = Storage::open(&meta, dir.path().join("content"), OpenMode::Leech).unwrap();
    let mut writer = reader.twin();
    writer.set_direct_writes(true);
    // Read once before the writes, so stale cached pages would show if the page cache were not kept coherent.
    let mut before = Vec::new();
    reader.read_piece(2, &mut before).unwrap();
    write_all(&mut writer, &meta, &data);
    for i in 0..meta.piece_count() {
        let mut got = Vec::new();
        reader.read_piece(i, &mut got).unwrap();
        assert!(got == piece(&meta, &data, i), "piece {i} differs");
    }
    assert_eq!(writer.sync_all_dirty().unwrap(), vec![0, 1]);
}

#[test]
fn files_allocated_up_front_have_their_full_length_and_take_pieces_as_sparse_ones_do() {
    let (meta, data) = torrent(4096, &[("a", 3 * 4096 + 7, false), ("b", 4096, false)], true);
    let dir = tempfile::tempdir().unwrap();
    let disk = disk::Disk::new(&meta, dir.path().join("content"), true).unwrap();
    disk.create(0, meta.files[0].length, true).unwrap();
    disk.create(1, meta.files[1].length, true).unwrap();
    assert_eq!(fs::metadata(dir.path().join("content/a")).unwrap().len(), 3 * 4096 + 7);
    let mut st = Storage::open(&meta, dir.path().join("content"), OpenMode::Leech).unwrap();
    write_all(&mut st, &meta, &data);
    let mut all = fs::read(dir.path().join("content/a")).unwrap();
    all.extend(fs::read(dir.path().join("content/b")).unwrap());
    assert!(all == data);
}

/// Files of 10, 20 and 10 bytes in 8-byte pieces, in two folders: file 1 (`b/mid`) shares piece 1 with file 0 and
/// piece 3 with file 2. With file 1 unwanted, neither it nor its folder exists until a shared piece is written; that
/// creates it sparse at its full size with only the shared piece's bytes in it.
#[test]
fn unwanted_files_are_created_only_by_a_shared_piece() {
    let (meta, data) = torrent(8, &[("a/first", 10, false), ("b/mid", 20, false), ("c/last", 10, false)], true);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("content");
    let wanted = [true, false, true];
    let mut st = Storage::open_selected(&meta, root.clone(), OpenMode::Leech, &wanted).unwrap();
    assert_eq!(st.wanted_files(), &wanted);
    assert_eq!(st.layout().wanted_pieces(&wanted).iter_ones().collect::<Vec<_>>(), vec![0, 1, 3, 4]);
    assert_eq!(fs::metadata(root.join("a/first")).unwrap().len(), 10);
    assert_eq!(fs::metadata(root.join("c/last")).unwrap().len(), 10);
    assert!(!root.join("b").exists(), "neither the unwanted file nor its folder is created");

    // Piece 0 lies in file 0 alone.
    st.write_piece(0, &piece(&meta, &data, 0)).unwrap();
    assert!(!root.join("b").exists());
    // Piece 1: bytes 8..10 of file 0 and 0..6 of file 1.
    st.write_piece(1, &piece(&meta, &data, 1)).unwrap();
    let mid = fs::read(root.join("b/mid")).unwrap();
    assert_eq!(mid.len(), 20, "created at its full size");
    assert_eq!(&mid[..6], &data[10..16]);
    assert!(mid[6..].iter().all(|&b| b == 0), "nothing but the shared piece's bytes");
    let mut scratch = Vec::new();
    assert!(st.verify_piece(1, &mut scratch).unwrap());
    assert!(!st.verify_piece(2, &mut scratch).unwrap());

    // A twin (the disk worker's) that did not create the file itself writes to it as it is.
    let mut twin = st.twin();
    twin.write_piece(3, &piece(&meta, &data, 3)).unwrap();
    assert_eq!(&fs::read(root.join("b/mid")).unwrap()[14..], &data[24..30]);

    // Reopened with everything wanted, the partial file is kept as it is and the rest can be written.
    drop((st, twin));
    let mut st = Storage::open_selected(&meta, root.clone(), OpenMode::Leech, &[true; 3]).unwrap();
    assert!(st.verify_piece(1, &mut scratch).unwrap() && st.verify_piece(3, &mut scratch).unwrap());
    st.write_piece(2, &piece(&meta, &data, 2)).unwrap();
    assert_eq!(fs::read(root.join("b/mid")).unwrap(), &data[10..30]);
}

/// An unwanted file that is missing counts as absent (its pieces are skipped by `check_all` without reading), and a
/// selection of the wrong length is refused.
#[test]
fn a_missing_unwanted_file_is_absent_and_a_bad_selection_is_refused() {
    let (meta, data) = torrent(8, &[("first", 16, false), ("second", 16, false), ("empty", 0, false)], true);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("content");
    assert!(matches!(
        Storage::open_selected(&meta, root.clone(), OpenMode::Leech, &[true]),
        Err(StorageError::Layout(_))
    ));
    let mut st = Storage::open_selected(&meta, root.clone(), OpenMode::Leech, &[true, false, false]).unwrap();
    for i in 0..2 {
        st.write_piece(i, &piece(&meta, &data, i)).unwrap();
    }
    assert_eq!(st.check_all(|_, _| {}), vec![true, true, false, false]);
    assert!(!root.join("second").exists() && !root.join("empty").exists());
    assert!(st.set_wanted_files(&[true]).is_err());
    // Wanting the empty file creates it at once: no piece ever will.
    st.set_wanted_files(&[true, false, true]).unwrap();
    assert_eq!(fs::metadata(root.join("empty")).unwrap().len(), 0);
    assert!(!root.join("second").exists());
    // Created since by another handle (the disk worker's): checked again.
    let mut twin = st.twin();
    twin.set_wanted_files(&[true, true, false]).unwrap();
    twin.write_piece(2, &piece(&meta, &data, 2)).unwrap();
    assert_eq!(st.check_all(|_, _| {}), vec![true, true, true, false]);
}
