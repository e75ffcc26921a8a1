//! The data files on disk: where each one lives, opening it without leaving the content path, a small cache of open
//! handles, and which files were written since the last fsync.
//!
//! Path safety. The content path itself is the caller's choice and is trusted (it may be a symlink the user made).
//! Everything below it comes from the torrent: paths are built only by pushing validated components (re-checked here:
//! no empty, `.`, `..`, separators or NUL) onto the content path, and before a file is created or opened every one of
//! those components is `lstat`ed: a symlink anywhere below the content path is refused, as is a non-folder where a
//! folder belongs or a non-regular file where a data file belongs. This stops a torrent (or a stale layout on disk)
//! from steering writes outside the content path. It does not stop a local attacker who swaps a folder for a symlink
//! between the check and the open: that would need `openat`/`O_NOFOLLOW`, which std does not expose portably and no
//! allowed dependency provides.
//!
//! Open handles. At most `max_open` files are open at once (64 by default), the least recently used is closed to make
//! room, so a torrent with thousands of files stays far below the fd limit while the usual case (one file, or pieces
//! arriving mostly in order) never reopens anything. Every reopen repeats the path checks.
//!
//! Durability. A file written through a handle since the last `sync_dirty` is dirty; it stays dirty if its handle is
//! closed, and `sync_dirty` reopens it to fsync. Once more than `WRITEBACK_CUSHION` bytes are waiting for the next
//! fsync, the kernel is asked after every `WRITEBACK_EVERY` bytes written to a file to start writing that file's dirty
//! pages out (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`, which does not wait for the pages, only for room in the
//! device's queue), so the periodic fsync finds little left to do: left to the kernel, a few seconds of download (GiBs
//! at loopback speed) pile up in the page cache and the fsync stalls the writer (the disk worker, and through its
//! bounded queue the download) for seconds, in every leech of a swarm at once. Below the cushion nothing is started:
//! a burst that a fast disk flushes in a fraction of a second is left to the page cache, where starting writeback
//! would make a busy disk's queue the writer's pace (eight leechers writing 256 MiB each finished in 6.2-7.0 s with
//! writeback started from the first byte, 4.4-5.0 s without, when the loop still wrote). Per piece rather than per
//! 8 MiB, the calls cost the leech 10% more CPU. Direct writes (`write_direct_at`) leave no dirty pages behind, so
//! this applies to what goes through the page cache. On Linux fsync flushes the
//! file's pages whichever descriptor wrote them, and since 4.16 a writeback error not yet seen is reported to the next
//! fsync even through a new descriptor.

use std::collections::HashSet;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

use super::error::StorageError;
use crate::metainfo::Metainfo;

pub const DEFAULT_MAX_OPEN_FILES: usize = 64;
/// Bytes written to a file between requests to start its writeback.
const WRITEBACK_EVERY: u64 = 8 << 20;
/// Bytes written since the last fsync that are left to the page cache before writeback is started.
const WRITEBACK_CUSHION: u64 = 256 << 20;

#[derive(Clone)]
struct DiskFile {
    /// Below the content path; empty for the single file of a single-file torrent.
    rel: PathBuf,
    full: PathBuf,
}

struct Slot {
    file: usize,
    handle: File,
    last_use: u64,
    /// Bytes written through this handle since its file's writeback was last started.
    unstarted: u64,
    /// Why the file could only be opened read-only (a read-only folder or filesystem): writes fail with this cause,
    /// reads still work, so what is already verified can be served.
    write_refused: Option<i32>,
    /// A second descriptor opened with `O_DIRECT` for whole aligned pieces (see `write_direct_at`), once needed.
    direct: Option<File>,
}

pub struct Disk {
    root: PathBuf,
    files: Vec<DiskFile>,
    writable: bool,
    max_open: usize,
    open: Vec<Slot>,
    tick: u64,
    dirty: Vec<usize>,
    is_dirty: Vec<bool>,
    /// Bytes written to any file since the last complete `sync_dirty`.
    unsynced: u64,
}

impl Disk {
    pub fn new(meta: &Metainfo, root: PathBuf, writable: bool) -> Result<Disk, StorageError> {
        if !meta.multi_file && meta.files.len() != 1 {
            return Err(StorageError::Layout(format!("a single-file torrent with {} files", meta.files.len())));
        }
        let mut files = Vec::with_capacity(meta.files.len());
        let mut seen = HashSet::new();
        for (i, f) in meta.files.iter().enumerate() {
            let rel = if meta.multi_file { relative_path(i, &f.path)? } else { PathBuf::new() };
            // Two entries for one path would have their pieces overwrite each other.
            if !f.padding && !seen.insert(rel.clone()) {
                return Err(StorageError::Layout(format!("file {i} repeats the path {}", rel.display())));
            }
            let full = if meta.multi_file { root.join(&rel) } else { root.clone() };
            files.push(DiskFile { rel, full });
        }
        let n = files.len();
        Ok(Disk {
            root,
            files,
            writable,
            max_open: DEFAULT_MAX_OPEN_FILES,
            open: Vec::new(),
            tick: 0,
            dirty: Vec::new(),
            is_dirty: vec![false; n],
            unsynced: 0,
        })
    }

    pub fn path(&self, file: usize) -> &Path {
        &self.files[file].full
    }

    /// The same files with a handle cache of their own, for another thread (the disk worker writes through one,
    /// the loop reads through the other). Files marked dirty here stay dirty there too: whoever syncs next must
    /// sync them.
    pub fn twin(&self) -> Disk {
        Disk {
            root: self.root.clone(),
            files: self.files.clone(),
            writable: self.writable,
            max_open: self.max_open,
            open: Vec::new(),
            tick: 0,
            dirty: self.dirty.clone(),
            is_dirty: self.is_dirty.clone(),
            unsynced: self.unsynced,
        }
    }

    pub fn set_max_open(&mut self, n: usize) {
        self.max_open = n.max(1);
        while self.open.len() > self.max_open {
            self.evict();
        }
    }

    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Walks the file's path from the content path down, `lstat`ing each torrent-made component; `None` when the file
    /// (or a folder above it) does not exist. With `create_dirs`, missing folders are made on the way.
    pub fn inspect(&self, file: usize, create_dirs: bool) -> Result<Option<Metadata>, StorageError> {
        let f = &self.files[file];
        if f.rel.as_os_str().is_empty() {
            // The content path is the file itself: trusted, so followed if it is a symlink.
            if create_dirs && let Some(parent) = self.root.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent).map_err(|e| StorageError::io(parent, "creating folder", e))?;
            }
            return match fs::metadata(&self.root) {
                Ok(m) if m.is_file() => Ok(Some(m)),
                Ok(_) => Err(StorageError::Unsafe { path: self.root.clone(), reason: "is not a regular file" }),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(StorageError::io(&self.root, "inspecting", e)),
            };
        }
        if create_dirs {
            fs::create_dir_all(&self.root).map_err(|e| StorageError::io(&self.root, "creating folder", e))?;
        }
        let depth = f.rel.components().count();
        let mut path = self.root.clone();
        for (i, part) in f.rel.components().enumerate() {
            path.push(part);
            let last = i + 1 == depth;
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if last || !create_dirs {
                        return Ok(None);
                    }
                    match fs::create_dir(&path) {
                        Ok(()) => continue,
                        // Someone made it in between: check what it is like any existing entry.
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                            fs::symlink_metadata(&path).map_err(|e| StorageError::io(path.clone(), "inspecting", e))?
                        }
                        Err(e) => return Err(StorageError::io(path, "creating folder", e)),
                    }
                }
                Err(e) => return Err(StorageError::io(path, "inspecting", e)),
            };
            let kind = meta.file_type();
            if kind.is_symlink() {
                return Err(StorageError::Unsafe { path, reason: "is a symbolic link" });
            }
            if last {
                if !kind.is_file() {
                    return Err(StorageError::Unsafe { path, reason: "is not a regular file" });
                }
                return Ok(Some(meta));
            }
            if !kind.is_dir() {
                return Err(StorageError::Unsafe { path, reason: "is not a folder" });
            }
        }
        Ok(None)
    }

    /// Makes the file exist with exactly `length` bytes; a new file is extended with `set_len`, so it stays sparse,
    /// or with `allocate` its blocks are reserved up front (`fallocate`; sparse where the file system cannot).
    pub fn create(&self, file: usize, length: u64, allocate: bool) -> Result<(), StorageError> {
        let path = &self.files[file].full;
        match self.inspect(file, true)? {
            Some(m) if m.len() == length => Ok(()),
            Some(_) => {
                // A leftover of another size: the torrent says how long this file is, so make it that long.
                let f = OpenOptions::new().write(true).open(path).map_err(|e| StorageError::io(path, "opening", e))?;
                f.set_len(length).map_err(|e| StorageError::io(path, "resizing", e))
            }
            None => {
                // create_new (O_EXCL) also refuses a symlink that appeared since the check.
                let f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(path)
                    .map_err(|e| StorageError::io(path, "creating", e))?;
                if length > 0 && !(allocate && reserve(&f, length)) {
                    f.set_len(length).map_err(|e| StorageError::io(path, "resizing", e))?;
                }
                Ok(())
            }
        }
    }

    /// Writes `data` at `offset` past the page cache (`O_DIRECT`): `data`'s address, length and `offset` must be
    /// multiples of the device's block size (`DIRECT_ALIGN` covers every common one). `Ok(false)` if the file system
    /// does not take direct writes (tmpfs, some network file systems): the caller writes through the page cache
    /// instead, and so should later calls. Linux keeps the page cache coherent with such writes (the written range's
    /// cached pages are dropped), so reads through the other handle see the new data. The file is dirty as with
    /// `write_at`: the device may still hold the data in its own cache until the next fsync.
    pub fn write_direct_at(&mut self, file: usize, data: &[u8], offset: u64) -> Result<bool, StorageError> {
        self.write_direct_vectored_at(file, &[data], offset)
    }

    /// `write_direct_at` of `parts` one after another from `offset`, in one call (one request to the device where
    /// one write per part would make one each); every part must be aligned as `write_direct_at` says.
    pub fn write_direct_vectored_at(
        &mut self,
        file: usize,
        parts: &[&[u8]],
        offset: u64,
    ) -> Result<bool, StorageError> {
        let slot = self.slot_for_writing(file)?;
        let path = &self.files[file].full;
        if self.open[slot].direct.is_none() {
            use std::os::unix::fs::OpenOptionsExt;
            // The path was checked when the buffered handle was opened just now (or earlier in this run).
            match OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path) {
                Ok(f) => self.open[slot].direct = Some(f),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(false),
                Err(e) => return Err(StorageError::io(path, "opening for direct writing", e)),
            }
        }
        self.mark_dirty(file);
        let path = &self.files[file].full;
        let Some(direct) = &self.open[slot].direct else { return Ok(false) };
        match write_all_vectored_at(direct, parts, offset) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
            Err(e) => Err(StorageError::io(path, "writing", e)),
        }
    }

    pub fn write_at(&mut self, file: usize, data: &[u8], offset: u64) -> Result<(), StorageError> {
        let slot = self.slot_for_writing(file)?;
        // Dirty from here on even if the write fails half-way: whatever reached the page cache must be synced too.
        self.mark_dirty(file);
        let open = &mut self.open[slot];
        open.handle.write_all_at(data, offset).map_err(|e| StorageError::io(&self.files[file].full, "writing", e))?;
        open.unstarted += data.len() as u64;
        self.unsynced += data.len() as u64;
        if writeback_due(open.unstarted, self.unsynced) {
            open.unstarted = 0;
            start_writeback(&open.handle);
        }
        Ok(())
    }

    pub fn read_at(&mut self, file: usize, out: &mut [u8], offset: u64) -> Result<(), StorageError> {
        let slot = self.slot(file)?;
        self.open[slot].handle.read_exact_at(out, offset).map_err(|e| {
            // std's "failed to fill whole buffer" does not say that the file is too short, which is what happened.
            let e = if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(e.kind(), "the file ends early (shorter than the torrent says)")
            } else {
                e
            };
            StorageError::io(&self.files[file].full, "reading", e)
        })
    }

    /// Files written since the last `sync_dirty` (or marked with `mark_dirty`), in no particular order.
    pub fn dirty_files(&self) -> &[usize] {
        &self.dirty
    }

    /// Makes the next `sync_dirty` fsync `file` even though we did not write it, e.g. because its content was just
    /// verified and will be vouched for by a resume record.
    pub fn mark_dirty(&mut self, file: usize) {
        if !self.is_dirty[file] {
            self.is_dirty[file] = true;
            self.dirty.push(file);
        }
    }

    /// fsyncs every file written since the last call; returns their indices in order. On an error the file that
    /// failed and those not reached stay dirty, so calling again retries them.
    pub fn sync_dirty(&mut self) -> Result<Vec<usize>, StorageError> {
        let mut synced = Vec::with_capacity(self.dirty.len());
        while let Some(&file) = self.dirty.last() {
            let slot = self.slot(file)?;
            self.open[slot].handle.sync_all().map_err(|e| StorageError::io(&self.files[file].full, "syncing", e))?;
            self.dirty.pop();
            self.is_dirty[file] = false;
            synced.push(file);
        }
        self.unsynced = 0;
        synced.sort_unstable();
        Ok(synced)
    }

    /// The cache slot holding an open handle for `file`, opening it (and closing the least recently used) if needed.
    /// The open slot of `file`, to write to: an error if the storage is read-only or opening it for writing failed.
    fn slot_for_writing(&mut self, file: usize) -> Result<usize, StorageError> {
        if !self.writable {
            return Err(StorageError::ReadOnly);
        }
        let slot = self.slot(file)?;
        if let Some(code) = self.open[slot].write_refused {
            let path = &self.files[file].full;
            return Err(StorageError::io(path, "opening for writing", io::Error::from_raw_os_error(code)));
        }
        Ok(slot)
    }

    fn slot(&mut self, file: usize) -> Result<usize, StorageError> {
        self.tick += 1;
        let slot = match self.open.iter().position(|s| s.file == file) {
            Some(slot) => slot,
            None => {
                let (handle, write_refused) = self.open_file(file)?;
                if self.open.len() >= self.max_open {
                    self.evict();
                }
                self.open.push(Slot { file, handle, last_use: 0, unstarted: 0, write_refused, direct: None });
                self.open.len() - 1
            }
        };
        self.open[slot].last_use = self.tick;
        Ok(slot)
    }

    fn evict(&mut self) {
        if let Some((lru, _)) = self.open.iter().enumerate().min_by_key(|(_, s)| s.last_use) {
            self.open.swap_remove(lru);
        }
    }

    /// Opens the file read-write when writable, else read-only. A writable file that may only be read (a read-only
    /// folder or filesystem) is opened read-only with the refusal kept for `write_at` to report.
    fn open_file(&self, file: usize) -> Result<(File, Option<i32>), StorageError> {
        let path = &self.files[file].full;
        if self.inspect(file, false)?.is_none() {
            return Err(StorageError::io(path, "opening", io::ErrorKind::NotFound.into()));
        }
        let opened = OpenOptions::new().read(true).write(self.writable).open(path);
        match opened {
            Ok(f) => Ok((f, None)),
            Err(e) if self.writable && is_write_refusal(&e) => {
                let code = e.raw_os_error();
                let f = OpenOptions::new().read(true).open(path).map_err(|e| StorageError::io(path, "opening", e))?;
                Ok((f, code))
            }
            Err(e) => Err(StorageError::io(path, "opening", e)),
        }
    }
}

/// Reserves the blocks of a new, empty file of `length` bytes; false if the file system cannot (the caller then
/// extends it sparse, and a full disk shows at the first write that does not fit, as without this).
#[cfg(target_os = "linux")]
fn reserve(f: &File, length: u64) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(len) = i64::try_from(length) else { return false };
    // SAFETY: the descriptor is open for the duration of the call, borrowed from `f`; only integers are passed.
    unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn reserve(_f: &File, _length: u64) -> bool {
    false
}

/// Errors that forbid writing a file but not reading it.
fn is_write_refusal(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem)
        && e.raw_os_error().is_some()
}

/// Defence in depth: metainfo validates components already, but this is the one place that turns them into a path.
fn relative_path(file: usize, parts: &[String]) -> Result<PathBuf, StorageError> {
    if parts.is_empty() {
        return Err(StorageError::Layout(format!("file {file} has an empty path")));
    }
    let mut rel = PathBuf::new();
    for part in parts {
        let single = matches!(Path::new(part).components().collect::<Vec<_>>().as_slice(), [Component::Normal(_)]);
        if !single || part.contains(['/', '\0']) {
            return Err(StorageError::Layout(format!("file {file} has an unsafe path component {part:?}")));
        }
        rel.push(part);
    }
    Ok(rel)
}

/// Whether to start a file's writeback, with `unstarted` bytes written to it since the last start and `unsynced`
/// written to all files since the last fsync.
fn writeback_due(unstarted: u64, unsynced: u64) -> bool {
    unstarted >= WRITEBACK_EVERY && unsynced > WRITEBACK_CUSHION
}

/// Asks the kernel to start writing the file's dirty pages to the device now, without waiting for them. Advisory: an
/// error here (a file system that does not support it) changes nothing, and write errors surface at the next fsync.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd;
    use std::os::raw::{c_int, c_uint};
    const SYNC_FILE_RANGE_WRITE: c_uint = 2;
    // SAFETY: glibc's declaration (`off64_t` is `i64`); the call only reads its integer arguments.
    unsafe extern "C" {
        fn sync_file_range(fd: c_int, offset: i64, nbytes: i64, flags: c_uint) -> c_int;
    }
    // SAFETY: the descriptor is open for the duration of the call, borrowed from `file`. Length 0: to the end.
    unsafe { sync_file_range(file.as_raw_fd(), 0, 0, SYNC_FILE_RANGE_WRITE) };
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File) {}

/// `pwritev` of every byte of `parts` from `offset`. After a short write (a device nearly full) the rest goes one
/// part at a time with `write_all_at`: its error says why, or, unaligned for `O_DIRECT`, it is `EINVAL`, and the
/// caller writes through the page cache instead.
fn write_all_vectored_at(file: &File, parts: &[&[u8]], offset: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let iov: Vec<libc::iovec> =
        parts.iter().map(|p| libc::iovec { iov_base: p.as_ptr() as *mut libc::c_void, iov_len: p.len() }).collect();
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let at = libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    let count = libc::c_int::try_from(iov.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let written = loop {
        // SAFETY: `iov` points at `parts`, which outlive the call and are only read.
        let n = unsafe { libc::pwritev(file.as_raw_fd(), iov.as_ptr(), count, at) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let (mut skip, mut at) = (written.min(total), offset + written as u64);
    for part in parts {
        let done = skip.min(part.len());
        skip -= done;
        if done < part.len() {
            file.write_all_at(&part[done..], at)?;
            at += (part.len() - done) as u64;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writeback_starts_only_past_the_cushion_and_then_every_stride() {
        // A burst smaller than the cushion is left to the page cache, however many strides it spans.
        assert!(!writeback_due(WRITEBACK_EVERY, WRITEBACK_EVERY));
        assert!(!writeback_due(WRITEBACK_CUSHION, WRITEBACK_CUSHION));
        // Past it, a file is started once it has a stride's worth not yet started, not before.
        assert!(writeback_due(WRITEBACK_EVERY, WRITEBACK_CUSHION + 1));
        assert!(!writeback_due(WRITEBACK_EVERY - 1, WRITEBACK_CUSHION + 1));
    }
}
