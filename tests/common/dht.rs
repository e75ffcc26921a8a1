//! `toybt dht` nodes on 127.0.0.1 for the DHT process tests: each bootstrapped from another node on this machine, so
//! nothing reaches the public routers.

use std::net::SocketAddr;
use std::path::Path;

use super::swarm::STEP;
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

/// `count` nodes in `dir`: the first alone, the others joining through it.
pub fn dht_network(dir: &Path, count: usize) -> Vec<(Proc, SocketAddr)> {
    let (first, first_addr) = dht_node("dht-0", dir, None);
    let mut nodes = vec![(first, first_addr)];
    for i in 1..count {
        nodes.push(dht_node(&format!("dht-{i}"), dir, Some(first_addr)));
    }
    nodes
}
