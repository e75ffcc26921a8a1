//! `toybt daemon`: many torrents in one loop, driven over Transmission's RPC and a status page.
//!
//! - [`access`]: who may use the RPC (credentials, Host, session id).
//! - [`rpc`]: the RPC's requests and responses as plain data.
//! - [`store`]: what the daemon keeps across restarts in its state folder.
//! - [`service`]: the daemon as a service of the loop: its torrents and what each call does to them.
//! - [`check`]: `torrent-verify`'s full check, a slice per turn of the loop.
//! - [`open`]: a torrent's session built from the store (data, or a magnet link's metadata fetch).
//! - [`front`]: the RPC port's connections and routes (RPC, status page, metrics).

pub mod access;
pub mod check;
pub mod front;
pub mod open;
pub mod rpc;
pub mod service;
pub mod store;

pub use service::{Daemon, DaemonConfig};

/// The status page served on `/` of the RPC port: plain HTML, CSS and a little JavaScript that drives the same RPC
/// as `transmission-remote`, so it needs no build step and no endpoint of its own.
pub const STATUS_PAGE: &str = include_str!("page.html");
