//! The daemon as a service of the loop: its torrents in add order, what each RPC call does to them, and the one
//! timer it keeps (the watch folder's scan, and sessions that finished saying goodbye).
//!
//! A running torrent is a session in `Services::torrents`; a stopped one has none, only its record in the store and
//! the pieces its resume record vouches for. Starting it again builds the session from the store, trusting the resume
//! record, so nothing is hashed. Global limits (connections, upload rate) are divided evenly between the running
//! torrents and handed out again whenever one starts or stops.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::access::Access;
use super::check::{self, Check};
use super::open::{self, Shares};
use super::rpc::{TorrentRef, hash_hex};
use super::store::{Loaded, Settings, Store, TorrentRecord};
use crate::bitfield::Bitfield;
use crate::magnet::Magnet;
use crate::metainfo::Metainfo;
use crate::reactor::{ConnId, Ctl, Services};
use crate::torrent::{Action, Config, Session};
use crate::tracker::announce::TrackerUrl;

mod view;

/// How often the watch folder is scanned.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);

/// How often at most the sessions are looked at for news.
const SCAN_EVERY: Duration = Duration::from_secs(1);

/// What the daemon was started with.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub peer_port: u16,
    pub peer_id: [u8; 20],
    /// Connections for all torrents together.
    pub max_peers: usize,
    /// Bytes per second for all torrents together, unless `session-set` changed it.
    pub max_upload_rate: Option<u64>,
    pub max_download_rate: Option<u64>,
    pub download_dir: PathBuf,
    pub watch: Option<PathBuf>,
    pub pex: bool,
    /// Torrents use the loop's DHT node (`--no-dht` turns it off).
    pub dht: bool,
    pub state_dir: PathBuf,
}

/// One torrent the daemon knows, running or not.
#[derive(Debug)]
pub struct Entry {
    pub id: u64,
    pub record: TorrentRecord,
    /// `None` while a magnet link's metadata has not arrived.
    pub meta: Option<Metainfo>,
    /// The magnet link's `dn`, shown until the metadata names the torrent.
    magnet_name: Option<String>,
    /// Why the torrent cannot run (its folder cannot be written, its session failed).
    pub error: String,
    /// The verified pieces while no session holds them (stopped), as its resume record says.
    have_when_stopped: Option<Bitfield>,
    start_date: u64,
}

impl Entry {
    pub fn hash(&self) -> [u8; 20] {
        self.record.info_hash
    }

    pub fn name(&self) -> String {
        match (&self.meta, &self.magnet_name) {
            (Some(m), _) => m.name.clone(),
            (None, Some(n)) => n.clone(),
            (None, None) => hash_hex(&self.record.info_hash),
        }
    }
}

/// Where a torrent to add comes from, once the request is read.
pub enum Source {
    Metainfo(Vec<u8>),
    Magnet(String),
}

/// What `torrent-add` answers.
pub struct Added {
    pub id: u64,
    pub name: String,
    pub hash: [u8; 20],
    /// It was there already; nothing changed.
    pub duplicate: bool,
}

pub struct Daemon {
    pub access: Access,
    store: Store,
    cfg: DaemonConfig,
    pub settings: Settings,
    entries: Vec<Entry>,
    next_id: u64,
    /// Sessions told to stop (their `stopped` announce under way), dropped once finished.
    leaving: Vec<[u8; 20]>,
    /// Full checks asked for by `torrent-verify`, done one at a time, a slice per turn of the loop.
    checks: Vec<Check>,
    /// The process is stopping (SIGTERM): sessions stop but records stay as they were.
    pub stopping: bool,
    next_watch: Option<Instant>,
    /// When the sessions are next looked at for news (metadata arrived, download complete).
    next_scan: Instant,
    pub rpc_requests: u64,
    pub started: Instant,
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Daemon {
    pub fn new(cfg: DaemonConfig, access: Access, store: Store, settings: Settings, now: Instant) -> Daemon {
        let next_watch = cfg.watch.as_ref().map(|_| now);
        Daemon {
            access,
            store,
            cfg,
            settings,
            entries: Vec::new(),
            next_id: 1,
            leaving: Vec::new(),
            checks: Vec::new(),
            stopping: false,
            next_watch,
            next_scan: now,
            rpc_requests: 0,
            started: now,
        }
    }

    pub fn config(&self) -> &DaemonConfig {
        &self.cfg
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Where torrents go when the request names no folder.
    pub fn download_dir(&self) -> PathBuf {
        self.settings.download_dir.clone().unwrap_or_else(|| self.cfg.download_dir.clone())
    }

    pub fn upload_limit(&self) -> Option<u64> {
        self.settings.upload_limit.or(self.cfg.max_upload_rate)
    }

    pub fn download_limit(&self) -> Option<u64> {
        self.settings.download_limit.or(self.cfg.max_download_rate)
    }

    fn find(&self, hash: &[u8; 20]) -> Option<usize> {
        self.entries.iter().position(|e| e.record.info_hash == *hash)
    }

    /// The torrents `refs` names, in add order; a reference to no torrent is an error.
    pub fn resolve(&self, refs: &[TorrentRef]) -> Result<Vec<[u8; 20]>, String> {
        let mut out = Vec::with_capacity(refs.len());
        for r in refs {
            let found = match r {
                TorrentRef::Id(id) => self.entries.iter().find(|e| e.id == *id),
                TorrentRef::Hash(h) => self.entries.iter().find(|e| e.record.info_hash == *h),
            };
            match found {
                Some(e) if !out.contains(&e.hash()) => out.push(e.hash()),
                Some(_) => {}
                None => {
                    return Err(match r {
                        TorrentRef::Id(id) => format!("no torrent with id {id}"),
                        TorrentRef::Hash(h) => format!("no torrent with hash {}", hash_hex(h)),
                    });
                }
            }
        }
        Ok(out)
    }

    pub fn all_hashes(&self) -> Vec<[u8; 20]> {
        self.entries.iter().map(Entry::hash).collect()
    }

    /// Brings back every torrent of the store as it was: running ones get their session (trusting their resume
    /// records), stopped ones stay stopped.
    pub fn restore(&mut self, loaded: Vec<Loaded>, now: Instant, svc: &mut Services, ctl: &mut Ctl) {
        let mut loaded = loaded;
        loaded.sort_by_key(|l| (l.record.position, l.record.added, l.record.info_hash));
        for l in loaded {
            let meta = match l.metainfo.as_deref().map(Metainfo::from_bytes) {
                Some(Ok(m)) if m.info_hash == l.record.info_hash => Some(m),
                Some(Ok(_)) => {
                    log::warn!("{}: its .torrent has another info hash; skipped", hash_hex(&l.record.info_hash));
                    continue;
                }
                Some(Err(e)) => {
                    log::warn!("{}: its .torrent is unreadable ({e}); skipped", hash_hex(&l.record.info_hash));
                    continue;
                }
                None if l.record.magnet.is_some() => None,
                None => {
                    log::warn!("{}: no .torrent and no magnet link; skipped", hash_hex(&l.record.info_hash));
                    continue;
                }
            };
            let magnet_name = l.record.magnet.as_deref().and_then(|m| Magnet::parse(m).ok()).and_then(|m| m.name);
            let stopped = l.record.stopped;
            let hash = l.record.info_hash;
            self.push_entry(l.record, meta, magnet_name);
            if stopped {
                self.refresh_stopped_have(&hash);
            } else {
                self.run(&hash, false, now, svc, ctl);
            }
        }
        self.reshare(now, svc);
        log::info!("{} torrent(s) restored from {}", self.entries.len(), self.store.dir().display());
    }

    fn push_entry(&mut self, record: TorrentRecord, meta: Option<Metainfo>, magnet_name: Option<String>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.entries.push(Entry {
            id,
            record,
            meta,
            magnet_name,
            error: String::new(),
            have_when_stopped: None,
            start_date: 0,
        });
        id
    }

    /// Adds a torrent; one that is there already is reported as a duplicate and left as it is.
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        source: Source,
        download_dir: Option<PathBuf>,
        paused: Option<bool>,
        now: Instant,
        svc: &mut Services,
        ctl: &mut Ctl,
    ) -> Result<Added, String> {
        let (hash, meta, bytes, magnet) = match source {
            Source::Metainfo(bytes) => {
                let meta = Metainfo::from_bytes(&bytes).map_err(|e| format!("invalid or corrupt torrent file: {e}"))?;
                (meta.info_hash, Some(meta), Some(bytes), None)
            }
            Source::Magnet(link) => {
                let m = Magnet::parse(&link).map_err(|e| format!("bad magnet link: {e}"))?;
                (m.info_hash, None, None, Some((link, m)))
            }
        };
        if let Some(e) = self.entries.iter().find(|e| e.record.info_hash == hash) {
            return Ok(Added { id: e.id, name: e.name(), hash, duplicate: true });
        }
        if let Some(bytes) = &bytes {
            self.store.save_metainfo(&hash, bytes).map_err(|e| format!("cannot save the torrent: {e}"))?;
        }
        let start = !paused.unwrap_or(!self.settings.start_added.unwrap_or(true));
        let record = TorrentRecord {
            info_hash: hash,
            magnet: magnet.as_ref().map(|(link, _)| link.clone()),
            download_dir: download_dir.unwrap_or_else(|| self.download_dir()),
            stopped: !start,
            added: unix_now(),
            position: self.entries.iter().map(|e| e.record.position + 1).max().unwrap_or(0),
            done: 0,
            unwanted: Vec::new(),
            download_limit: None,
            upload_limit: None,
        };
        self.store.save_record(&record).map_err(|e| format!("cannot save the torrent's record: {e}"))?;
        let magnet_name = magnet.and_then(|(_, m)| m.name);
        let id = self.push_entry(record, meta, magnet_name);
        if start {
            self.run(&hash, false, now, svc, ctl);
            self.reshare(now, svc);
        }
        let name = self.entries.last().map(Entry::name).unwrap_or_default();
        log::info!("added {name} ({}) as torrent {id}", hash_hex(&hash));
        Ok(Added { id, name, hash, duplicate: false })
    }

    /// Builds and adds the session of a torrent (hashing everything again when `recheck`), replacing any session
    /// it still has.
    fn run(&mut self, hash: &[u8; 20], recheck: bool, now: Instant, svc: &mut Services, ctl: &mut Ctl) {
        drop_session(hash, now, svc, ctl);
        self.leaving.retain(|h| h != hash);
        let Some(i) = self.find(hash) else { return };
        let cfg = self.torrent_config();
        // Its share once it runs beside the others (a magnet's data session gets it from its first request).
        let running = self.entries.iter().filter(|e| svc.torrents.contains_key(&e.hash())).count() + 1;
        let shares = self.shares(&self.entries[i], running);
        let e = &mut self.entries[i];
        e.error.clear();
        e.have_when_stopped = None;
        e.start_date = unix_now();
        let session = match (&e.meta, &e.record.magnet) {
            (Some(meta), _) => {
                let dir = e.record.download_dir.clone();
                let (resume, unwanted) = (self.store.resume_path(hash), &e.record.unwanted);
                match open::data_torrent(meta.clone(), &dir, resume, unwanted, recheck, cfg, now) {
                    Ok(mut t) => {
                        // The peers a magnet link named are still worth a try at every start.
                        let link = e.record.magnet.as_deref().and_then(|m| Magnet::parse(m).ok());
                        t.add_peer_addrs(link.map(|m| m.peer_addrs()).unwrap_or_default());
                        Session::data(t)
                    }
                    Err(why) => {
                        log::warn!("cannot start {}: {why}", meta.name);
                        e.error = why;
                        return;
                    }
                }
            }
            (None, Some(link)) => match Magnet::parse(link) {
                Ok(m) => open::magnet_session(&m, e.record.download_dir.clone(), self.store.clone(), cfg, shares, now),
                Err(why) => {
                    e.error = format!("bad magnet link: {why}");
                    return;
                }
            },
            (None, None) => return,
        };
        resolve_trackers(svc, session.tracker_urls());
        svc.add_session(session);
    }

    fn torrent_config(&self) -> Config {
        let mut cfg = Config::new(self.cfg.peer_id, self.cfg.peer_port);
        cfg.max_peers = self.cfg.max_peers;
        cfg.max_upload_rate = self.upload_limit();
        cfg.pex = self.cfg.pex;
        cfg.dht = self.cfg.dht;
        cfg
    }

    /// A torrent's share of the global limits when `running` torrents run: an even split, capped by its own limits.
    fn shares(&self, e: &Entry, running: usize) -> Shares {
        let running = running.max(1);
        let split = |global: Option<u64>, own: Option<u64>| {
            let global = global.map(|r| r / running as u64);
            match (global, own) {
                (Some(a), Some(b)) => Some(a.min(b).max(1)),
                (a, b) => a.or(b).map(|r| r.max(1)),
            }
        };
        Shares {
            peers: (self.cfg.max_peers / running).max(1),
            up: split(self.upload_limit(), e.record.upload_limit),
            down: split(self.download_limit(), e.record.download_limit),
        }
    }

    /// Hands out the global limits evenly between the running torrents, each capped by its own limit.
    pub fn reshare(&mut self, now: Instant, svc: &mut Services) {
        let running = self.entries.iter().filter(|e| svc.torrents.contains_key(&e.hash())).count();
        for e in &self.entries {
            let s = self.shares(e, running);
            if let Some(Session::Data(t)) = svc.torrents.get_mut(&e.hash()) {
                t.set_shares(now, s.peers, s.up, s.down);
            }
        }
    }

    pub fn start(&mut self, hash: &[u8; 20], now: Instant, svc: &mut Services, ctl: &mut Ctl) {
        let Some(i) = self.find(hash) else { return };
        if self.checks.iter().any(|c| c.hash == *hash) {
            // It starts when its check ends.
            self.entries[i].record.stopped = false;
            self.save_record(i);
            return;
        }
        let running = svc.torrents.contains_key(hash) && !self.leaving.contains(hash);
        if running && !self.entries[i].record.stopped {
            return;
        }
        self.entries[i].record.stopped = false;
        self.save_record(i);
        self.run(hash, false, now, svc, ctl);
        self.reshare(now, svc);
    }

    /// Stops a torrent: it says `stopped` to its trackers, closes its peers and keeps its record.
    pub fn stop(&mut self, hash: &[u8; 20], now: Instant, svc: &mut Services, ctl: &mut Ctl) {
        let Some(i) = self.find(hash) else { return };
        self.entries[i].record.stopped = true;
        self.save_record(i);
        self.say_goodbye(hash, now, svc, ctl);
        self.refresh_stopped_have(hash);
        self.reshare(now, svc);
    }

    fn say_goodbye(&mut self, hash: &[u8; 20], now: Instant, svc: &mut Services, ctl: &mut Ctl) {
        if let Some(s) = svc.torrents.get_mut(hash) {
            s.stop(now);
            svc.carry_out_for(hash, now, ctl);
            if !self.leaving.contains(hash) {
                self.leaving.push(*hash);
            }
        }
    }

    /// Hashes every piece again, a slice per turn of the loop (see [`Check`]); the torrent is rebuilt from what
    /// the check finds, and starts again unless it is stopped.
    pub fn verify(&mut self, hash: &[u8; 20], now: Instant, svc: &mut Services, ctl: &mut Ctl) {
        let Some(i) = self.find(hash) else { return };
        self.learn_meta(i, svc);
        let Some(meta) = self.entries[i].meta.clone() else { return };
        drop_session(hash, now, svc, ctl);
        self.leaving.retain(|h| h != hash);
        self.checks.retain(|c| c.hash != *hash);
        let dir = self.entries[i].record.download_dir.clone();
        let unwanted = &self.entries[i].record.unwanted;
        match Check::new(meta, &dir, self.store.resume_path(hash), unwanted, now) {
            Ok(c) => self.checks.push(c),
            Err(why) => self.entries[i].error = why,
        }
        self.reshare(now, svc);
    }

    /// A magnet's metadata may have arrived since the sessions were last looked at.
    fn learn_meta(&mut self, i: usize, svc: &Services) {
        let e = &mut self.entries[i];
        if e.meta.is_none() {
            e.meta = svc.torrents.get(&e.record.info_hash).and_then(Session::torrent).map(|t| t.meta().clone());
        }
    }

    /// Hashes the next slice of the first check; at its end, builds the torrent on what it found.
    fn check_slice(&mut self, now: Instant, svc: &mut Services) {
        let Some(c) = self.checks.first_mut() else { return };
        if !c.step(check::SLICE) {
            return;
        }
        let c = self.checks.remove(0);
        let hash = c.hash;
        let cfg = self.torrent_config();
        let Some(i) = self.find(&hash) else { return };
        match c.finish(cfg, now) {
            Ok(t) if self.entries[i].record.stopped => self.entries[i].have_when_stopped = Some(t.have().clone()),
            Ok(t) => {
                let session = Session::data(t);
                resolve_trackers(svc, session.tracker_urls());
                svc.add_session(session);
                self.reshare(now, svc);
            }
            Err(why) => self.entries[i].error = why,
        }
    }

    /// Forgets a torrent, and with `delete_data` deletes the files it names (and the folders they leave empty).
    pub fn remove(&mut self, hash: &[u8; 20], delete_data: bool, now: Instant, svc: &mut Services, ctl: &mut Ctl) {
        let Some(i) = self.find(hash) else { return };
        self.learn_meta(i, svc);
        self.say_goodbye(hash, now, svc, ctl);
        self.checks.retain(|c| c.hash != *hash);
        let e = self.entries.remove(i);
        if let Err(err) = self.store.remove(hash) {
            log::warn!("cannot remove the state of {}: {err}", e.name());
        }
        if delete_data && let Some(meta) = &e.meta {
            delete_files(meta, &e.record.download_dir);
        }
        log::info!("removed {}{}", e.name(), if delete_data { " and its data" } else { "" });
        self.reshare(now, svc);
    }

    /// Changes one torrent's own limits (bytes per second).
    pub fn set_limits(&mut self, hash: &[u8; 20], down: super::rpc::LimitChange, up: super::rpc::LimitChange) {
        let Some(i) = self.find(hash) else { return };
        let r = &mut self.entries[i].record;
        if let Some(d) = down {
            r.download_limit = d.map(|kib| kib * 1024);
        }
        if let Some(u) = up {
            r.upload_limit = u.map(|kib| kib * 1024);
        }
        self.save_record(i);
    }

    /// Selects files for download (`files-wanted`) or deselects them (`files-unwanted`); indices are positions in
    /// the RPC's `files` list, and an empty list means every file, as Transmission's spec says. The selection is
    /// kept in the torrent's record and given to its session at once.
    pub fn set_files(
        &mut self,
        hash: &[u8; 20],
        wanted: Option<&[usize]>,
        unwanted: Option<&[usize]>,
        now: Instant,
        svc: &mut Services,
    ) -> Result<(), String> {
        let Some(i) = self.find(hash) else { return Ok(()) };
        self.learn_meta(i, svc);
        let e = &self.entries[i];
        let Some(meta) = &e.meta else {
            return Err(format!("{}: its files are not known until its metadata arrives", e.name()));
        };
        // The RPC lists files without padding: its index k is the k-th file that is not padding.
        let listed: Vec<usize> = (0..meta.files.len()).filter(|&f| !meta.files[f].padding).collect();
        let pick = |asked: &[usize]| -> Result<Vec<usize>, String> {
            if asked.is_empty() {
                return Ok(listed.clone());
            }
            let bad = |k: &usize| format!("file {k} does not exist (the torrent has {} files)", listed.len());
            asked.iter().map(|k| listed.get(*k).copied().ok_or_else(|| bad(k))).collect()
        };
        let mut chosen = e.record.unwanted.clone();
        if let Some(w) = wanted {
            let w = pick(w)?;
            chosen.retain(|f| !w.contains(f));
        }
        if let Some(u) = unwanted {
            chosen.extend(pick(u)?);
        }
        chosen.sort_unstable();
        chosen.dedup();
        let selection = open::wanted_files(meta, &chosen);
        if let Some(Session::Data(t)) = svc.torrents.get_mut(hash) {
            t.set_wanted_files(now, &selection)?;
        }
        let e = &mut self.entries[i];
        if e.record.unwanted != chosen {
            log::info!("{}: {} file(s) deselected", e.name(), chosen.len());
            e.record.unwanted = chosen;
            self.save_record(i);
        }
        Ok(())
    }

    fn save_record(&self, i: usize) {
        let e = &self.entries[i];
        if let Err(err) = self.store.save_record(&e.record) {
            log::warn!("cannot save the record of {}: {err}", e.name());
        }
    }

    pub fn save_settings(&self) {
        if let Err(e) = self.store.save_settings(&self.settings) {
            log::warn!("cannot save the settings: {e}");
        }
    }

    /// The pieces a stopped torrent's resume record vouches for.
    fn refresh_stopped_have(&mut self, hash: &[u8; 20]) {
        let path = self.store.resume_path(hash);
        let Some(i) = self.find(hash) else { return };
        let e = &mut self.entries[i];
        let Some(meta) = &e.meta else { return };
        let bytes = std::fs::read(&path).ok();
        let record = bytes.as_deref().and_then(|b| crate::resume::decode(b).ok());
        e.have_when_stopped = record
            .filter(|r| r.info_hash == *hash)
            .and_then(|r| Bitfield::from_wire(&r.pieces, meta.piece_count()).ok());
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        // A check under way wants the next turn of the loop (a moment already past), after its other work.
        let check = (!self.checks.is_empty()).then_some(self.started);
        check.into_iter().chain(self.next_watch).min()
    }

    /// Drops sessions that finished saying goodbye, notes what sessions did on their own (metadata arrived, a
    /// download completed), and scans the watch folder when due.
    pub fn handle_timeout(&mut self, now: Instant, svc: &mut Services, ctl: &mut Ctl) {
        // Shares change when a session leaves, and a magnet's new data session needs its share.
        let mut reshare = false;
        self.leaving.retain(|h| match svc.torrents.get(h) {
            Some(s) if !s.is_finished() => true,
            _ => {
                svc.remove_session(h);
                reshare = true;
                false
            }
        });
        // The sessions' own ticks call this many times a second with many torrents: their news is looked at once a
        // second at most, on whichever call comes (no wake-up of its own).
        let scan = now >= self.next_scan;
        if scan {
            self.next_scan = now + SCAN_EVERY;
        }
        for i in (0..self.entries.len()).filter(|_| scan) {
            let hash = self.entries[i].hash();
            let Some(s) = svc.torrents.get(&hash) else { continue };
            let mut changed = false;
            let e = &mut self.entries[i];
            match s {
                Session::Data(t) if e.meta.is_none() => {
                    e.meta = Some(t.meta().clone());
                    reshare = true;
                }
                Session::Failed { why, .. } if e.error.is_empty() => e.error = why.to_string(),
                _ => {}
            }
            if let Some(t) = s.torrent()
                && t.is_complete()
                && e.record.done == 0
            {
                e.record.done = unix_now();
                changed = true;
            }
            if changed {
                self.save_record(i);
            }
        }
        if reshare {
            self.reshare(now, svc);
        }
        self.check_slice(now, svc);
        if self.next_watch.is_some_and(|t| now >= t) {
            self.next_watch = Some(now + WATCH_EVERY);
            self.scan_watch_folder(now, svc, ctl);
        }
    }

    /// Adds every `*.torrent` in the watch folder and renames it `.added`; a file that is not a torrent is renamed
    /// `.invalid`. Only plain files directly in the folder are taken, so nothing outside it is touched.
    fn scan_watch_folder(&mut self, now: Instant, svc: &mut Services, ctl: &mut Ctl) {
        let Some(dir) = self.cfg.watch.clone() else { return };
        let Ok(list) = std::fs::read_dir(&dir) else { return };
        let mut found: Vec<PathBuf> = list
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "torrent"))
            .collect();
        found.sort();
        for path in found {
            let result = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| self.add(Source::Metainfo(bytes), None, None, now, svc, ctl));
            let ext = match result {
                Ok(a) => {
                    log::info!("watch: {} added as torrent {}", path.display(), a.id);
                    "torrent.added"
                }
                Err(why) => {
                    log::warn!("watch: {}: {why}", path.display());
                    "torrent.invalid"
                }
            };
            if let Err(e) = std::fs::rename(&path, path.with_extension(ext)) {
                log::warn!("watch: cannot rename {}: {e}", path.display());
                // Not renamed: it would be added again at every scan.
                self.cfg.watch = None;
                self.next_watch = None;
            }
        }
    }
}

/// Closes a session's peers and drops it at once, without telling its trackers (it is being rebuilt).
fn drop_session(hash: &[u8; 20], now: Instant, svc: &mut Services, ctl: &mut Ctl) {
    let Some(mut s) = svc.remove_session(hash) else { return };
    s.stop(now);
    for action in s.advance().into_iter().chain(std::iter::from_fn(|| s.poll_action())) {
        if let Action::Close(key, generation) = action {
            ctl.close(ConnId { key, generation });
        }
    }
}

/// Makes sure the loop will know the addresses of these trackers: an address is taken as it is, a host name is
/// asked of the resolver thread (the daemon adds torrents while running, and the loop must not wait on DNS); the
/// announces that need it wait for its answer.
fn resolve_trackers(svc: &mut Services, urls: Vec<TrackerUrl>) {
    for url in urls {
        let key = (url.host.clone(), url.port);
        if svc.tracker_addrs.contains_key(&key) {
            continue;
        }
        let literal = url.host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>();
        if let Ok(ip) = literal {
            svc.tracker_addrs.insert(key, SocketAddr::new(ip, url.port));
        } else if let Err(why) = svc.resolving.resolver.ask(&url.host, url.port) {
            log::warn!("cannot resolve tracker host {}: {why}", url.host);
        }
    }
}

/// Deletes the files `meta` names under `dir`, then the folders of a multi-file torrent that are left empty. The
/// metainfo's paths were validated when it was read, so nothing outside `dir` is named.
fn delete_files(meta: &Metainfo, dir: &Path) {
    let mut folders = Vec::new();
    for f in meta.files.iter().filter(|f| !f.padding) {
        let path = dir.join(meta.relative_path(f));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("cannot delete {}: {e}", path.display()),
        }
        let mut parent = path.parent();
        while let Some(p) = parent.filter(|p| p.starts_with(dir) && *p != dir) {
            folders.push(p.to_path_buf());
            parent = p.parent();
        }
    }
    folders.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    folders.dedup();
    for f in folders {
        // Fails, as it should, on a folder that holds anything the torrent does not name.
        let _ = std::fs::remove_dir(&f);
    }
}
