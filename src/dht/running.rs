//! Which lookups run, and when: starting the due ones (tracked hashes, refreshes, the bootstrap), stepping them, and
//! finishing them (announcing to the nodes that gave tokens, scheduling the next one). The rest of the node answers
//! and sends; this is its calendar.

use std::collections::HashSet;
use std::time::Instant;

use super::*;

impl Node {
    /// Finishes lookups that are done (or moves them on to announcing) and starts due ones; true if anything moved.
    pub(super) fn progress(&mut self, now: Instant) -> bool {
        let mut changed = false;
        let mut i = 0;
        while i < self.lookups.len() {
            let a = &mut self.lookups[i];
            let finish = match &a.phase {
                Phase::Searching if a.lookup.is_done() => {
                    changed = true;
                    match (a.purpose, a.port) {
                        (Purpose::Track(_), Some(_)) => {
                            let queue: Vec<(Contact, Vec<u8>)> = a
                                .lookup
                                .closest_answered(lookup::MAX_CANDIDATES)
                                .into_iter()
                                .filter_map(|(c, t)| t.map(|t| (c, t.to_vec())))
                                .take(K)
                                .collect();
                            let empty = queue.is_empty();
                            a.phase = Phase::Announcing { queue, pending: 0, acked: 0 };
                            empty
                        }
                        _ => true,
                    }
                }
                Phase::Announcing { queue, pending: 0, .. } if queue.is_empty() => true,
                _ => false,
            };
            if finish {
                changed = true;
                let a = self.lookups.remove(i);
                self.finish(now, a);
            } else {
                i += 1;
            }
        }
        changed | self.start_due(now)
    }

    pub(super) fn finish(&mut self, now: Instant, a: Active) {
        let answers = a.lookup.answers();
        let announced = match a.phase {
            Phase::Announcing { acked, .. } => acked,
            Phase::Searching => 0,
        };
        let what = match a.purpose {
            Purpose::Bootstrap => "bootstrap (find_node for our id)".to_string(),
            Purpose::Refresh => format!("refresh (find_node {})", hex(&a.lookup.target())),
            Purpose::Track(info_hash) => format!("get_peers {}", hex(&info_hash)),
        };
        log::debug!(
            "dht: lookup {what} done: {} queries, {answers} answers, {} peers, announced to {announced}",
            a.lookup.queries,
            a.peers.len()
        );
        #[cfg(test)]
        self.finished.push(Finished {
            target: a.lookup.target(),
            closest: a.lookup.closest_answered(K).iter().map(|(c, _)| c.id).collect(),
            queries: a.lookup.queries,
        });
        match a.purpose {
            Purpose::Track(info_hash) => {
                let spread = self.rng.below(RELOOKUP_SPREAD.as_secs());
                if let Some(t) = self.tracked.get_mut(&info_hash) {
                    t.active = false;
                    let relookup = RELOOKUP_MIN + Duration::from_secs(spread);
                    t.next_lookup = if answers == 0 {
                        now + RETRY_EMPTY
                    } else if a.peers.is_empty() {
                        let backoff = RETRY_NO_PEERS.saturating_mul(1 << t.without_peers.min(5));
                        t.without_peers = t.without_peers.saturating_add(1);
                        now + backoff.min(relookup)
                    } else {
                        t.without_peers = 0;
                        now + relookup
                    };
                }
                self.push_event(Event::LookupDone { info_hash, peers: a.peers.len(), announced });
            }
            Purpose::Bootstrap => {
                self.refresh_queue = self.table.sparse_targets(now, &mut self.rng);
                if self.table.len() < K {
                    self.bootstrap_due = Some(now + MAINTENANCE_EVERY);
                }
            }
            Purpose::Refresh => {}
        }
    }

    /// Starts the bootstrap and tracked lookups that are due, when the table has nodes to start from.
    pub(super) fn start_due(&mut self, now: Instant) -> bool {
        let mut started = false;
        if self.bootstrap_due.is_some_and(|t| t <= now) {
            self.bootstrap_due = None;
            if !self.table.is_empty() && !self.lookups.iter().any(|a| a.purpose == Purpose::Bootstrap) {
                self.bootstrapped = true;
                let seeds = self.table.closest(&self.id, K);
                self.start(Purpose::Bootstrap, self.id, None, &seeds);
                started = true;
            }
        }
        let refreshing = self.lookups.iter().any(|a| a.purpose == Purpose::Refresh);
        if !refreshing
            && self.lookups.len() < MAX_LOOKUPS
            && !self.table.is_empty()
            && let Some(target) = self.refresh_queue.pop()
        {
            let seeds = self.table.closest(&target, K);
            self.start(Purpose::Refresh, target, None, &seeds);
            started = true;
        }
        let due: Vec<Id> =
            self.tracked.iter().filter(|(_, t)| !t.active && t.next_lookup <= now).map(|(h, _)| *h).collect();
        for info_hash in due {
            let Some(t) = self.tracked.get_mut(&info_hash) else { continue };
            if self.table.is_empty() {
                // Nothing to ask yet: the answer that fills the table starts it (see `on_response`).
                t.next_lookup = now + RETRY_EMPTY;
                continue;
            }
            if self.lookups.len() >= MAX_LOOKUPS {
                t.next_lookup = now + Duration::from_secs(1);
                continue;
            }
            t.active = true;
            let port = t.port;
            let seeds = self.table.closest(&info_hash, K);
            self.start(Purpose::Track(info_hash), info_hash, port, &seeds);
            started = true;
        }
        started
    }

    pub(super) fn start(&mut self, purpose: Purpose, target: Id, port: Option<u16>, seeds: &[Contact]) {
        self.next_key += 1;
        self.lookups.push(Active {
            key: self.next_key,
            purpose,
            lookup: Lookup::new(target, seeds),
            phase: Phase::Searching,
            port,
            peers: HashSet::new(),
        });
    }
}
