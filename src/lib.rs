//! toybt: a BitTorrent client and tracker driven by one single-threaded mio readiness loop.
//!
//! Codecs (`bencode`, `wire`, `http`, `metainfo`) know nothing of the rest; state machines use codecs;
//! `reactor` owns every socket and the clock and drives the state machines. See ARCHITECTURE.md.

pub mod bencode;
pub mod bitfield;
pub mod choker;
pub mod cli;
pub mod create;
pub mod dht;
pub mod error;
pub mod http;
pub mod json;
pub mod magnet;
pub mod metainfo;
pub mod peer;
pub mod picker;
pub mod progress;
pub mod reactor;
pub mod resume;
pub mod sha1;
pub mod storage;
pub mod terminal;
#[cfg(test)]
mod test_data;
pub mod timer;
pub mod torrent;
pub mod tracker;
pub mod wire;
