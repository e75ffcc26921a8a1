//! `toybt daemon`: many torrents in one loop, driven over Transmission's RPC and a status page.
//!
//! - [`rpc`]: the RPC's requests and responses as plain data.

pub mod rpc;
