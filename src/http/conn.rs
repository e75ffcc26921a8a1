//! One HTTP client connection of a service, as a machine with the verbs of every toybt machine: it frames requests,
//! hands each whole one to the service's handler, frames the answer, and keeps the connection's keep-alive and
//! time-out state. It knows nothing of what the service does.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::Status;
use super::request::{self, HttpError, MAX_HEAD, Request};
use super::response::{self, Head};

/// Room reserved for a response before it is built: a tracker's announce answer with 50 compact peers and its head.
const RESPONSE_ROOM: usize = 512;

/// The connection's deadline passed; close it without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut;

/// A service's bounds on its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A keep-alive connection may stay silent this long between requests.
    pub idle_timeout: Duration,
    /// Once a request has begun, it must be complete within this time (slowloris).
    pub head_timeout: Duration,
    /// Largest request body accepted; 0 for a service whose requests carry everything in the target.
    pub max_body: usize,
}

impl Limits {
    /// The input a connection must be able to buffer: a whole request, and room for the start of the next.
    pub fn max_input(&self) -> usize {
        2 * MAX_HEAD + self.max_body
    }
}

/// The answer a handler builds. Its body is written straight into the connection's output, behind earlier answers.
#[derive(Debug)]
pub struct Response<'a> {
    pub status: Status,
    pub content_type: &'static str,
    /// Starts as the request asked; a handler may clear it to close after this answer.
    pub keep_alive: bool,
    extra_headers: String,
    out: &'a mut Vec<u8>,
    body_start: usize,
}

impl Response<'_> {
    /// Where the body goes. Append only: what is before the body is earlier answers on this connection.
    pub fn body(&mut self) -> &mut Vec<u8> {
        self.out
    }

    /// Adds a header line. A name or value with a line break (which would forge headers) is dropped.
    pub fn header(&mut self, name: &str, value: &str) {
        if name.contains(['\r', '\n', ':']) || value.contains(['\r', '\n']) {
            debug_assert!(false, "header {name:?} would break the head");
            return;
        }
        for p in [name, ": ", value, "\r\n"] {
            self.extra_headers.push_str(p);
        }
    }
}

/// One client connection of an HTTP service.
///
/// The reactor hands it the buffered input; it answers at most one request per call (so the reactor can stop feeding
/// it while its output is backed up) and says how many bytes that request used.
#[derive(Debug)]
pub struct Conn {
    from: SocketAddr,
    limits: Limits,
    /// Responses not yet taken by [`Conn::poll_transmit`].
    pending: Vec<u8>,
    last_request: Instant,
    /// When the first bytes of a still-incomplete request were seen.
    partial_since: Option<Instant>,
    /// No more requests: close once the output is written.
    closing: bool,
    requests: u64,
}

impl Conn {
    pub fn new(from: SocketAddr, now: Instant, limits: Limits) -> Conn {
        Conn { from, limits, pending: Vec::new(), last_request: now, partial_since: None, closing: false, requests: 0 }
    }

    /// Consumes at most one request from `input` and queues its response, built by `handler`; returns the bytes used
    /// (0: need more). Broken requests are answered here, with their status, and close the connection. Once the
    /// connection is closing, input is discarded.
    pub fn handle_bytes(
        &mut self,
        now: Instant,
        input: &[u8],
        handler: impl FnOnce(&Request<'_>, &mut Response<'_>),
    ) -> usize {
        if self.closing {
            return input.len();
        }
        match request::parse_request(input, self.limits.max_body) {
            Ok(None) => {
                if !input.is_empty() && self.partial_since.is_none() {
                    self.partial_since = Some(now);
                }
                0
            }
            Ok(Some(req)) => {
                self.partial_since = None;
                self.last_request = now;
                self.requests += 1;
                self.respond(&req, handler);
                req.len
            }
            Err(e) => {
                log::debug!("http: {} from {}: {}", e.status.code(), self.from, e.detail);
                self.answer_error(e);
                input.len()
            }
        }
    }

    fn respond(&mut self, req: &Request<'_>, handler: impl FnOnce(&Request<'_>, &mut Response<'_>)) {
        // `pending` is usually the connection's emptied output buffer, swapped in by `poll_transmit`, so it seldom
        // has to grow.
        self.pending.reserve(RESPONSE_ROOM);
        let body_start = self.pending.len();
        let mut resp = Response {
            status: Status::Ok,
            content_type: "text/plain",
            keep_alive: req.keep_alive,
            extra_headers: String::new(),
            out: &mut self.pending,
            body_start,
        };
        handler(req, &mut resp);
        let head = Head {
            status: resp.status,
            content_type: resp.content_type,
            extra_headers: &resp.extra_headers,
            keep_alive: resp.keep_alive,
        };
        response::frame_response(resp.out, resp.body_start, &head);
        self.closing = !resp.keep_alive;
    }

    fn answer_error(&mut self, e: HttpError) {
        let head = Head { status: e.status, content_type: "text/plain", extra_headers: "", keep_alive: false };
        let start = self.pending.len();
        self.pending.extend_from_slice(e.detail.as_bytes());
        self.pending.push(b'\n');
        response::frame_response(&mut self.pending, start, &head);
        self.closing = true;
    }

    /// Fails once the connection has been idle, or stuck in one request, for too long.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), TimedOut> {
        if now >= self.deadline() { Err(TimedOut) } else { Ok(()) }
    }

    /// Moves queued response bytes to `out`.
    pub fn poll_transmit(&mut self, _now: Instant, out: &mut Vec<u8>) {
        if out.is_empty() {
            std::mem::swap(out, &mut self.pending);
        } else {
            out.append(&mut self.pending);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.deadline())
    }

    /// True once the last response has been queued: the reactor closes after writing it.
    pub fn wants_close(&self) -> bool {
        self.closing
    }

    /// Who is connected.
    pub fn from(&self) -> SocketAddr {
        self.from
    }

    pub fn requests(&self) -> u64 {
        self.requests
    }

    fn deadline(&self) -> Instant {
        match self.partial_since {
            Some(t) => t + self.limits.head_timeout,
            None => self.last_request + self.limits.idle_timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits =
        Limits { idle_timeout: Duration::from_secs(30), head_timeout: Duration::from_secs(10), max_body: 16 };

    /// A second service, to show the connection is not the tracker's: it echoes POST bodies.
    fn echo(req: &Request<'_>, resp: &mut Response<'_>) {
        match (req.method, req.path) {
            ("POST", "/echo") => {
                resp.content_type = "application/octet-stream";
                resp.header("X-Len", &req.body.len().to_string());
                resp.body().extend_from_slice(req.body);
            }
            (_, "/echo") => resp.status = Status::MethodNotAllowed,
            _ => resp.status = Status::NotFound,
        }
    }

    fn feed(c: &mut Conn, now: Instant, input: &[u8]) -> (String, usize) {
        let mut used = 0;
        while used < input.len() {
            let n = c.handle_bytes(now, &input[used..], echo);
            if n == 0 {
                break;
            }
            used += n;
        }
        let mut out = Vec::new();
        c.poll_transmit(now, &mut out);
        (String::from_utf8(out).unwrap(), used)
    }

    fn conn() -> (Conn, Instant) {
        let now = Instant::now();
        (Conn::new("10.0.0.1:1000".parse().unwrap(), now, LIMITS), now)
    }

    #[test]
    fn a_post_body_split_at_every_byte_reaches_the_handler_whole() {
        let req = b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        for cut in 1..req.len() {
            let (mut c, now) = conn();
            assert_eq!(feed(&mut c, now, &req[..cut]), (String::new(), 0), "cut {cut}");
            let (out, used) = feed(&mut c, now, req);
            assert_eq!(used, req.len());
            assert_eq!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 5\r\nX-Len: 5\r\n\r\nhello"
            );
            assert!(!c.wants_close());
        }
    }

    #[test]
    fn a_body_over_the_limit_or_chunked_is_answered_and_closed() {
        for (req, status) in [
            (&b"POST /echo HTTP/1.1\r\nContent-Length: 17\r\n\r\n"[..], "413 Payload Too Large"),
            (b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n", "411 Length Required"),
        ] {
            let (mut c, now) = conn();
            let (out, used) = feed(&mut c, now, req);
            assert!(out.starts_with(&format!("HTTP/1.1 {status}\r\nContent-Type: text/plain\r\n")), "{out}");
            assert!(out.contains("Connection: close\r\n"), "{out}");
            assert_eq!(used, req.len(), "the rest of a refused request is discarded");
            assert!(c.wants_close());
        }
    }

    #[test]
    fn pipelined_requests_with_bodies_keep_their_framing() {
        let (mut c, now) = conn();
        let input =
            b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /echo HTTP/1.1\r\n\r\nPOST /x HTTP/1.0\r\n\r\n";
        let (out, used) = feed(&mut c, now, input);
        assert_eq!(used, input.len());
        let answers: Vec<&str> = out.split("HTTP/1.1 ").filter(|s| !s.is_empty()).collect();
        assert_eq!(answers.len(), 3, "{out}");
        assert!(answers[0].starts_with("200 OK") && answers[0].ends_with("\r\n\r\nabc"));
        assert!(answers[1].starts_with("405 Method Not Allowed"));
        assert!(answers[2].starts_with("404 Not Found") && answers[2].contains("Connection: close"));
        assert!(c.wants_close(), "HTTP/1.0 without keep-alive closes");
        assert_eq!(c.requests(), 3);
    }
}
