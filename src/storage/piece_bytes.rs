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

impl PieceBytes {
    /// Copies `data` (a block) into the piece at `at`.
    ///
    /// On x86-64 with non-temporal stores, which skip the cache: with ordinary stores, which must first fetch every
    /// line of the buffer (last touched by the disk worker and the device), this copy was a fifth of a 1 GiB leech's
    /// CPU samples on the loop; with these it costs little and the worker's hashing a little more, for 1.06 s of
    /// leech CPU against 1.24 s (medians of six alternating runs, README). The piece is read next by another thread,
    /// for which the fence orders the stores before the hand-over.
    pub fn put(&mut self, at: usize, data: &[u8]) {
        let dst = &mut self[at..at + data.len()];
        #[cfg(target_arch = "x86_64")]
        stream::copy(dst, data);
        #[cfg(not(target_arch = "x86_64"))]
        dst.copy_from_slice(data);
    }
}

#[cfg(target_arch = "x86_64")]
mod stream {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};

    /// `dst.copy_from_slice(src)`, the 16-byte-aligned middle with non-temporal stores.
    pub fn copy(dst: &mut [u8], src: &[u8]) {
        assert_eq!(dst.len(), src.len());
        let head = dst.as_ptr().align_offset(16).min(dst.len());
        let body = (dst.len() - head) / 64 * 64;
        dst[..head].copy_from_slice(&src[..head]);
        let (d, s) = (&mut dst[head..head + body], &src[head..head + body]);
        for (d, s) in d.chunks_exact_mut(64).zip(s.chunks_exact(64)) {
            // SAFETY: SSE2 is part of x86-64; `d` is 64 bytes at a 16-byte-aligned address (`head` aligned the
            // start, and every chunk is 64 bytes on from it), `s` is 64 bytes, read unaligned.
            unsafe {
                let sp = s.as_ptr().cast::<__m128i>();
                let dp = d.as_mut_ptr().cast::<__m128i>();
                for i in 0..4 {
                    _mm_stream_si128(dp.add(i), _mm_loadu_si128(sp.add(i)));
                }
            }
        }
        // SAFETY: SSE2 is part of x86-64.
        unsafe { _mm_sfence() };
        dst[head + body..].copy_from_slice(&src[head + body..]);
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

    #[test]
    fn put_copies_blocks_at_any_offset_and_length() {
        let src: Vec<u8> = (0..70_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut b = PieceBytes::default();
        for (at, len) in [(0, 16384), (16384, 16384), (3, 100), (17, 64), (1, 0), (5, 65_000), (0, 63), (100, 129)] {
            b.set_len(70_000);
            b.fill(0);
            b.put(at, &src[7..7 + len]);
            assert_eq!(&b[at..at + len], &src[7..7 + len], "at {at} len {len}");
            assert!(b[..at].iter().chain(&b[at + len..]).all(|&x| x == 0), "at {at} len {len}: bytes outside");
        }
    }
}
