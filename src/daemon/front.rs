//! The daemon's HTTP front: one RPC-port connection ([`RpcConn`]) and its routes. `POST /transmission/rpc` carries
//! out Transmission RPC calls on the [`Daemon`]; `GET /` is the status page; `GET /metrics` is for Prometheus.
//! Every route passes the access check first (the RPC with its session id).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::access::{Denied, SESSION_HEADER};
use super::rpc::{self, AddSource, Call, Ids};
use super::service::{Daemon, Source};
use super::store::check_download_dir;
use crate::http::{self, Request, Response, Status, TimedOut};
use crate::metrics::{Exposition, Kind};
use crate::reactor::{Ctl, Services};
use crate::torrent::Session;

/// Largest RPC request body (a .torrent in base64 fits well); a bigger one is answered 413.
pub const MAX_BODY: usize = 16 << 20;

pub const LIMITS: http::Limits =
    http::Limits { idle_timeout: Duration::from_secs(60), head_timeout: Duration::from_secs(20), max_body: MAX_BODY };

/// One connection to the RPC port.
#[derive(Debug)]
pub struct RpcConn {
    http: http::Conn,
}

impl RpcConn {
    pub fn new(from: SocketAddr, now: Instant) -> RpcConn {
        RpcConn { http: http::Conn::new(from, now, LIMITS) }
    }

    /// Consumes at most one request and queues its answer; returns the bytes used (0: need more).
    pub fn handle_bytes(&mut self, now: Instant, input: &[u8], svc: &mut Services, ctl: &mut Ctl) -> usize {
        // The daemon is taken out for the call, so it can change the sessions beside it.
        let Some(mut d) = svc.daemon.take() else { return input.len() };
        let used = self.http.handle_bytes(now, input, |req, resp| route(&mut d, now, req, resp, svc, ctl));
        svc.daemon = Some(d);
        used
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), TimedOut> {
        self.http.handle_timeout(now)
    }

    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) {
        self.http.poll_transmit(now, out)
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.http.poll_timeout()
    }

    pub fn wants_close(&self) -> bool {
        self.http.wants_close()
    }
}

fn route(d: &mut Daemon, now: Instant, req: &Request<'_>, resp: &mut Response<'_>, svc: &mut Services, ctl: &mut Ctl) {
    let (rpc, page, metrics) = match req.path {
        "/transmission/rpc" | "/transmission/rpc/" => (true, false, false),
        "/" => (false, true, false),
        "/metrics" => (false, false, true),
        _ => {
            resp.status = Status::NotFound;
            resp.body().extend_from_slice(b"not found\n");
            return;
        }
    };
    if let Err(denied) = d.access.check(req, rpc) {
        deny(d, denied, resp);
        return;
    }
    match (req.method, rpc) {
        ("POST", true) => {
            d.rpc_requests += 1;
            resp.content_type = "application/json";
            let body = answer(d, now, req.body, svc, ctl);
            resp.body().extend_from_slice(&body);
        }
        ("GET", false) if page => {
            resp.content_type = "text/html; charset=utf-8";
            resp.body().extend_from_slice(super::STATUS_PAGE.as_bytes());
        }
        ("GET", false) if metrics => {
            resp.content_type = crate::metrics::CONTENT_TYPE;
            write_metrics(d, resp.body(), svc);
        }
        _ => {
            resp.status = Status::MethodNotAllowed;
            resp.header("Allow", if rpc { "POST" } else { "GET" });
        }
    }
}

fn deny(d: &Daemon, denied: Denied, resp: &mut Response<'_>) {
    match denied {
        Denied::Unauthorized => {
            resp.status = Status::Other(401, "Unauthorized");
            resp.header("WWW-Authenticate", "Basic realm=\"toybt\"");
            resp.body().extend_from_slice(b"401: Unauthorized\n");
        }
        Denied::MisdirectedHost => {
            resp.status = Status::Other(421, "Misdirected Request");
            resp.body().extend_from_slice(
                b"421: the Host header names neither an address nor an allowed name (see --rpc-host)\n",
            );
        }
        Denied::NoSessionId => {
            resp.status = Status::Other(409, "Conflict");
            resp.header(SESSION_HEADER, &d.access.session_id);
            let text = format!("409: Conflict\n{SESSION_HEADER}: {}\n", d.access.session_id);
            resp.body().extend_from_slice(text.as_bytes());
        }
    }
}

/// Carries out one RPC request body and returns the response body.
pub fn answer(d: &mut Daemon, now: Instant, body: &[u8], svc: &mut Services, ctl: &mut Ctl) -> Vec<u8> {
    let req = match rpc::parse_request(body) {
        Ok(r) => r,
        Err(e) => return rpc::response_body(&e.result, Value::Null, e.tag.as_ref()),
    };
    match carry_out(d, now, req.call, svc, ctl) {
        Ok(args) => rpc::response_body("success", args, req.tag.as_ref()),
        Err(why) => rpc::response_body(&why, Value::Null, req.tag.as_ref()),
    }
}

fn ids(d: &Daemon, ids: &Ids) -> Result<Vec<[u8; 20]>, String> {
    match ids {
        Ids::All | Ids::RecentlyActive => Ok(d.all_hashes()),
        Ids::List(refs) => d.resolve(refs),
    }
}

fn carry_out(d: &mut Daemon, now: Instant, call: Call, svc: &mut Services, ctl: &mut Ctl) -> Result<Value, String> {
    Ok(match call {
        Call::SessionGet => session_get(d),
        Call::SessionStats => session_stats(d, svc, now),
        Call::SessionSet(change) => {
            if let Some(port) = change.peer_port
                && port != d.config().peer_port
            {
                return Err(format!(
                    "the peer port is {}; restart the daemon with --port to change it",
                    d.config().peer_port
                ));
            }
            if let Some(dir) = &change.download_dir {
                d.settings.download_dir = Some(check_download_dir(dir)?);
            }
            if let Some(limit) = change.speed_limit_down {
                d.settings.download_limit = limit.map(|kib| kib * 1024);
            }
            if let Some(limit) = change.speed_limit_up {
                d.settings.upload_limit = limit.map(|kib| kib * 1024);
            }
            if let Some(start) = change.start_added_torrents {
                d.settings.start_added = Some(start);
            }
            d.save_settings();
            d.reshare(now, svc);
            json!({})
        }
        Call::TorrentGet { ids: which, fields, table } => {
            let hashes = ids(d, &which)?;
            let views: Vec<_> =
                d.entries().iter().filter(|e| hashes.contains(&e.hash())).map(|e| d.view(e, svc, now)).collect();
            let mut args = rpc::torrent_get_arguments(&views, &fields, table);
            if which == Ids::RecentlyActive {
                args["removed"] = json!([]);
            }
            args
        }
        Call::TorrentAdd { source, download_dir, paused } => {
            let dir = download_dir.as_deref().map(check_download_dir).transpose()?;
            let source = match source {
                AddSource::Metainfo(bytes) => Source::Metainfo(bytes),
                AddSource::Filename(f) if f.starts_with("magnet:") => Source::Magnet(f),
                AddSource::Filename(path) => {
                    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
                    Source::Metainfo(bytes)
                }
            };
            let added = d.add(source, dir, paused, now, svc, ctl)?;
            let key = if added.duplicate { "torrent-duplicate" } else { "torrent-added" };
            json!({ key: {"id": added.id, "name": added.name, "hashString": rpc::hash_hex(&added.hash)} })
        }
        Call::TorrentStart(which) => {
            for h in ids(d, &which)? {
                d.start(&h, now, svc, ctl);
            }
            json!({})
        }
        Call::TorrentStop(which) => {
            for h in ids(d, &which)? {
                d.stop(&h, now, svc, ctl);
            }
            json!({})
        }
        Call::TorrentVerify(which) => {
            for h in ids(d, &which)? {
                d.verify(&h, now, svc, ctl);
            }
            json!({})
        }
        Call::TorrentReannounce(which) => {
            ids(d, &which)?;
            return Err("torrent-reannounce is not supported: sessions announce on their trackers' schedule".into());
        }
        Call::TorrentRemove { ids: which, delete_local_data } => {
            for h in ids(d, &which)? {
                d.remove(&h, delete_local_data, now, svc, ctl);
            }
            json!({})
        }
        Call::TorrentSet { ids: which, change } => {
            let hashes = ids(d, &which)?;
            if change.peer_limit.is_some() {
                return Err("peer-limit is not supported per torrent; the daemon's --max-peers is shared".into());
            }
            for h in &hashes {
                if change.files_wanted.is_some() || change.files_unwanted.is_some() {
                    let (w, u) = (change.files_wanted.as_deref(), change.files_unwanted.as_deref());
                    d.set_files(h, w, u, now, svc)?;
                }
                d.set_limits(h, change.download_limit, change.upload_limit);
            }
            d.reshare(now, svc);
            json!({})
        }
    })
}

fn limit_fields(limit: Option<u64>) -> (u64, bool) {
    (limit.map_or(0, |b| b / 1024), limit.is_some())
}

fn session_get(d: &Daemon) -> Value {
    let (down, down_on) = limit_fields(d.download_limit());
    let (up, up_on) = limit_fields(d.upload_limit());
    let cfg = d.config();
    json!({
        "download-dir": d.download_dir().to_string_lossy(),
        "config-dir": cfg.state_dir.to_string_lossy(),
        "peer-port": cfg.peer_port,
        "peer-limit-global": cfg.max_peers,
        "peer-limit-per-torrent": cfg.max_peers,
        "pex-enabled": cfg.pex,
        "dht-enabled": cfg.dht,
        "lpd-enabled": false,
        "utp-enabled": false,
        "encryption": "tolerated",
        "speed-limit-down": down,
        "speed-limit-down-enabled": down_on,
        "speed-limit-up": up,
        "speed-limit-up-enabled": up_on,
        "alt-speed-enabled": false,
        "alt-speed-down": 0,
        "alt-speed-up": 0,
        "seedRatioLimited": false,
        "seedRatioLimit": 2.0,
        "idle-seeding-limit-enabled": false,
        "idle-seeding-limit": 30,
        "start-added-torrents": d.settings.start_added.unwrap_or(true),
        "rename-partial-files": false,
        "incomplete-dir-enabled": false,
        "download-queue-enabled": false,
        "seed-queue-enabled": false,
        "rpc-version": rpc::RPC_VERSION,
        "rpc-version-minimum": 1,
        "version": concat!("toybt ", env!("CARGO_PKG_VERSION")),
        "session-id": d.access.session_id,
        "units": {
            "speed-units": ["kB/s", "MB/s", "GB/s", "TB/s"], "speed-bytes": 1000,
            "size-units": ["kB", "MB", "GB", "TB"], "size-bytes": 1000,
            "memory-units": ["KiB", "MiB", "GiB", "TiB"], "memory-bytes": 1024
        }
    })
}

/// Per-torrent figures the stats and metrics share.
struct Figures {
    down_rate: u64,
    up_rate: u64,
    downloaded: u64,
    uploaded: u64,
}

fn figures(s: Option<&Session>) -> Figures {
    match s.and_then(Session::torrent) {
        Some(t) => {
            let snap = t.snapshot();
            Figures {
                down_rate: snap.down_rate,
                up_rate: snap.up_rate,
                downloaded: t.downloaded(),
                uploaded: t.uploaded(),
            }
        }
        None => Figures { down_rate: 0, up_rate: 0, downloaded: 0, uploaded: 0 },
    }
}

fn session_stats(d: &Daemon, svc: &Services, now: Instant) -> Value {
    let (mut down, mut up, mut downloaded, mut uploaded, mut active) = (0, 0, 0, 0, 0);
    for e in d.entries() {
        let f = figures(svc.torrents.get(&e.hash()));
        down += f.down_rate;
        up += f.up_rate;
        downloaded += f.downloaded;
        uploaded += f.uploaded;
        active += usize::from(d.is_running(e, svc));
    }
    let total = d.entries().len();
    let stats = json!({
        "uploadedBytes": uploaded, "downloadedBytes": downloaded, "filesAdded": total, "sessionCount": 1,
        "secondsActive": now.saturating_duration_since(d.started).as_secs()
    });
    json!({
        "activeTorrentCount": active,
        "pausedTorrentCount": total - active,
        "torrentCount": total,
        "downloadSpeed": down,
        "uploadSpeed": up,
        "cumulative-stats": stats.clone(),
        "current-stats": stats,
    })
}

/// A per-torrent metric family: its name, type, help, and how to read it off a row.
type Family<R> = (&'static str, Kind, &'static str, fn(&R) -> u64);

/// The Prometheus exposition: per torrent (labelled with its hash and name) and in total.
fn write_metrics(d: &Daemon, out: &mut Vec<u8>, svc: &Services) {
    struct Row {
        hash: String,
        name: String,
        down: u64,
        up: u64,
        peers: u64,
        have: u64,
        pieces: u64,
        failures: u64,
        running: bool,
    }
    let rows: Vec<Row> = d
        .entries()
        .iter()
        .map(|e| {
            let s = svc.torrents.get(&e.hash()).filter(|_| d.is_running(e, svc));
            let t = s.and_then(Session::torrent);
            let f = figures(s);
            Row {
                hash: rpc::hash_hex(&e.hash()),
                name: e.name(),
                down: f.downloaded,
                up: f.uploaded,
                peers: t.map_or(0, |t| t.peer_count() as u64),
                have: d.have(e, svc).map_or(0, |h| u64::from(h.count())),
                pieces: e.meta.as_ref().map_or(0, |m| u64::from(m.piece_count())),
                failures: t.map_or(0, |t| u64::from(t.hash_failures())),
                running: s.is_some(),
            }
        })
        .collect();
    let mut m = Exposition::new(out);
    let families: [Family<Row>; 6] = [
        (
            "toybt_torrent_downloaded_bytes_total",
            Kind::Counter,
            "Payload bytes downloaded since the torrent started.",
            |r| r.down,
        ),
        (
            "toybt_torrent_uploaded_bytes_total",
            Kind::Counter,
            "Payload bytes uploaded since the torrent started.",
            |r| r.up,
        ),
        ("toybt_torrent_peers", Kind::Gauge, "Peers connected.", |r| r.peers),
        ("toybt_torrent_pieces_have", Kind::Gauge, "Pieces verified.", |r| r.have),
        (
            "toybt_torrent_pieces",
            Kind::Gauge,
            "Pieces in the torrent (0 until a magnet link's metadata arrives).",
            |r| r.pieces,
        ),
        (
            "toybt_torrent_hash_failures_total",
            Kind::Counter,
            "Pieces that failed their hash check since the torrent started.",
            |r| r.failures,
        ),
    ];
    for (name, kind, help, value) in families {
        m.family(name, kind, help);
        for r in &rows {
            m.sample(name, &[("hash", &r.hash), ("name", &r.name)], value(r) as f64);
        }
    }
    m.single("toybt_torrents", Kind::Gauge, "Torrents the daemon knows.", rows.len() as f64);
    m.single(
        "toybt_torrents_running",
        Kind::Gauge,
        "Torrents running (not stopped).",
        rows.iter().filter(|r| r.running).count() as f64,
    );
    m.single(
        "toybt_downloaded_bytes_total",
        Kind::Counter,
        "Payload bytes downloaded, all torrents.",
        rows.iter().map(|r| r.down).sum::<u64>() as f64,
    );
    m.single(
        "toybt_uploaded_bytes_total",
        Kind::Counter,
        "Payload bytes uploaded, all torrents.",
        rows.iter().map(|r| r.up).sum::<u64>() as f64,
    );
    m.single(
        "toybt_peers",
        Kind::Gauge,
        "Peers connected, all torrents.",
        rows.iter().map(|r| r.peers).sum::<u64>() as f64,
    );
    m.single(
        "toybt_hash_failures_total",
        Kind::Counter,
        "Pieces that failed their hash check, all torrents.",
        rows.iter().map(|r| r.failures).sum::<u64>() as f64,
    );
    m.single(
        "toybt_dht_nodes",
        Kind::Gauge,
        "Nodes in the DHT routing table (0 with --no-dht).",
        svc.dht.as_ref().map_or(0, |d| d.node.stats().nodes) as f64,
    );
    m.single(
        "toybt_rpc_requests_total",
        Kind::Counter,
        "RPC requests carried out (past the access checks).",
        d.rpc_requests as f64,
    );
}

#[cfg(test)]
mod tests;
