//! The BEP 10 side of a peer connection: our extended handshake, the peer's, and the messages of the extensions we
//! speak (ut_metadata, ut_pex), turned into events for the session. The codecs are in `extension.rs`,
//! `metadata.rs` and `pex.rs`.

use super::extension::{self, ExtHandshake, Incoming};
use super::metadata::MetadataMsg;
use super::pex::Pex;
use super::{CLIENT_VERSION, Event, Extension, MAX_QUEUED_REQUESTS, MetadataEvent, Peer};

impl Peer {
    /// Our BEP 10 handshake: the extensions we speak with the ids we want them sent with, our request queue size
    /// (without `reqq`, Transmission keeps ten seconds' worth of requests outstanding and waits for ever on those a
    /// peer dropped), the metadata size if we have it, and the peer's address as we see it.
    pub(super) fn send_ext_handshake(&mut self) {
        let size = self.ext.metadata_size.map(i64::from);
        let mut hs = ExtHandshake::ours(CLIENT_VERSION, self.ext.port, MAX_QUEUED_REQUESTS as u32, size);
        if !self.ext.pex {
            hs.m.retain(|(name, _)| name != extension::UT_PEX_NAME);
        }
        hs.yourip = Some(self.addr.ip());
        hs.encode(&mut self.out);
    }

    /// A BEP 10 message; an extension message we cannot read is skipped, as an unknown one is.
    pub(super) fn on_extended(&mut self, ext_id: u8, payload: &[u8]) -> Result<Option<Event>, String> {
        if !self.extensions {
            return Err("extended message without the extension protocol".into());
        }
        Ok(match Incoming::of(ext_id) {
            Incoming::Handshake => {
                let hs = ExtHandshake::decode(payload).map_err(|e| e.to_string())?;
                self.ext_ids.update(&hs);
                if hs.reqq.is_some() {
                    self.peer_reqq = hs.reqq;
                }
                if hs.p.is_some() {
                    self.peer_port = hs.p;
                }
                hs.metadata_size.filter(|_| self.ext_ids.ut_metadata.is_some()).map(Event::MetadataSize)
            }
            Incoming::Metadata => match MetadataMsg::decode(payload) {
                Ok(MetadataMsg::Request { piece }) => Some(Event::Metadata(MetadataEvent::Request(piece))),
                Ok(MetadataMsg::Data { piece, total_size, data }) => {
                    Some(Event::Metadata(MetadataEvent::Data { piece, total_size, data: data.to_vec() }))
                }
                Ok(MetadataMsg::Reject { piece }) => Some(Event::Metadata(MetadataEvent::Reject(piece))),
                Ok(MetadataMsg::Unknown { .. }) => None,
                Err(e) => {
                    log::debug!("{}: unreadable ut_metadata message: {e}", self.addr);
                    None
                }
            },
            Incoming::Pex if self.ext.pex => match Pex::decode(payload) {
                Ok(pex) => Some(Event::Pex(pex)),
                Err(e) => {
                    log::debug!("{}: unreadable ut_pex message: {e}", self.addr);
                    None
                }
            },
            Incoming::Pex | Incoming::Unknown(_) => None,
        })
    }

    /// Writes a message of one of our extensions if the peer speaks it: `write` gets the id the peer chose and the
    /// output. False if the peer does not speak it.
    pub fn send_extension(&mut self, ext: Extension, write: impl FnOnce(u8, &mut Vec<u8>)) -> bool {
        let id = match ext {
            Extension::Metadata => self.ext_ids.ut_metadata,
            Extension::Pex => self.ext_ids.ut_pex.filter(|_| self.ext.pex),
        };
        match id {
            Some(id) => {
                write(id, &mut self.out);
                true
            }
            None => false,
        }
    }

    /// Whether the peer speaks one of our extensions.
    pub fn speaks(&self, ext: Extension) -> bool {
        match ext {
            Extension::Metadata => self.ext_ids.ut_metadata.is_some(),
            Extension::Pex => self.ext.pex && self.ext_ids.ut_pex.is_some(),
        }
    }
}
