//! `toybt daemon`: many torrents in one loop, driven over Transmission's RPC and a status page.
//!
//! - [`access`]: who may use the RPC (credentials, Host, session id).
//! - [`rpc`]: the RPC's requests and responses as plain data.

pub mod access;
pub mod rpc;
