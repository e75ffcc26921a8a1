//! Hundreds of nodes in one process: datagrams go through an in-memory network with a small random latency on a
//! virtual clock, timers fire in order. Lookups must converge to the true closest nodes (found by brute force), an
//! announced peer must be found by another node, and still after a third of the nodes are gone.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::id::{self, Id, Rng};
use super::{Config, Event, Node};

const NODES: usize = 300;

/// A datagram on the wire: (delivery time, sequence number for a stable order, from index, to index, bytes).
type InFlight = (Instant, u64, usize, usize, Vec<u8>);

struct Sim {
    now: Instant,
    nodes: Vec<Option<Node>>,
    addrs: Vec<SocketAddr>,
    by_addr: HashMap<SocketAddr, usize>,
    packets: BinaryHeap<Reverse<InFlight>>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    rng: Rng,
    seq: u64,
    /// Datagrams each node sent.
    sent: Vec<u64>,
    /// Events per node, in order.
    events: Vec<Vec<Event>>,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        Sim {
            now: Instant::now(),
            nodes: Vec::new(),
            addrs: Vec::new(),
            by_addr: HashMap::new(),
            packets: BinaryHeap::new(),
            timers: BinaryHeap::new(),
            rng: Rng::new(seed),
            seq: 0,
            sent: Vec::new(),
            events: Vec::new(),
        }
    }

    /// A node at 10.x.y.z:6881 that bootstraps from node 0 (the first one has nobody to ask).
    fn add(&mut self) -> usize {
        let i = self.nodes.len();
        let addr = SocketAddr::from((std::net::Ipv4Addr::from(0x0a00_0001 + i as u32), 6881));
        let seed = self.rng.next_u64();
        let mut node = Node::new(self.now, Config { id: None, seed });
        if i > 0 {
            node.add_node(self.now, self.addrs[0]);
        }
        self.nodes.push(Some(node));
        self.addrs.push(addr);
        self.by_addr.insert(addr, i);
        self.sent.push(0);
        self.events.push(Vec::new());
        self.pump(i);
        i
    }

    fn track(&mut self, i: usize, info_hash: Id, port: Option<u16>) {
        let now = self.now;
        self.node(i).track(now, info_hash, port);
        self.pump(i);
    }

    fn node(&mut self, i: usize) -> &mut Node {
        self.nodes[i].as_mut().expect("a live node")
    }

    /// Sends what node `i` has to send, collects its events and re-arms its timer.
    fn pump(&mut self, i: usize) {
        let now = self.now;
        let Some(node) = self.nodes[i].as_mut() else { return };
        let mut out = Vec::new();
        while let Some(to) = node.poll_datagram(now, &mut out) {
            assert_ne!(to.port(), 0);
            assert_ne!(to, self.addrs[i], "a node sent to itself");
            self.sent[i] += 1;
            if let Some(&j) = self.by_addr.get(&to) {
                let latency = Duration::from_millis(5 + self.rng.below(20));
                self.seq += 1;
                self.packets.push(Reverse((now + latency, self.seq, i, j, std::mem::take(&mut out))));
            }
            out.clear();
        }
        while let Some(e) = node.poll_event() {
            self.events[i].push(e);
        }
        if let Some(t) = node.poll_timeout() {
            assert!(t >= now || t + Duration::from_millis(1) >= now, "a deadline in the past");
            self.timers.push(Reverse((t.max(now), i)));
        }
    }

    /// Delivers packets and fires timers in time order until `until`.
    fn run_until(&mut self, until: Instant) {
        let mut steps = 0u64;
        loop {
            steps += 1;
            assert!(steps < 5_000_000, "the network never goes quiet");
            let next_packet = self.packets.peek().map(|Reverse(p)| p.0);
            let next_timer = self.timers.peek().map(|Reverse(t)| t.0);
            let next = match (next_packet, next_timer) {
                (Some(p), Some(t)) => p.min(t),
                (Some(p), None) => p,
                (None, Some(t)) => t,
                (None, None) => break,
            };
            if next > until {
                break;
            }
            self.now = next;
            if next_packet == Some(next) {
                let Some(Reverse((_, _, from, to, bytes))) = self.packets.pop() else { break };
                let (now, from) = (self.now, self.addrs[from]);
                if let Some(node) = self.nodes[to].as_mut() {
                    node.handle_datagram(now, from, &bytes);
                    self.pump(to);
                }
            } else {
                let Some(Reverse((_, i))) = self.timers.pop() else { break };
                let now = self.now;
                if let Some(node) = self.nodes[i].as_mut()
                    && node.poll_timeout().is_some_and(|t| t <= now)
                {
                    node.handle_timeout(now);
                    self.pump(i);
                }
            }
        }
        self.now = until;
    }

    fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    /// Runs until node `i` reports the end of its lookup for `target` (at most a minute of virtual time).
    fn lookup_done(&mut self, i: usize, target: Id) -> (usize, usize) {
        let deadline = self.now + Duration::from_secs(60);
        while self.now < deadline {
            self.run_for(Duration::from_millis(100));
            let done = self.events[i].iter().find_map(|e| match e {
                Event::LookupDone { info_hash, peers, announced } if *info_hash == target => Some((*peers, *announced)),
                _ => None,
            });
            if let Some(d) = done {
                return d;
            }
        }
        panic!("node {i}: the lookup did not finish within a minute");
    }

    fn live(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].is_some()).collect()
    }

    /// The ids of the 8 live nodes closest to `target`, except node `asker`.
    fn true_closest(&self, target: &Id, asker: usize) -> Vec<Id> {
        let mut ids: Vec<Id> = self
            .live()
            .into_iter()
            .filter(|&i| i != asker)
            .filter_map(|i| self.nodes[i].as_ref().map(Node::id))
            .collect();
        ids.sort_by_key(|id| id::distance(id, target));
        ids.truncate(8);
        ids
    }

    /// A network of `n` nodes joined one after the other, 20 ms apart, then left to settle for a minute.
    fn network(seed: u64, n: usize) -> Sim {
        let mut sim = Sim::new(seed);
        for _ in 0..n {
            sim.add();
            sim.run_for(Duration::from_millis(20));
        }
        sim.run_for(Duration::from_secs(60));
        println!("dht sim: {n} nodes joined, {} datagrams sent in all", sim.sent.iter().sum::<u64>());
        sim
    }
}

#[test]
fn lookups_converge_to_the_true_8_closest_nodes() {
    let mut sim = Sim::network(1, NODES);
    let tables: Vec<usize> = sim.live().iter().map(|&i| sim.nodes[i].as_ref().map_or(0, |n| n.stats().nodes)).collect();
    let smallest = tables.iter().min().copied().unwrap_or(0);
    assert!(smallest >= 8, "every node knows at least 8 others after joining (smallest table {smallest})");

    let mut queries = Vec::new();
    for round in 0..20 {
        let asker = sim.rng.below(NODES as u64) as usize;
        let target = sim.rng.id();
        let sent_before = sim.sent[asker];
        sim.track(asker, target, None);
        sim.lookup_done(asker, target);
        let node = sim.nodes[asker].as_ref().expect("live");
        let finished = node.finished.iter().rev().find(|f| f.target == target).expect("a finished lookup");
        assert_eq!(finished.closest, sim.true_closest(&target, asker), "round {round}: lookup from node {asker}");
        assert!(finished.queries <= 40, "round {round}: {} queries", finished.queries);
        assert!(sim.sent[asker] - sent_before <= 60);
        queries.push(finished.queries);
        sim.node(asker).untrack(target);
    }
    let mean = queries.iter().sum::<usize>() as f64 / queries.len() as f64;
    let max = queries.iter().max().copied().unwrap_or(0);
    println!("dht sim: {NODES} nodes, 20 lookups: {mean:.1} queries per lookup on average, {max} at most");
}

#[test]
fn an_announced_peer_is_found_by_another_node_and_after_a_third_of_the_nodes_left() {
    let mut sim = Sim::network(2, NODES);
    let hash = sim.rng.id();
    let (seeder, leecher, late) = (17, 230, 111);

    sim.track(seeder, hash, Some(6000));
    let (_, announced) = sim.lookup_done(seeder, hash);
    assert_eq!(announced, 8, "announced to the 8 closest nodes");

    let start = sim.now;
    sim.track(leecher, hash, None);
    let (peers, _) = sim.lookup_done(leecher, hash);
    let seeder_peer = SocketAddr::new(sim.addrs[seeder].ip(), 6000);
    let first_peer_at = sim.events[leecher].iter().position(
        |e| matches!(e, Event::Peers { info_hash, peers } if *info_hash == hash && peers.contains(&seeder_peer)),
    );
    assert!(first_peer_at.is_some(), "the leecher found the seeder: {:?}", sim.events[leecher]);
    assert_eq!(peers, 1);
    let leech_took = sim.now - start;
    assert!(leech_took < Duration::from_secs(2), "{leech_took:?}");

    // Churn: a third of the nodes leave at once (never the late asker).
    let mut gone = 0;
    while gone < NODES / 3 {
        let i = sim.rng.below(NODES as u64) as usize;
        if i != late && sim.nodes[i].is_some() {
            sim.nodes[i] = None;
            gone += 1;
        }
    }
    sim.run_for(Duration::from_secs(5));
    let start = sim.now;
    sim.track(late, hash, None);
    sim.lookup_done(late, hash);
    let late_took = sim.now - start;
    let queries = |sim: &Sim, i: usize| {
        let node = sim.nodes[i].as_ref().expect("live");
        node.finished.iter().rev().find(|f| f.target == hash).map_or(0, |f| f.queries)
    };
    println!(
        "dht sim: get_peers before churn {} queries in {leech_took:?}, after a third left {} queries in {late_took:?}",
        queries(&sim, leecher),
        queries(&sim, late)
    );
    assert!(late_took < Duration::from_secs(10), "{late_took:?}");
    let node = sim.nodes[late].as_ref().expect("live");
    let finished = node.finished.iter().rev().find(|f| f.target == hash).expect("a finished lookup");
    assert_eq!(
        finished.closest,
        sim.true_closest(&hash, late),
        "after churn the lookup still reaches the closest live"
    );
    let found = sim.events[late]
        .iter()
        .any(|e| matches!(e, Event::Peers { info_hash, peers } if *info_hash == hash && peers.contains(&seeder_peer)));
    assert!(found, "after churn the peer is still found: {:?}", sim.events[late]);
}

/// Two idle hours of a 50-node network where five nodes track a torrent: tables stay full, tracked hashes are
/// looked up and re-announced every 15 to 30 minutes, and the background traffic stays a few datagrams a minute.
#[test]
fn an_idle_network_stays_quiet_keeps_its_tables_and_re_announces() {
    let mut sim = Sim::network(3, 50);
    let hash = sim.rng.id();
    let trackers = [3, 14, 25, 36, 47];
    for &i in &trackers {
        sim.track(i, hash, Some(7000 + i as u16));
    }
    sim.run_for(Duration::from_secs(60));
    let tables_before: Vec<usize> = (0..50).map(|i| sim.nodes[i].as_ref().map_or(0, |n| n.stats().nodes)).collect();
    let sent_before: u64 = sim.sent.iter().sum();
    let hours = 2;
    sim.run_for(Duration::from_secs(hours * 3600));
    let per_node_minute = (sim.sent.iter().sum::<u64>() - sent_before) as f64 / 50.0 / (hours * 60) as f64;
    println!("dht sim: idle 50-node network, {per_node_minute:.2} datagrams per node per minute");
    assert!(per_node_minute < 6.0, "{per_node_minute}");
    for (i, before) in tables_before.iter().enumerate() {
        let now = sim.nodes[i].as_ref().map_or(0, |n| n.stats().nodes);
        assert!(now + 2 >= *before, "node {i}: table went from {before} to {now}");
    }
    for &i in &trackers {
        let done = sim.events[i]
            .iter()
            .filter(|e| matches!(e, Event::LookupDone { info_hash, .. } if *info_hash == hash))
            .count();
        assert!((5..=9).contains(&done), "node {i}: {done} lookups in {hours} hours");
        let found: std::collections::HashSet<SocketAddr> = sim.events[i]
            .iter()
            .filter_map(|e| match e {
                Event::Peers { peers, .. } => Some(peers.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        assert!(found.len() >= 4, "node {i} found the other trackers: {found:?}");
    }
}
