//! The tracker seen from outside: `/metrics` for Prometheus and `/stats` for a person, as opentracker and aquatic
//! offer. Both read the registry and what the front ends counted into it; neither changes anything.

use std::fmt::Write as _;
use std::time::Instant;

use super::Registry;
use super::registry::Counts;
use crate::metrics::{Exposition, Kind};

/// Most swarms listed on `/stats` (the busiest first); the totals cover all of them.
pub const STATS_ROWS: usize = 1000;

struct Totals {
    seeders: usize,
    leechers: usize,
    completed: u64,
}

fn totals(registry: &Registry) -> Totals {
    let mut t = Totals { seeders: 0, leechers: 0, completed: 0 };
    for (_, c) in registry.swarms() {
        t.seeders += c.complete;
        t.leechers += c.incomplete;
        t.completed += c.downloaded;
    }
    t
}

/// The Prometheus text for the whole tracker: no label per swarm, so its size does not grow with the swarms.
pub fn write_metrics(registry: &Registry, now: Instant, out: &mut Vec<u8>) {
    let t = totals(registry);
    let traffic = registry.traffic();
    let front = traffic.udp_front;
    let by_protocol = [("http", &traffic.http), ("udp", &traffic.udp)];
    let mut m = Exposition::new(out);
    m.single("toybt_tracker_swarms", Kind::Gauge, "Swarms the tracker serves.", registry.swarm_count() as f64);
    m.family("toybt_tracker_peers", Kind::Gauge, "Peers stored, by role.")
        .sample("toybt_tracker_peers", &[("role", "seeder")], t.seeders as f64)
        .sample("toybt_tracker_peers", &[("role", "leecher")], t.leechers as f64);
    m.single(
        "toybt_tracker_completed_total",
        Kind::Counter,
        "Completed downloads announced in the swarms that exist now.",
        t.completed as f64,
    );
    m.family("toybt_tracker_announces_total", Kind::Counter, "Announces answered with peers, by protocol.");
    for (p, s) in by_protocol {
        m.sample("toybt_tracker_announces_total", &[("protocol", p)], s.announces as f64);
    }
    m.family("toybt_tracker_announces_refused_total", Kind::Counter, "Announces refused, by protocol.");
    for (p, s) in by_protocol {
        m.sample("toybt_tracker_announces_refused_total", &[("protocol", p)], s.refused as f64);
    }
    m.family("toybt_tracker_scrapes_total", Kind::Counter, "Scrapes answered, by protocol.");
    for (p, s) in by_protocol {
        m.sample("toybt_tracker_scrapes_total", &[("protocol", p)], s.scrapes as f64);
    }
    m.family("toybt_tracker_announce_rate", Kind::Gauge, "Announces per second over the last ten seconds.");
    for (p, s) in by_protocol {
        m.sample("toybt_tracker_announce_rate", &[("protocol", p)], round2(s.announces_per_sec(now)));
    }
    m.single(
        "toybt_tracker_udp_connects_total",
        Kind::Counter,
        "UDP connect requests answered.",
        front.connects as f64,
    );
    m.single("toybt_tracker_udp_errors_total", Kind::Counter, "UDP error answers sent.", front.errors as f64);
    m.single(
        "toybt_tracker_udp_dropped_total",
        Kind::Counter,
        "UDP datagrams dropped unanswered (malformed, unknown action, invalid connection id).",
        front.dropped as f64,
    );
    m.single(
        "toybt_tracker_udp_overflow_total",
        Kind::Counter,
        "UDP answers dropped because the send queue was full.",
        front.overflow as f64,
    );
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A self-contained HTML page: totals, rates by protocol, and the busiest swarms.
pub fn write_stats_page(registry: &Registry, now: Instant, out: &mut Vec<u8>) {
    let t = totals(registry);
    let traffic = registry.traffic();
    let mut swarms: Vec<([u8; 20], Counts)> = registry.swarms().collect();
    let shown = swarms.len().min(STATS_ROWS);
    let busiest = |c: &Counts| std::cmp::Reverse((c.complete + c.incomplete, c.downloaded));
    if shown > 0 && shown < swarms.len() {
        swarms.select_nth_unstable_by_key(shown - 1, |(_, c)| busiest(c));
    }
    swarms.truncate(shown);
    swarms.sort_unstable_by_key(|(h, c)| (busiest(c), *h));

    let mut s = String::with_capacity(2048 + 160 * shown);
    s.push_str(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>toybt tracker</title>\n<style>\
         body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse}\
         td,th{padding:.25em .8em;border-bottom:1px solid #ddd;text-align:right}\
         td:first-child,th:first-child{text-align:left;font-family:monospace}</style></head><body>\n\
         <h1>toybt tracker</h1>\n",
    );
    let _ = writeln!(
        s,
        "<p id=\"totals\"><b>{}</b> swarms, <b>{}</b> seeders, <b>{}</b> leechers, <b>{}</b> completed</p>",
        registry.swarm_count(),
        t.seeders,
        t.leechers,
        t.completed
    );
    s.push_str("<table id=\"protocols\"><tr><th>protocol</th><th>announces</th><th>announces/s</th>");
    s.push_str("<th>refused</th><th>scrapes</th></tr>\n");
    for (p, served) in [("http", &traffic.http), ("udp", &traffic.udp)] {
        let _ = writeln!(
            s,
            "<tr><td>{p}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td></tr>",
            served.announces,
            served.announces_per_sec(now),
            served.refused,
            served.scrapes
        );
    }
    s.push_str("</table>\n<h2>Swarms</h2>\n<table id=\"swarms\"><tr><th>info hash</th><th>seeders</th>");
    s.push_str("<th>leechers</th><th>completed</th></tr>\n");
    for (hash, c) in &swarms {
        s.push_str("<tr><td>");
        for b in hash {
            let _ = write!(s, "{b:02x}");
        }
        let _ = writeln!(s, "</td><td>{}</td><td>{}</td><td>{}</td></tr>", c.complete, c.incomplete, c.downloaded);
    }
    s.push_str("</table>\n");
    if shown < registry.swarm_count() {
        let _ = writeln!(s, "<p>The {shown} busiest of {} swarms.</p>", registry.swarm_count());
    }
    s.push_str("</body></html>\n");
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::Config;
    use crate::tracker::registry::{Announce, Event};

    fn hash(n: u16) -> [u8; 20] {
        let mut h = [0; 20];
        h[..2].copy_from_slice(&n.to_be_bytes());
        h
    }

    fn announce(r: &mut Registry, now: Instant, info_hash: [u8; 20], peer: u8, left: u64) {
        let a = Announce {
            info_hash,
            peer_id: [peer; 20],
            port: 6881,
            uploaded: 0,
            downloaded: 0,
            left: Some(left),
            event: Event::Started,
            numwant: 50,
        };
        r.announce(now, &a, [10, 0, 0, peer].into()).unwrap();
    }

    #[test]
    fn metrics_count_peers_by_role_and_requests_by_protocol() {
        let now = Instant::now();
        let mut r = Registry::new(Config { open: true, ..Config::default() }, [], 1, now);
        announce(&mut r, now, hash(1), 1, 0);
        announce(&mut r, now, hash(1), 2, 5);
        announce(&mut r, now, hash(2), 3, 5);
        r.traffic_mut().http.count_announce(now);
        r.traffic_mut().udp.scrapes += 4;
        r.traffic_mut().udp_front.dropped = 9;
        let mut out = Vec::new();
        write_metrics(&r, now, &mut out);
        let text = String::from_utf8(out).unwrap();
        for line in [
            "toybt_tracker_swarms 2\n",
            "toybt_tracker_peers{role=\"seeder\"} 1\n",
            "toybt_tracker_peers{role=\"leecher\"} 2\n",
            "toybt_tracker_announces_total{protocol=\"http\"} 1\n",
            "toybt_tracker_announces_total{protocol=\"udp\"} 0\n",
            "toybt_tracker_scrapes_total{protocol=\"udp\"} 4\n",
            "toybt_tracker_udp_dropped_total 9\n",
            "# TYPE toybt_tracker_completed_total counter\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
    }

    #[test]
    fn the_stats_page_lists_the_busiest_swarms_first_and_caps_the_list() {
        let now = Instant::now();
        let mut r = Registry::new(Config { open: true, max_swarms: 5000, ..Config::default() }, [], 1, now);
        let n = STATS_ROWS as u16 + 100;
        for h in 0..n {
            announce(&mut r, now, hash(h), 1, 5);
        }
        announce(&mut r, now, hash(700), 2, 0);
        announce(&mut r, now, hash(700), 3, 0);
        let mut out = Vec::new();
        write_stats_page(&r, now, &mut out);
        let page = String::from_utf8(out).unwrap();
        assert!(page.contains(&format!("<b>{n}</b> swarms, <b>2</b> seeders, <b>{n}</b> leechers")), "{page}");
        let first_row = page.split("<tr><td>").nth(3).unwrap();
        assert!(first_row.starts_with("02bc000000"), "the busiest swarm comes first: {first_row}");
        assert_eq!(page.matches("<tr><td>").count(), 2 + STATS_ROWS, "two protocol rows, then the capped swarms");
        assert!(page.contains(&format!("The {STATS_ROWS} busiest of {n} swarms.")));
        assert!(page.ends_with("</html>\n"));
    }
}
