//! The resume record: which pieces are verified and durable, and what each data file looked like when that was true.
//!
//! It lives beside the content, never inside it: `DIR/NAME.toybt` for content at `DIR/NAME` (aria2 keeps its
//! `.aria2` control file the same way), so a multi-file torrent's folder holds exactly the torrent's files.
//!
//! A record is only as good as the files it describes: at start it is trusted for a file only if the file's size and
//! modification time are still what the record says. A file that differs (written after the last record, truncated,
//! touched by someone else) has its pieces checked again; pieces in files that match are trusted without hashing.
//! The record is written atomically (temporary file, fsync, rename, fsync of the folder) and only after the data it
//! vouches for has been fsynced, so a crash at any moment leaves either the old record or the new one.
//!
//! What a stamp cannot see: a file changed in place with its size kept and its modification time set back
//! (`touch -d`, `utimensat`) looks untouched, so its pieces are trusted without hashing. Nothing short of hashing
//! everything at every start would notice; `--recheck` does that on request.
//!
//! While a session runs, [`Keeper`] writes the record. It remembers the stamp each file had when its content was last
//! verified or fsynced by us, so a file changed by someone else in the meantime (truncated, deleted, rewritten) is
//! written to the record as unknown and rechecked at the next start, instead of being vouched for with its new stamp.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use log::warn;

use crate::bencode::{self, Encoder, Value};
use crate::metainfo::Metainfo;
use crate::storage::{Storage, StorageError};

const VERSION: i64 = 1;

/// What a data file looked like: enough to notice it changed without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeRecord {
    pub info_hash: [u8; 20],
    /// The verified pieces as a BEP 3 bitfield (high bit of byte 0 is piece 0).
    pub pieces: Vec<u8>,
    /// One entry per file of the torrent, in torrent order; `None` for padding files and files that did not exist.
    pub files: Vec<Option<FileStamp>>,
}

/// Where the record of torrent `info_hash`, its content at `content_path`, is kept in the state folder `state`:
/// `resume/<info hash in hex>-<16 hex digits of the content path's SHA-1>.resume`, so the download folder holds only
/// what the torrent names. The content's folder is made canonical (the content itself may not exist yet), so one
/// download reached by two spellings has one record, and one torrent in two places has two.
pub fn record_path(state: &Path, info_hash: &[u8; 20], content_path: &Path) -> PathBuf {
    let folder = match content_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let folder = fs::canonicalize(folder).unwrap_or_else(|_| std::path::absolute(folder).unwrap_or(folder.into()));
    let content = match content_path.file_name() {
        Some(name) => folder.join(name),
        None => folder,
    };
    let path_hash = crate::sha1::digest(content.as_os_str().as_encoded_bytes());
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    state.join("resume").join(format!("{}-{}.resume", hex(info_hash), hex(&path_hash[..8])))
}

/// Where toybt kept the record before the state folder: beside the content, `PATH.toybt`. Still read once (and moved
/// to `record_path`), and used when there is no state folder at all.
pub fn legacy_record_path(content_path: &Path) -> PathBuf {
    let mut name = content_path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".toybt");
    content_path.with_file_name(name)
}

/// The stamp of the file at `path`, or `None` if there is no such regular file.
pub fn stamp(path: &Path) -> io::Result<Option<FileStamp>> {
    let md = match fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !md.is_file() {
        return Ok(None);
    }
    let mtime_ns = match md.modified()?.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_nanos()).unwrap_or(i64::MAX),
    };
    Ok(Some(FileStamp { size: md.len(), mtime_ns }))
}

pub fn encode(r: &ResumeRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + r.pieces.len() + r.files.len() * 24);
    let mut e = Encoder { out: &mut out };
    e.begin_dict().str("files").begin_list();
    for f in &r.files {
        e.begin_list();
        if let Some(s) = f {
            e.int(i64::try_from(s.size).unwrap_or(i64::MAX)).int(s.mtime_ns);
        }
        e.end();
    }
    e.end().str("info hash").bytes(&r.info_hash).str("pieces").bytes(&r.pieces).str("version").int(VERSION).end();
    out
}

/// Reads a record; any damage is an error saying what is wrong (the caller reports it and rechecks instead).
pub fn decode(bytes: &[u8]) -> Result<ResumeRecord, String> {
    let v = bencode::decode(bytes).map_err(|e| format!("not bencode ({e})"))?;
    if v.get("version").and_then(Value::as_int) != Some(VERSION) {
        return Err("unknown version".into());
    }
    let info_hash: [u8; 20] = v
        .get("info hash")
        .and_then(Value::as_bytes)
        .and_then(|b| b.try_into().ok())
        .ok_or("missing or bad info hash")?;
    let pieces = v.get("pieces").and_then(Value::as_bytes).ok_or("missing piece bitfield")?.to_vec();
    let mut files = Vec::new();
    for f in v.get("files").and_then(Value::as_list).ok_or("missing file list")? {
        let items = f.as_list().ok_or("bad file entry")?;
        files.push(match items {
            [] => None,
            [size, mtime] => Some(FileStamp {
                size: size.as_int().and_then(|s| u64::try_from(s).ok()).ok_or("bad file size")?,
                mtime_ns: mtime.as_int().ok_or("bad file time")?,
            }),
            _ => return Err("bad file entry".into()),
        });
    }
    Ok(ResumeRecord { info_hash, pieces, files })
}

/// Writes `bytes` to `path` so that a crash leaves the old content or the new, never a mix: temporary file, fsync,
/// rename over the old one, fsync of the folder so the rename itself is durable.
/// A temporary file that could not be completed (a full disk, say) is removed rather than left behind.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp_name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let written = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()
}

/// Why a record could not be brought up to date.
#[derive(Debug)]
pub enum SaveError {
    /// fsync of a data file failed: the data written to it since the last record may be lost (Linux forgets the
    /// failed pages), so the record no longer vouches for that file. The record itself was still written if it could be.
    Sync(StorageError),
    /// The record file could not be written; the previous one (if any) is still in place.
    Write(PathBuf, io::Error),
}

impl std::fmt::Display for SaveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SaveError::Sync(e) => write!(f, "cannot flush data to disk: {e}"),
            SaveError::Write(path, e) => write!(f, "cannot write the resume record {}: {e}", path.display()),
        }
    }
}

/// Keeps one torrent's record up to date while its session runs (see the module comment).
#[derive(Debug, Clone)]
pub struct Keeper {
    path: PathBuf,
    info_hash: [u8; 20],
    files: Vec<KeptFile>,
    /// Where the next `audit` with a limit goes on, so every file is looked at in turn.
    audit_from: usize,
}

#[derive(Debug, Clone, Default)]
struct KeptFile {
    padding: bool,
    /// The stamp of the content we verified or fsynced; `None` when we cannot vouch for the file.
    known: Option<FileStamp>,
    /// fsynced since the last record was written: its stamp changed because of us.
    synced: bool,
    /// Its fsync failed in this run: never vouched for again before a restart rechecks it.
    poisoned: bool,
    /// Already reported as changed by someone else, so the log says it once.
    reported: bool,
}

impl Keeper {
    /// A keeper for the record at `path`, taking the files as they are now (just checked) as what it vouches for.
    /// Files whose content was verified by reading it should be marked unsynced in `storage` before the first `save`,
    /// so that they are fsynced before a record relies on them.
    pub fn new(path: PathBuf, meta: &Metainfo, storage: &Storage) -> Keeper {
        let files = meta
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| KeptFile {
                padding: f.padding,
                known: if f.padding { None } else { stamp(storage.path(i)).ok().flatten() },
                ..KeptFile::default()
            })
            .collect();
        Keeper { path, info_hash: meta.info_hash, files, audit_from: 0 }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the record say that the pieces in `pieces` (a wire bitfield) are verified: fsync of every data file
    /// written since the last record, then the record written atomically. A file that failed to sync, or that someone
    /// else changed, is recorded as unknown so its pieces are checked at the next start.
    pub fn save(&mut self, storage: &mut Storage, pieces: &[u8]) -> Result<(), SaveError> {
        let mut sync_error = None;
        match storage.sync_all_dirty() {
            Ok(files) => files.into_iter().for_each(|f| self.files[f].synced = true),
            Err(e) => {
                for &f in storage.unsynced_files() {
                    self.files[f].poisoned = true;
                }
                sync_error = Some(e);
            }
        }
        self.audit(storage, usize::MAX);
        for (i, f) in self.files.iter_mut().enumerate() {
            if f.synced && !f.padding {
                f.known = stamp(storage.path(i)).ok().flatten();
            }
        }
        let record = ResumeRecord {
            info_hash: self.info_hash,
            pieces: pieces.to_vec(),
            files: self.files.iter().map(|f| if f.poisoned { None } else { f.known }).collect(),
        };
        let written = write_atomic(&self.path, &encode(&record));
        if written.is_ok() {
            self.files.iter_mut().for_each(|f| f.synced = false);
        }
        match (sync_error, written) {
            (Some(e), _) => Err(SaveError::Sync(e)),
            (None, Err(e)) => Err(SaveError::Write(self.path.clone(), e)),
            (None, Ok(())) => Ok(()),
        }
    }

    /// Looks at up to `max_files` files (in turn) that we have not written since the last record, and forgets the
    /// stamp of any that changed under us, with a warning naming it. Returns how many changed.
    pub fn audit(&mut self, storage: &Storage, max_files: usize) -> usize {
        let n = self.files.len();
        let mut changed = 0;
        for step in 0..n.min(max_files) {
            let i = (self.audit_from + step) % n;
            let f = &mut self.files[i];
            if f.padding || f.synced || f.reported || storage.unsynced_files().contains(&i) {
                continue;
            }
            let Some(was) = f.known else { continue };
            let now = stamp(storage.path(i)).ok().flatten();
            if now == Some(was) {
                continue;
            }
            let path = storage.path(i).display();
            match now {
                None => warn!("{path} was deleted or replaced under us; its pieces will be checked at the next start"),
                Some(s) if s.size != was.size => warn!(
                    "{path} changed size under us ({} bytes, was {}); its pieces will be checked at the next start",
                    s.size, was.size
                ),
                Some(_) => warn!("{path} was modified by someone else; its pieces will be checked at the next start"),
            }
            f.known = None;
            f.reported = true;
            changed += 1;
        }
        if n > 0 {
            self.audit_from = (self.audit_from + n.min(max_files)) % n;
        }
        changed
    }
}

/// What a record lets us skip: the pieces trusted without hashing, and the files whose pieces must be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Per piece: verified according to a record whose files still match.
    pub trusted: Vec<bool>,
    /// Indices (into `meta.files`) of files that differ from the record: every piece touching them is rechecked.
    pub changed_files: Vec<usize>,
}

/// Compares a record with the files as they are now (`current[i]` is the stamp of `meta.files[i]`).
/// Errors say why the whole record cannot be used (another torrent, a different shape).
pub fn plan(meta: &Metainfo, record: &ResumeRecord, current: &[Option<FileStamp>]) -> Result<Plan, String> {
    if record.info_hash != meta.info_hash {
        return Err("it belongs to another torrent".into());
    }
    let pieces = meta.pieces.len();
    if record.pieces.len() != pieces.div_ceil(8) || record.files.len() != meta.files.len() {
        return Err("its size does not match the torrent".into());
    }
    let changed_files: Vec<usize> = (0..meta.files.len())
        .filter(|&i| !meta.files[i].padding && (record.files[i].is_none() || record.files[i] != current[i]))
        .collect();
    let mut trusted: Vec<bool> = (0..pieces).map(|i| record.pieces[i / 8] & (0x80 >> (i % 8)) != 0).collect();
    for &f in &changed_files {
        for piece in pieces_of_file(meta, f) {
            trusted[piece] = false;
        }
    }
    Ok(Plan { trusted, changed_files })
}

/// The pieces that hold at least one byte of file `f` (none for an empty file).
pub fn pieces_of_file(meta: &Metainfo, f: usize) -> std::ops::Range<usize> {
    let file = &meta.files[f];
    if file.length == 0 {
        return 0..0;
    }
    let pl = meta.piece_length as u64;
    (file.offset / pl) as usize..(file.offset + file.length).div_ceil(pl) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::FileEntry;

    fn meta(lengths: &[u64], piece_length: u32) -> Metainfo {
        let mut files = Vec::new();
        let mut offset = 0;
        for (i, &length) in lengths.iter().enumerate() {
            files.push(FileEntry { path: vec![format!("f{i}")], length, offset, padding: false });
            offset += length;
        }
        let pieces = vec![[0; 20]; offset.div_ceil(piece_length as u64) as usize];
        Metainfo::for_tests([7; 20], "t", piece_length, pieces, files, true)
    }

    fn stamp_of(size: u64, mtime_ns: i64) -> Option<FileStamp> {
        Some(FileStamp { size, mtime_ns })
    }

    #[test]
    fn round_trips_and_rejects_damage() {
        let r = ResumeRecord {
            info_hash: [9; 20],
            pieces: vec![0b1010_0000, 0xff],
            files: vec![stamp_of(5, 1_700_000_000_123_456_789), None, stamp_of(0, -5)],
        };
        let bytes = encode(&r);
        assert_eq!(decode(&bytes), Ok(r));
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err());
        }
        assert!(decode(b"d7:versioni2ee").unwrap_err().contains("version"));
    }

    #[test]
    fn trusts_matching_files_and_rechecks_changed_ones() {
        // Files of 10, 20 and 10 bytes with 8-byte pieces: file 1 spans pieces 1..=3.
        let m = meta(&[10, 20, 10], 8);
        let files = vec![stamp_of(10, 1), stamp_of(20, 2), stamp_of(10, 3)];
        let r = ResumeRecord { info_hash: m.info_hash, pieces: vec![0b1111_1000], files: files.clone() };
        let p = plan(&m, &r, &files).unwrap();
        assert_eq!(p.trusted, vec![true; 5]);
        assert!(p.changed_files.is_empty());

        let mut now = files.clone();
        now[1] = stamp_of(20, 99);
        let p = plan(&m, &r, &now).unwrap();
        assert_eq!(p.changed_files, vec![1]);
        assert_eq!(p.trusted, vec![true, false, false, false, true]);

        now[1] = None;
        assert_eq!(plan(&m, &r, &now).unwrap().changed_files, vec![1]);
    }

    #[test]
    fn refuses_a_record_of_another_torrent_or_shape() {
        let m = meta(&[10], 8);
        let r = ResumeRecord { info_hash: [1; 20], pieces: vec![0], files: vec![None] };
        assert!(plan(&m, &r, &[None]).unwrap_err().contains("another torrent"));
        let r = ResumeRecord { info_hash: m.info_hash, pieces: vec![0, 0], files: vec![None] };
        assert!(plan(&m, &r, &[None]).is_err());
    }

    #[test]
    fn atomic_write_replaces_and_stamps_see_changes() {
        let dir = tempfile::tempdir().unwrap();
        let content = dir.path().join("movie.mkv");
        let rec = legacy_record_path(&content);
        assert_eq!(rec, dir.path().join("movie.mkv.toybt"));
        write_atomic(&rec, b"one").unwrap();
        write_atomic(&rec, b"two").unwrap();
        assert_eq!(fs::read(&rec).unwrap(), b"two");
        assert!(!dir.path().join("movie.mkv.toybt.tmp").exists());

        assert_eq!(stamp(&content).unwrap(), None);
        fs::write(&content, b"abc").unwrap();
        assert_eq!(stamp(&content).unwrap().unwrap().size, 3);
        fs::create_dir(dir.path().join("folder")).unwrap();
        assert_eq!(stamp(&dir.path().join("folder")).unwrap(), None, "a folder is not the file we expect");
    }

    fn open_leech(m: &Metainfo, dir: &Path) -> Storage {
        Storage::open(m, dir.join("t"), crate::storage::OpenMode::Leech).unwrap()
    }

    fn set_mtime(path: &Path, secs: u64) {
        let f = OpenOptions::new().write(true).open(path).unwrap();
        f.set_modified(UNIX_EPOCH + std::time::Duration::from_secs(secs)).unwrap();
    }

    #[test]
    fn keeper_vouches_for_what_it_synced_and_not_for_files_changed_under_it() {
        let dir = tempfile::tempdir().unwrap();
        let m = meta(&[10, 20, 10], 8);
        let mut st = open_leech(&m, dir.path());
        let rec = dir.path().join("t.toybt");
        let mut keeper = Keeper::new(rec.clone(), &m, &st);
        st.write_piece(0, &[1; 8]).unwrap();
        keeper.save(&mut st, &[0b1000_0000]).unwrap();
        let r = decode(&fs::read(&rec).unwrap()).unwrap();
        assert_eq!((r.info_hash, r.pieces.clone()), (m.info_hash, vec![0b1000_0000]));
        let now: Vec<_> = (0..3).map(|i| stamp(st.path(i)).unwrap()).collect();
        assert_eq!(r.files, now);

        // Someone else rewrites file 2 (we did not write it): the record stops vouching for it, and says so once.
        fs::write(st.path(2), [9; 10]).unwrap();
        set_mtime(st.path(2), 1_000);
        assert_eq!(keeper.audit(&st, usize::MAX), 1);
        assert_eq!(keeper.audit(&st, usize::MAX), 0);
        // Our own writes to file 1 are not a change by someone else.
        st.write_piece(2, &[2; 8]).unwrap();
        set_mtime(st.path(1), 2_000);
        assert_eq!(keeper.audit(&st, usize::MAX), 0);
        keeper.save(&mut st, &[0b1010_0000]).unwrap();
        let r = decode(&fs::read(&rec).unwrap()).unwrap();
        assert_eq!(r.files, vec![now[0], stamp(st.path(1)).unwrap(), None]);
        let p = plan(&m, &r, &(0..3).map(|i| stamp(st.path(i)).unwrap()).collect::<Vec<_>>()).unwrap();
        assert_eq!(p.changed_files, vec![2]);
    }

    #[test]
    fn keeper_syncs_marked_files_and_leaves_no_temporary_file_when_it_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let m = meta(&[10], 8);
        let mut st = open_leech(&m, dir.path());
        st.mark_unsynced(0);
        let mut keeper = Keeper::new(dir.path().join("t.toybt"), &m, &st);
        keeper.save(&mut st, &[0]).unwrap();
        assert!(st.unsynced_files().is_empty());

        let missing = dir.path().join("no such folder").join("t.toybt");
        let mut keeper = Keeper::new(missing.clone(), &m, &st);
        let err = keeper.save(&mut st, &[0]).unwrap_err();
        assert!(matches!(err, SaveError::Write(..)), "{err}");
        assert!(err.to_string().contains(&missing.display().to_string()), "{err}");

        // A record that cannot be completed is not left half-written beside the old one.
        let rec = dir.path().join("full.toybt");
        fs::create_dir(dir.path().join("full.toybt.tmp")).unwrap();
        assert!(write_atomic(&rec, b"x").is_err());
        assert!(!rec.exists());
    }

    #[test]
    fn pieces_of_files_at_boundaries() {
        let m = meta(&[8, 0, 9], 8);
        assert_eq!(pieces_of_file(&m, 0), 0..1);
        assert_eq!(pieces_of_file(&m, 1), 0..0);
        assert_eq!(pieces_of_file(&m, 2), 1..3);
    }
}
