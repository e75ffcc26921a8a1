//! Decodes the query strings of HTTP announce and scrape requests into the registry's plain data. The errors are
//! `failure reason` sentences. Values are decoded into fixed buffers, so a hostile query never makes us allocate.

use super::registry::{Announce, Event, NUMWANT_DEFAULT, NUMWANT_MAX};
use crate::http::{PercentError, percent_decode_into, query_pairs};

/// One decoded announce query: the announce itself, and how the answer is to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceQuery {
    pub announce: Announce,
    /// BEP 23 compact peer list; without the parameter we answer with the BEP 3 dictionary model.
    pub compact: bool,
    pub no_peer_id: bool,
}

impl AnnounceQuery {
    /// Decodes an announce query. The error is the `failure reason` to answer with.
    /// Unknown parameters (`key`, `supportcrypto`, `corrupt`, `trackerid`, `ip`, ...) are ignored.
    pub fn from_query(query: &[u8]) -> Result<AnnounceQuery, String> {
        let mut info_hash = None;
        let mut peer_id = None;
        let mut port = None;
        let mut compact = false;
        let mut no_peer_id = false;
        let mut a = Announce {
            info_hash: [0; 20],
            peer_id: [0; 20],
            port: 0,
            uploaded: 0,
            downloaded: 0,
            left: None,
            event: Event::Update,
            numwant: NUMWANT_DEFAULT,
        };
        for (key, value) in query_pairs(query) {
            match key {
                b"info_hash" => info_hash = Some(decode_20("info_hash", value)?),
                b"peer_id" => peer_id = Some(decode_20("peer_id", value)?),
                b"port" => {
                    let n = decode_u64("port", value)?;
                    port = Some(u16::try_from(n).ok().filter(|&p| p != 0).ok_or("port must be 1 to 65535")?);
                }
                b"uploaded" => a.uploaded = decode_u64("uploaded", value)?,
                b"downloaded" => a.downloaded = decode_u64("downloaded", value)?,
                b"left" => a.left = Some(decode_u64("left", value)?),
                b"numwant" => {
                    // A huge count only means "as many as you will give", so it saturates instead of failing.
                    a.numwant = match decode_u64("numwant", value) {
                        Ok(n) => n.min(NUMWANT_MAX as u64) as usize,
                        Err(_) if is_digits(value) => NUMWANT_MAX,
                        Err(e) => return Err(e),
                    };
                }
                b"event" => {
                    a.event = match decode_word("event", value)?.as_slice() {
                        b"" | b"paused" => Event::Update,
                        b"started" => Event::Started,
                        b"completed" => Event::Completed,
                        b"stopped" => Event::Stopped,
                        _ => return Err("unknown event (expected started, completed or stopped)".into()),
                    }
                }
                b"compact" => {
                    compact = match decode_word("compact", value)?.as_slice() {
                        b"1" => true,
                        b"0" => false,
                        _ => return Err("compact must be 0 or 1".into()),
                    }
                }
                b"no_peer_id" => no_peer_id = decode_word("no_peer_id", value)?.as_slice() != b"0",
                _ => {}
            }
        }
        a.info_hash = info_hash.ok_or("missing info_hash")?;
        a.peer_id = peer_id.ok_or("missing peer_id")?;
        a.port = port.ok_or("missing port")?;
        Ok(AnnounceQuery { announce: a, compact, no_peer_id })
    }
}

/// The `info_hash` values of a scrape query; empty means a full scrape.
pub fn scrape_hashes(query: &[u8]) -> Result<Vec<[u8; 20]>, String> {
    let mut hashes = Vec::new();
    for (key, value) in query_pairs(query) {
        if key == b"info_hash" {
            hashes.push(decode_20("info_hash", value)?);
        }
    }
    Ok(hashes)
}

fn decode_20(name: &str, raw: &[u8]) -> Result<[u8; 20], String> {
    let mut out = [0u8; 20];
    match percent_decode_into(raw, &mut out) {
        Ok(20) => Ok(out),
        Ok(_) | Err(PercentError::TooLong) => Err(format!("{name} must be 20 bytes")),
        Err(PercentError::BadEscape) => Err(format!("invalid percent-encoding in {name}")),
    }
}

/// A short decoded value (an event name, a flag), held without allocating.
struct Word {
    buf: [u8; 16],
    len: usize,
}

impl Word {
    fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

fn decode_word(name: &str, raw: &[u8]) -> Result<Word, String> {
    let mut buf = [0u8; 16];
    match percent_decode_into(raw, &mut buf) {
        Ok(len) => Ok(Word { buf, len }),
        Err(PercentError::TooLong) => Err(format!("{name} is too long")),
        Err(PercentError::BadEscape) => Err(format!("invalid percent-encoding in {name}")),
    }
}

fn is_digits(raw: &[u8]) -> bool {
    !raw.is_empty() && raw.iter().all(u8::is_ascii_digit)
}

/// A non-negative decimal integer; negative, empty, non-numeric and overflowing values are errors.
fn decode_u64(name: &str, raw: &[u8]) -> Result<u64, String> {
    let word = match decode_word(name, raw) {
        Ok(word) => word,
        Err(_) if is_digits(raw) => return Err(format!("{name} is too large")),
        Err(_) => return Err(format!("{name} must be a non-negative integer")),
    };
    let digits = word.as_slice();
    if !is_digits(digits) {
        return Err(format!("{name} must be a non-negative integer"));
    }
    digits
        .iter()
        .try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
        .ok_or_else(|| format!("{name} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::tests::{HASH, peer_id, query};

    #[test]
    fn decodes_every_announce_parameter_and_ignores_unknown_ones() {
        let q = format!(
            "{}&left=5&event=started&compact=1&no_peer_id=1&numwant=7&key=abc&supportcrypto=1&requirecrypto=0\
             &corrupt=0&ip=1.2.3.4&trackerid=x",
            query(peer_id(1), 6881, "")
        );
        let q = AnnounceQuery::from_query(q.as_bytes()).unwrap();
        let a = &q.announce;
        assert_eq!(a.info_hash, HASH);
        assert_eq!(a.peer_id, peer_id(1));
        assert_eq!(
            (a.port, a.left, a.event, q.compact, q.no_peer_id, a.numwant),
            (6881, Some(5), Event::Started, true, true, 7)
        );
        let q = AnnounceQuery::from_query(query(peer_id(1), 1, "&event=paused").as_bytes()).unwrap();
        let a = &q.announce;
        assert_eq!((a.event, q.compact, a.numwant, a.left), (Event::Update, false, NUMWANT_DEFAULT, None));
    }

    #[test]
    fn numwant_is_capped_and_saturates() {
        for (raw, want) in
            [("1000000000", NUMWANT_MAX), ("99999999999999999999999999", NUMWANT_MAX), ("0", 0), ("3", 3)]
        {
            let q = AnnounceQuery::from_query(query(peer_id(1), 1, &format!("&numwant={raw}")).as_bytes()).unwrap();
            assert_eq!(q.announce.numwant, want, "{raw}");
        }
        assert!(AnnounceQuery::from_query(query(peer_id(1), 1, "&numwant=-1").as_bytes()).is_err());
    }
}
