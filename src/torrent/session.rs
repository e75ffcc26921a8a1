//! One download or upload, whatever stage it is in: fetching its metadata (started from a magnet link) or moving
//! data. The loop holds sessions by info hash and talks to each through the same calls; when a fetch completes, the
//! session becomes a data session built from the metadata by the command that started it.

use std::net::SocketAddr;
use std::time::Instant;

use log::error;

use super::fetch::{Fetch, torrent_file};
use super::{Action, Torrent};
use crate::metainfo::Metainfo;
use crate::tracker::announce::{AnnounceResponse, TrackerUrl};

/// Builds the data session once the metadata is known, from the torrent it describes and that torrent's file bytes
/// (the caller keeps them so a restart needs no peer for the metadata).
pub type Builder = Box<dyn FnOnce(Metainfo, Vec<u8>) -> crate::error::Result<Torrent> + Send>;

pub enum Session {
    Metadata {
        fetch: Box<Fetch>,
        build: Option<Builder>,
    },
    Data(Box<Torrent>),
    /// The metadata arrived but the data session could not be built (the disk refused, say).
    Failed {
        info_hash: [u8; 20],
        why: String,
    },
}

impl Session {
    pub fn data(t: Torrent) -> Session {
        Session::Data(Box::new(t))
    }

    pub fn metadata(fetch: Fetch, build: Builder) -> Session {
        Session::Metadata { fetch: Box::new(fetch), build: Some(build) }
    }

    pub fn info_hash(&self) -> [u8; 20] {
        match self {
            Session::Metadata { fetch, .. } => fetch.info_hash(),
            Session::Data(t) => t.info_hash(),
            Session::Failed { info_hash, .. } => *info_hash,
        }
    }

    pub fn torrent(&self) -> Option<&Torrent> {
        match self {
            Session::Data(t) => Some(t),
            _ => None,
        }
    }

    pub fn failure(&self) -> Option<&str> {
        match self {
            Session::Failed { why, .. } => Some(why),
            _ => None,
        }
    }

    /// The largest piece count a message from a peer of this session may name (0: not known yet).
    pub fn piece_count(&self) -> u32 {
        self.torrent().map_or(0, |t| t.meta().piece_count())
    }

    pub fn accepts_peers(&self) -> bool {
        match self {
            Session::Metadata { fetch, .. } => fetch.accepts_peers(),
            Session::Data(t) => t.accepts_peers(),
            Session::Failed { .. } => false,
        }
    }

    pub fn is_finished(&self) -> bool {
        match self {
            Session::Metadata { fetch, .. } => fetch.is_finished(),
            Session::Data(t) => t.is_finished(),
            Session::Failed { .. } => true,
        }
    }

    /// Whether this session looks for peers in the DHT now (see `Torrent::uses_dht`, `Fetch::uses_dht`).
    pub fn uses_dht(&self) -> bool {
        match self {
            Session::Metadata { fetch, .. } => fetch.uses_dht(),
            Session::Data(t) => t.uses_dht(),
            Session::Failed { .. } => false,
        }
    }

    pub fn tracker_urls(&self) -> Vec<TrackerUrl> {
        match self {
            Session::Metadata { fetch, .. } => fetch.tracker_urls(),
            Session::Data(t) => t.tracker_urls(),
            Session::Failed { .. } => Vec::new(),
        }
    }

    pub fn add_peer_addrs(&mut self, addrs: impl IntoIterator<Item = SocketAddr>) {
        match self {
            Session::Metadata { fetch, .. } => fetch.add_peer_addrs(addrs),
            Session::Data(t) => t.add_peer_addrs(addrs),
            Session::Failed { .. } => {}
        }
    }

    /// Peers the DHT found: added to the address book and dialled at once (see `Torrent::found_peers`).
    pub fn found_peers(&mut self, now: Instant, addrs: impl IntoIterator<Item = SocketAddr>) {
        match self {
            Session::Metadata { fetch, .. } => fetch.found_peers(now, addrs),
            Session::Data(t) => t.found_peers(now, addrs),
            Session::Failed { .. } => {}
        }
    }

    pub fn peer_connected(&mut self, now: Instant, key: usize, generation: u64, addr: SocketAddr, outbound: bool) {
        match self {
            Session::Metadata { fetch, .. } => fetch.peer_connected(now, key, generation, addr, outbound),
            Session::Data(t) => t.peer_connected(now, key, generation, addr, outbound),
            Session::Failed { .. } => {}
        }
    }

    pub fn connect_failed(&mut self, now: Instant, addr: SocketAddr, why: &str) {
        match self {
            Session::Metadata { fetch, .. } => fetch.connect_failed(now, addr, why),
            Session::Data(t) => t.connect_failed(now, addr, why),
            Session::Failed { .. } => {}
        }
    }

    pub fn peer_closed(&mut self, now: Instant, key: usize, why: &str) {
        match self {
            Session::Metadata { fetch, .. } => fetch.peer_closed(now, key, why),
            Session::Data(t) => t.peer_closed(now, key, why),
            Session::Failed { .. } => {}
        }
    }

    pub fn peer_input(&mut self, now: Instant, key: usize, input: &[u8]) -> Result<usize, String> {
        match self {
            Session::Metadata { fetch, .. } => fetch.peer_input(now, key, input),
            Session::Data(t) => t.peer_input(now, key, input),
            Session::Failed { .. } => Err("the download failed".into()),
        }
    }

    pub fn peer_transmit(&mut self, now: Instant, key: usize, out: &mut Vec<u8>) {
        match self {
            Session::Metadata { fetch, .. } => fetch.peer_transmit(now, key, out),
            Session::Data(t) => t.peer_transmit(now, key, out),
            Session::Failed { .. } => {}
        }
    }

    pub fn announce_done(&mut self, now: Instant, result: Result<AnnounceResponse, String>) {
        match self {
            Session::Metadata { fetch, .. } => fetch.announce_done(now, result),
            Session::Data(t) => t.announce_done(now, result),
            Session::Failed { .. } => {}
        }
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        match self {
            Session::Metadata { fetch, .. } => fetch.poll_action(),
            Session::Data(t) => t.poll_action(),
            Session::Failed { .. } => None,
        }
    }

    pub fn take_dirty(&mut self) -> Vec<(usize, u64)> {
        match self {
            Session::Metadata { fetch, .. } => fetch.take_dirty(),
            Session::Data(t) => t.take_dirty(),
            Session::Failed { .. } => Vec::new(),
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Session::Metadata { fetch, .. } => fetch.poll_timeout(),
            Session::Data(t) => t.poll_timeout(),
            Session::Failed { .. } => None,
        }
    }

    /// Takes the disk worker's reports (a data session's); `waker` is how the worker wakes the loop. True if there
    /// were any.
    pub fn disk_turn(&mut self, now: Instant, waker: &std::sync::Arc<mio::Waker>) -> bool {
        match self {
            Session::Data(t) => {
                t.set_disk_waker(waker);
                t.disk_turn(now)
            }
            _ => false,
        }
    }

    /// The loop should not read from this session's peers now (verified data waits for the disk).
    pub fn input_paused(&self) -> bool {
        matches!(self, Session::Data(t) if t.input_paused())
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        match self {
            Session::Metadata { fetch, .. } => fetch.handle_timeout(now),
            Session::Data(t) => t.handle_timeout(now),
            Session::Failed { .. } => {}
        }
    }

    pub fn stop(&mut self, now: Instant) {
        match self {
            Session::Metadata { fetch, .. } => fetch.stop(now),
            Session::Data(t) => t.stop(now),
            Session::Failed { .. } => {}
        }
    }

    pub fn progress_line(&self) -> String {
        match self {
            Session::Metadata { fetch, .. } => fetch.progress_line(),
            Session::Data(t) => t.progress_line(),
            Session::Failed { why, .. } => format!("[failed: {why}]"),
        }
    }

    /// A fetch whose metadata is complete becomes a data session: returns what the fetch still asks of the loop (it
    /// closes its connections) for the caller to carry out; the new session's own actions follow through the usual
    /// calls. Anything else: nothing to do.
    pub fn advance(&mut self) -> Vec<Action> {
        let Session::Metadata { fetch, build } = self else { return Vec::new() };
        if !fetch.has_metadata() {
            return Vec::new();
        }
        let Some((info, again)) = fetch.take_metadata() else { return Vec::new() };
        let leftover: Vec<Action> = std::iter::from_fn(|| fetch.poll_action()).collect();
        let info_hash = fetch.info_hash();
        let bytes = torrent_file(&info, &fetch.start().trackers);
        let built = Metainfo::from_bytes(&bytes)
            .map_err(|e| format!("the metadata is not a usable torrent: {e}"))
            .and_then(|meta| match build.take() {
                Some(b) => b(meta, bytes).map_err(|e| e.to_string()),
                None => Err("no way to start the download".into()),
            });
        *self = match built {
            Ok(mut t) => {
                t.add_peer_addrs(again);
                Session::data(t)
            }
            Err(why) => {
                error!("{why}");
                Session::Failed { info_hash, why }
            }
        };
        leftover
    }
}
