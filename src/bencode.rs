//! Bencode (BEP 3): a bounded decoder that keeps the raw span of every value, and a small encoder.
//!
//! The decoder exists beside lava_torrent because we need what it cannot give: the exact raw bytes of a value (the
//! info hash is SHA-1 over the `info` dictionary as written, sorted or not), a nesting limit so hostile input cannot
//! exhaust the stack, and strict errors with positions for messages a person can act on.

use std::fmt;

/// Nesting deeper than this is refused: no real torrent or tracker reply comes near it.
pub const MAX_DEPTH: usize = 64;
/// Values decoded from one buffer at most. A decoded value costs about 50 bytes however small its encoding (`i0e` is
/// three), so this bounds the memory a hostile input can cost at roughly 100 MiB; a real torrent of 200,000 files
/// holds about 1.2 million values.
pub const MAX_VALUES: usize = 2_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    Int(i64),
    Bytes(&'a [u8]),
    List(Vec<Value<'a>>),
    /// Keys in the order they appear; `raw` is the whole dictionary's encoding, `d` to `e` inclusive.
    Dict {
        entries: Vec<(&'a [u8], Value<'a>)>,
        raw: &'a [u8],
    },
}

impl<'a> Value<'a> {
    /// The value under `key` of a dictionary (the first one if a broken encoder repeated it).
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        match self {
            Value::Dict { entries, .. } => entries.iter().find(|(k, _)| *k == key.as_bytes()).map(|(_, v)| v),
            _ => None,
        }
    }
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&'a str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }
    pub fn as_list(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }
    pub fn is_dict(&self) -> bool {
        matches!(self, Value::Dict { .. })
    }
    /// The raw encoding of a dictionary, exactly as it appeared in the input.
    pub fn raw_dict(&self) -> Option<&'a [u8]> {
        match self {
            Value::Dict { raw, .. } => Some(raw),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset where decoding failed.
    pub pos: usize,
    pub what: &'static str,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.what, self.pos)
    }
}

impl std::error::Error for DecodeError {}

/// Decodes exactly one value that must fill the whole buffer.
pub fn decode(buf: &[u8]) -> Result<Value<'_>, DecodeError> {
    let mut d = Decoder { buf, pos: 0, values: 0 };
    let v = d.value(0)?;
    if d.pos != buf.len() {
        return Err(d.err("trailing bytes after the bencoded value"));
    }
    Ok(v)
}

/// Decodes one value at the start of `buf` and says how many bytes it took; what follows is left to the caller (a
/// BEP 9 `data` message is a dictionary followed by raw bytes).
pub fn decode_prefix(buf: &[u8]) -> Result<(Value<'_>, usize), DecodeError> {
    let mut d = Decoder { buf, pos: 0, values: 0 };
    let v = d.value(0)?;
    Ok((v, d.pos))
}

struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
    values: usize,
}

impl<'a> Decoder<'a> {
    fn err(&self, what: &'static str) -> DecodeError {
        DecodeError { pos: self.pos, what }
    }

    fn peek(&self) -> Result<u8, DecodeError> {
        self.buf.get(self.pos).copied().ok_or_else(|| self.err("unexpected end of data"))
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        self.values += 1;
        if self.values > MAX_VALUES {
            return Err(self.err("too many values"));
        }
        match self.peek()? {
            b'i' => {
                self.pos += 1;
                Ok(Value::Int(self.int(b'e')?))
            }
            b'l' => {
                self.pos += 1;
                let mut items = Vec::new();
                while self.peek()? != b'e' {
                    items.push(self.value(depth + 1)?);
                }
                self.pos += 1;
                Ok(Value::List(items))
            }
            b'd' => {
                let start = self.pos;
                self.pos += 1;
                let mut entries = Vec::new();
                while self.peek()? != b'e' {
                    if !self.peek()?.is_ascii_digit() {
                        return Err(self.err("dictionary key is not a string"));
                    }
                    let key = self.bytes()?;
                    let value = self.value(depth + 1)?;
                    entries.push((key, value));
                }
                self.pos += 1;
                Ok(Value::Dict { entries, raw: &self.buf[start..self.pos] })
            }
            b'0'..=b'9' => Ok(Value::Bytes(self.bytes()?)),
            _ => Err(self.err("not a bencoded value")),
        }
    }

    /// A decimal integer up to `end`, without leading zeros or `-0`, that fits in i64.
    fn int(&mut self, end: u8) -> Result<i64, DecodeError> {
        let start = self.pos;
        let rest = &self.buf[start..];
        let len = rest.iter().position(|&b| b == end).ok_or_else(|| self.err("unterminated integer"))?;
        let digits = &rest[..len];
        let (negative, body) = match digits.split_first() {
            Some((b'-', body)) => (true, body),
            _ => (false, digits),
        };
        let leading_zero = body.len() > 1 && body[0] == b'0';
        let minus_zero = negative && body == b"0";
        let valid = !body.is_empty() && body.iter().all(u8::is_ascii_digit) && !leading_zero && !minus_zero;
        if !valid {
            return Err(self.err("malformed integer"));
        }
        // Digits are ASCII, so the conversion cannot fail; the parse can overflow, which is an error.
        let text = std::str::from_utf8(digits).map_err(|_| self.err("malformed integer"))?;
        let n = text.parse::<i64>().map_err(|_| self.err("integer out of range"))?;
        self.pos = start + len + 1;
        Ok(n)
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len_pos = self.pos;
        let len = self.int(b':')?;
        let len = usize::try_from(len).map_err(|_| DecodeError { pos: len_pos, what: "negative string length" })?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&e| e <= self.buf.len())
            .ok_or(DecodeError { pos: len_pos, what: "string longer than the data" })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
}

/// Appends bencode to a byte vector. Dictionary keys must be written in sorted order by the caller.
pub struct Encoder<'a> {
    pub out: &'a mut Vec<u8>,
}

impl Encoder<'_> {
    pub fn int(&mut self, n: i64) -> &mut Self {
        self.out.push(b'i');
        push_decimal(self.out, n);
        self.out.push(b'e');
        self
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        push_decimal(self.out, b.len() as i64);
        self.out.push(b':');
        self.out.extend_from_slice(b);
        self
    }
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }
    pub fn begin_dict(&mut self) -> &mut Self {
        self.out.push(b'd');
        self
    }
    pub fn begin_list(&mut self) -> &mut Self {
        self.out.push(b'l');
        self
    }
    pub fn end(&mut self) -> &mut Self {
        self.out.push(b'e');
        self
    }
    /// Copies an already-encoded value verbatim (e.g. an info dictionary whose hash must not change).
    pub fn raw(&mut self, encoded: &[u8]) -> &mut Self {
        self.out.extend_from_slice(encoded);
        self
    }
}

/// Appends `n` in decimal without a temporary string: the tracker encodes several integers per announce.
fn push_decimal(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(decimal(n.unsigned_abs(), &mut [0; 20]));
}

/// `n` in decimal, written at the end of `digits` (20 is room for any u64).
pub(crate) fn decimal(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &digits[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_nested_values_and_keeps_raw_dict() {
        let input = b"d3:bar4:spam3:fooi42e1:lld1:xi-3eeee";
        let v = decode(input).unwrap();
        assert_eq!(v.get("bar").unwrap().as_str(), Some("spam"));
        assert_eq!(v.get("foo").unwrap().as_int(), Some(42));
        let inner = &v.get("l").unwrap().as_list().unwrap()[0];
        assert_eq!(inner.raw_dict(), Some(&b"d1:xi-3ee"[..]));
        assert_eq!(v.raw_dict(), Some(&input[..]));
    }

    #[test]
    fn decodes_a_prefix_and_says_where_it_ends() {
        let (v, used) = decode_prefix(b"d1:ai1eeRAW BYTES").unwrap();
        assert_eq!((v.get("a").unwrap().as_int(), used), (Some(1), 8));
        assert_eq!(decode_prefix(b"i7e").unwrap().1, 3);
        assert!(decode_prefix(b"d1:ai1e").is_err(), "an unfinished value is still an error");
        assert!(decode_prefix(b"").is_err());
    }

    #[test]
    fn keeps_unsorted_keys_as_written() {
        let v = decode(b"d1:zi1e1:ai2ee").unwrap();
        match v {
            Value::Dict { entries, .. } => assert_eq!(entries[0].0, b"z"),
            _ => panic!("not a dict"),
        }
    }

    #[test]
    fn rejects_malformed_input() {
        for bad in [
            &b""[..],
            b"i",
            b"ie",
            b"i-0e",
            b"i03e",
            b"i99999999999999999999e",
            b"5:abc",
            b"-1:a",
            b"d1:a",
            b"di1ei2ee",
            b"l",
            b"x",
            b"i1ei2e",
            b"18446744073709551616:a",
        ] {
            assert!(decode(bad).is_err(), "{:?} should fail", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn refuses_deep_nesting_without_recursing_forever() {
        let mut deep = vec![b'l'; 100_000];
        deep.extend(vec![b'e'; 100_000]);
        assert_eq!(decode(&deep).unwrap_err().what, "nesting too deep");
        let mut ok = vec![b'l'; MAX_DEPTH];
        ok.extend(vec![b'e'; MAX_DEPTH]);
        assert!(decode(&ok).is_ok());
    }

    #[test]
    fn refuses_more_values_than_the_budget() {
        let mut many = b"l".to_vec();
        many.extend(b"i0e".repeat(MAX_VALUES));
        many.push(b'e');
        assert_eq!(decode(&many).unwrap_err().what, "too many values");
        many.drain(1..4);
        assert!(decode(&many).is_ok(), "the list itself counts as one value");
    }

    #[test]
    fn integers_encode_like_display() {
        for n in [0, 7, -7, 10, 1234567890, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            Encoder { out: &mut out }.int(n);
            assert_eq!(out, format!("i{n}e").into_bytes());
        }
    }

    #[test]
    fn encoder_round_trips() {
        let mut out = Vec::new();
        Encoder { out: &mut out }.begin_dict().str("a").int(-7).str("b").begin_list().bytes(b"\x00\xff").end().end();
        assert_eq!(out, b"d1:ai-7e1:bl2:\x00\xffee");
        let v = decode(&out).unwrap();
        assert_eq!(v.get("a").unwrap().as_int(), Some(-7));
    }

    #[test]
    fn never_panics_on_mutated_input() {
        let base =
            b"d8:announce3:url4:infod6:lengthi5e4:name1:a12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee";
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut m = base.to_vec();
            let i = (x as usize) % m.len();
            m[i] = (x >> 32) as u8;
            m.truncate(((x >> 16) as usize % (m.len() + 1)).max(i));
            let _ = decode(&m);
        }
    }
}
