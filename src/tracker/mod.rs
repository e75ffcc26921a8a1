//! The tracker: the HTTP announce client of a torrent session, and (next) the embedded tracker server.

pub mod announce;
