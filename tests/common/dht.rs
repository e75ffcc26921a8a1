//! `toybt dht` nodes on 127.0.0.1 for the DHT process tests: each bootstrapped from another node on this machine, so
//! nothing reaches the public routers.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::swarm::{self as sw, STEP};
use super::{Proc, port_from_line};

/// The 127.0.0.1 address in a `... listening on 127.0.0.1:PORT` line.
pub fn loopback(line: &str) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port_from_line(line)))
}

/// `toybt dht` on 127.0.0.1 and a free port, its table kept in `dir`, joining through `bootstrap`; returns once it
/// says where it listens.
pub fn dht_node(name: &str, dir: &Path, bootstrap: Option<SocketAddr>) -> (Proc, SocketAddr) {
    let state = dir.join(format!("{name}.dat"));
    let mut args = vec![
        "dht".to_string(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--port".into(),
        "0".into(),
        "--state".into(),
        state.to_str().unwrap().into(),
    ];
    if let Some(b) = bootstrap {
        args.extend(["--bootstrap".into(), b.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = Proc::toybt(name, &args);
    let addr = loopback(&p.wait_line("dht listening on", STEP));
    (p, addr)
}

/// `count` nodes in `dir` (made if missing): the first alone, the others joining through it.
pub fn dht_network(dir: &Path, count: usize) -> Vec<(Proc, SocketAddr)> {
    std::fs::create_dir_all(dir).unwrap();
    let (first, first_addr) = dht_node("dht-0", dir, None);
    let mut nodes = vec![(first, first_addr)];
    for i in 1..count {
        nodes.push(dht_node(&format!("dht-{i}"), dir, Some(first_addr)));
    }
    nodes
}

/// `toybt seed` on 127.0.0.1 and a free port, joining the DHT through `bootstrap`, its table kept in `dht_state`.
pub fn toybt_dht_seed(torrent: &Path, content: &Path, bootstrap: SocketAddr, dht_state: &Path) -> Proc {
    let args = [
        "seed",
        torrent.to_str().unwrap(),
        content.to_str().unwrap(),
        "--port",
        "0",
        "--bind",
        "127.0.0.1",
        "--dht-bootstrap",
        &bootstrap.to_string(),
        "--dht-state",
        dht_state.to_str().unwrap(),
    ];
    Proc::toybt("seed", &args)
}

/// Waits until `seed` says its DHT lookup for `hex_hash` is done and asserts it announced itself to some node.
pub fn wait_announced(seed: &Proc, hex_hash: &str) {
    let announced = seed.wait_line(&format!("dht lookup for {hex_hash} done"), STEP);
    assert!(!announced.contains("announced to 0 node"), "the seed is announced to some node: {announced}");
}

/// `toybt leech MAGNET -o out` on 127.0.0.1 that exits once done (`--seed-time 0`), joining the DHT through
/// `bootstrap`, its table kept in `dht_state`.
pub fn toybt_dht_leech(link: &str, out: &Path, bootstrap: SocketAddr, dht_state: &Path) -> Proc {
    let args = [
        "leech",
        link,
        "-o",
        out.to_str().unwrap(),
        "--port",
        "0",
        "--bind",
        "127.0.0.1",
        "--seed-time",
        "0",
        "--dht-bootstrap",
        &bootstrap.to_string(),
        "--dht-state",
        dht_state.to_str().unwrap(),
    ];
    Proc::toybt("leech", &args)
}

/// A magnet leech fetches the metadata, then all the data with no hash failure, and exits 0, each within `within`.
pub fn assert_leech_completes(leech: &mut Proc, within: Duration) {
    leech.wait_line("metadata complete", within);
    sw::assert_exits_0(leech, within);
    let t = sw::totals(leech, STEP);
    assert!(t.complete && t.hash_failures == 0, "{t:?}");
}
