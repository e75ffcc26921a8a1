//! STUB of the Mainline DHT node (BEP 5) with exactly the API of /work/notes/dht-contract.md, so the integration
//! compiles before branch dht-core lands. It keeps the nodes it is given and does nothing else: it answers no
//! query, sends nothing and reports no event. The real module replaces this file at merge.

use std::net::SocketAddr;
use std::time::Instant;

pub const DEFAULT_ROUTERS: [&str; 3] =
    ["router.bittorrent.com:6881", "dht.transmissionbt.com:6881", "router.utorrent.com:6881"];

#[derive(Debug, Clone)]
pub struct Config {
    /// Our node id; None → random (seeded from `seed`). A saved table brings its id back.
    pub id: Option<[u8; 20]>,
    /// Seed for ids, transaction ids and token secrets.
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Peers { info_hash: [u8; 20], peers: Vec<SocketAddr> },
    LookupDone { info_hash: [u8; 20], peers: usize, announced: usize },
}

#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub nodes: usize,
    pub queries_in: u64,
    pub queries_out: u64,
    pub dropped: u64,
    pub peers_stored: usize,
}

#[derive(Debug)]
pub struct Node {
    id: [u8; 20],
    nodes: Vec<SocketAddr>,
}

impl Node {
    pub fn new(_now: Instant, config: Config) -> Node {
        let mut id = [0u8; 20];
        for (i, b) in id.iter_mut().enumerate() {
            *b = (config.seed >> ((i % 8) * 8)) as u8;
        }
        Node { id: config.id.unwrap_or(id), nodes: Vec::new() }
    }

    pub fn from_saved(now: Instant, config: Config, saved: &[u8]) -> Result<Node, String> {
        let id: [u8; 20] = saved.try_into().map_err(|_| format!("a saved table of {} bytes", saved.len()))?;
        Ok(Node::new(now, Config { id: Some(id), ..config }))
    }

    pub fn id(&self) -> [u8; 20] {
        self.id
    }

    pub fn handle_datagram(&mut self, _now: Instant, _from: SocketAddr, _datagram: &[u8]) {}

    pub fn handle_timeout(&mut self, _now: Instant) {}

    pub fn poll_datagram(&mut self, _now: Instant, _out: &mut Vec<u8>) -> Option<SocketAddr> {
        None
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        None
    }

    pub fn add_node(&mut self, _now: Instant, addr: SocketAddr) {
        self.nodes.push(addr);
    }

    pub fn track(&mut self, _now: Instant, _info_hash: [u8; 20], _port: Option<u16>) {}

    pub fn untrack(&mut self, _info_hash: [u8; 20]) {}

    pub fn stats(&self) -> Stats {
        Stats::default()
    }

    pub fn save(&self) -> Vec<u8> {
        self.id.to_vec()
    }
}
