//! `toybt daemon`: many torrents in one loop, driven over Transmission's RPC and a status page.
//!
//! - [`access`]: who may use the RPC (credentials, Host, session id).
//! - [`rpc`]: the RPC's requests and responses as plain data.
//! - [`store`]: what the daemon keeps across restarts in its state folder.

pub mod access;
pub mod rpc;
pub mod store;

/// The status page served on `/` of the RPC port: plain HTML, CSS and a little JavaScript that drives the same RPC
/// as `transmission-remote`, so it needs no build step and no endpoint of its own.
pub const STATUS_PAGE: &str = include_str!("page.html");
