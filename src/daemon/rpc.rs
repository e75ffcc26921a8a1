//! Transmission's RPC, the subset `transmission-remote` 3.00 and the status page use, as plain data: a request body
//! becomes a [`Request`], and the daemon's answer becomes a response body. No IO and no daemon state here; the
//! daemon carries a [`Call`] out and describes its torrents as [`TorrentView`]s, which [`torrent_fields`] renders.
//!
//! Names are the ones Transmission 3.00 speaks (`percentDone`, `files-unwanted`): its remote is the tool people
//! have. Every failure is an RPC `result` string, never a panic: bad JSON, an unknown method, a wrong type.

use base64::Engine as _;
use serde_json::{Map, Value, json};

/// The RPC version Transmission 3.00 reports; clients gate features on it.
pub const RPC_VERSION: u64 = 15;
/// Most ids or file indices one request may name (a bound on the work one request can cause).
pub const MAX_LIST: usize = 100_000;

/// One parsed request: what to do, and the tag to echo.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub call: Call,
    pub tag: Option<Value>,
}

/// Which torrents a call is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ids {
    All,
    /// Torrents active in the last minute (`recently-active`).
    RecentlyActive,
    List(Vec<TorrentRef>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TorrentRef {
    Id(u64),
    Hash([u8; 20]),
}

/// Where a torrent to add comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddSource {
    /// A path to a .torrent file on the daemon's machine, or a magnet link (`filename`).
    Filename(String),
    /// The .torrent's bytes (`metainfo`, base64 in the request).
    Metainfo(Vec<u8>),
}

/// A speed limit change: `Some(None)` turns the limit off, `Some(Some(kib))` sets it (KiB/s, as Transmission).
pub type LimitChange = Option<Option<u64>>;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionChange {
    pub download_dir: Option<String>,
    pub peer_port: Option<u16>,
    pub speed_limit_down: LimitChange,
    pub speed_limit_up: LimitChange,
    pub start_added_torrents: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TorrentChange {
    /// File indices; an empty list means every file, as Transmission's spec says.
    pub files_wanted: Option<Vec<usize>>,
    pub files_unwanted: Option<Vec<usize>>,
    pub download_limit: LimitChange,
    pub upload_limit: LimitChange,
    pub peer_limit: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    SessionGet,
    SessionSet(SessionChange),
    SessionStats,
    TorrentGet { ids: Ids, fields: Vec<String>, table: bool },
    TorrentAdd { source: AddSource, download_dir: Option<String>, paused: Option<bool> },
    TorrentStart(Ids),
    TorrentStop(Ids),
    TorrentVerify(Ids),
    TorrentReannounce(Ids),
    TorrentRemove { ids: Ids, delete_local_data: bool },
    TorrentSet { ids: Ids, change: TorrentChange },
}

/// A request that cannot be carried out: its `result` string, and the tag when the request had one.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub result: String,
    pub tag: Option<Value>,
}

/// Parses a request body.
pub fn parse_request(body: &[u8]) -> Result<Request, RpcError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| RpcError { result: format!("request is not JSON: {e}"), tag: None })?;
    let Value::Object(mut obj) = value else {
        return Err(RpcError { result: "request is not a JSON object".into(), tag: None });
    };
    let tag = obj.remove("tag").filter(|t| t.is_number());
    let fail = |result: String| RpcError { result, tag: tag.clone() };
    let method = match obj.get("method") {
        Some(Value::String(m)) => m.clone(),
        _ => return Err(fail("no method name".into())),
    };
    let empty = Map::new();
    let args = match obj.get("arguments") {
        None => &empty,
        Some(Value::Object(a)) => a,
        Some(_) => return Err(fail("arguments is not an object".into())),
    };
    let call = parse_call(&method, &Args(args)).map_err(fail)?;
    Ok(Request { call, tag })
}

/// The request's arguments, read with the types the spec gives (old names and new snake_case names alike).
struct Args<'a>(&'a Map<String, Value>);

impl Args<'_> {
    /// The value under any of `names` (Transmission renamed its keys over the years).
    fn get(&self, names: &[&str]) -> Option<&Value> {
        names.iter().find_map(|n| self.0.get(*n))
    }

    fn bool(&self, names: &[&str]) -> Result<Option<bool>, String> {
        match self.get(names) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            // Some clients send 0/1 for booleans.
            Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n <= 1) => Ok(n.as_u64().map(|n| n == 1)),
            Some(_) => Err(format!("{} must be a boolean", names[0])),
        }
    }

    fn uint(&self, names: &[&str]) -> Result<Option<u64>, String> {
        match self.get(names) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| format!("{} must be a non-negative integer", names[0])),
        }
    }

    fn string(&self, names: &[&str]) -> Result<Option<String>, String> {
        match self.get(names) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("{} must be a string", names[0])),
        }
    }

    fn indices(&self, names: &[&str]) -> Result<Option<Vec<usize>>, String> {
        let Some(v) = self.get(names) else { return Ok(None) };
        let Value::Array(items) = v else { return Err(format!("{} must be a list of file indices", names[0])) };
        if items.len() > MAX_LIST {
            return Err(format!("{} lists more than {MAX_LIST} files", names[0]));
        }
        let list = items.iter().map(|i| i.as_u64().and_then(|i| usize::try_from(i).ok()));
        list.collect::<Option<Vec<_>>>().map(Some).ok_or_else(|| format!("{} must be a list of file indices", names[0]))
    }

    /// A limit and its on/off switch, as Transmission sends them in two keys.
    fn limit(&self, value: &[&str], enabled: &[&str]) -> Result<LimitChange, String> {
        let limit = self.uint(value)?;
        Ok(match (self.bool(enabled)?, limit) {
            (Some(false), _) => Some(None),
            (Some(true), Some(kib)) => Some(Some(kib)),
            // Enabled with no figure, or a figure with no switch: a figure alone changes the limit, as it does in
            // Transmission only once enabled; the daemon keeps both in one field, so a figure alone sets it.
            (None, Some(kib)) => Some(Some(kib)),
            (Some(true), None) | (None, None) => None,
        })
    }

    fn ids(&self) -> Result<Ids, String> {
        match self.get(&["ids"]) {
            None => Ok(Ids::All),
            Some(Value::String(s)) if s == "recently-active" || s == "recently_active" => Ok(Ids::RecentlyActive),
            Some(one @ (Value::Number(_) | Value::String(_))) => Ok(Ids::List(vec![torrent_ref(one)?])),
            Some(Value::Array(items)) if items.is_empty() => Ok(Ids::All),
            Some(Value::Array(items)) if items.len() <= MAX_LIST => {
                items.iter().map(torrent_ref).collect::<Result<_, _>>().map(Ids::List)
            }
            Some(_) => Err("ids must be an id, a hash, a list of them, or \"recently-active\"".into()),
        }
    }
}

fn torrent_ref(v: &Value) -> Result<TorrentRef, String> {
    match v {
        Value::Number(n) => n.as_u64().map(TorrentRef::Id).ok_or_else(|| format!("bad torrent id {n}")),
        Value::String(s) => parse_hash(s).map(TorrentRef::Hash).ok_or_else(|| format!("bad torrent hash {s:?}")),
        _ => Err(format!("bad torrent id {v}")),
    }
}

/// A 40-character hex info hash.
pub fn parse_hash(s: &str) -> Option<[u8; 20]> {
    if s.len() != 40 || !s.is_ascii() {
        return None;
    }
    let mut out = [0; 20];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

pub fn hash_hex(hash: &[u8; 20]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_call(method: &str, a: &Args<'_>) -> Result<Call, String> {
    // Transmission 4.1 accepts snake_case method names too; so do we.
    let method = method.replace('_', "-");
    Ok(match method.as_str() {
        "session-get" => Call::SessionGet,
        "session-stats" => Call::SessionStats,
        "session-set" => Call::SessionSet(SessionChange {
            download_dir: a.string(&["download-dir", "download_dir"])?,
            peer_port: match a.uint(&["peer-port", "peer_port"])? {
                None => None,
                Some(p) => Some(u16::try_from(p).map_err(|_| "peer-port must be 0 to 65535".to_string())?),
            },
            speed_limit_down: a.limit(
                &["speed-limit-down", "speed_limit_down"],
                &["speed-limit-down-enabled", "speed_limit_down_enabled"],
            )?,
            speed_limit_up: a
                .limit(&["speed-limit-up", "speed_limit_up"], &["speed-limit-up-enabled", "speed_limit_up_enabled"])?,
            start_added_torrents: a.bool(&["start-added-torrents", "start_added_torrents"])?,
        }),
        "torrent-get" => {
            let fields = match a.get(&["fields"]) {
                Some(Value::Array(items)) if items.len() <= 1000 => items
                    .iter()
                    .map(|f| f.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or("fields must be a list of names")?,
                Some(_) => return Err("fields must be a list of names".into()),
                None => return Err("torrent-get needs fields".into()),
            };
            let table = match a.string(&["format"])?.as_deref() {
                None | Some("objects") => false,
                Some("table") => true,
                Some(other) => return Err(format!("unknown format {other:?}")),
            };
            Call::TorrentGet { ids: a.ids()?, fields, table }
        }
        "torrent-add" => {
            let source = match (a.string(&["filename"])?, a.string(&["metainfo"])?) {
                (_, Some(b64)) => {
                    // Some clients wrap base64 at 76 columns.
                    let compact: String = b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(compact.as_bytes())
                        .map_err(|e| format!("metainfo is not base64: {e}"))?;
                    AddSource::Metainfo(bytes)
                }
                (Some(f), None) => AddSource::Filename(f),
                (None, None) => return Err("torrent-add needs filename or metainfo".into()),
            };
            Call::TorrentAdd {
                source,
                download_dir: a.string(&["download-dir", "download_dir"])?,
                paused: a.bool(&["paused"])?,
            }
        }
        "torrent-start" | "torrent-start-now" => Call::TorrentStart(a.ids()?),
        "torrent-stop" => Call::TorrentStop(a.ids()?),
        "torrent-verify" => Call::TorrentVerify(a.ids()?),
        "torrent-reannounce" => Call::TorrentReannounce(a.ids()?),
        "torrent-remove" => Call::TorrentRemove {
            ids: a.ids()?,
            delete_local_data: a.bool(&["delete-local-data", "delete_local_data"])?.unwrap_or(false),
        },
        "torrent-set" => Call::TorrentSet {
            ids: a.ids()?,
            change: TorrentChange {
                files_wanted: a.indices(&["files-wanted", "files_wanted"])?,
                files_unwanted: a.indices(&["files-unwanted", "files_unwanted"])?,
                download_limit: a
                    .limit(&["downloadLimit", "download_limit"], &["downloadLimited", "download_limited"])?,
                upload_limit: a.limit(&["uploadLimit", "upload_limit"], &["uploadLimited", "upload_limited"])?,
                peer_limit: a.uint(&["peer-limit", "peer_limit"])?,
            },
        },
        _ => return Err("method name not recognized".into()),
    })
}

/// A response body: `result` ("success" or why not), the arguments, and the request's tag.
pub fn response_body(result: &str, arguments: Value, tag: Option<&Value>) -> Vec<u8> {
    let mut obj = Map::new();
    obj.insert("result".into(), Value::String(result.into()));
    obj.insert("arguments".into(), if arguments.is_null() { json!({}) } else { arguments });
    if let Some(tag) = tag {
        obj.insert("tag".into(), tag.clone());
    }
    serde_json::to_vec(&Value::Object(obj)).unwrap_or_default()
}

/// Transmission's torrent status numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Stopped = 0,
    CheckWait = 1,
    Check = 2,
    DownloadWait = 3,
    Download = 4,
    SeedWait = 5,
    Seed = 6,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FileView {
    pub name: String,
    pub length: u64,
    pub bytes_completed: u64,
    pub wanted: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrackerView {
    pub announce: String,
    pub tier: usize,
}

/// One torrent as the RPC shows it; the daemon fills it in, [`torrent_fields`] picks what was asked.
#[derive(Debug, Clone, PartialEq)]
pub struct TorrentView {
    pub id: u64,
    pub hash: [u8; 20],
    pub name: String,
    pub status: Status,
    /// 0 none, 3 a local error (a disk error, a bad file), as Transmission's `error`.
    pub error: u8,
    pub error_string: String,
    pub download_dir: String,
    pub total_size: u64,
    pub size_when_done: u64,
    pub left_until_done: u64,
    pub have_valid: u64,
    pub piece_count: u64,
    pub piece_size: u64,
    pub rate_download: u64,
    pub rate_upload: u64,
    pub uploaded_ever: u64,
    pub downloaded_ever: u64,
    pub corrupt_ever: u64,
    pub peers_connected: u64,
    pub peers_sending_to_us: u64,
    pub peers_getting_from_us: u64,
    pub peer_limit: u64,
    /// Seconds; -1 not available, -2 unknown, as Transmission.
    pub eta: i64,
    pub is_private: bool,
    /// Downloaded everything wanted and the seed time is over.
    pub is_finished: bool,
    pub metadata_percent_complete: f64,
    pub added_date: u64,
    pub start_date: u64,
    pub done_date: u64,
    pub activity_date: u64,
    pub seconds_downloading: u64,
    pub seconds_seeding: u64,
    pub comment: String,
    pub creator: String,
    pub date_created: u64,
    pub magnet_link: String,
    pub download_limit: Option<u64>,
    pub upload_limit: Option<u64>,
    pub files: Vec<FileView>,
    pub trackers: Vec<TrackerView>,
}

impl TorrentView {
    /// What share of the wanted bytes we have (0.0–1.0).
    pub fn percent_done(&self) -> f64 {
        if self.size_when_done == 0 {
            return if self.metadata_percent_complete < 1.0 { 0.0 } else { 1.0 };
        }
        (self.size_when_done - self.left_until_done.min(self.size_when_done)) as f64 / self.size_when_done as f64
    }

    fn upload_ratio(&self) -> f64 {
        // Transmission says -1 for "no ratio yet".
        if self.downloaded_ever == 0 && self.have_valid == 0 {
            return -1.0;
        }
        // As Transmission: over what was downloaded, or for a seed that downloaded nothing, over what it has.
        let base = if self.downloaded_ever > 0 { self.downloaded_ever } else { self.have_valid };
        (self.uploaded_ever as f64 / base as f64 * 100.0).round() / 100.0
    }

    /// The value of one field, by its Transmission 3.00 name or its 4.1 snake_case name; `None` for a field we do
    /// not know (left out, as Transmission does).
    pub fn field(&self, name: &str) -> Option<Value> {
        let f = &self.files;
        Some(match snake(name).as_str() {
            "id" => json!(self.id),
            "hash_string" => json!(hash_hex(&self.hash)),
            "name" => json!(self.name),
            "status" => json!(self.status as u8),
            "error" => json!(self.error),
            "error_string" => json!(self.error_string),
            "download_dir" => json!(self.download_dir),
            "total_size" => json!(self.total_size),
            "size_when_done" => json!(self.size_when_done),
            "left_until_done" => json!(self.left_until_done),
            "have_valid" => json!(self.have_valid),
            "have_unchecked" => json!(0),
            "desired_available" => json!(self.left_until_done),
            "percent_done" => json!(self.percent_done()),
            "percent_complete" => {
                json!(if self.total_size == 0 { 0.0 } else { self.have_valid as f64 / self.total_size as f64 })
            }
            "metadata_percent_complete" => json!(self.metadata_percent_complete),
            "recheck_progress" => json!(if self.status == Status::Check { self.percent_done() } else { 0.0 }),
            "piece_count" => json!(self.piece_count),
            "piece_size" => json!(self.piece_size),
            "rate_download" => json!(self.rate_download),
            "rate_upload" => json!(self.rate_upload),
            "uploaded_ever" => json!(self.uploaded_ever),
            "downloaded_ever" => json!(self.downloaded_ever),
            "corrupt_ever" => json!(self.corrupt_ever),
            "upload_ratio" => json!(self.upload_ratio()),
            "peers_connected" => json!(self.peers_connected),
            "peers_sending_to_us" => json!(self.peers_sending_to_us),
            "peers_getting_from_us" => json!(self.peers_getting_from_us),
            "peer_limit" | "max_connected_peers" => json!(self.peer_limit),
            "eta" => json!(self.eta),
            "eta_idle" => json!(-1),
            "is_finished" => json!(self.is_finished),
            "is_private" => json!(self.is_private),
            "is_stalled" => json!(false),
            "added_date" => json!(self.added_date),
            "start_date" => json!(self.start_date),
            "done_date" => json!(self.done_date),
            "activity_date" => json!(self.activity_date),
            "edit_date" => json!(0),
            "seconds_downloading" => json!(self.seconds_downloading),
            "seconds_seeding" => json!(self.seconds_seeding),
            "comment" => json!(self.comment),
            "creator" => json!(self.creator),
            "date_created" => json!(self.date_created),
            "magnet_link" => json!(self.magnet_link),
            "labels" | "webseeds" => json!([]),
            "webseeds_sending_to_us" | "queue_position" | "bandwidth_priority" => json!(0),
            "honors_session_limits" => json!(true),
            "seed_ratio_mode" | "seed_idle_mode" => json!(0),
            "seed_ratio_limit" => json!(2.0),
            "seed_idle_limit" => json!(30),
            "download_limit" => json!(self.download_limit.unwrap_or(0)),
            "download_limited" => json!(self.download_limit.is_some()),
            "upload_limit" => json!(self.upload_limit.unwrap_or(0)),
            "upload_limited" => json!(self.upload_limit.is_some()),
            "file_count" => json!(f.len()),
            "files" => Value::Array(
                f.iter()
                    .map(|f| json!({"name": f.name, "length": f.length, "bytesCompleted": f.bytes_completed}))
                    .collect(),
            ),
            "file_stats" => Value::Array(
                f.iter()
                    .map(|f| json!({"bytesCompleted": f.bytes_completed, "wanted": f.wanted, "priority": 0}))
                    .collect(),
            ),
            "wanted" => Value::Array(f.iter().map(|f| json!(u8::from(f.wanted))).collect()),
            "priorities" => Value::Array(f.iter().map(|_| json!(0)).collect()),
            "trackers" => Value::Array(
                self.trackers
                    .iter()
                    .enumerate()
                    .map(|(i, t)| json!({"announce": t.announce, "id": i, "scrape": "", "tier": t.tier}))
                    .collect(),
            ),
            "tracker_stats" => Value::Array(
                self.trackers
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        json!({"announce": t.announce, "id": i, "tier": t.tier, "host": tracker_host(&t.announce),
                               "scrape": "", "isBackup": false, "announceState": 0, "downloadCount": -1,
                               "hasAnnounced": false, "hasScraped": false, "lastAnnounceResult": "",
                               "lastAnnounceSucceeded": false, "lastAnnounceTime": 0, "leecherCount": -1,
                               "seederCount": -1, "nextAnnounceTime": 0, "lastAnnouncePeerCount": 0,
                               "lastAnnounceStartTime": 0, "lastAnnounceTimedOut": false, "lastScrapeResult": "",
                               "lastScrapeStartTime": 0, "lastScrapeSucceeded": false, "lastScrapeTime": 0,
                               "lastScrapeTimedOut": false, "nextScrapeTime": 0, "scrapeState": 0})
                    })
                    .collect(),
            ),
            "peers" => json!([]),
            "peers_from" => json!({"fromCache": 0, "fromDht": 0, "fromIncoming": 0, "fromLpd": 0, "fromLtep": 0,
                                   "fromPex": 0, "fromTracker": 0}),
            _ => return None,
        })
    }
}

fn tracker_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_string()
}

/// `percentDone`, `peer-limit` and `percent_done` all become `percent_done`.
fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        match c {
            '-' => out.push('_'),
            c if c.is_ascii_uppercase() => {
                out.push('_');
                out.push(c.to_ascii_lowercase());
            }
            c => out.push(c),
        }
    }
    out
}

/// The asked-for fields of one torrent, under the names they were asked by.
pub fn torrent_fields(view: &TorrentView, fields: &[String]) -> Value {
    let mut obj = Map::new();
    for name in fields {
        if let Some(v) = view.field(name) {
            obj.insert(name.clone(), v);
        }
    }
    Value::Object(obj)
}

/// `torrent-get`'s arguments for `views`, as objects or as a table (a header row, then one row per torrent).
pub fn torrent_get_arguments(views: &[TorrentView], fields: &[String], table: bool) -> Value {
    let torrents: Vec<Value> = if table {
        let header = Value::Array(fields.iter().map(|f| json!(f)).collect());
        std::iter::once(header)
            .chain(
                views.iter().map(|v| Value::Array(fields.iter().map(|f| v.field(f).unwrap_or(Value::Null)).collect())),
            )
            .collect()
    } else {
        views.iter().map(|v| torrent_fields(v, fields)).collect()
    };
    json!({ "torrents": torrents })
}

#[cfg(test)]
mod tests;
