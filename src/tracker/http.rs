//! HTTP/1.1 request framing for the tracker, with no IO: bytes in, one request (or "need more", or an error) out.
//!
//! A tracker request is a `GET` with everything in the query string and no body, so the framing is the request head
//! alone, bounded to [`MAX_HEAD`] bytes. Errors carry the status the client is answered with; after one, the
//! connection closes, because we no longer know where the next request would start.
//!
//! Query values are percent-decoded into caller buffers: `info_hash` and `peer_id` are 20 raw bytes, and a fixed
//! destination means a hostile value can never make us allocate.

/// Longest request head (request line and headers) we buffer.
pub const MAX_HEAD: usize = 8 * 1024;
/// Most header lines in one request; real clients send fewer than 10.
pub const MAX_HEADERS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    HeaderFieldsTooLarge,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::PayloadTooLarge => 413,
            Status::HeaderFieldsTooLarge => 431,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::PayloadTooLarge => "Payload Too Large",
            Status::HeaderFieldsTooLarge => "Request Header Fields Too Large",
        }
    }
}

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

/// One parsed request head, borrowing from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The request target up to `?`.
    pub path: &'a str,
    /// Everything after the first `?`, still percent-encoded; empty when there is none.
    pub query: &'a [u8],
    /// Whether the connection stays open after the response (HTTP/1.1 default, HTTP/1.0 opt-in).
    pub keep_alive: bool,
    /// Bytes of input this request used.
    pub len: usize,
}

/// Parses the request at the start of `buf`. `Ok(None)` means the head is not complete yet.
pub fn parse_request(buf: &[u8]) -> Result<Option<Request<'_>>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
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
    if len > MAX_HEAD {
        return Err(HttpError::new(Status::HeaderFieldsTooLarge, "request head longer than 8 KiB"));
    }
    // httparse returns Complete only with all three request-line parts present.
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HttpError::new(Status::BadRequest, "malformed HTTP request"));
    };
    let mut keep_alive = minor >= 1;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value).ok().and_then(|s| s.trim().parse::<u64>().ok());
            match n {
                Some(0) => {}
                Some(_) => return Err(HttpError::new(Status::PayloadTooLarge, "tracker requests have no body")),
                None => return Err(HttpError::new(Status::BadRequest, "invalid Content-Length")),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::new(Status::PayloadTooLarge, "tracker requests have no body"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        }
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, q.as_bytes()),
        None => (target, &b""[..]),
    };
    Ok(Some(Request { method, path, query, keep_alive, len }))
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

/// Appends a complete response with `body` to `out`.
pub fn write_response(out: &mut Vec<u8>, status: Status, body: &[u8], keep_alive: bool) {
    let start = out.len();
    out.extend_from_slice(body);
    frame_response(out, start, status, keep_alive);
}

/// Makes the body already at `out[body_start..]` a complete response by putting the head in front of it, so a body
/// can be written where the response goes, with no buffer of its own and no copy but the move of the head's length.
pub fn frame_response(out: &mut Vec<u8>, body_start: usize, status: Status, keep_alive: bool) {
    let mut head = Head { buf: [0; HEAD_ROOM], len: 0 };
    head.push(b"HTTP/1.1 ");
    head.push_decimal(u64::from(status.code()));
    head.push(b" ");
    head.push(status.reason().as_bytes());
    head.push(b"\r\nContent-Type: text/plain\r\nContent-Length: ");
    head.push_decimal((out.len() - body_start) as u64);
    head.push(b"\r\n");
    if status == Status::MethodNotAllowed {
        // RFC 9110 asks a 405 to say which methods are allowed.
        head.push(b"Allow: GET\r\n");
    }
    if !keep_alive {
        head.push(b"Connection: close\r\n");
    }
    head.push(b"\r\n");
    out.splice(body_start..body_start, head.buf[..head.len].iter().copied());
}

/// Room for the longest head `frame_response` writes: the longest status line (46 bytes), the two length headers
/// with a 20-digit length (62), `Allow` (12), `Connection` (19) and the blank line.
const HEAD_ROOM: usize = 160;

/// A response head built on the stack.
struct Head {
    buf: [u8; HEAD_ROOM],
    len: usize,
}

impl Head {
    fn push(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn push_decimal(&mut self, n: u64) {
        self.push(crate::bencode::decimal(n, &mut [0; 20]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &[u8]) -> Result<Option<Request<'_>>, HttpError> {
        parse_request(s)
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
    fn response_has_length_and_close_header_when_closing() {
        let mut out = Vec::new();
        write_response(&mut out, Status::Ok, b"d1:ai1ee", true);
        assert_eq!(out, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 8\r\n\r\nd1:ai1ee");
        out.clear();
        write_response(&mut out, Status::MethodNotAllowed, b"x", false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(text.ends_with("Allow: GET\r\nConnection: close\r\n\r\nx"), "{text}");
    }

    #[test]
    fn a_body_built_in_place_is_framed_behind_earlier_responses() {
        let mut out = Vec::new();
        write_response(&mut out, Status::Ok, b"first", true);
        let first = out.clone();
        let start = out.len();
        out.extend_from_slice(b"second body");
        frame_response(&mut out, start, Status::HeaderFieldsTooLarge, false);
        assert_eq!(&out[..start], &first[..]);
        let text = String::from_utf8(out[start..].to_vec()).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\
             Connection: close\r\n\r\nsecond body"
        );
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
                if let Ok(Some(r)) = parse_request(part) {
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
