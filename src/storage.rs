//! A torrent's data on disk: pieces mapped onto file spans, verified pieces written with one `pwrite` per span,
//! blocks read with `pread` straight into a send buffer, piece verification, and fsync of written files.
//!
//! Memory is O(files): spans are computed on demand by binary search (`layout`), and checking reads one piece at a
//! time into a caller's buffer. Path safety and the open-handle cache are described in `disk`.

mod disk;
mod error;
mod layout;
mod piece_bytes;
pub mod worker;

use std::path::{Path, PathBuf};

pub use disk::DEFAULT_MAX_OPEN_FILES;
pub use error::StorageError;
pub use layout::{Layout, Span, Spans};
pub use piece_bytes::PieceBytes;
pub use worker::{DiskDone, DiskWorker};

use crate::metainfo::Metainfo;
use disk::Disk;

/// Alignment of buffers, offsets and lengths for direct writes: a multiple of every common device block size.
const DIRECT_ALIGN: usize = 4096;

/// The largest block `read_block` serves; peers ask for 16 KiB and larger requests are refused (BEP 3 practice).
pub const MAX_BLOCK: u32 = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Create missing folders and wanted files at their final size (sparse), open read-write. An unwanted file is
    /// created (sparse, full size) only when a piece that touches it is written: a piece it shares with a wanted file.
    Leech,
    /// Open read-only; missing, short or refused files are reported in `issues()` and their pieces count as absent.
    Seed,
}

#[derive(Debug)]
pub enum FileProblem {
    Missing,
    Short {
        actual: u64,
        expected: u64,
    },
    /// Present but refused or unreadable (a symlink below the content path, a folder, a permission error...).
    Unusable(StorageError),
}

/// A data file a seed cannot fully serve; only pieces that touch it are affected.
#[derive(Debug)]
pub struct FileIssue {
    pub file: usize,
    pub path: PathBuf,
    pub problem: FileProblem,
}

pub struct Storage {
    layout: Layout,
    hashes: Vec<[u8; 20]>,
    disk: Disk,
    mode: OpenMode,
    issues: Vec<FileIssue>,
    /// Per file: known missing or unusable since `open`, so `check_all` skips its pieces without touching the disk
    /// (for a leech, an unwanted file not created yet: looked at again by `check_all`).
    absent: Vec<bool>,
    /// Per file: selected for download (all, unless the caller chose files). Seeds ignore it.
    wanted: Vec<bool>,
    /// Per file: known to exist at its full size, so writing to it needs no check (leech mode).
    ready: Vec<bool>,
    /// New files get their blocks up front (`TOYBT_ALLOCATE=full`, for measuring).
    allocate: bool,
    /// With direct writes on: an aligned copy of a piece goes here when its buffer is not aligned (see `PieceBytes`).
    direct: Option<Vec<u8>>,
}

impl Storage {
    /// `content_path` is the content itself: the file of a single-file torrent, the top folder of a multi-file one.
    /// Leech mode fails on the first file it cannot create; seed mode fails only on a broken layout.
    pub fn open(meta: &Metainfo, content_path: PathBuf, mode: OpenMode) -> Result<Storage, StorageError> {
        Storage::open_selected(meta, content_path, mode, &vec![true; meta.files.len()])
    }

    /// `open` with only the files whose entry in `wanted` (one per `Metainfo::files`) is true created up front; an
    /// unwanted file that is missing stays missing, its pieces absent, until a piece touching it is written.
    pub fn open_selected(
        meta: &Metainfo,
        content_path: PathBuf,
        mode: OpenMode,
        wanted: &[bool],
    ) -> Result<Storage, StorageError> {
        if wanted.len() != meta.files.len() {
            return Err(StorageError::Layout(format!(
                "{} files selected or not for a torrent of {} files",
                wanted.len(),
                meta.files.len()
            )));
        }
        let layout = Layout::new(meta)?;
        let disk = Disk::new(meta, content_path, mode == OpenMode::Leech)?;
        let mut absent = vec![false; meta.files.len()];
        let mut ready = vec![false; meta.files.len()];
        let mut issues = Vec::new();
        // For measuring (README, Performance): new files get their blocks up front instead of staying sparse.
        let allocate = std::env::var_os("TOYBT_ALLOCATE").is_some_and(|v| v == "full");
        for (i, f) in meta.files.iter().enumerate() {
            if f.padding {
                continue;
            }
            match mode {
                OpenMode::Leech if wanted[i] => {
                    disk.create(i, f.length, allocate)?;
                    ready[i] = true;
                }
                // A leftover of another size is put right when a piece is written to it (`ensure_file`).
                OpenMode::Leech => absent[i] = disk.inspect(i, false).is_ok_and(|m| m.is_none()),
                OpenMode::Seed => {
                    let problem = match disk.inspect(i, false) {
                        Ok(Some(m)) if m.len() >= f.length => continue,
                        Ok(Some(m)) => FileProblem::Short { actual: m.len(), expected: f.length },
                        Ok(None) => FileProblem::Missing,
                        Err(e) => FileProblem::Unusable(e),
                    };
                    absent[i] = !matches!(problem, FileProblem::Short { .. });
                    issues.push(FileIssue { file: i, path: disk.path(i).to_path_buf(), problem });
                }
            }
        }
        let wanted = wanted.to_vec();
        Ok(Storage {
            layout,
            hashes: meta.pieces.clone(),
            disk,
            mode,
            issues,
            absent,
            wanted,
            ready,
            allocate,
            direct: None,
        })
    }

    /// The same storage with file handles of its own, for the disk worker's thread: it writes and fsyncs through
    /// its copy while the loop reads through this one. Files waiting for an fsync here wait for it there.
    pub fn twin(&self) -> Storage {
        Storage {
            layout: self.layout.clone(),
            hashes: self.hashes.clone(),
            disk: self.disk.twin(),
            mode: self.mode,
            issues: Vec::new(),
            absent: self.absent.clone(),
            wanted: self.wanted.clone(),
            ready: self.ready.clone(),
            allocate: self.allocate,
            direct: None,
        }
    }

    /// Per file of the torrent: selected for download.
    pub fn wanted_files(&self) -> &[bool] {
        &self.wanted
    }

    /// Changes the selection (one entry per file; another length is refused). A file newly wanted is created now
    /// only if it is empty (no piece will ever create it); others are created by the first piece written to them.
    pub fn set_wanted_files(&mut self, wanted: &[bool]) -> Result<(), StorageError> {
        if wanted.len() != self.wanted.len() {
            return Err(StorageError::Layout(format!(
                "{} files selected or not for a torrent of {} files",
                wanted.len(),
                self.wanted.len()
            )));
        }
        self.wanted = wanted.to_vec();
        if self.mode == OpenMode::Leech {
            for (file, &w) in wanted.iter().enumerate() {
                if w && self.layout.file_length(file) == Some(0) {
                    self.ensure_file(file)?;
                }
            }
        }
        Ok(())
    }

    /// Makes every file that piece `index` writes to exist (unwanted files are created by their first piece).
    fn ensure_files_of(&mut self, index: u32) -> Result<(), StorageError> {
        let spans = self.layout.piece_spans(index).into_iter().flatten();
        let new: Vec<usize> = spans.filter(|s| !s.padding && !self.ready[s.file]).map(|s| s.file).collect();
        for file in new {
            self.ensure_file(file)?;
        }
        Ok(())
    }

    /// Makes `file` exist at its full size (and the folders above it) before the first write to it in this run.
    fn ensure_file(&mut self, file: usize) -> Result<(), StorageError> {
        if self.ready[file] || self.layout.is_padding(file) {
            return Ok(());
        }
        let length = self.layout.file_length(file).unwrap_or(0);
        self.disk.create(file, length, self.allocate)?;
        self.ready[file] = true;
        self.absent[file] = false;
        Ok(())
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn mode(&self) -> OpenMode {
        self.mode
    }

    pub fn piece_count(&self) -> u32 {
        self.layout.piece_count()
    }

    /// Size of piece `index`, or `None` past the last piece.
    pub fn piece_size(&self, index: u32) -> Option<u32> {
        self.layout.piece_size(index)
    }

    /// Where file `file` (an index into `Metainfo::files`) is on disk. Panics on an index out of range.
    pub fn path(&self, file: usize) -> &Path {
        self.disk.path(file)
    }

    /// Files found missing, short or unusable when opened for seeding (always empty for leeching).
    pub fn issues(&self) -> &[FileIssue] {
        &self.issues
    }

    /// Caps the open file handles (at least 1); the least recently used is closed to open another.
    pub fn set_max_open_files(&mut self, n: usize) {
        self.disk.set_max_open(n);
    }

    pub fn open_files(&self) -> usize {
        self.disk.open_count()
    }

    /// Writes whole pieces that lie in one file at an aligned offset past the page cache (`O_DIRECT`) from now on
    /// (see `write_piece`).
    pub fn set_direct_writes(&mut self, on: bool) {
        self.direct = on.then(Vec::new);
    }

    /// Writes a verified piece: one pwrite per file span; padding spans are skipped, and a file not created yet (an
    /// unwanted one, see `open_selected`) is created first. With direct writes on, a
    /// piece that is one aligned span is written past the page cache (copied into an aligned buffer first if `data` does
    /// not start at an aligned address); the rest
    /// (the last piece, pieces across files) through it.
    pub fn write_piece(&mut self, index: u32, data: &[u8]) -> Result<(), StorageError> {
        if self.mode == OpenMode::Seed {
            return Err(StorageError::ReadOnly);
        }
        let size = self.piece_size(index).ok_or_else(|| self.bad_index(index))?;
        if data.len() != size as usize {
            return Err(StorageError::PieceLength { index, expected: size, got: data.len() });
        }
        self.ensure_files_of(index)?;
        if self.direct.is_some() && self.write_direct(index, data)? {
            return Ok(());
        }
        for s in self.layout.piece_spans(index).into_iter().flatten() {
            if !s.padding {
                let part = &data[s.offset as usize..(s.offset + s.len) as usize];
                self.disk.write_at(s.file, part, s.file_offset)?;
            }
        }
        Ok(())
    }

    /// Where piece `index` would be written past the page cache, as (file, offset): direct writes are on and the
    /// piece is one aligned span of one file. Pieces whose spans follow each other are written together by
    /// `write_run`.
    pub fn direct_span(&self, index: u32) -> Option<(usize, u64)> {
        self.direct.as_ref()?;
        let mut spans = self.layout.piece_spans(index)?;
        let (Some(s), None) = (spans.next(), spans.next()) else { return None };
        let aligned = |n: u64| n.is_multiple_of(DIRECT_ALIGN as u64);
        (!s.padding && aligned(s.file_offset) && aligned(u64::from(s.len)) && self.mode != OpenMode::Seed)
            .then_some((s.file, s.file_offset))
    }

    /// Writes verified pieces `first`, `first + 1`, ... whose `direct_span`s follow each other in one file, with
    /// one call; one result per piece. If that call fails, or the pieces are not such a run, each is written on its
    /// own (`write_piece`), so each gets its own result.
    pub fn write_run(&mut self, first: u32, pieces: &[&[u8]]) -> Vec<Result<(), StorageError>> {
        if pieces.len() > 1
            && let Some(Ok(true)) = self.run_span(first, pieces).map(|(file, offset)| {
                self.ensure_files_of(first)?;
                self.disk.write_direct_vectored_at(file, pieces, offset)
            })
        {
            return pieces.iter().map(|_| Ok(())).collect();
        }
        (first..).zip(pieces).map(|(index, data)| self.write_piece(index, data)).collect()
    }

    /// The (file, offset) of a run of pieces from `first` that `write_run` can write with one call.
    fn run_span(&self, first: u32, pieces: &[&[u8]]) -> Option<(usize, u64)> {
        let (file, offset) = self.direct_span(first)?;
        let mut at = offset;
        for (index, data) in (first..).zip(pieces) {
            let whole = self.piece_size(index).is_some_and(|size| size as usize == data.len());
            let aligned = data.as_ptr().align_offset(DIRECT_ALIGN) == 0;
            if !whole || !aligned || self.direct_span(index) != Some((file, at)) {
                return None;
            }
            at += data.len() as u64;
        }
        Some((file, offset))
    }

    /// Writes piece `index` with `O_DIRECT` if it is one aligned span; false if it was not written.
    fn write_direct(&mut self, index: u32, data: &[u8]) -> Result<bool, StorageError> {
        let Some((file, offset)) = self.direct_span(index) else { return Ok(false) };
        let Some(bounce) = &mut self.direct else { return Ok(false) };
        let buf = if data.as_ptr().align_offset(DIRECT_ALIGN) == 0 {
            data
        } else {
            if bounce.len() < data.len() + DIRECT_ALIGN {
                bounce.resize(data.len() + DIRECT_ALIGN, 0);
            }
            let start = bounce.as_ptr().align_offset(DIRECT_ALIGN);
            let buf = &mut bounce[start..start + data.len()];
            buf.copy_from_slice(data);
            buf
        };
        let written = self.disk.write_direct_at(file, buf, offset)?;
        if !written {
            // The file system refuses direct writes: stop trying.
            log::debug!("direct writes refused; writing through the page cache");
            self.direct = None;
        }
        Ok(written)
    }

    /// Appends `length` bytes at `begin` in piece `index` to `out` (padding reads as zeros). The range must be
    /// 1..=`MAX_BLOCK` bytes inside the piece. On an error `out` is left as it was.
    pub fn read_block(&mut self, index: u32, begin: u32, length: u32, out: &mut Vec<u8>) -> Result<(), StorageError> {
        let piece_size = self.piece_size(index).ok_or_else(|| self.bad_index(index))?;
        let range_error = StorageError::BlockRange { index, begin, length, piece_size };
        if length == 0 || length > MAX_BLOCK {
            return Err(range_error);
        }
        let Some(spans) = self.layout.block_spans(index, begin, length) else { return Err(range_error) };
        read_spans(&mut self.disk, spans, length, out)
    }

    /// Appends the whole of piece `index` to `out`.
    pub fn read_piece(&mut self, index: u32, out: &mut Vec<u8>) -> Result<(), StorageError> {
        let size = self.piece_size(index).ok_or_else(|| self.bad_index(index))?;
        let spans = self.layout.piece_spans(index).ok_or_else(|| self.bad_index(index))?;
        read_spans(&mut self.disk, spans, size, out)
    }

    /// Whether `data` is piece `index` according to the torrent's SHA-1 (false for an index out of range).
    pub fn piece_matches(&self, index: u32, data: &[u8]) -> bool {
        self.hashes.get(index as usize).is_some_and(|h| crate::sha1::digest(data) == *h)
    }

    /// Reads piece `index` into `scratch` (cleared first, its capacity reused) and checks its SHA-1.
    pub fn verify_piece(&mut self, index: u32, scratch: &mut Vec<u8>) -> Result<bool, StorageError> {
        scratch.clear();
        self.read_piece(index, scratch)?;
        Ok(self.piece_matches(index, scratch))
    }

    /// Checks every piece against its hash, one piece in memory at a time; `progress(done, total)` after each.
    /// A piece that cannot be read counts as absent: quietly for missing or short files, with a warning otherwise.
    pub fn check_all(&mut self, mut progress: impl FnMut(u32, u32)) -> Vec<bool> {
        if self.mode == OpenMode::Leech {
            // An unwanted file missing at open may have been created since by a piece written to it (on this or
            // another handle of the same storage, e.g. the disk worker's).
            for file in 0..self.absent.len() {
                if self.absent[file] {
                    self.absent[file] = self.disk.inspect(file, false).is_ok_and(|m| m.is_none());
                }
            }
        }
        let total = self.piece_count();
        let mut have = Vec::with_capacity(total as usize);
        let scratch_size = (self.layout.piece_length() as u64).min(self.layout.total_length());
        let mut scratch = Vec::with_capacity(scratch_size as usize);
        let mut last_warned: Option<PathBuf> = None;
        for index in 0..total {
            let touches_absent = self.layout.piece_spans(index).into_iter().flatten().any(|s| self.absent[s.file]);
            let ok = !touches_absent
                && match self.verify_piece(index, &mut scratch) {
                    Ok(ok) => ok,
                    Err(e) => {
                        warn_unexpected(&e, &mut last_warned);
                        false
                    }
                };
            have.push(ok);
            progress(index + 1, total);
        }
        have
    }

    /// fsyncs every file written since the last call and returns their indices (ascending). On an error, files not
    /// yet synced stay pending for the next call.
    pub fn sync_all_dirty(&mut self) -> Result<Vec<usize>, StorageError> {
        self.disk.sync_dirty()
    }

    /// Files written (or marked) since the last successful `sync_all_dirty`, in no particular order.
    pub fn unsynced_files(&self) -> &[usize] {
        self.disk.dirty_files()
    }

    /// Makes the next `sync_all_dirty` fsync `file` too: its content was verified by reading it and is about to be
    /// vouched for, but it may still sit in the page cache after a crash of an earlier run.
    pub fn mark_unsynced(&mut self, file: usize) {
        self.disk.mark_dirty(file);
    }

    fn bad_index(&self, index: u32) -> StorageError {
        StorageError::PieceIndex { index, count: self.piece_count() }
    }
}

fn read_spans(disk: &mut Disk, spans: Spans<'_>, length: u32, out: &mut Vec<u8>) -> Result<(), StorageError> {
    let start = out.len();
    // Zero-filled, so padding spans need no work.
    out.resize(start + length as usize, 0);
    for s in spans {
        if s.padding {
            continue;
        }
        let from = start + s.offset as usize;
        if let Err(e) = disk.read_at(s.file, &mut out[from..from + s.len as usize], s.file_offset) {
            out.truncate(start);
            return Err(e);
        }
    }
    Ok(())
}

/// Short files end in `UnexpectedEof`, files removed since `open` in `NotFound`: both are just pieces we lack. Other
/// errors are worth a line, once per file rather than once per piece.
fn warn_unexpected(e: &StorageError, last_warned: &mut Option<PathBuf>) {
    let quiet = matches!(e.io_kind(), Some(std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::NotFound));
    let path = match e {
        StorageError::Io { path, .. } | StorageError::Unsafe { path, .. } => Some(path),
        _ => None,
    };
    if quiet || (path.is_some() && path == last_warned.as_ref()) {
        return;
    }
    log::warn!("{e}");
    *last_warned = path.cloned();
}

#[cfg(test)]
mod tests;
