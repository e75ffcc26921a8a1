//! A set of piece indices stored exactly as the wire `bitfield` message carries it: piece 0 is the high bit of byte 0.
//!
//! Keeping the wire layout means a received bitfield is adopted with one copy and ours is sent with none. The number
//! of set bits is cached because "is this peer a seed?" and "are we done?" are asked far more often than bits change.

use std::fmt;

/// Why wire bytes were refused as a bitfield.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitfieldError {
    /// The byte count is not `ceil(len / 8)`.
    WrongLength { got: usize, expected: usize },
    /// A bit past the last piece is set (BEP 3 requires spare bits to be zero).
    SpareBitsSet,
}

impl fmt::Display for BitfieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BitfieldError::WrongLength { got, expected } => {
                write!(f, "a bitfield of {got} bytes where the torrent needs {expected}")
            }
            BitfieldError::SpareBitsSet => f.write_str("a bitfield with bits set past the last piece"),
        }
    }
}

impl std::error::Error for BitfieldError {}

/// Bytes needed on the wire for `len` pieces.
pub fn wire_len(len: u32) -> usize {
    (len as usize).div_ceil(8)
}

/// True when every bit after the first `len` in `bytes` is zero; `bytes` is expected to be `wire_len(len)` long.
pub fn spare_bits_clear(bytes: &[u8], len: u32) -> bool {
    let used = len % 8;
    match bytes.last() {
        Some(&last) if used != 0 => last & (0xFF >> used) == 0,
        _ => true,
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct Bitfield {
    bits: Vec<u8>,
    len: u32,
    ones: u32,
}

impl Bitfield {
    /// An empty set over `len` pieces.
    pub fn new(len: u32) -> Bitfield {
        Bitfield { bits: vec![0; wire_len(len)], len, ones: 0 }
    }

    /// The set holding every one of `len` pieces (what a seed announces).
    pub fn full(len: u32) -> Bitfield {
        let mut bits = vec![0xFF; wire_len(len)];
        if let Some(last) = bits.last_mut()
            && !len.is_multiple_of(8)
        {
            *last = 0xFF << (8 - len % 8);
        }
        Bitfield { bits, len, ones: len }
    }

    /// Adopts a peer's bitfield, refusing a wrong length or set spare bits rather than guessing.
    pub fn from_wire(bytes: &[u8], len: u32) -> Result<Bitfield, BitfieldError> {
        let expected = wire_len(len);
        if bytes.len() != expected {
            return Err(BitfieldError::WrongLength { got: bytes.len(), expected });
        }
        if !spare_bits_clear(bytes, len) {
            return Err(BitfieldError::SpareBitsSet);
        }
        let ones = bytes.iter().map(|b| b.count_ones()).sum();
        Ok(Bitfield { bits: bytes.to_vec(), len, ones })
    }

    /// The bytes to put in a `bitfield` message.
    pub fn as_wire(&self) -> &[u8] {
        &self.bits
    }

    /// Number of pieces the set ranges over (not the number present).
    pub fn len(&self) -> u32 {
        self.len
    }

    /// True when the set ranges over no pieces at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of pieces present.
    pub fn count(&self) -> u32 {
        self.ones
    }

    /// Every piece present.
    pub fn all(&self) -> bool {
        self.ones == self.len
    }

    /// No piece present.
    pub fn none(&self) -> bool {
        self.ones == 0
    }

    /// Whether piece `i` is present; an index past the end is simply absent, so a peer's bad index cannot panic.
    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.bits[(i / 8) as usize] & (0x80 >> (i % 8)) != 0
    }

    /// Adds piece `i`; true if it was absent before. An index past the end changes nothing and returns false.
    pub fn set(&mut self, i: u32) -> bool {
        if i >= self.len || self.get(i) {
            return false;
        }
        self.bits[(i / 8) as usize] |= 0x80 >> (i % 8);
        self.ones += 1;
        true
    }

    /// Removes piece `i`; true if it was present before.
    pub fn clear(&mut self, i: u32) -> bool {
        if !self.get(i) {
            return false;
        }
        self.bits[(i / 8) as usize] &= !(0x80 >> (i % 8));
        self.ones -= 1;
        true
    }

    /// True when `self` holds some piece that `other` lacks: "is this peer interesting to us?" with
    /// `peer.has_any_missing_from(&ours)`. Sets of different lengths compare over the shorter one.
    pub fn has_any_missing_from(&self, other: &Bitfield) -> bool {
        self.bits.iter().zip(&other.bits).any(|(a, b)| a & !b != 0)
    }

    /// The present pieces in increasing order; whole zero bytes are skipped, so sparse sets iterate quickly.
    pub fn iter_ones(&self) -> impl Iterator<Item = u32> + '_ {
        self.bits.iter().enumerate().filter(|(_, b)| **b != 0).flat_map(|(i, &b)| {
            let base = i as u32 * 8;
            (0..8u32).filter(move |bit| b & (0x80 >> bit) != 0).map(move |bit| base + bit)
        })
    }

    /// Bits `64 * w .. 64 * w + 64` as one big-endian word (piece `64 * w` is the top bit), zero past the end.
    /// The picker scans with this to test 64 pieces per step.
    pub(crate) fn word(&self, w: usize) -> u64 {
        let start = w * 8;
        match self.bits.get(start..start + 8) {
            Some(chunk) => u64::from_be_bytes(chunk.try_into().unwrap_or([0; 8])),
            None => {
                let mut buf = [0u8; 8];
                let tail = self.bits.get(start..).unwrap_or(&[]);
                buf[..tail.len()].copy_from_slice(tail);
                u64::from_be_bytes(buf)
            }
        }
    }

    /// Number of 64-bit words `word` covers.
    pub(crate) fn word_count(&self) -> usize {
        self.bits.len().div_ceil(8)
    }
}

impl fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bitfield({}/{}: ", self.ones, self.len)?;
        for i in 0..self.len.min(64) {
            f.write_str(if self.get(i) { "1" } else { "0" })?;
        }
        if self.len > 64 {
            f.write_str("…")?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_clear_count() {
        let mut b = Bitfield::new(10);
        assert_eq!(b.as_wire(), &[0, 0]);
        assert!(b.set(0));
        assert!(!b.set(0));
        assert!(b.set(9));
        assert!(!b.set(10), "past the end is ignored");
        assert_eq!(b.as_wire(), &[0x80, 0x40]);
        assert_eq!(b.count(), 2);
        assert!(b.get(9) && !b.get(8) && !b.get(1000));
        assert!(b.clear(0));
        assert!(!b.clear(0));
        assert_eq!(b.count(), 1);
        assert_eq!(b.iter_ones().collect::<Vec<_>>(), vec![9]);
    }

    #[test]
    fn full_has_clear_spare_bits() {
        for len in 0..40 {
            let f = Bitfield::full(len);
            assert!(f.all());
            assert_eq!(f.count(), len);
            assert_eq!(f.iter_ones().count(), len as usize);
            assert!(spare_bits_clear(f.as_wire(), len), "len {len}");
            assert_eq!(Bitfield::from_wire(f.as_wire(), len), Ok(f));
        }
    }

    #[test]
    fn from_wire_checks_length_and_spare_bits() {
        assert_eq!(Bitfield::from_wire(&[0xFF], 10), Err(BitfieldError::WrongLength { got: 1, expected: 2 }));
        assert_eq!(Bitfield::from_wire(&[0xFF, 0xC0, 0], 10), Err(BitfieldError::WrongLength { got: 3, expected: 2 }));
        assert_eq!(Bitfield::from_wire(&[0xFF, 0xE0], 10), Err(BitfieldError::SpareBitsSet));
        assert_eq!(Bitfield::from_wire(&[0xFF, 0xC0], 10).map(|b| b.count()), Ok(10));
        assert_eq!(Bitfield::from_wire(&[0xFF], 8).map(|b| b.all()), Ok(true));
        assert_eq!(Bitfield::from_wire(&[], 0).map(|b| b.all()), Ok(true));
    }

    #[test]
    fn words_are_big_endian_and_padded() {
        let mut b = Bitfield::new(70);
        b.set(0);
        b.set(63);
        b.set(64);
        b.set(69);
        assert_eq!(b.word_count(), 2);
        assert_eq!(b.word(0), (1 << 63) | 1);
        assert_eq!(b.word(1), (1 << 63) | (1 << 58));
        assert_eq!(b.word(2), 0);
    }

    #[test]
    fn interest() {
        let mut ours = Bitfield::new(12);
        let mut theirs = Bitfield::new(12);
        assert!(!theirs.has_any_missing_from(&ours));
        theirs.set(11);
        assert!(theirs.has_any_missing_from(&ours));
        ours.set(11);
        assert!(!theirs.has_any_missing_from(&ours));
    }
}
