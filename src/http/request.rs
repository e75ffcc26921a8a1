//! HTTP/1.1 request framing, with no IO: bytes in, one whole request (head and body), "need more", or an error
//! carrying the status to answer with.
//!
//! The head is bounded to [`MAX_HEAD`] bytes and the body to the caller's limit, so a request never needs more than
//! `MAX_HEAD + max_body` bytes of buffer. A body must come with `Content-Length`: chunked bodies are refused, which
//! costs nothing with the clients we serve and keeps the framing one length check. After an error the connection
//! closes, because we no longer know where the next request would start.
//!
//! Query values are percent-decoded into caller buffers: a fixed destination means a hostile value can never make us
//! allocate.

use super::Status;

/// Longest request head (request line and headers) we buffer.
pub const MAX_HEAD: usize = 8 * 1024;
/// Most header lines in one request; real clients send fewer than 10.
pub const MAX_HEADERS: usize = 32;

/// A request that is answered with an HTTP error status, after which the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpError {
    pub status: Status,
    /// One sentence for the response body and the log.
    pub detail: &'static str,
}

impl HttpError {
    fn new(status: Status, detail: &'static str) -> HttpError {
        HttpError { status, detail }
    }
}

/// One parsed request, borrowing from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The request target up to `?`.
    pub path: &'a str,
    /// Everything after the first `?`, still percent-encoded; empty when there is none.
    pub query: &'a [u8],
    /// The `Host` header, if any.
    pub host: Option<&'a [u8]>,
    /// Whether the connection stays open after the response (HTTP/1.1 default, HTTP/1.0 opt-in).
    pub keep_alive: bool,
    /// The whole body (empty without `Content-Length`).
    pub body: &'a [u8],
    /// Bytes of input this request used, head and body.
    pub len: usize,
    /// Every header line, for services that read more than the framing does (a session id, credentials).
    pub headers: Headers<'a>,
}

impl<'a> Request<'a> {
    /// The value of the first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
    }
}

/// A request's header lines, borrowed from the input, in a fixed array: parsing allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headers<'a> {
    lines: [(&'a str, &'a [u8]); MAX_HEADERS],
    len: usize,
}

impl<'a> Headers<'a> {
    pub fn iter(&self) -> impl Iterator<Item = &(&'a str, &'a [u8])> {
        self.lines[..self.len].iter()
    }
}

/// Parses the request at the start of `buf`, accepting a body of up to `max_body` bytes. `Ok(None)` means the
/// request is not complete yet.
pub fn parse_request(buf: &[u8], max_body: usize) -> Result<Option<Request<'_>>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(HttpError::new(Status::HeaderFieldsTooLarge, "request head longer than 8 KiB"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::new(Status::HeaderFieldsTooLarge, "too many header lines"));
        }
        Err(_) => return Err(HttpError::new(Status::BadRequest, "malformed HTTP request")),
    };
    if head_len > MAX_HEAD {
        return Err(HttpError::new(Status::HeaderFieldsTooLarge, "request head longer than 8 KiB"));
    }
    // httparse returns Complete only with all three request-line parts present.
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HttpError::new(Status::BadRequest, "malformed HTTP request"));
    };
    let too_large = || {
        let detail = if max_body == 0 { "requests here have no body" } else { "request body too large" };
        HttpError::new(Status::PayloadTooLarge, detail)
    };
    let mut keep_alive = minor >= 1;
    let mut host = None;
    let mut content_length: Option<u64> = None;
    let mut headers = Headers { lines: [("", &b""[..]); MAX_HEADERS], len: 0 };
    for h in req.headers.iter() {
        // httparse fills at most MAX_HEADERS entries, so there is always room.
        if let Some(slot) = headers.lines.get_mut(headers.len) {
            *slot = (h.name, h.value);
            headers.len += 1;
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value).ok().and_then(|s| s.trim().parse::<u64>().ok());
            match (n, content_length) {
                (None, _) => return Err(HttpError::new(Status::BadRequest, "invalid Content-Length")),
                // Two different lengths: whichever we picked, a proxy in front may have picked the other.
                (Some(n), Some(seen)) if n != seen => {
                    return Err(HttpError::new(Status::BadRequest, "conflicting Content-Length"));
                }
                (Some(n), _) => content_length = Some(n),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // With no room for a body, any body is too large; otherwise ask for a length we can bound up front.
            return Err(if max_body == 0 {
                too_large()
            } else {
                HttpError::new(Status::LengthRequired, "chunked bodies are not accepted: send Content-Length")
            });
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("host") {
            host = Some(h.value);
        }
    }
    let body_len = match content_length {
        Some(n) if n > max_body as u64 => return Err(too_large()),
        Some(n) => n as usize,
        None => 0,
    };
    let Some(body) = buf.get(head_len..head_len + body_len) else { return Ok(None) };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, q.as_bytes()),
        None => (target, &b""[..]),
    };
    Ok(Some(Request { method, path, query, host, keep_alive, body, len: head_len + body_len, headers }))
}

/// The `key=value` pairs of a query string, raw (still percent-encoded). A pair without `=` has an empty value.
pub fn query_pairs(query: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    query.split(|&b| b == b'&').filter(|p| !p.is_empty()).map(|p| match p.iter().position(|&b| b == b'=') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => (p, &b""[..]),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PercentError {
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// The decoded value does not fit the destination.
    TooLong,
}

/// Percent-decodes `src` into `dst`; returns the decoded length. `+` stays `+`: clients escape binary values fully.
pub fn percent_decode_into(src: &[u8], dst: &mut [u8]) -> Result<usize, PercentError> {
    let mut n = 0;
    let mut i = 0;
    while i < src.len() {
        let b = if src[i] == b'%' {
            let (Some(hi), Some(lo)) = (src.get(i + 1).and_then(hex), src.get(i + 2).and_then(hex)) else {
                return Err(PercentError::BadEscape);
            };
            i += 3;
            hi << 4 | lo
        } else {
            i += 1;
            src[i - 1]
        };
        *dst.get_mut(n).ok_or(PercentError::TooLong)? = b;
        n += 1;
    }
    Ok(n)
}

fn hex(b: &u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request to a service that takes no body, as the tracker is.
    fn parse(s: &[u8]) -> Result<Option<Request<'_>>, HttpError> {
        parse_request(s, 0)
    }

    #[test]
    fn parses_a_get_with_query_and_reports_its_length() {
        let raw = b"GET /announce?info_hash=%01&port=1 HTTP/1.1\r\nHost: x\r\n\r\nGET /next";
        let r = parse(raw).unwrap().unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/announce");
        assert_eq!(r.query, b"info_hash=%01&port=1");
        assert!(r.keep_alive);
        assert_eq!(&raw[r.len..], b"GET /next");
    }

    #[test]
    fn headers_are_found_by_name_in_any_case() {
        let raw = b"POST /rpc HTTP/1.1\r\nHost: x\r\nX-Transmission-Session-Id: abc\r\nx-a: 1\r\nX-A: 2\r\n\r\n";
        let r = parse(raw).unwrap().unwrap();
        assert_eq!(r.header("x-transmission-session-id"), Some(&b"abc"[..]));
        assert_eq!(r.header("X-A"), Some(&b"1"[..]), "the first of two");
        assert_eq!(r.header("authorization"), None);
        assert_eq!(r.headers.iter().count(), 4);
    }

    #[test]
    fn incomplete_head_needs_more_at_every_split() {
        let raw = b"GET /scrape HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: t\r\n\r\n";
        for cut in 0..raw.len() {
            assert_eq!(parse(&raw[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(parse(raw).unwrap().unwrap().len, raw.len());
    }

    #[test]
    fn keep_alive_follows_version_and_connection_header() {
        let r = |s: &'static [u8]| parse(s).unwrap().unwrap().keep_alive;
        assert!(r(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(!r(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!r(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(r(b"GET / HTTP/1.0\r\nconnection: Keep-Alive\r\n\r\n"));
        assert!(!r(b"GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n"));
    }

    #[test]
    fn leading_blank_lines_are_skipped() {
        let r = parse(b"\r\n\r\nGET /scrape HTTP/1.1\r\n\r\n").unwrap().unwrap();
        assert_eq!(r.path, "/scrape");
    }

    #[test]
    fn errors_carry_the_status_to_answer_with() {
        let status = |s: &[u8]| parse(s).unwrap_err().status;
        assert_eq!(status(b"\x16\x03\x01garbage GET / HTTP/1.1\r\n\r\n"), Status::BadRequest);
        assert_eq!(status(b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"), Status::PayloadTooLarge);
        assert_eq!(status(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), Status::BadRequest);
        assert_eq!(status(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), Status::PayloadTooLarge);
        let mut flood = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..100 {
            flood.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        flood.extend_from_slice(b"\r\n");
        assert_eq!(status(&flood), Status::HeaderFieldsTooLarge);
        let mut long = b"GET /announce?".to_vec();
        long.resize(MAX_HEAD, b'a');
        assert_eq!(status(&long), Status::HeaderFieldsTooLarge);
        assert_eq!(parse(&long[..MAX_HEAD - 1]), Ok(None));
    }

    #[test]
    fn content_length_zero_is_accepted() {
        assert!(parse(b"GET /scrape HTTP/1.1\r\nContent-Length: 0\r\n\r\n").unwrap().is_some());
    }

    #[test]
    fn query_pairs_split_on_ampersand_and_first_equals() {
        let pairs: Vec<_> = query_pairs(b"a=1&&b=&c&d=x=y").collect();
        assert_eq!(pairs, [(&b"a"[..], &b"1"[..]), (b"b", b""), (b"c", b""), (b"d", b"x=y")]);
    }

    #[test]
    fn percent_decoding_handles_binary_and_rejects_bad_escapes() {
        let mut buf = [0u8; 20];
        assert_eq!(percent_decode_into(b"%00%ffA%7E+", &mut buf), Ok(5));
        assert_eq!(&buf[..5], b"\x00\xffA~+");
        assert_eq!(percent_decode_into(b"%zz", &mut buf), Err(PercentError::BadEscape));
        assert_eq!(percent_decode_into(b"%4", &mut buf), Err(PercentError::BadEscape));
        assert_eq!(percent_decode_into(b"%", &mut buf), Err(PercentError::BadEscape));
        assert_eq!(percent_decode_into(&[b'a'; 21], &mut buf), Err(PercentError::TooLong));
    }

    #[test]
    fn a_body_within_the_limit_is_delivered_whole() {
        let raw = b"POST /rpc HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello worldGET /next";
        let r = parse_request(raw, 64).unwrap().unwrap();
        assert_eq!((r.method, r.path, r.body, r.host), ("POST", "/rpc", &b"hello world"[..], Some(&b"h"[..])));
        assert_eq!(&raw[r.len..], b"GET /next");
        let exact = parse_request(&raw[..raw.len() - 9], 11).unwrap().unwrap();
        assert_eq!(exact.body, b"hello world", "a body of exactly the limit is accepted");
    }

    #[test]
    fn a_body_over_the_limit_is_refused_before_it_arrives() {
        let head = b"POST /rpc HTTP/1.1\r\nContent-Length: 65\r\n\r\n";
        let e = parse_request(head, 64).unwrap_err();
        assert_eq!((e.status, e.detail), (Status::PayloadTooLarge, "request body too large"));
        let huge = b"POST /rpc HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n";
        assert_eq!(parse_request(huge, 64).unwrap_err().status, Status::BadRequest, "not a u64");
        let two = b"POST /rpc HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab";
        assert_eq!(parse_request(two, 64).unwrap_err().status, Status::BadRequest);
    }

    #[test]
    fn chunked_bodies_are_refused() {
        let raw = b"POST /rpc HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        assert_eq!(parse_request(raw, 64).unwrap_err().status, Status::LengthRequired);
        assert_eq!(parse_request(raw, 0).unwrap_err().status, Status::PayloadTooLarge, "no body at all here");
    }

    #[test]
    fn a_request_with_a_body_needs_more_at_every_split() {
        let raw = b"POST /rpc?x=1 HTTP/1.1\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
        for cut in 0..raw.len() {
            assert_eq!(parse_request(&raw[..cut], 16), Ok(None), "cut at {cut}");
        }
        let r = parse_request(raw, 16).unwrap().unwrap();
        assert_eq!((r.query, r.body, r.keep_alive, r.len), (&b"x=1"[..], &b"hello"[..], false, raw.len()));
    }

    /// Never-panic property: any bytes, and any prefix of them, give a request, "need more", or an error, and a
    /// request never claims more bytes than it was given. Inputs are random mutations of valid requests (so the parser
    /// gets deep) plus random bytes, from a fixed seed so a failure reproduces.
    #[test]
    fn decoder_never_panics_on_mutated_input() {
        let seeds: [&[u8]; 4] = [
            b"GET /announce?info_hash=%12%34&peer_id=-TR3000-abcdefghijkl&port=6881&compact=1 HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /scrape?info_hash=aaaaaaaaaaaaaaaaaaaa HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            b"POST /x HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
            b"\r\n\nGET / HTTP/1.1\r\nA:\r\n\r\n",
        ];
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut dst = [0u8; 20];
        for round in 0..20_000 {
            let mut input = seeds[round % seeds.len()].to_vec();
            for _ in 0..(next() % 8) {
                let r = next();
                let pos = (r >> 8) as usize % (input.len() + 1);
                match r % 4 {
                    0 if pos < input.len() => input[pos] = (r >> 40) as u8,
                    1 => input.insert(pos, (r >> 40) as u8),
                    2 if pos < input.len() => {
                        input.remove(pos);
                    }
                    _ => input.extend((0..(r >> 50) % 64).map(|_| next() as u8)),
                }
            }
            if round % 10 == 0 {
                input = (0..next() % 300).map(|_| next() as u8).collect();
            }
            let cut = next() as usize % (input.len() + 1);
            for part in [&input[..cut], &input[..]] {
                if let Ok(Some(r)) = parse_request(part, 16) {
                    assert!(r.len <= part.len());
                    for (k, v) in query_pairs(r.query) {
                        let _ = percent_decode_into(k, &mut dst);
                        let _ = percent_decode_into(v, &mut dst);
                    }
                }
            }
        }
    }
}
