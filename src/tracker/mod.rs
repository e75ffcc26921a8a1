//! Both sides of tracking, as state machines the reactor drives: no sockets and no clock in here.
//!
//! - [`announce`]: the announce client of a torrent session (parameters, HTTP transport, schedule).
//! - [`registry`]: the swarm registry, [`Registry`], shared by every connection of one loop (a service): plain data
//!   in and out, for any front end.
//! - The HTTP front end: [`query`] decodes query strings, [`response`] bencodes the registry's answers, [`route`]
//!   answers one request, and [`Client`] is one HTTP connection to the tracker ([`crate::http::Conn`] with the
//!   tracker as its handler).

pub mod announce;
pub mod query;
pub mod registry;
pub mod response;
pub mod traffic;
pub mod udp;
pub mod views;

pub use registry::Registry;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::http::{self, Request, Response, Status};
use query::AnnounceQuery;

pub use crate::http::TimedOut;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The `interval` clients are told; peers expire after two of them.
    pub interval: Duration,
    /// Serve any info hash, not only the registered ones.
    pub open: bool,
    pub max_peers_per_swarm: usize,
    pub max_peers_total: usize,
    /// With `open`, how many swarms may exist at once (registered ones always exist).
    pub max_swarms: usize,
    /// A keep-alive connection may stay silent this long between requests.
    pub idle_timeout: Duration,
    /// Once a request has begun, its head must be complete within this time (slowloris).
    pub head_timeout: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            interval: Duration::from_secs(1800),
            open: false,
            max_peers_per_swarm: 50_000,
            max_peers_total: 500_000,
            max_swarms: 10_000,
            idle_timeout: Duration::from_secs(30),
            head_timeout: Duration::from_secs(10),
        }
    }
}

/// Answers an announce query from `ip`, appending to `body`: a peer list, or a `failure reason`.
pub fn announce_query(registry: &mut Registry, now: Instant, query: &[u8], ip: IpAddr, body: &mut Vec<u8>) {
    let q = match AnnounceQuery::from_query(query) {
        Ok(q) => q,
        Err(reason) => {
            registry.traffic_mut().http.refused += 1;
            return response::write_failure(body, &reason);
        }
    };
    match registry.announce(now, &q.announce, ip) {
        Ok(answer) => response::write_announce(body, &answer, q.compact, q.no_peer_id),
        Err(refusal) => {
            registry.traffic_mut().http.refused += 1;
            return response::write_failure(body, refusal.reason());
        }
    }
    registry.traffic_mut().http.count_announce(now);
}

/// Answers a scrape query, appending to `body`.
pub fn scrape_query(registry: &Registry, query: &[u8], body: &mut Vec<u8>) {
    match query::scrape_hashes(query) {
        Ok(hashes) => response::write_scrape(body, &registry.scrape(&hashes)),
        Err(reason) => response::write_failure(body, &reason),
    }
}

/// One client connection to the tracker: an HTTP connection whose handler is [`route`].
#[derive(Debug)]
pub struct Client {
    http: http::Conn,
}

impl Client {
    pub fn new(from: SocketAddr, now: Instant, cfg: &Config) -> Client {
        // Tracker requests carry everything in the target: no body.
        let limits = http::Limits { idle_timeout: cfg.idle_timeout, head_timeout: cfg.head_timeout, max_body: 0 };
        Client { http: http::Conn::new(from, now, limits) }
    }

    /// Consumes at most one request from `input` and queues its response; returns the bytes used (0: need more).
    /// Once the connection is closing, input is discarded.
    pub fn handle_bytes(&mut self, now: Instant, input: &[u8], registry: &mut Registry) -> usize {
        let from = self.http.from();
        self.http.handle_bytes(now, input, |req, resp| route(now, from, req, resp, registry))
    }

    /// Fails once the connection has been idle, or stuck in one request head, for too long.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), TimedOut> {
        self.http.handle_timeout(now)
    }

    /// Moves queued response bytes to `out`.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) {
        self.http.poll_transmit(now, out)
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.http.poll_timeout()
    }

    /// True once the last response has been queued: the reactor closes after writing it.
    pub fn wants_close(&self) -> bool {
        self.http.wants_close()
    }

    pub fn requests(&self) -> u64 {
        self.http.requests()
    }
}

/// The tracker's routes: `GET /announce` and `GET /scrape` from the client at `from`, and its views for people and
/// scrapers: `GET /stats` (HTML) and `GET /metrics` (Prometheus).
pub fn route(now: Instant, from: SocketAddr, req: &Request<'_>, resp: &mut Response<'_>, registry: &mut Registry) {
    // Clients show the body as it is: plain text, bencoded or not.
    resp.content_type = "text/plain";
    if req.method != "GET" {
        resp.status = Status::MethodNotAllowed;
        // RFC 9110 asks a 405 to say which methods are allowed.
        resp.header("Allow", "GET");
        resp.body().extend_from_slice(b"only GET is served\n");
        return;
    }
    // The body is written where the response goes and the head put in front of it: no buffer per request.
    match req.path {
        "/announce" => announce_query(registry, now, req.query, from.ip(), resp.body()),
        "/scrape" => {
            registry.traffic_mut().http.scrapes += 1;
            scrape_query(registry, req.query, resp.body())
        }
        "/metrics" => {
            resp.content_type = crate::metrics::CONTENT_TYPE;
            views::write_metrics(registry, now, resp.body());
        }
        "/stats" => {
            resp.content_type = "text/html; charset=utf-8";
            views::write_stats_page(registry, now, resp.body());
        }
        _ => {
            resp.status = Status::NotFound;
            resp.body().extend_from_slice(b"try /announce, /scrape, /stats or /metrics\n");
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod client_tests {
    use super::*;

    const HASH: [u8; 20] = [0x42; 20];

    fn setup() -> (Client, Registry, Instant) {
        let now = Instant::now();
        let cfg = Config { open: false, ..Config::default() };
        let tracker = Registry::new(cfg.clone(), [HASH], 3, now);
        (Client::new("10.1.2.3:5555".parse().unwrap(), now, &cfg), tracker, now)
    }

    fn announce_request(port: u16, extra_headers: &str) -> Vec<u8> {
        let hash: String = HASH.iter().map(|b| format!("%{b:02x}")).collect();
        format!(
            "GET /announce?info_hash={hash}&peer_id=-XX0001-abcdefghijkl&port={port}&left=1&compact=1 HTTP/1.1\r\n\
             Host: t\r\n{extra_headers}\r\n"
        )
        .into_bytes()
    }

    /// Feeds `input` like the reactor does (repeatedly, dropping what was consumed); returns the output.
    fn feed(c: &mut Client, t: &mut Registry, now: Instant, input: &[u8]) -> (Vec<u8>, usize) {
        let mut used = 0;
        while used < input.len() {
            let n = c.handle_bytes(now, &input[used..], t);
            if n == 0 {
                break;
            }
            used += n;
        }
        let mut out = Vec::new();
        c.poll_transmit(now, &mut out);
        (out, used)
    }

    fn responses(out: &[u8]) -> Vec<String> {
        let text = String::from_utf8_lossy(out);
        text.split("HTTP/1.1 ").filter(|s| !s.is_empty()).map(|s| s.to_string()).collect()
    }

    #[test]
    fn pipelined_requests_are_answered_in_order() {
        let (mut c, mut t, now) = setup();
        let mut input = announce_request(1000, "");
        input.extend_from_slice(b"GET /scrape HTTP/1.1\r\n\r\n");
        input.extend_from_slice(b"GET /nope HTTP/1.1\r\n\r\n");
        input.extend_from_slice(b"GET /announce?port=1 HTTP/1.1\r\n\r\n");
        let (out, used) = feed(&mut c, &mut t, now, &input);
        assert_eq!(used, input.len());
        let r = responses(&out);
        assert_eq!(r.len(), 4, "{r:?}");
        assert!(r[0].starts_with("200 OK") && r[0].contains("8:completei0e10:incompletei1e"), "{}", r[0]);
        assert!(r[1].starts_with("200 OK") && r[1].contains("5:filesd20:"), "{}", r[1]);
        assert!(r[2].starts_with("404 Not Found"), "{}", r[2]);
        assert!(r[3].starts_with("200 OK") && r[3].ends_with("d14:failure reason17:missing info_hashe"), "{}", r[3]);
        assert!(!c.wants_close());
        assert_eq!(c.requests(), 4);
        let http = &t.traffic().http;
        assert_eq!((http.announces, http.refused, http.scrapes), (1, 1, 1));
    }

    #[test]
    fn the_views_are_served_with_their_content_types() {
        let (mut c, mut t, now) = setup();
        let (out, _) = feed(&mut c, &mut t, now, &announce_request(1000, ""));
        assert!(out.starts_with(b"HTTP/1.1 200 OK"));
        let (out, _) = feed(&mut c, &mut t, now, b"GET /metrics HTTP/1.1\r\n\r\n");
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Content-Type: text/plain; version=0.0.4"), "{text}");
        assert!(text.contains("toybt_tracker_announces_total{protocol=\"http\"} 1\n"), "{text}");
        assert!(text.contains("toybt_tracker_peers{role=\"leecher\"} 1\n"), "{text}");
        let (out, _) = feed(&mut c, &mut t, now, b"GET /stats HTTP/1.1\r\n\r\n");
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Content-Type: text/html"), "{text}");
        assert!(text.contains(&format!("<tr><td>{}</td><td>0</td><td>1</td><td>0</td></tr>", "42".repeat(20))));
    }

    #[test]
    fn a_request_split_at_every_byte_is_answered_once_complete() {
        let req = announce_request(1000, "User-Agent: split\r\n");
        for cut in 1..req.len() {
            let (mut c, mut t, now) = setup();
            let (out, used) = feed(&mut c, &mut t, now, &req[..cut]);
            assert_eq!((out.len(), used), (0, 0), "cut {cut}");
            let (out, used) = feed(&mut c, &mut t, now, &req);
            assert_eq!(used, req.len());
            assert!(out.starts_with(b"HTTP/1.1 200 OK"));
        }
    }

    #[test]
    fn connection_close_is_honoured_after_the_answer() {
        let (mut c, mut t, now) = setup();
        let mut input = announce_request(1000, "Connection: close\r\n");
        input.extend_from_slice(b"GET /scrape HTTP/1.1\r\n\r\n");
        let (out, used) = feed(&mut c, &mut t, now, &input);
        assert_eq!(used, input.len(), "input after the last request is discarded");
        assert_eq!(responses(&out).len(), 1);
        assert!(String::from_utf8_lossy(&out).contains("Connection: close\r\n"));
        assert!(c.wants_close());
    }

    #[test]
    fn broken_http_is_answered_with_its_status_then_closed() {
        for (input, status) in [
            (&b"\x00\x01garbage\r\n\r\n"[..], "400 Bad Request"),
            (b"GET /announce HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789", "413 Payload Too Large"),
        ] {
            let (mut c, mut t, now) = setup();
            let (out, _) = feed(&mut c, &mut t, now, input);
            assert!(out.starts_with(format!("HTTP/1.1 {status}").as_bytes()), "{}", String::from_utf8_lossy(&out));
            assert!(c.wants_close());
        }
        let (mut c, mut t, now) = setup();
        let (out, _) = feed(&mut c, &mut t, now, b"POST /announce HTTP/1.1\r\n\r\n");
        assert!(out.starts_with(b"HTTP/1.1 405 Method Not Allowed"));
        assert!(!c.wants_close(), "a bodiless request keeps its framing");
    }

    #[test]
    fn idle_and_slow_connections_time_out() {
        let (mut c, mut t, t0) = setup();
        let idle = Config::default().idle_timeout;
        let head = Config::default().head_timeout;
        assert_eq!(c.poll_timeout(), Some(t0 + idle));
        assert_eq!(c.handle_timeout(t0 + idle - Duration::from_millis(1)), Ok(()));
        // A request resets the idle clock.
        let t1 = t0 + Duration::from_secs(5);
        feed(&mut c, &mut t, t1, &announce_request(1, ""));
        assert_eq!(c.poll_timeout(), Some(t1 + idle));
        // A head that starts but never ends must finish within the head timeout (slowloris).
        let t2 = t1 + Duration::from_secs(1);
        feed(&mut c, &mut t, t2, b"GET /announce?info_hash=");
        assert_eq!(c.poll_timeout(), Some(t2 + head));
        feed(&mut c, &mut t, t2 + Duration::from_secs(3), b"GET /announce?info_hash=%41");
        assert_eq!(c.poll_timeout(), Some(t2 + head), "more bytes of the same head do not buy time");
        assert_eq!(c.handle_timeout(t2 + head), Err(TimedOut));
    }
}
