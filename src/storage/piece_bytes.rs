//! A piece's bytes, kept at an address aligned for direct writes, so the disk worker can hand a whole piece to
//! `O_DIRECT` as it is instead of copying it into an aligned bounce buffer first (that copy was ~7 % of a 1 GiB
//! leech's CPU samples).

use std::ops::{Deref, DerefMut};

use super::DIRECT_ALIGN;

/// A piece buffer: `len` bytes from `start`, an offset into `buf` chosen so they begin on a `DIRECT_ALIGN` boundary
/// (a `Vec<u8>` itself gives no alignment, and allocating with one would need `unsafe` to free it).
#[derive(Debug, Default)]
pub struct PieceBytes {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl PieceBytes {
    /// Makes the buffer `len` bytes long and aligned; the bytes it holds are left as they were or zeroed, whichever is
    /// cheaper, since a piece is filled whole before anyone reads it.
    pub fn set_len(&mut self, len: usize) {
        let needed = len + DIRECT_ALIGN;
        if self.buf.len() < needed {
            self.buf.resize(needed, 0);
        }
        self.start = self.buf.as_ptr().align_offset(DIRECT_ALIGN);
        self.len = len;
    }
}

/// Bytes as they are, not aligned (tests, and callers that never write them past the page cache).
impl From<Vec<u8>> for PieceBytes {
    fn from(buf: Vec<u8>) -> PieceBytes {
        let len = buf.len();
        PieceBytes { buf, start: 0, len }
    }
}

impl Deref for PieceBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

impl DerefMut for PieceBytes {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sized_buffer_starts_aligned_and_keeps_its_length_across_reuse() {
        let mut b = PieceBytes::default();
        for len in [256 * 1024, 1000, 16 * 1024, 300 * 1024, 0] {
            b.set_len(len);
            assert_eq!(b.len(), len);
            assert!(b.as_ptr().cast::<u8>().align_offset(DIRECT_ALIGN) == 0 || len == 0);
            b.fill(7);
            assert!(b.iter().all(|&x| x == 7));
        }
        let v = PieceBytes::from(vec![1, 2, 3]);
        assert_eq!(&v[..], &[1, 2, 3]);
    }
}
