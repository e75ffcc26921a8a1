//! The announce client, without IO: the announce parameters, the HTTP transport ([`Exchange`]: it encodes the
//! request and parses the tracker's reply), and the schedule that decides when to announce next (interval, min
//! interval, events, BEP 12 tiers, exponential backoff with jitter).
//!
//! The reactor owns the TCP connection; this module only sees the bytes and the time it is given.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::{Duration, Instant};

use super::TimedOut;
use crate::bencode::{self, Value};

/// A tracker reply larger than this is refused: a full compact list of 200 peers is about 1.2 KiB.
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// A tracker that has not answered in this long is counted as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Retry delays after failures grow from this ...
const FIRST_RETRY: Duration = Duration::from_secs(15);
/// ... up to this.
const MAX_RETRY: Duration = Duration::from_secs(30 * 60);
/// Bounds on what a tracker may ask for, so a hostile `interval` neither floods it nor silences us for a year.
const MIN_INTERVAL_FLOOR: Duration = Duration::from_secs(10);
const MAX_INTERVAL: Duration = Duration::from_secs(2 * 60 * 60);
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30 * 60);

/// How an announce travels: the scheme of the tracker's URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    /// BEP 15: announced through [`crate::tracker::udp::UdpAnnouncer`], not an [`Exchange`].
    Udp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerUrl {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// Path plus any query the torrent's URL already carries (private trackers put a passkey there).
    pub path: String,
}

impl TrackerUrl {
    /// Parses an `http://` or `udp://` announce URL; other schemes (https) are refused with a reason.
    pub fn parse(url: &str) -> Result<TrackerUrl, String> {
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else if let Some(rest) = url.strip_prefix("udp://") {
            (Scheme::Udp, rest)
        } else {
            return Err(format!("tracker URL {url:?} is not http:// or udp:// (https trackers are not supported)"));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') { format!("/{path}") } else { path.to_string() };
        let bad_port = || format!("tracker URL {url:?} has a bad port");
        let (host, port_text) = match authority.strip_prefix('[') {
            // An IPv6 literal: `[::1]` or `[::1]:6969`.
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(|| format!("tracker URL {url:?} is malformed"))?;
                match after {
                    "" => (host, None),
                    _ => (host, Some(after.strip_prefix(':').ok_or_else(bad_port)?)),
                }
            }
            None => match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            },
        };
        let port = match (port_text, scheme) {
            (Some(p), _) => p.parse::<u16>().map_err(|_| bad_port())?,
            (None, Scheme::Http) => 80,
            // UDP has no well-known tracker port to fall back on.
            (None, Scheme::Udp) => return Err(format!("tracker URL {url:?} has no port")),
        };
        if host.is_empty() || port == 0 || path.contains(['\r', '\n', ' ']) {
            return Err(format!("tracker URL {url:?} is malformed"));
        }
        Ok(TrackerUrl { scheme, host: host.to_string(), port, path })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Started,
    Completed,
    Stopped,
}

impl Event {
    fn as_str(self) -> &'static str {
        match self {
            Event::Started => "started",
            Event::Completed => "completed",
            Event::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceParams {
    pub info_hash: [u8; 20],
    pub peer_id: [u8; 20],
    pub port: u16,
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
    pub event: Option<Event>,
    pub numwant: u32,
    pub key: u32,
}

/// Percent-encodes every byte outside RFC 3986's unreserved set, as binary `info_hash` and `peer_id` need.
pub fn percent_encode(bytes: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
}

/// The whole HTTP/1.1 request for one announce. `Connection: close` because we announce once per interval.
fn request_bytes(url: &TrackerUrl, p: &AnnounceParams) -> Vec<u8> {
    let mut target = url.path.clone();
    target.push(if target.contains('?') { '&' } else { '?' });
    target.push_str("info_hash=");
    percent_encode(&p.info_hash, &mut target);
    target.push_str("&peer_id=");
    percent_encode(&p.peer_id, &mut target);
    target.push_str(&format!(
        "&port={}&uploaded={}&downloaded={}&left={}&compact=1&numwant={}&key={:08X}",
        p.port, p.uploaded, p.downloaded, p.left, p.numwant, p.key
    ));
    if let Some(e) = p.event {
        target.push_str("&event=");
        target.push_str(e.as_str());
    }
    let host = if url.host.contains(':') { format!("[{}]", url.host) } else { url.host.clone() };
    format!(
        "GET {target} HTTP/1.1\r\nHost: {host}:{}\r\nUser-Agent: toybt/{}\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n",
        url.port,
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes()
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AnnounceResponse {
    pub interval: Option<Duration>,
    pub min_interval: Option<Duration>,
    pub complete: Option<u64>,
    pub incomplete: Option<u64>,
    pub peers: Vec<SocketAddr>,
    pub warning: Option<String>,
}

/// Reads a tracker's HTTP reply. `eof` says the server closed the connection, which ends a body without a length.
/// `Ok(None)` means more bytes are needed; `Err` is a sentence saying why the announce failed (including the
/// tracker's own `failure reason`).
pub fn parse_response(buf: &[u8], eof: bool) -> Result<Option<AnnounceResponse>, String> {
    if buf.len() > MAX_RESPONSE_BYTES {
        return Err(format!("tracker reply is larger than {MAX_RESPONSE_BYTES} bytes"));
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if eof => return Err("tracker closed the connection mid-reply".into()),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("tracker sent a malformed HTTP reply ({e})")),
    };
    let code = resp.code.unwrap_or(0);
    let header = |name: &str| {
        resp.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| String::from_utf8_lossy(h.value))
    };
    let chunked = header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let content_length = match header("content-length") {
        Some(v) => Some(v.trim().parse::<usize>().map_err(|_| "tracker sent a bad Content-Length".to_string())?),
        None => None,
    };
    let raw_body = &buf[head_len..];
    let body: Vec<u8> = if chunked {
        match dechunk(raw_body)? {
            Some(b) => b,
            None if eof => return Err("tracker closed the connection mid-reply".into()),
            None => return Ok(None),
        }
    } else if let Some(len) = content_length {
        if raw_body.len() < len {
            return if eof { Err("tracker closed the connection mid-reply".into()) } else { Ok(None) };
        }
        raw_body[..len].to_vec()
    } else if eof {
        raw_body.to_vec()
    } else {
        return Ok(None);
    };
    if code != 200 {
        return Err(format!("tracker answered HTTP {code}"));
    }
    parse_body(&body).map(Some)
}

/// Decodes a chunked body; `Ok(None)` until the terminating zero-length chunk has arrived.
fn dechunk(mut data: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") else { return Ok(None) };
        let size_text = std::str::from_utf8(&data[..line_end]).map_err(|_| "bad chunk size".to_string())?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "tracker sent a bad chunk size".to_string())?;
        if size > MAX_RESPONSE_BYTES {
            return Err("tracker sent an oversized chunk".into());
        }
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        if data.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

fn parse_body(body: &[u8]) -> Result<AnnounceResponse, String> {
    let v = bencode::decode(body).map_err(|e| format!("tracker reply is not valid bencode ({e})"))?;
    if !v.is_dict() {
        return Err("tracker reply is not a dictionary".into());
    }
    if let Some(reason) = v.get("failure reason") {
        let reason = reason.as_bytes().map(String::from_utf8_lossy).unwrap_or_default();
        return Err(format!("tracker refused the announce: {reason}"));
    }
    let secs = |key: &str| {
        v.get(key).and_then(Value::as_int).filter(|&n| n >= 0).map(|n| Duration::from_secs(n.unsigned_abs()))
    };
    let count = |key: &str| v.get(key).and_then(Value::as_int).and_then(|n| u64::try_from(n).ok());
    let mut peers = Vec::new();
    match v.get("peers") {
        Some(Value::Bytes(compact)) => {
            peers.extend(compact.chunks_exact(6).map(|c| {
                let ip = Ipv4Addr::new(c[0], c[1], c[2], c[3]);
                SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be_bytes([c[4], c[5]])))
            }));
        }
        Some(Value::List(list)) => peers.extend(list.iter().filter_map(dict_peer)),
        _ => {}
    }
    if let Some(Value::Bytes(compact6)) = v.get("peers6") {
        peers.extend(compact6.chunks_exact(18).map(|c| {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&c[..16]);
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), u16::from_be_bytes([c[16], c[17]]), 0, 0))
        }));
    }
    peers.retain(|a| a.port() != 0);
    Ok(AnnounceResponse {
        interval: secs("interval"),
        min_interval: secs("min interval"),
        complete: count("complete"),
        incomplete: count("incomplete"),
        peers,
        warning: v.get("warning message").and_then(Value::as_bytes).map(|w| String::from_utf8_lossy(w).into_owned()),
    })
}

/// One peer of the dictionary model: `{ip, port, peer id}`; names instead of addresses are skipped (no DNS here).
fn dict_peer(v: &Value) -> Option<SocketAddr> {
    let ip: std::net::IpAddr = v.get("ip")?.as_str()?.parse().ok()?;
    let port = u16::try_from(v.get("port")?.as_int()?).ok()?;
    Some(SocketAddr::new(ip, port))
}

/// One announce over one HTTP connection: send the request, collect the reply, and say how it ended exactly once.
#[derive(Debug)]
pub struct Exchange {
    request: Vec<u8>,
    reply: Vec<u8>,
    deadline: Instant,
    result: Option<Result<AnnounceResponse, String>>,
}

impl Exchange {
    /// The exchange for one announce to `url`, failing at `now + timeout`. Refused (with the sentence the session
    /// logs) when the URL's scheme is not HTTP: udp trackers have their own transport ([`crate::tracker::udp`]).
    pub fn new(now: Instant, url: &TrackerUrl, params: &AnnounceParams, timeout: Duration) -> Result<Exchange, String> {
        match url.scheme {
            Scheme::Http => {}
            Scheme::Udp => return Err(format!("udp tracker {}:{} is not announced over HTTP", url.host, url.port)),
        }
        let request = request_bytes(url, params);
        Ok(Exchange { request, reply: Vec::new(), deadline: now + timeout, result: None })
    }

    /// Reply bytes; everything is taken. Once the reply is whole (or hopeless) the exchange wants to close.
    pub fn handle_bytes(&mut self, _now: Instant, input: &[u8]) -> usize {
        if self.result.is_none() {
            self.reply.extend_from_slice(input);
            match parse_response(&self.reply, false) {
                Ok(None) => {}
                Ok(Some(resp)) => self.result = Some(Ok(resp)),
                Err(e) => self.result = Some(Err(e)),
            }
        }
        input.len()
    }

    /// Fails once the deadline has passed without a whole reply (an early call does nothing).
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), TimedOut> {
        if self.result.is_none() && now >= self.deadline { Err(TimedOut) } else { Ok(()) }
    }

    /// The request, once.
    pub fn poll_transmit(&mut self, _now: Instant, out: &mut Vec<u8>) {
        out.append(&mut self.request);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.deadline)
    }

    /// True once the reply is whole or hopeless: the caller closes and then calls [`Exchange::finish`].
    pub fn wants_close(&self) -> bool {
        self.result.is_some()
    }

    /// The connection closed: the outcome, with `closed_cleanly` saying the tracker ended it (which may end a reply
    /// without a length) rather than an error or our time-out (`why`).
    pub fn finish(mut self, closed_cleanly: bool, why: &str) -> Result<AnnounceResponse, String> {
        if let Some(r) = self.result.take() {
            return r;
        }
        if closed_cleanly {
            return match parse_response(&self.reply, true) {
                Ok(Some(resp)) => Ok(resp),
                Ok(None) => Err("tracker closed the connection without a reply".into()),
                Err(e) => Err(e),
            };
        }
        Err(format!("tracker connection failed: {why}"))
    }
}

/// When and where to announce next. Trackers are tried in BEP 12 order: the first tier first, trackers within a tier
/// in order; one that answers moves to the front of its tier; when every tracker has failed, we back off.
#[derive(Debug)]
pub struct Schedule {
    tiers: Vec<Vec<TrackerUrl>>,
    /// Position in the tier list of the tracker being tried.
    cursor: (usize, usize),
    next_at: Option<Instant>,
    in_flight: Option<(usize, usize)>,
    /// The event still owed to the trackers: `started` until one accepts it, then `completed` or `stopped`.
    pending_event: Option<Event>,
    interval: Duration,
    min_interval: Duration,
    failures: u32,
    stopping: bool,
    completed_reported: bool,
    /// Trackers that failed lately, by URL, and until when they are passed over while another one is left to try.
    failed_lately: Vec<(TrackerUrl, Instant)>,
    rng: u64,
}

/// A tracker that failed is passed over this long when the tiers hold another one, so a dead first tier does not
/// cost every later announce (`completed`, `stopped`) its whole time-out again.
const PASS_OVER_FAILED: Duration = Duration::from_secs(300);

/// What the caller must send now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub url: TrackerUrl,
    pub event: Option<Event>,
    /// If this tracker fails, another one is tried at once (rather than backing off): it may be given up sooner.
    pub fallback: bool,
}

impl Schedule {
    /// A schedule whose first announce (`started`) is due at `now`. Empty tiers are dropped.
    pub fn new(tiers: Vec<Vec<TrackerUrl>>, now: Instant, seed: u64) -> Schedule {
        let tiers: Vec<Vec<TrackerUrl>> = tiers.into_iter().filter(|t| !t.is_empty()).collect();
        let next_at = if tiers.is_empty() { None } else { Some(now) };
        Schedule {
            tiers,
            cursor: (0, 0),
            next_at,
            in_flight: None,
            pending_event: Some(Event::Started),
            interval: DEFAULT_INTERVAL,
            min_interval: MIN_INTERVAL_FLOOR,
            failures: 0,
            stopping: false,
            completed_reported: false,
            failed_lately: Vec::new(),
            rng: seed | 1,
        }
    }

    /// Every tracker, in the order they are tried.
    pub fn urls(&self) -> Vec<TrackerUrl> {
        self.tiers.iter().flatten().cloned().collect()
    }

    pub fn has_trackers(&self) -> bool {
        !self.tiers.is_empty()
    }

    /// The next time something is due, for the reactor's timer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.in_flight.is_some() { None } else { self.next_at }
    }

    /// The announce to send now, if one is due and none is in flight.
    pub fn poll_due(&mut self, now: Instant) -> Option<Due> {
        if self.tiers.is_empty() || self.in_flight.is_some() || self.next_at.is_none_or(|t| now < t) {
            return None;
        }
        // In tier order, passing over trackers that failed lately; when every one left did, in order all the same.
        let mut pos = self.cursor;
        let mut candidate = Some(self.cursor);
        while let Some(p) = candidate {
            if !self.failed_lately(now, p) {
                pos = p;
                break;
            }
            candidate = self.after(p);
        }
        self.cursor = pos;
        self.in_flight = Some(pos);
        let (t, i) = pos;
        let fallback = self.after(pos).is_some();
        Some(Due { url: self.tiers[t][i].clone(), event: self.pending_event, fallback })
    }

    /// The position after `pos` in tier order, if any.
    fn after(&self, (t, i): (usize, usize)) -> Option<(usize, usize)> {
        if i + 1 < self.tiers[t].len() {
            Some((t, i + 1))
        } else if t + 1 < self.tiers.len() {
            Some((t + 1, 0))
        } else {
            None
        }
    }

    fn failed_lately(&self, now: Instant, (t, i): (usize, usize)) -> bool {
        let url = &self.tiers[t][i];
        self.failed_lately.iter().any(|(u, until)| u == url && now < *until)
    }

    /// The download finished: tell the tracker now (a `completed` is never deferred to the next interval).
    pub fn completed(&mut self, now: Instant) {
        self.pending_event = Some(Event::Completed);
        self.next_at = self.next_at.map(|t| t.min(now)).or(Some(now));
    }

    /// We are shutting down: one last `stopped` announce, then nothing more.
    pub fn stop(&mut self, now: Instant) {
        self.stopping = true;
        self.pending_event = Some(Event::Stopped);
        self.next_at = Some(now);
    }

    /// True once a `completed` announce has had its answer (or failed): the tracker has been told, or tried.
    pub fn completed_reported(&self) -> bool {
        self.completed_reported
    }

    /// True once the `stopped` announce has been answered (or failed): the caller may exit.
    pub fn is_stopped(&self) -> bool {
        self.stopping && self.next_at.is_none() && self.in_flight.is_none()
    }

    pub fn on_success(&mut self, now: Instant, resp: &AnnounceResponse) {
        let Some((t, i)) = self.in_flight.take() else { return };
        self.completed_reported |= self.pending_event == Some(Event::Completed);
        let answered = &self.tiers[t][i];
        self.failed_lately.retain(|(u, _)| u != answered);
        // BEP 12: a tracker that answers moves to the front of its tier.
        let url = self.tiers[t].remove(i);
        self.tiers[t].insert(0, url);
        self.cursor = (0, 0);
        self.failures = 0;
        if self.stopping {
            self.next_at = None;
            return;
        }
        self.pending_event = None;
        self.min_interval = resp.min_interval.unwrap_or(MIN_INTERVAL_FLOOR).clamp(MIN_INTERVAL_FLOOR, MAX_INTERVAL);
        self.interval = resp.interval.unwrap_or(DEFAULT_INTERVAL).clamp(self.min_interval, MAX_INTERVAL);
        self.next_at = Some(now + self.interval);
    }

    pub fn on_failure(&mut self, now: Instant) {
        let Some((t, i)) = self.in_flight.take() else { return };
        self.completed_reported |= self.pending_event == Some(Event::Completed);
        let failed = self.tiers[t][i].clone();
        self.failed_lately.retain(|(u, until)| *u != failed && now < *until);
        self.failed_lately.push((failed, now + PASS_OVER_FAILED));
        // Next tracker in this tier, then the next tier; after a full pass, wait before starting over.
        self.cursor = self.after((t, i)).unwrap_or((0, 0));
        if self.cursor != (0, 0) {
            self.next_at = Some(now);
            return;
        }
        if self.stopping {
            // Nobody took our `stopped`; do not hold the exit hostage to a dead tracker.
            self.next_at = None;
            return;
        }
        self.failures = self.failures.saturating_add(1);
        let base = FIRST_RETRY.saturating_mul(1 << self.failures.min(8).saturating_sub(1)).min(MAX_RETRY);
        self.next_at = Some(now + self.jitter(base));
    }

    /// A delay of 75%..125% of `base`, so a swarm restarted together does not announce in lock step.
    fn jitter(&mut self, base: Duration) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let permille = 750 + (self.rng % 501);
        base * permille as u32 / 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> TrackerUrl {
        TrackerUrl::parse(s).unwrap()
    }

    #[test]
    fn parses_urls() {
        assert_eq!(
            url("http://t.example:6969/announce"),
            TrackerUrl { scheme: Scheme::Http, host: "t.example".into(), port: 6969, path: "/announce".into() }
        );
        assert_eq!(
            url("udp://t.example:6969/announce"),
            TrackerUrl { scheme: Scheme::Udp, host: "t.example".into(), port: 6969, path: "/announce".into() }
        );
        assert_eq!(url("udp://[::1]:80").path, "/");
        assert_eq!(url("http://127.0.0.1/a?passkey=x").path, "/a?passkey=x");
        assert_eq!(url("http://h").path, "/");
        assert_eq!(url("http://[::1]:8080/announce").host, "::1");
        assert_eq!(url("http://[::1]/announce").port, 80);
        for bad in ["udp://t/announce", "https://t/announce", "http://:80/", "http://h:99999/", "http://h/a b"] {
            assert!(TrackerUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_has_binary_params_encoded() {
        let p = AnnounceParams {
            info_hash: [0xff; 20],
            peer_id: *b"-TB0100-abcdefghijkl",
            port: 6881,
            uploaded: 1,
            downloaded: 2,
            left: 3,
            event: Some(Event::Started),
            numwant: 50,
            key: 0xdeadbeef,
        };
        let req = String::from_utf8(request_bytes(&url("http://h:1/ann?pk=1"), &p)).unwrap();
        let line = req.lines().next().unwrap();
        assert!(line.starts_with("GET /ann?pk=1&info_hash=%FF%FF"), "{line}");
        assert!(line.contains("&peer_id=-TB0100-abcdefghijkl&port=6881&uploaded=1&downloaded=2&left=3&compact=1"));
        assert!(line.ends_with("&event=started HTTP/1.1"));
        assert!(req.contains("\r\nHost: h:1\r\n") && req.ends_with("\r\n\r\n"));
    }

    #[test]
    fn parses_compact_dict_and_v6_peers() {
        let mut body = b"d8:completei3e10:incompletei4e8:intervali900e12:min intervali60e5:peers12:".to_vec();
        body.extend_from_slice(&[127, 0, 0, 1, 0x1a, 0xe1, 10, 0, 0, 2, 0, 0]);
        body.extend_from_slice(b"6:peers618:");
        body.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 80]);
        body.push(b'e');
        let mut reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        reply.extend_from_slice(&body);
        assert_eq!(parse_response(&reply[..reply.len() - 1], false), Ok(None));
        let r = parse_response(&reply, false).unwrap().unwrap();
        assert_eq!(r.interval, Some(Duration::from_secs(900)));
        assert_eq!(r.min_interval, Some(Duration::from_secs(60)));
        assert_eq!((r.complete, r.incomplete), (Some(3), Some(4)));
        assert_eq!(r.peers, vec!["127.0.0.1:6881".parse().unwrap(), "[::1]:80".parse().unwrap()]);

        let dict = b"HTTP/1.0 200 OK\r\n\r\nd5:peersld2:ip9:127.0.0.27:peer id20:xxxxxxxxxxxxxxxxxxxx4:porti7eeee";
        assert_eq!(parse_response(dict, false), Ok(None), "no length: the body ends at close");
        let r = parse_response(dict, true).unwrap().unwrap();
        assert_eq!(r.peers, vec!["127.0.0.2:7".parse().unwrap()]);
    }

    #[test]
    fn reports_failures_as_sentences() {
        let fail = b"HTTP/1.1 200 OK\r\nContent-Length: 34\r\n\r\nd14:failure reason12:unregisterede";
        assert!(parse_response(fail, false).unwrap_err().contains("unregistered"));
        assert!(
            parse_response(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", false).unwrap_err().contains("404")
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\nnot bencode", true).is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Le", true).is_err());
        assert!(parse_response(b"garbage\r\n\r\n", false).is_err());
        let huge = vec![b'a'; MAX_RESPONSE_BYTES + 1];
        assert!(parse_response(&huge, false).is_err());
    }

    #[test]
    fn chunked_body() {
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nd8:i\r\n10\r\nntervali5eee\r\n0\r\n\r\n";
        // "d8:i" + "ntervali5ee" is 15 bytes of body; the hex 10 chunk claims 16, so it waits for more.
        assert_eq!(parse_response(r, false), Ok(None));
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nd8:i\r\nb\r\nntervali5ee\r\n0\r\n\r\n";
        assert_eq!(parse_response(r, false).unwrap().unwrap().interval, Some(Duration::from_secs(5)));
    }

    #[test]
    fn never_panics_on_mutated_replies() {
        let base = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nd8:i\r\nb\r\nntervali5ee\r\n0\r\n\r\n";
        let mut x: u64 = 12345;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut m = base.to_vec();
            let i = x as usize % m.len();
            m[i] = (x >> 40) as u8;
            let _ = parse_response(&m[..(x >> 20) as usize % (m.len() + 1)], x & 1 == 0);
        }
    }

    fn params() -> AnnounceParams {
        AnnounceParams {
            info_hash: [0xff; 20],
            peer_id: *b"-TB0100-abcdefghijkl",
            port: 6881,
            uploaded: 1,
            downloaded: 2,
            left: 3,
            event: None,
            numwant: 50,
            key: 1,
        }
    }

    #[test]
    fn exchange_reports_reply_close_or_failure() {
        let t0 = Instant::now();
        let url = url("http://h:1/ann");
        let mut x = Exchange::new(t0, &url, &params(), REQUEST_TIMEOUT).unwrap();
        let mut out = Vec::new();
        x.poll_transmit(t0, &mut out);
        x.poll_transmit(t0, &mut out);
        assert_eq!(out, request_bytes(&url, &params()), "the request goes out once");
        let reply = b"HTTP/1.0 200 OK\r\n\r\nd8:intervali60ee";
        assert_eq!(x.handle_bytes(t0, &reply[..10]), 10);
        x.handle_bytes(t0, &reply[10..]);
        assert!(!x.wants_close(), "no length: the reply ends when the tracker closes");
        assert_eq!(x.finish(true, "closed").unwrap().interval, Some(Duration::from_secs(60)));

        let mut x = Exchange::new(t0, &url, &params(), REQUEST_TIMEOUT).unwrap();
        assert_eq!(x.handle_timeout(t0), Ok(()));
        assert_eq!(x.handle_timeout(t0 + REQUEST_TIMEOUT), Err(TimedOut));
        assert!(x.finish(false, "timed out").unwrap_err().contains("timed out"));
    }

    #[test]
    fn udp_trackers_are_refused_by_the_http_transport() {
        let e = Exchange::new(Instant::now(), &url("udp://t:6969/announce"), &params(), REQUEST_TIMEOUT).unwrap_err();
        assert!(e.contains("is not announced over HTTP"), "{e}");
    }

    #[test]
    fn schedule_follows_interval_events_and_backoff() {
        let t0 = Instant::now();
        let tiers = vec![vec![url("http://a/"), url("http://b/")], vec![url("http://c/")]];
        let mut s = Schedule::new(tiers, t0, 1);
        let d = s.poll_due(t0).unwrap();
        assert_eq!((d.url.host.as_str(), d.event), ("a", Some(Event::Started)));
        assert_eq!(s.poll_due(t0), None, "one announce in flight at a time");
        s.on_failure(t0);
        assert_eq!(s.poll_due(t0).unwrap().url.host, "b", "next tracker in the tier at once");
        let ok = AnnounceResponse { interval: Some(Duration::from_secs(100)), ..Default::default() };
        s.on_success(t0, &ok);
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(100)));
        assert_eq!(s.poll_due(t0 + Duration::from_secs(99)), None);
        let d = s.poll_due(t0 + Duration::from_secs(100)).unwrap();
        assert_eq!((d.url.host.as_str(), d.event), ("b", None), "b answered, so it leads its tier");
        s.on_success(t0 + Duration::from_secs(100), &ok);

        let t1 = t0 + Duration::from_secs(150);
        s.completed(t1);
        assert!(!s.completed_reported());
        assert_eq!(s.poll_due(t1).unwrap().event, Some(Event::Completed));
        s.on_failure(t1);
        let d = s.poll_due(t1).unwrap();
        assert_eq!(d.url.host, "c", "a failed 150 s ago: passed over while another tracker is left");
        s.on_failure(t1);
        let retry = s.poll_timeout().unwrap();
        let wait = retry - t1;
        assert!(wait >= FIRST_RETRY * 3 / 4 && wait <= FIRST_RETRY * 5 / 4, "{wait:?}");
        let d = s.poll_due(retry).unwrap();
        assert_eq!(d.event, Some(Event::Completed), "the event is kept until accepted");
        assert_eq!(d.url.host, "b", "when every tracker failed lately, in tier order again (b leads its tier)");
        assert!(s.completed_reported(), "a failed attempt counts as reported, so --seed-time 0 is not held hostage");
    }

    #[test]
    fn a_dead_first_tier_is_passed_over_by_later_announces_for_a_while() {
        let t0 = Instant::now();
        let tiers = vec![vec![url("udp://dead:1/")], vec![url("http://live/")]];
        let mut s = Schedule::new(tiers, t0, 1);
        assert_eq!(s.poll_due(t0).unwrap().url.host, "dead");
        s.on_failure(t0);
        assert_eq!(s.poll_due(t0).unwrap().url.host, "live");
        s.on_success(t0, &AnnounceResponse { interval: Some(Duration::from_secs(1800)), ..Default::default() });
        let t1 = t0 + Duration::from_secs(20);
        s.completed(t1);
        let d = s.poll_due(t1).unwrap();
        assert_eq!((d.url.host.as_str(), d.event), ("live", Some(Event::Completed)), "no second time-out on the dead");
        s.on_success(t1, &AnnounceResponse { interval: Some(Duration::from_secs(1800)), ..Default::default() });
        let later = t0 + PASS_OVER_FAILED + Duration::from_secs(1800);
        assert_eq!(s.poll_due(later).unwrap().url.host, "dead", "tried again in tier order once the while is over");
    }

    #[test]
    fn due_says_whether_a_failure_has_a_fallback() {
        let t0 = Instant::now();
        let tiers = vec![vec![url("udp://a:1/"), url("udp://b:1/")], vec![url("http://c/")]];
        let mut s = Schedule::new(tiers, t0, 1);
        let mut seen = Vec::new();
        for _ in 0..3 {
            let d = s.poll_due(t0).unwrap();
            seen.push((d.url.host, d.fallback));
            s.on_failure(t0);
        }
        let want = [("a", true), ("b", true), ("c", false)].map(|(h, f)| (h.to_string(), f));
        assert_eq!(seen, want);
        let mut alone = Schedule::new(vec![vec![url("udp://a:1/")]], t0, 1);
        assert!(!alone.poll_due(t0).unwrap().fallback, "a lone tracker has none");
    }

    #[test]
    fn hostile_intervals_are_clamped() {
        let t0 = Instant::now();
        let mut s = Schedule::new(vec![vec![url("http://a/")]], t0, 1);
        s.poll_due(t0).unwrap();
        s.on_success(t0, &AnnounceResponse { interval: Some(Duration::from_secs(0)), ..Default::default() });
        assert_eq!(s.poll_timeout(), Some(t0 + MIN_INTERVAL_FLOOR));
        s.poll_due(t0 + MIN_INTERVAL_FLOOR).unwrap();
        s.on_success(t0, &AnnounceResponse { interval: Some(Duration::from_secs(1 << 40)), ..Default::default() });
        assert_eq!(s.poll_timeout(), Some(t0 + MAX_INTERVAL));
    }

    #[test]
    fn without_trackers_nothing_is_ever_due() {
        let t0 = Instant::now();
        let mut s = Schedule::new(vec![vec![]], t0, 1);
        assert!(!s.has_trackers());
        s.completed(t0);
        s.stop(t0);
        assert_eq!(s.poll_due(t0), None);
    }

    #[test]
    fn stop_sends_one_stopped_then_ends_even_if_trackers_fail() {
        let t0 = Instant::now();
        let mut s = Schedule::new(vec![vec![url("http://a/")]], t0, 1);
        s.poll_due(t0).unwrap();
        s.on_success(t0, &AnnounceResponse::default());
        s.stop(t0);
        assert!(!s.is_stopped());
        assert_eq!(s.poll_due(t0).unwrap().event, Some(Event::Stopped));
        s.on_failure(t0);
        assert!(s.is_stopped());
        assert_eq!(s.poll_timeout(), None);
    }
}
