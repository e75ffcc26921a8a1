//! The embedded HTTP tracker, as state machines the reactor drives: no sockets and no clock in here.
//!
//! - [`http`]: request framing and query decoding (a codec).
//! - [`server`]: the swarm registry, [`Tracker`], shared by every connection of one loop (a service).
//! - [`Client`]: one HTTP connection to the tracker: bytes in, responses out, with its own deadline.

pub mod http;
pub mod server;

pub use server::{Config, Tracker};

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::{HttpError, Request, Status};

/// The connection's deadline passed; close it without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut;

/// One client connection to the tracker.
///
/// The reactor hands it the buffered input; it answers at most one request per call (so the reactor can stop feeding
/// it while its output is backed up) and says how many bytes that request used.
#[derive(Debug)]
pub struct Client {
    from: SocketAddr,
    /// Responses not yet taken by [`Client::poll_transmit`].
    pending: Vec<u8>,
    body: Vec<u8>,
    last_request: Instant,
    /// When the first bytes of a still-incomplete request were seen.
    partial_since: Option<Instant>,
    /// No more requests: close once the output is written.
    closing: bool,
    requests: u64,
    idle_timeout: Duration,
    head_timeout: Duration,
}

impl Client {
    pub fn new(from: SocketAddr, now: Instant, cfg: &Config) -> Client {
        Client {
            from,
            pending: Vec::new(),
            body: Vec::new(),
            last_request: now,
            partial_since: None,
            closing: false,
            requests: 0,
            idle_timeout: cfg.idle_timeout,
            head_timeout: cfg.head_timeout,
        }
    }

    /// Consumes at most one request from `input` and queues its response; returns the bytes used (0: need more).
    /// Once the connection is closing, input is discarded.
    pub fn handle_bytes(&mut self, now: Instant, input: &[u8], tracker: &mut Tracker) -> usize {
        if self.closing {
            return input.len();
        }
        match http::parse_request(input) {
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
                self.respond(now, &req, tracker);
                req.len
            }
            Err(e) => {
                log::debug!("tracker: {} from {}: {}", e.status.code(), self.from, e.detail);
                self.answer_error(e, false);
                input.len()
            }
        }
    }

    fn respond(&mut self, now: Instant, req: &Request<'_>, tracker: &mut Tracker) {
        if req.method != "GET" {
            let e = HttpError { status: Status::MethodNotAllowed, detail: "only GET is served" };
            return self.answer_error(e, req.keep_alive);
        }
        self.body.clear();
        match req.path {
            "/announce" => tracker.announce_query(now, req.query, self.from.ip(), &mut self.body),
            "/scrape" => tracker.scrape_query(req.query, &mut self.body),
            _ => {
                let e = HttpError { status: Status::NotFound, detail: "try /announce or /scrape" };
                return self.answer_error(e, req.keep_alive);
            }
        }
        http::write_response(&mut self.pending, Status::Ok, &self.body, req.keep_alive);
        self.closing = !req.keep_alive;
    }

    fn answer_error(&mut self, e: HttpError, keep_alive: bool) {
        let body = format!("{}\n", e.detail);
        http::write_response(&mut self.pending, e.status, body.as_bytes(), keep_alive);
        self.closing = !keep_alive;
    }

    /// Fails once the connection has been idle, or stuck in one request head, for too long.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), TimedOut> {
        if now >= self.deadline() { Err(TimedOut) } else { Ok(()) }
    }

    /// Moves queued response bytes to `out`.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) {
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

    pub fn requests(&self) -> u64 {
        self.requests
    }

    fn deadline(&self) -> Instant {
        match self.partial_since {
            Some(t) => t + self.head_timeout,
            None => self.last_request + self.idle_timeout,
        }
    }
}
