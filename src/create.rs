//! Making a .torrent from a file or a folder, byte for byte the info dictionary mktorrent makes, so both give the
//! same info hash for the same content, piece length and private flag.
//!
//! What mktorrent 1.1 does, and so what we do (checked by tests against Debian's mktorrent):
//! - every regular file under the folder is included: hidden files, empty files, files reached through symbolic links
//!   (to files or folders); other kinds (fifos, sockets, devices) are skipped; a broken link or a link loop is an
//!   error;
//! - files are sorted by their whole relative path as bytes (`a.txt` before `a/x`, `Z` before `a`);
//! - `info` holds `files` (each `length`, `path`) or `length`, then `name`, `piece length`, `pieces`, and `private`
//!   only when set; several tracker URLs go to `announce-list`, the first also to `announce`.
//!
//! transmission-create 3.00 agrees only on some folders: it skips hidden and empty files, sorts names ignoring case
//! and always writes `private` (0 or 1), so its hash equals ours for a private torrent of such a folder.
//!
//! Hashing streams through one piece-sized buffer, so memory does not grow with the data.

use std::fs;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::bencode::Encoder;
use crate::error::{Error, Result};
use crate::metainfo::{MAX_PIECE_LENGTH, MAX_TORRENT_BYTES, Metainfo, component_problem};

/// Smallest piece length `create` accepts: one request block.
pub const MIN_PIECE_LENGTH: u32 = 16 << 10;
/// Automatic piece lengths stop here; a larger one can still be asked for.
const MAX_AUTO_PIECE_LENGTH: u32 = 16 << 20;
/// The automatic piece length is the smallest that keeps the piece count at or under this (so 1000 to 2000 pieces).
const MAX_AUTO_PIECES: u64 = 2000;

/// One file to put in the torrent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Components below the top folder, or `[name]` for a single file.
    pub path: Vec<String>,
    /// Where to read it.
    pub disk: PathBuf,
    pub length: u64,
}

/// What a path holds, in torrent order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub name: String,
    pub multi_file: bool,
    pub files: Vec<SourceFile>,
    pub total_length: u64,
    /// Things that are not regular files or folders, left out.
    pub skipped: Vec<PathBuf>,
}

/// Everything about the torrent that is not the content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Tiers of tracker URLs (the first URL of the first tier also becomes `announce`).
    pub trackers: Vec<Vec<String>>,
    /// `None` picks one with [`auto_piece_length`].
    pub piece_length: Option<u32>,
    pub private: bool,
    pub comment: Option<String>,
    /// Seconds since the Unix epoch; `None` leaves the field out (reproducible torrents).
    pub creation_date: Option<i64>,
    pub created_by: String,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            trackers: Vec::new(),
            piece_length: None,
            private: false,
            comment: None,
            creation_date: None,
            created_by: format!("toybt {}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// The smallest power of two from 16 KiB to 16 MiB that cuts `total` bytes into at most 2000 pieces.
pub fn auto_piece_length(total: u64) -> u32 {
    let mut pl = MIN_PIECE_LENGTH;
    while pl < MAX_AUTO_PIECE_LENGTH && total.div_ceil(pl as u64) > MAX_AUTO_PIECES {
        pl *= 2;
    }
    pl
}

fn utf8_name(name: &std::ffi::OsStr, disk: &Path) -> Result<String> {
    let Some(name) = name.to_str() else {
        return Err(Error::bad_input(format!("{}: the file name is not valid UTF-8", disk.display())));
    };
    if let Some(problem) = component_problem(name) {
        return Err(Error::bad_input(format!(
            "{}: the name \"{name}\" {problem}, so it cannot go in a torrent",
            disk.display()
        )));
    }
    Ok(name.to_string())
}

/// Follows links like mktorrent does (it `stat`s every entry); a broken link is the user's to fix.
fn stat(path: &Path) -> Result<fs::Metadata> {
    fs::metadata(path).map_err(|e| match e.kind() {
        ErrorKind::NotFound if path.symlink_metadata().is_ok() => {
            Error::bad_input(format!("{}: broken symbolic link", path.display()))
        }
        ErrorKind::NotFound => Error::bad_input(format!("{}: no such file or folder", path.display())),
        _ => Error::io(path.display(), &e),
    })
}

/// A folder still to list during `scan`.
struct Folder {
    disk: PathBuf,
    path: Vec<String>,
    /// (device, inode) of this folder and every folder above it: meeting one again means a symbolic link loop.
    ancestors: Vec<(u64, u64)>,
}

/// Lists the files of `path` (a file or a folder) in torrent order.
pub fn scan(path: &Path) -> Result<Content> {
    let meta = stat(path)?;
    let name_os = match path.file_name() {
        Some(n) => n.to_os_string(),
        // `.`, `..` or a path ending in them: name the torrent after the folder it really is.
        None => {
            let real = fs::canonicalize(path).map_err(|e| Error::io(path.display(), &e))?;
            real.file_name()
                .map(|n| n.to_os_string())
                .ok_or_else(|| Error::bad_input(format!("{}: has no name to give the torrent", path.display())))?
        }
    };
    let name = utf8_name(&name_os, path)?;
    if meta.is_file() {
        if meta.len() == 0 {
            return Err(Error::bad_input(format!(
                "{}: the file is empty; a torrent needs at least one byte",
                path.display()
            )));
        }
        let file = SourceFile { path: vec![name.clone()], disk: path.to_path_buf(), length: meta.len() };
        return Ok(Content {
            name,
            multi_file: false,
            total_length: meta.len(),
            files: vec![file],
            skipped: Vec::new(),
        });
    }
    if !meta.is_dir() {
        return Err(Error::bad_input(format!("{}: neither a file nor a folder", path.display())));
    }

    let mut files = Vec::new();
    let mut skipped = Vec::new();
    let mut todo =
        vec![Folder { disk: path.to_path_buf(), path: Vec::new(), ancestors: vec![(meta.dev(), meta.ino())] }];
    while let Some(Folder { disk: dir, path: components, ancestors }) = todo.pop() {
        let entries = fs::read_dir(&dir).map_err(|e| Error::io(dir.display(), &e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(dir.display(), &e))?;
            let disk = entry.path();
            let mut path = components.clone();
            path.push(utf8_name(&entry.file_name(), &disk)?);
            let meta = stat(&disk)?;
            if meta.is_file() {
                files.push(SourceFile { path, disk, length: meta.len() });
            } else if meta.is_dir() {
                let id = (meta.dev(), meta.ino());
                if ancestors.contains(&id) {
                    return Err(Error::bad_input(format!(
                        "{}: a symbolic link loop (the folder contains itself)",
                        disk.display()
                    )));
                }
                let mut below = ancestors.clone();
                below.push(id);
                todo.push(Folder { disk, path, ancestors: below });
            } else {
                skipped.push(disk);
            }
        }
    }
    if files.is_empty() {
        return Err(Error::bad_input(format!("{}: the folder holds no files", path.display())));
    }
    // mktorrent sorts with strcmp on the joined path; components hold no `/` or NUL, so this is the same order.
    files.sort_by_cached_key(|f| f.path.join("/"));
    let mut total: u64 = 0;
    for f in &files {
        total =
            total.checked_add(f.length).ok_or_else(|| Error::bad_input("the files add up to more than 2^64 bytes"))?;
    }
    if total == 0 {
        return Err(Error::bad_input(format!(
            "{}: every file is empty; a torrent needs at least one byte",
            path.display()
        )));
    }
    Ok(Content { name, multi_file: true, files, total_length: total, skipped })
}

/// SHA-1 of every piece, concatenated. Reads each file once, in order, through one piece-sized buffer;
/// `progress` hears the number of bytes hashed so far after each piece.
pub fn hash_pieces(content: &Content, piece_length: u32, progress: &mut dyn FnMut(u64)) -> Result<Vec<u8>> {
    let pl = piece_length as usize;
    let piece_count = content.total_length.div_ceil(piece_length as u64);
    let mut hashes = Vec::with_capacity(piece_count as usize * 20);
    let mut buf = vec![0u8; pl];
    let mut filled = 0usize;
    let mut done: u64 = 0;
    for f in &content.files {
        let shown = f.disk.display();
        let mut file = fs::File::open(&f.disk).map_err(|e| Error::io(&shown, &e))?;
        let mut left = f.length;
        while left > 0 {
            let want = (pl - filled).min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = match file.read(&mut buf[filled..filled + want]) {
                Ok(0) => return Err(Error::runtime(format!("{shown}: the file got shorter while it was hashed"))),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(&shown, &e)),
            };
            filled += n;
            left -= n as u64;
            if filled == pl {
                hashes.extend_from_slice(&crate::sha1::digest(&buf));
                filled = 0;
                done += pl as u64;
                progress(done);
            }
        }
    }
    if filled > 0 {
        hashes.extend_from_slice(&crate::sha1::digest(&buf[..filled]));
        progress(done + filled as u64);
    }
    Ok(hashes)
}

/// The .torrent bytes. Keys are written in sorted order, as bencode requires.
pub fn encode(content: &Content, piece_length: u32, pieces: &[u8], opts: &Options) -> Vec<u8> {
    let mut out = Vec::with_capacity(pieces.len() + 256 + content.files.len() * 64);
    let mut e = Encoder { out: &mut out };
    e.begin_dict();
    let urls: Vec<&String> = opts.trackers.iter().flatten().collect();
    if let Some(first) = urls.first() {
        e.str("announce").str(first);
    }
    if urls.len() > 1 {
        e.str("announce-list").begin_list();
        for tier in &opts.trackers {
            e.begin_list();
            for url in tier {
                e.str(url);
            }
            e.end();
        }
        e.end();
    }
    if let Some(c) = &opts.comment {
        e.str("comment").str(c);
    }
    e.str("created by").str(&opts.created_by);
    if let Some(d) = opts.creation_date {
        e.str("creation date").int(d);
    }
    e.str("info").begin_dict();
    if content.multi_file {
        e.str("files").begin_list();
        for f in &content.files {
            e.begin_dict().str("length").int(f.length as i64).str("path").begin_list();
            for c in &f.path {
                e.str(c);
            }
            e.end().end();
        }
        e.end();
    } else {
        e.str("length").int(content.total_length as i64);
    }
    e.str("name").str(&content.name).str("piece length").int(piece_length as i64).str("pieces").bytes(pieces);
    if opts.private {
        e.str("private").int(1);
    }
    e.end().end();
    out
}

/// The piece length to use, checked so the torrent stays loadable.
pub fn choose_piece_length(content: &Content, asked: Option<u32>) -> Result<u32> {
    let pl = match asked {
        None => return Ok(auto_piece_length(content.total_length)),
        Some(pl) => pl,
    };
    if pl < MIN_PIECE_LENGTH || pl as u64 > MAX_PIECE_LENGTH {
        return Err(Error::usage(format!("piece length {pl} is out of range: it must be between 16 KiB and 256 MiB")));
    }
    // Leave room for the file list: it is small beside the hashes unless there are very many files.
    let hashes = content.total_length.div_ceil(pl as u64) * 20;
    let paths: u64 = content.files.iter().map(|f| 32 + f.path.iter().map(|c| c.len() as u64 + 4).sum::<u64>()).sum();
    if hashes + paths > MAX_TORRENT_BYTES - 4096 {
        return Err(Error::usage(format!(
            "piece length {pl} makes a torrent larger than 64 MiB for {} bytes; choose a larger one",
            content.total_length
        )));
    }
    Ok(pl)
}

/// Scans `path`, hashes it and encodes the torrent; the result is loaded back with our own loader, so whatever
/// `create` writes, `info`, `seed` and `leech` accept.
pub fn create(path: &Path, opts: &Options, progress: &mut dyn FnMut(u64, u64)) -> Result<(Vec<u8>, Metainfo)> {
    let content = scan(path)?;
    create_from(&content, opts, progress)
}

/// [`create`] for content already scanned (so a caller can report what it found first).
pub fn create_from(
    content: &Content,
    opts: &Options,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Vec<u8>, Metainfo)> {
    let piece_length = choose_piece_length(content, opts.piece_length)?;
    let total = content.total_length;
    let pieces = hash_pieces(content, piece_length, &mut |done| progress(done, total))?;
    let bytes = encode(content, piece_length, &pieces, opts);
    let meta = Metainfo::from_bytes(&bytes)
        .map_err(|e| Error::bad_input(format!("cannot make a valid torrent of this content: {e}")))?;
    Ok((bytes, meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_piece_length_aims_at_1000_to_2000_pieces() {
        assert_eq!(auto_piece_length(1), 16 << 10);
        assert_eq!(auto_piece_length(2000 * 16384), 16 << 10);
        assert_eq!(auto_piece_length(2000 * 16384 + 1), 32 << 10);
        for total in [100u64 << 20, 700 << 20, 4 << 30, 20 << 30] {
            let pl = auto_piece_length(total);
            let n = total.div_ceil(pl as u64);
            assert!(pl.is_power_of_two() && (1000..=2000).contains(&n), "{total}: {pl} gives {n}");
        }
        assert_eq!(auto_piece_length(1 << 50), 16 << 20);
    }

    #[test]
    fn single_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let path = dir.path().join("data.bin");
        fs::write(&path, &data).unwrap();
        let opts = Options {
            trackers: vec![vec!["http://127.0.0.1:6969/announce".into()]],
            piece_length: Some(32768),
            ..Options::default()
        };
        let mut last = 0;
        let (bytes, m) = create(&path, &opts, &mut |done, total| {
            assert!(done > last && total == 100_000);
            last = done;
        })
        .unwrap();
        assert_eq!(last, 100_000);
        assert_eq!((m.name.as_str(), m.total_length, m.piece_count(), m.multi_file), ("data.bin", 100_000, 4, false));
        for i in 0..4u32 {
            let start = i as usize * 32768;
            assert!(m.piece_matches(i, &data[start..start + m.piece_size(i) as usize]));
        }
        assert_eq!(m.created_by.as_deref(), Some(concat!("toybt ", env!("CARGO_PKG_VERSION"))));
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        assert!(!bytes.windows(13).any(|w| w == b"creation date"));
        assert!(!bytes.windows(13).any(|w| w == b"announce-list"));
    }

    #[test]
    fn folder_order_matches_mktorrent_and_pieces_span_files() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("top");
        for (p, len) in [("a/x", 3usize), ("a.txt", 5), ("Z/y", 16383), (".hidden", 1), ("empty", 0), ("b", 16385)] {
            let p = top.join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, vec![b'q'; len]).unwrap();
        }
        std::os::unix::fs::symlink("b", top.join("link")).unwrap();
        let c = scan(&top).unwrap();
        let order: Vec<String> = c.files.iter().map(|f| f.path.join("/")).collect();
        assert_eq!(order, [".hidden", "Z/y", "a.txt", "a/x", "b", "empty", "link"]);
        assert_eq!(c.total_length, 1 + 16383 + 5 + 3 + 16385 + 16385);
        let opts = Options { trackers: vec![vec!["u1".into()], vec!["u2".into(), "u3".into()]], ..Options::default() };
        let (_, m) = create_from(&c, &opts, &mut |_, _| {}).unwrap();
        assert_eq!(m.piece_length, 16384);
        assert_eq!(m.announce.as_deref(), Some("u1"));
        assert_eq!(m.announce_list, vec![vec!["u1".to_string()], vec!["u2".to_string(), "u3".to_string()]]);
        let all = vec![b'q'; c.total_length as usize];
        for i in 0..m.piece_count() {
            let start = i as usize * 16384;
            assert!(m.piece_matches(i, &all[start..start + m.piece_size(i) as usize]));
        }
    }

    #[test]
    fn refuses_what_cannot_be_a_torrent() {
        let dir = tempfile::tempdir().unwrap();
        let err = |p: &Path| scan(p).unwrap_err().to_string();
        assert!(err(&dir.path().join("missing")).contains("no such file"));
        assert!(err(dir.path()).contains("holds no files"));
        fs::write(dir.path().join("e"), b"").unwrap();
        assert!(err(dir.path()).contains("every file is empty"));
        assert!(err(&dir.path().join("e")).contains("the file is empty"));
        std::os::unix::fs::symlink("nowhere", dir.path().join("broken")).unwrap();
        assert!(err(dir.path()).contains("broken symbolic link"));
        fs::remove_file(dir.path().join("broken")).unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        std::os::unix::fs::symlink("..", dir.path().join("d/up")).unwrap();
        assert!(err(dir.path()).contains("loop"));
        fs::remove_file(dir.path().join("d/up")).unwrap();
        fs::write(dir.path().join("d/a\\b"), b"x").unwrap();
        assert!(err(dir.path()).contains("contains `\\`"));
    }

    #[test]
    fn piece_length_limits() {
        let c = Content {
            name: "n".into(),
            multi_file: false,
            files: vec![SourceFile { path: vec!["n".into()], disk: PathBuf::from("n"), length: 1 << 40 }],
            total_length: 1 << 40,
            skipped: Vec::new(),
        };
        assert!(choose_piece_length(&c, Some(1000)).is_err());
        assert!(choose_piece_length(&c, Some((256 << 20) + 1)).is_err());
        assert!(choose_piece_length(&c, Some(16384)).unwrap_err().to_string().contains("larger than 64 MiB"));
        assert_eq!(choose_piece_length(&c, Some(1 << 20)).unwrap(), 1 << 20);
        assert_eq!(choose_piece_length(&c, Some(1_000_000)).unwrap(), 1_000_000);
    }
}
