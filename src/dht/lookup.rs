//! One iterative lookup (BEP 5, Kademlia): ask the nodes closest to a target for nodes closer still, α at a time,
//! closest first, until the [`K`] closest nodes known have all answered. A `get_peers` lookup also keeps each
//! answerer's token, for the announce that follows.
//!
//! Only the K closest live candidates are ever asked: a farther one is asked only once a closer one failed. That is
//! what keeps the packets per lookup near K plus the rounds it takes to get close. A query unanswered for a while
//! (the caller says so with [`Lookup::slow`]) stops holding its place: the lookup goes on as if it had failed, and
//! still takes its answer if it comes, so one dead node costs a short wait instead of the whole timeout.

use std::net::SocketAddrV4;

use super::id::{self, Id};
use super::krpc::Contact;
use super::table::K;

/// Queries in flight per lookup.
pub const ALPHA: usize = 3;
/// Candidates kept, closest first; farther ones are forgotten.
pub const MAX_CANDIDATES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Fresh,
    Asked,
    /// Asked a while ago and not answered yet: out of the way, but its answer still counts.
    Slow,
    Answered,
    Failed,
}

#[derive(Debug, Clone)]
struct Candidate {
    contact: Contact,
    distance: Id,
    state: State,
    token: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct Lookup {
    target: Id,
    candidates: Vec<Candidate>,
    /// Queries sent so far.
    pub queries: usize,
}

impl Lookup {
    pub fn new(target: Id, seeds: &[Contact]) -> Lookup {
        let mut l = Lookup { target, candidates: Vec::new(), queries: 0 };
        l.add(seeds);
        l
    }

    pub fn target(&self) -> Id {
        self.target
    }

    /// Learns of `contacts` (from the table or an answer); known ids and addresses are skipped.
    pub fn add(&mut self, contacts: &[Contact]) {
        for c in contacts {
            if self.candidates.iter().any(|x| x.contact.id == c.id || x.contact.addr == c.addr) {
                continue;
            }
            let distance = id::distance(&c.id, &self.target);
            let at = self.candidates.partition_point(|x| x.distance < distance);
            if at >= MAX_CANDIDATES {
                continue;
            }
            self.candidates.insert(at, Candidate { contact: *c, distance, state: State::Fresh, token: None });
            self.candidates.truncate(MAX_CANDIDATES);
        }
    }

    fn in_flight(&self) -> usize {
        self.candidates.iter().filter(|c| c.state == State::Asked).count()
    }

    /// Candidates that hold a place among the K closest: not failed, not slow.
    fn live(&self) -> impl Iterator<Item = &Candidate> {
        self.candidates.iter().filter(|c| !matches!(c.state, State::Failed | State::Slow))
    }

    /// The next node to ask, if fewer than α are in flight and one of the K closest live candidates is unasked.
    pub fn next_query(&mut self) -> Option<Contact> {
        if self.in_flight() >= ALPHA {
            return None;
        }
        let c = self
            .candidates
            .iter_mut()
            .filter(|c| !matches!(c.state, State::Failed | State::Slow))
            .take(K)
            .find(|c| c.state == State::Fresh)?;
        c.state = State::Asked;
        self.queries += 1;
        Some(c.contact)
    }

    fn asked_at(&mut self, addr: SocketAddrV4) -> Option<&mut Candidate> {
        self.candidates.iter_mut().find(|c| c.contact.addr == addr && matches!(c.state, State::Asked | State::Slow))
    }

    /// The query to `addr` is taking long: let the lookup move on without it.
    pub fn slow(&mut self, addr: SocketAddrV4) {
        if let Some(c) = self.candidates.iter_mut().find(|c| c.contact.addr == addr && c.state == State::Asked) {
            c.state = State::Slow;
        }
    }

    /// `addr` answered as `id`, with `nodes` and maybe a token; false if we were not waiting for it.
    pub fn answered(&mut self, addr: SocketAddrV4, id: Id, token: Option<&[u8]>, nodes: &[Contact]) -> bool {
        let target = self.target;
        let Some(c) = self.asked_at(addr) else { return false };
        c.state = State::Answered;
        c.token = token.map(<[u8]>::to_vec);
        if c.contact.id != id {
            // It is somewhere else in the order than the node that told us of it claimed.
            c.contact.id = id;
            c.distance = id::distance(&id, &target);
            self.candidates.sort_by_key(|c| c.distance);
        }
        self.add(nodes);
        true
    }

    /// A query to `addr` timed out or was refused.
    pub fn failed(&mut self, addr: SocketAddrV4) {
        if let Some(c) = self.candidates.iter_mut().find(|c| c.contact.addr == addr && c.state != State::Answered) {
            c.state = State::Failed;
        }
    }

    /// Done when the K closest live candidates have answered, or no live candidate is left to wait for.
    pub fn is_done(&self) -> bool {
        for c in self.live().take(K) {
            if c.state != State::Answered {
                return false;
            }
        }
        true
    }

    /// The closest nodes that answered, up to `n`, with their tokens.
    pub fn closest_answered(&self, n: usize) -> Vec<(Contact, Option<&[u8]>)> {
        self.candidates
            .iter()
            .filter(|c| c.state == State::Answered)
            .take(n)
            .map(|c| (c.contact, c.token.as_deref()))
            .collect()
    }

    /// How many nodes answered.
    pub fn answers(&self) -> usize {
        self.candidates.iter().filter(|c| c.state == State::Answered).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(first: u8, n: u32) -> Contact {
        let mut id = [0; 20];
        id[0] = first;
        Contact { id, addr: SocketAddrV4::new((0x0a00_0000 + n).into(), 6881) }
    }

    #[test]
    fn asks_alpha_at_a_time_closest_first() {
        let seeds: Vec<Contact> = (1..=5).map(|n| node(n as u8 * 16, n)).collect();
        let mut l = Lookup::new([0; 20], &seeds);
        let asked: Vec<u8> = std::iter::from_fn(|| l.next_query()).map(|c| c.id[0]).collect();
        assert_eq!(asked, vec![16, 32, 48]);
        assert!(!l.is_done());
        assert!(l.answered(seeds[1].addr, seeds[1].id, Some(b"t"), &[node(1, 100), node(2, 101)]));
        assert_eq!(l.next_query().unwrap().id[0], 1, "a closer node learned from an answer goes first");
        assert!(l.next_query().is_none(), "three in flight again");
    }

    #[test]
    fn finishes_when_the_k_closest_answered_without_asking_farther_nodes() {
        let seeds: Vec<Contact> = (1..=12).map(|n| node(n as u8, n)).collect();
        let mut l = Lookup::new([0; 20], &seeds);
        let mut asked: Vec<Contact> = Vec::new();
        while !l.is_done() {
            let Some(c) = l.next_query() else {
                let pending = std::mem::take(&mut asked);
                for c in pending {
                    assert!(l.answered(c.addr, c.id, None, &[]));
                }
                continue;
            };
            asked.push(c);
        }
        assert_eq!(l.queries, K);
        let ids: Vec<u8> = l.closest_answered(K).iter().map(|(c, _)| c.id[0]).collect();
        assert_eq!(ids, (1..=8).collect::<Vec<u8>>());
    }

    #[test]
    fn a_failed_node_lets_the_next_one_in() {
        let seeds: Vec<Contact> = (1..=9).map(|n| node(n as u8, n)).collect();
        let mut l = Lookup::new([0; 20], &seeds);
        for _ in 0..3 {
            l.next_query();
        }
        l.failed(seeds[0].addr);
        let mut sent = 3;
        loop {
            match l.next_query() {
                Some(c) => {
                    sent += 1;
                    assert!(l.answered(c.addr, c.id, None, &[]));
                }
                None if l.is_done() => break,
                None => {
                    for s in &seeds[1..3] {
                        l.answered(s.addr, s.id, None, &[]);
                    }
                }
            }
        }
        assert_eq!(sent, 9, "the ninth node replaces the failed first");
        assert_eq!(l.answers(), 8);
    }

    #[test]
    fn a_slow_node_makes_way_and_its_late_answer_still_counts() {
        let seeds: Vec<Contact> = (1..=9).map(|n| node(n as u8, n)).collect();
        let mut l = Lookup::new([0; 20], &seeds);
        let first = l.next_query().unwrap();
        l.next_query();
        l.next_query();
        assert!(l.next_query().is_none());
        l.slow(first.addr);
        assert_eq!(l.next_query().unwrap().id[0], 4, "a slot opened");
        assert!(l.answered(first.addr, first.id, None, &[]), "the late answer is taken");
        assert_eq!(l.closest_answered(1)[0].0.id[0], 1);
        // Eight answered (the slow one included) while another node is still slow: done.
        let mut l = Lookup::new([0; 20], &seeds);
        let first = l.next_query().unwrap();
        l.slow(first.addr);
        while let Some(c) = l.next_query() {
            assert!(l.answered(c.addr, c.id, None, &[]));
        }
        assert!(l.is_done());
        assert_eq!(l.answers(), 8);
    }

    #[test]
    fn answers_from_nodes_not_asked_are_ignored_and_an_empty_lookup_is_done() {
        let mut l = Lookup::new([0; 20], &[node(1, 1)]);
        assert!(!l.answered(node(1, 1).addr, node(1, 1).id, None, &[node(2, 2)]), "not asked yet");
        assert!(!l.answered(node(9, 9).addr, node(9, 9).id, None, &[]));
        assert!(Lookup::new([0; 20], &[]).is_done());
        let c = l.next_query().unwrap();
        l.failed(c.addr);
        assert!(l.is_done());
    }

    #[test]
    fn keeps_at_most_max_candidates_and_drops_duplicates() {
        let many: Vec<Contact> = (0..100).map(|n| node(n as u8, n)).collect();
        let mut l = Lookup::new([0; 20], &many);
        l.add(&many);
        assert_eq!(l.candidates.len(), MAX_CANDIDATES);
        assert_eq!(l.candidates.last().unwrap().contact.id[0], MAX_CANDIDATES as u8 - 1);
    }

    #[test]
    fn an_answer_under_another_id_moves_the_node_and_keeps_its_token() {
        let seeds = [node(1, 1), node(2, 2)];
        let mut l = Lookup::new([0; 20], &seeds);
        let first = l.next_query().unwrap();
        assert!(l.answered(first.addr, node(9, 0).id, Some(b"tok"), &[]));
        let closest = l.closest_answered(8);
        assert_eq!((closest[0].0.id[0], closest[0].1), (9, Some(&b"tok"[..])));
        assert_eq!(l.target(), [0; 20]);
    }
}
