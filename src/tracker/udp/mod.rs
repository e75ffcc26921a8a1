//! The UDP tracker protocol (BEP 15, with BEP 41's URL data): both sides, no sockets and no clock in here.
//!
//! - [`wire`]: the packets, requests and responses, encoded and decoded with every length checked.
//! - [`client`]: [`UdpAnnounce`], one announce over UDP, and [`UdpAnnouncer`], all of them over one socket.
//! - [`server`]: [`UdpFront`], the tracker's UDP front end over the same [`super::Registry`] as the HTTP one.

pub mod client;
pub mod server;
pub mod wire;

pub use client::{UdpAnnounce, UdpAnnouncer};
pub use server::{FrontStats, UdpFront};
