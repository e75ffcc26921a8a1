//! Pieces <-> file spans, with no IO. One entry per file; a piece's spans are found by binary search over file
//! offsets, so memory is O(files) whatever the torrent's size.

use super::error::StorageError;
use crate::metainfo::Metainfo;

/// A run of bytes that lies in one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Index into `Metainfo::files`.
    pub file: usize,
    /// Where the run starts in that file.
    pub file_offset: u64,
    /// Where the run starts in the requested range (the piece, or the block).
    pub offset: u32,
    pub len: u32,
    /// A BEP 47 padding file: zeros in piece space, nothing on disk.
    pub padding: bool,
}

#[derive(Debug, Clone, Copy)]
struct Extent {
    offset: u64,
    length: u64,
    padding: bool,
}

impl Extent {
    fn end(&self) -> u64 {
        self.offset + self.length
    }
}

#[derive(Debug, Clone)]
pub struct Layout {
    piece_length: u32,
    piece_count: u32,
    total_length: u64,
    files: Vec<Extent>,
}

impl Layout {
    /// Checks what every later computation relies on, so none of them can overflow or index out of bounds: files
    /// are contiguous from 0, add up to `total_length`, and the piece count matches.
    pub fn new(meta: &Metainfo) -> Result<Layout, StorageError> {
        let bad = |why: String| Err(StorageError::Layout(why));
        if meta.piece_length == 0 {
            return bad("piece length is 0".into());
        }
        let mut files = Vec::with_capacity(meta.files.len());
        let mut next = 0u64;
        for (i, f) in meta.files.iter().enumerate() {
            if f.offset != next {
                return bad(format!("file {i} starts at {} instead of {next}", f.offset));
            }
            next = match next.checked_add(f.length) {
                Some(n) => n,
                None => return bad(format!("file {i} is too long")),
            };
            files.push(Extent { offset: f.offset, length: f.length, padding: f.padding });
        }
        if next != meta.total_length {
            return bad(format!("files add up to {next} bytes but the total length is {}", meta.total_length));
        }
        let expected = meta.total_length.div_ceil(meta.piece_length as u64);
        if meta.pieces.len() as u64 != expected {
            return bad(format!("{} piece hashes for {expected} pieces", meta.pieces.len()));
        }
        let piece_count = match u32::try_from(expected) {
            Ok(n) => n,
            Err(_) => return bad(format!("{expected} pieces is more than a piece index can address")),
        };
        Ok(Layout { piece_length: meta.piece_length, piece_count, total_length: meta.total_length, files })
    }

    pub fn piece_count(&self) -> u32 {
        self.piece_count
    }

    pub fn piece_length(&self) -> u32 {
        self.piece_length
    }

    pub fn total_length(&self) -> u64 {
        self.total_length
    }

    /// Size of piece `index`, or `None` past the last piece.
    pub fn piece_size(&self, index: u32) -> Option<u32> {
        if index >= self.piece_count {
            return None;
        }
        let start = index as u64 * self.piece_length as u64;
        Some((self.total_length - start).min(self.piece_length as u64) as u32)
    }

    /// The spans of a whole piece, or `None` past the last piece.
    pub fn piece_spans(&self, index: u32) -> Option<Spans<'_>> {
        let size = self.piece_size(index)?;
        Some(self.spans_at(index as u64 * self.piece_length as u64, size))
    }

    /// The spans of `len` bytes at `begin` in piece `index`; `None` unless the range lies inside the piece.
    pub fn block_spans(&self, index: u32, begin: u32, len: u32) -> Option<Spans<'_>> {
        let size = self.piece_size(index)?;
        if begin as u64 + len as u64 > size as u64 {
            return None;
        }
        Some(self.spans_at(index as u64 * self.piece_length as u64 + begin as u64, len))
    }

    /// Length of file `file`, or `None` past the last file.
    pub fn file_length(&self, file: usize) -> Option<u64> {
        self.files.get(file).map(|f| f.length)
    }

    /// Whether file `file` is a BEP 47 padding file (false past the last file).
    pub fn is_padding(&self, file: usize) -> bool {
        self.files.get(file).is_some_and(|f| f.padding)
    }

    /// The pieces to download for a selection of files (`wanted`, one entry per file; missing entries count as
    /// unwanted): every piece that holds a byte of a wanted file other than padding.
    pub fn wanted_pieces(&self, wanted: &[bool]) -> crate::bitfield::Bitfield {
        let mut bits = crate::bitfield::Bitfield::new(self.piece_count);
        for (file, f) in self.files.iter().enumerate() {
            if !f.padding && wanted.get(file).copied().unwrap_or(false) {
                for p in self.file_pieces(file) {
                    bits.set(p);
                }
            }
        }
        bits
    }

    /// The pieces a file's bytes fall in (empty for an empty file).
    pub fn file_pieces(&self, file: usize) -> std::ops::Range<u32> {
        let Some(f) = self.files.get(file) else { return 0..0 };
        if f.length == 0 {
            return 0..0;
        }
        let plen = self.piece_length as u64;
        (f.offset / plen) as u32..f.end().div_ceil(plen) as u32
    }

    fn spans_at(&self, start: u64, len: u32) -> Spans<'_> {
        // Ends are non-decreasing because files are contiguous; empty files (end == start) are skipped here too.
        let file = self.files.partition_point(|f| f.end() <= start);
        Spans { files: &self.files, file, pos: start, base: start, end: start + len as u64 }
    }
}

/// Iterator over the file spans of a range; allocates nothing.
#[derive(Debug, Clone)]
pub struct Spans<'a> {
    files: &'a [Extent],
    file: usize,
    pos: u64,
    base: u64,
    end: u64,
}

impl Iterator for Spans<'_> {
    type Item = Span;

    fn next(&mut self) -> Option<Span> {
        while self.pos < self.end {
            let f = self.files.get(self.file)?;
            let index = self.file;
            self.file += 1;
            if f.end() <= self.pos {
                continue;
            }
            let stop = f.end().min(self.end);
            let span = Span {
                file: index,
                file_offset: self.pos - f.offset,
                offset: (self.pos - self.base) as u32,
                len: (stop - self.pos) as u32,
                padding: f.padding,
            };
            self.pos = stop;
            return Some(span);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::FileEntry;

    fn meta(piece_length: u32, files: &[(u64, bool)]) -> Metainfo {
        let mut offset = 0;
        let files: Vec<FileEntry> = files
            .iter()
            .enumerate()
            .map(|(i, &(length, padding))| {
                let e = FileEntry { path: vec![format!("f{i}")], length, offset, padding };
                offset += length;
                e
            })
            .collect();
        let pieces = vec![[0; 20]; offset.div_ceil(piece_length as u64) as usize];
        Metainfo::for_tests([0; 20], "t", piece_length, pieces, files, true)
    }

    fn spans(l: &Layout, index: u32) -> Vec<(usize, u64, u32, u32, bool)> {
        l.piece_spans(index).unwrap().map(|s| (s.file, s.file_offset, s.offset, s.len, s.padding)).collect()
    }

    #[test]
    fn pieces_cross_file_boundaries_with_non_power_of_two_length() {
        // 10 + 7 + 13 = 30 bytes in pieces of 6: the last piece is 6, the boundaries fall mid-piece.
        let l = Layout::new(&meta(6, &[(10, false), (7, false), (13, false)])).unwrap();
        assert_eq!(l.piece_count(), 5);
        assert_eq!(spans(&l, 0), vec![(0, 0, 0, 6, false)]);
        assert_eq!(spans(&l, 1), vec![(0, 6, 0, 4, false), (1, 0, 4, 2, false)]);
        assert_eq!(spans(&l, 2), vec![(1, 2, 0, 5, false), (2, 0, 5, 1, false)]);
        assert_eq!(spans(&l, 4), vec![(2, 7, 0, 6, false)]);
        assert!(l.piece_spans(5).is_none());
    }

    #[test]
    fn short_last_piece() {
        let l = Layout::new(&meta(7, &[(20, false)])).unwrap();
        assert_eq!(l.piece_count(), 3);
        assert_eq!(l.piece_size(2), Some(6));
        assert_eq!(spans(&l, 2), vec![(0, 14, 0, 6, false)]);
        assert_eq!(l.piece_size(3), None);
    }

    #[test]
    fn empty_files_never_appear_in_spans() {
        // Empty files at the start, between two files on a piece boundary, mid-piece, and at the end.
        let l = Layout::new(&meta(
            4,
            &[(0, false), (4, false), (0, false), (3, false), (0, false), (2, false), (0, false)],
        ))
        .unwrap();
        assert_eq!(l.piece_count(), 3);
        assert_eq!(spans(&l, 0), vec![(1, 0, 0, 4, false)]);
        assert_eq!(spans(&l, 1), vec![(3, 0, 0, 3, false), (5, 0, 3, 1, false)]);
        assert_eq!(spans(&l, 2), vec![(5, 1, 0, 1, false)]);
        assert_eq!(l.file_pieces(0), 0..0);
        assert_eq!(l.file_pieces(4), 0..0);
        assert_eq!(l.file_pieces(5), 1..3);
    }

    #[test]
    fn padding_files_are_marked() {
        // BEP 47: a 5-byte file padded to the 8-byte piece, then the next file piece-aligned.
        let l = Layout::new(&meta(8, &[(5, false), (3, true), (10, false)])).unwrap();
        assert_eq!(spans(&l, 0), vec![(0, 0, 0, 5, false), (1, 0, 5, 3, true)]);
        assert_eq!(spans(&l, 1), vec![(2, 0, 0, 8, false)]);
        assert_eq!(spans(&l, 2), vec![(2, 8, 0, 2, false)]);
    }

    #[test]
    fn block_spans_are_relative_to_the_block() {
        let l = Layout::new(&meta(6, &[(10, false), (7, false), (13, false)])).unwrap();
        let got: Vec<_> = l.block_spans(1, 3, 3).unwrap().map(|s| (s.file, s.file_offset, s.offset, s.len)).collect();
        assert_eq!(got, vec![(0, 9, 0, 1), (1, 0, 1, 2)]);
        assert!(l.block_spans(1, 3, 4).is_none());
        assert!(l.block_spans(4, u32::MAX, 2).is_none());
        assert!(l.block_spans(9, 0, 1).is_none());
    }

    #[test]
    fn every_byte_is_covered_once() {
        let files = [(3, false), (0, false), (9, false), (1, true), (17, false), (0, false), (5, true), (11, false)];
        for plen in 1..=20 {
            let m = meta(plen, &files);
            let l = Layout::new(&m).unwrap();
            let mut next = 0u64;
            for p in 0..l.piece_count() {
                let mut within = 0;
                for s in l.piece_spans(p).unwrap() {
                    assert_eq!(m.files[s.file].offset + s.file_offset, next, "plen {plen} piece {p}");
                    assert_eq!(s.offset, within);
                    assert!(s.len > 0);
                    next += s.len as u64;
                    within += s.len;
                }
                assert_eq!(within, l.piece_size(p).unwrap());
            }
            assert_eq!(next, l.total_length());
        }
    }

    #[test]
    fn inconsistent_layouts_are_refused() {
        let mut m = meta(4, &[(5, false), (3, false)]);
        m.files[1].offset = 6;
        assert!(matches!(Layout::new(&m), Err(StorageError::Layout(_))));
        let mut m = meta(4, &[(5, false)]);
        m.total_length = 9;
        assert!(Layout::new(&m).is_err());
        let mut m = meta(4, &[(5, false)]);
        m.pieces.push([0; 20]);
        assert!(Layout::new(&m).is_err());
        let mut m = meta(4, &[(5, false)]);
        m.piece_length = 0;
        assert!(Layout::new(&m).is_err());
        let mut m = meta(4, &[(5, false), (3, false)]);
        m.files[1].length = u64::MAX;
        assert!(Layout::new(&m).is_err());
    }
}
