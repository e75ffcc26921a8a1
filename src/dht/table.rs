//! The routing table (BEP 5): nodes that answered our queries, in buckets of [`K`] that split around our own id, so
//! the table knows many nodes near us and a few far away.
//!
//! Bucket `i` below the last holds the nodes sharing exactly `i` leading bits with our id; the last bucket holds every
//! node sharing at least as many. Only the last bucket (the one our id falls in) splits when full: that is BEP 5's
//! tree of ranges, indexed by prefix length.
//!
//! A node is good when it answered us within 15 minutes (or answered once and queried us within 15 minutes),
//! questionable after that, bad after [`BAD_AFTER`] queries in a row without an answer. Only nodes that answered a
//! query of ours get in (a claimed id from a third party proves nothing). A full bucket takes a newcomer only in
//! place of a bad node; otherwise the newcomer waits in the bucket's small replacement list, and the caller pings the
//! bucket's least recently seen questionable node, whose failure makes room.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use super::id::{self, Id, Rng};
use super::krpc::Contact;
use crate::bencode::{self, Encoder, Value};

pub const K: usize = 8;
pub const GOOD_FOR: Duration = Duration::from_secs(15 * 60);
/// Queries in a row without an answer that make a node bad.
pub const BAD_AFTER: u8 = 2;
/// Newcomers kept per full bucket, waiting for a bad node to replace.
pub const REPLACEMENTS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Good,
    Questionable,
    Bad,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub contact: Contact,
    pub last_reply: Instant,
    pub last_query: Option<Instant>,
    pub failures: u8,
}

impl Entry {
    /// Bad does not depend on the time: only unanswered queries make a node bad.
    pub fn is_bad(&self) -> bool {
        self.failures >= BAD_AFTER
    }

    pub fn status(&self, now: Instant) -> Status {
        let recent = |t: Instant| now.saturating_duration_since(t) < GOOD_FOR;
        if self.is_bad() {
            Status::Bad
        } else if self.failures == 0 && (recent(self.last_reply) || self.last_query.is_some_and(recent)) {
            Status::Good
        } else {
            Status::Questionable
        }
    }

    /// The last time we heard from the node at all.
    fn last_seen(&self) -> Instant {
        self.last_query.map_or(self.last_reply, |q| q.max(self.last_reply))
    }
}

#[derive(Debug, Clone)]
struct Bucket {
    nodes: Vec<Entry>,
    replacements: Vec<(Contact, Instant)>,
    last_changed: Instant,
}

impl Bucket {
    fn new(now: Instant) -> Bucket {
        Bucket { nodes: Vec::new(), replacements: Vec::new(), last_changed: now }
    }
}

/// What [`Table::heard_reply`] did with a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    Added,
    Updated,
    /// The bucket is full of nodes that are not bad; ping this questionable one (if any) to see whether it left.
    Full {
        ping: Option<SocketAddrV4>,
    },
    /// Our own id, or an id we know at another address (the known one is kept).
    Refused,
}

#[derive(Debug, Clone)]
pub struct Table {
    own: Id,
    buckets: Vec<Bucket>,
}

impl Table {
    pub fn new(now: Instant, own: Id) -> Table {
        Table { own, buckets: vec![Bucket::new(now)] }
    }

    pub fn own_id(&self) -> Id {
        self.own
    }

    fn index(&self, id: &Id) -> usize {
        id::common_prefix_len(&self.own, id).min(self.buckets.len() - 1)
    }

    fn find(&self, addr: SocketAddrV4) -> Option<(usize, usize)> {
        self.buckets
            .iter()
            .enumerate()
            .find_map(|(b, bucket)| bucket.nodes.iter().position(|e| e.contact.addr == addr).map(|i| (b, i)))
    }

    /// The entry for `addr`, if it is in the table.
    pub fn get(&self, addr: SocketAddrV4) -> Option<&Entry> {
        self.find(addr).map(|(b, i)| &self.buckets[b].nodes[i])
    }

    /// `c` answered one of our queries.
    pub fn heard_reply(&mut self, now: Instant, c: Contact) -> Insert {
        if c.id == self.own {
            return Insert::Refused;
        }
        // A node that restarted with a new id at the same address: the old entry is gone.
        if let Some((b, i)) = self.find(c.addr)
            && self.buckets[b].nodes[i].contact.id != c.id
        {
            self.buckets[b].nodes.remove(i);
        }
        loop {
            let idx = self.index(&c.id);
            let can_split = idx == self.buckets.len() - 1 && self.buckets.len() < 160;
            let bucket = &mut self.buckets[idx];
            if let Some(e) = bucket.nodes.iter_mut().find(|e| e.contact.id == c.id) {
                if e.contact.addr != c.addr && e.status(now) != Status::Bad {
                    return Insert::Refused;
                }
                e.contact.addr = c.addr;
                e.last_reply = now;
                e.failures = 0;
                bucket.last_changed = now;
                return Insert::Updated;
            }
            let entry = Entry { contact: c, last_reply: now, last_query: None, failures: 0 };
            if bucket.nodes.len() < K {
                bucket.nodes.push(entry);
                bucket.replacements.retain(|(r, _)| r.id != c.id);
                bucket.last_changed = now;
                return Insert::Added;
            }
            if can_split {
                self.split(now);
                continue;
            }
            if let Some(bad) = bucket.nodes.iter_mut().find(|e| e.status(now) == Status::Bad) {
                *bad = entry;
                bucket.last_changed = now;
                return Insert::Added;
            }
            bucket.replacements.retain(|(r, _)| r.id != c.id && r.addr != c.addr);
            if bucket.replacements.len() >= REPLACEMENTS {
                bucket.replacements.remove(0);
            }
            bucket.replacements.push((c, now));
            let ping = bucket
                .nodes
                .iter()
                .filter(|e| e.status(now) == Status::Questionable)
                .min_by_key(|e| e.last_seen())
                .map(|e| e.contact.addr);
            return Insert::Full { ping };
        }
    }

    /// Splits the last bucket: nodes sharing more bits with our id move to a new last bucket.
    fn split(&mut self, now: Instant) {
        let depth = self.buckets.len();
        let own = self.own;
        let deeper = |id: &Id| id::common_prefix_len(&own, id) >= depth;
        let mut new = Bucket::new(now);
        let Some(old) = self.buckets.last_mut() else { return };
        let (moved, kept): (Vec<Entry>, Vec<Entry>) = old.nodes.drain(..).partition(|e| deeper(&e.contact.id));
        old.nodes = kept;
        let (moved_r, kept_r): (Vec<_>, Vec<_>) = old.replacements.drain(..).partition(|(c, _)| deeper(&c.id));
        old.replacements = kept_r;
        new.nodes = moved;
        new.replacements = moved_r;
        self.buckets.push(new);
    }

    /// `c` sent us a query: a node already in the table stays good by that. Says whether it is in the table.
    pub fn heard_query(&mut self, now: Instant, c: Contact) -> bool {
        match self.find(c.addr) {
            Some((b, i)) if self.buckets[b].nodes[i].contact.id == c.id => {
                self.buckets[b].nodes[i].last_query = Some(now);
                true
            }
            _ => false,
        }
    }

    /// Whether a node with `id` that answers a ping would get in without waiting (room, a split, or a bad node).
    pub fn has_room_for(&self, now: Instant, id: &Id) -> bool {
        if *id == self.own {
            return false;
        }
        let idx = self.index(id);
        let bucket = &self.buckets[idx];
        bucket.nodes.len() < K
            || (idx == self.buckets.len() - 1 && self.buckets.len() < 160)
            || bucket.nodes.iter().any(|e| e.status(now) == Status::Bad)
    }

    /// A query to `addr` went unanswered. A node that turns bad gives its place to the newest replacement.
    pub fn failed(&mut self, now: Instant, addr: SocketAddrV4) {
        let Some((b, i)) = self.find(addr) else { return };
        let bucket = &mut self.buckets[b];
        let e = &mut bucket.nodes[i];
        e.failures = e.failures.saturating_add(1);
        if e.status(now) == Status::Bad
            && let Some((c, at)) = bucket.replacements.pop()
        {
            bucket.nodes[i] = Entry { contact: c, last_reply: at, last_query: None, failures: 0 };
            bucket.last_changed = now;
        }
    }

    /// Up to `n` nodes closest to `target`, never bad ones; nodes that missed their last query come after all
    /// others, so answers and lookups go to nodes known to be there first.
    pub fn closest(&self, target: &Id, n: usize) -> Vec<Contact> {
        let mut all: Vec<&Entry> = self.buckets.iter().flat_map(|b| &b.nodes).filter(|e| !e.is_bad()).collect();
        all.sort_by_cached_key(|e| (e.failures > 0, id::distance(&e.contact.id, target)));
        all.into_iter().take(n).map(|e| e.contact).collect()
    }

    /// Nodes that are not bad.
    pub fn len(&self) -> usize {
        self.buckets.iter().flat_map(|b| &b.nodes).filter(|e| !e.is_bad()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries of every status plus waiting replacements (for memory bounds).
    pub fn capacity_used(&self) -> usize {
        self.buckets.iter().map(|b| b.nodes.len() + b.replacements.len()).sum()
    }

    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }

    /// Per bucket, the least recently seen questionable node: pinging it keeps the table fresh (BEP 5).
    pub fn to_ping(&self, now: Instant) -> Vec<SocketAddrV4> {
        self.buckets
            .iter()
            .filter_map(|b| {
                b.nodes
                    .iter()
                    .filter(|e| e.status(now) == Status::Questionable)
                    .min_by_key(|e| e.last_seen())
                    .map(|e| e.contact.addr)
            })
            .collect()
    }

    /// A random id in the first bucket not changed for [`GOOD_FOR`] (to look up, BEP 5's refresh); the bucket counts
    /// as changed now, so it is not picked again before the lookup could help.
    pub fn stale_target(&mut self, now: Instant, rng: &mut Rng) -> Option<Id> {
        let last = self.buckets.len() - 1;
        let (i, b) = self
            .buckets
            .iter_mut()
            .enumerate()
            .find(|(_, b)| now.saturating_duration_since(b.last_changed) >= GOOD_FOR)?;
        b.last_changed = now;
        Some(id::random_with_prefix(&self.own, i, i < last, rng))
    }

    /// A random id in each bucket but the last that holds fewer than K nodes (the last is what the bootstrap lookup
    /// for our own id fills): looking them up right after joining fills the far buckets, which lookups for other
    /// targets start from. Those buckets count as changed now.
    pub fn sparse_targets(&mut self, now: Instant, rng: &mut Rng) -> Vec<Id> {
        let last = self.buckets.len() - 1;
        let mut targets = Vec::new();
        for (i, b) in self.buckets.iter_mut().enumerate().take(last) {
            if b.nodes.iter().filter(|e| !e.is_bad()).count() < K {
                b.last_changed = now;
                targets.push(id::random_with_prefix(&self.own, i, true, rng));
            }
        }
        targets
    }

    /// Good and questionable nodes, for saving.
    pub fn contacts(&self) -> Vec<Contact> {
        self.closest(&self.own, usize::MAX)
    }
}

/// The saved form of a table: `d2:id20:<our id>5:nodes<26 bytes per node>e`.
pub fn encode_saved(own: &Id, nodes: &[Contact]) -> Vec<u8> {
    let mut out = Vec::new();
    Encoder { out: &mut out }
        .begin_dict()
        .str("id")
        .bytes(own)
        .str("nodes")
        .bytes(&super::krpc::compact_nodes(nodes))
        .end();
    out
}

/// Our id and the nodes of a saved table.
pub fn decode_saved(saved: &[u8]) -> Result<(Id, Vec<Contact>), String> {
    let v = bencode::decode(saved).map_err(|e| format!("saved DHT table: {e}"))?;
    let id: Id = v
        .get("id")
        .and_then(Value::as_bytes)
        .and_then(|b| b.try_into().ok())
        .ok_or("saved DHT table: no 20-byte id")?;
    let nodes = v.get("nodes").and_then(Value::as_bytes).ok_or("saved DHT table: no nodes")?;
    if nodes.len() % super::krpc::NODE_LEN != 0 {
        return Err(format!("saved DHT table: nodes is {} bytes, not a multiple of 26", nodes.len()));
    }
    Ok((id, super::krpc::nodes_from(nodes)))
}

#[cfg(test)]
mod tests;
