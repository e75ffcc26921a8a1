#!/usr/bin/python3
"""A loopback Mainline DHT of libtorrent nodes, all in one process, for benches/dht_compare.sh (NETWORK=libtorrent).

Usage: lt_dht_nodes.py [--nodes N] [--min-table K] [--timeout S]

Starts N python3-libtorrent sessions, each a DHT node listening on its own port of 127.0.0.1 (UDP, and TCP because
a session always listens for peers too), with the settings of /work/shared/INTEROP.md for a DHT on 127.0.0.0/8: no
bootstrap routers, dht_restrict_routing_ips and dht_restrict_search_ips off, dht_block_ratelimit and the DHT upload
limit raised (every node is 127.0.0.1, so libtorrent's per-address limits would otherwise ban the whole network).
Each node after the first add_dht_node()s one or two nodes started before it, chosen at random, so the network is not
a star around node 0. No torrent, no LSD, UPnP, NAT-PMP.

Prints on stdout (flushed):
  node PORT          one line per node, in start order, once it listens
  ready              once every node's routing table holds at least K nodes (dht_stats_alert)
  error DETAIL       a node did not listen, or the tables did not fill within S seconds (then exit 1)
Then runs until SIGTERM or SIGINT, and exits 0.
"""

import argparse
import random
import signal
import sys
import time

import libtorrent as lt


def say(*words):
    print(*words, flush=True)


def settings():
    return {
        "listen_interfaces": "127.0.0.1:0",
        "outgoing_interfaces": "127.0.0.1",
        "enable_dht": True,
        "dht_bootstrap_nodes": "",
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_block_ratelimit": 100000,
        "dht_upload_rate_limit": 1000000,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        # Fifty sessions share two cores: as few threads per session as libtorrent allows.
        "aio_threads": 1,
        "hashing_threads": 1,
        "alert_mask": lt.alert.category_t.status_notification | lt.alert.category_t.error_notification
        | lt.alert.category_t.dht_notification,
    }


def udp_port(ses, deadline):
    """The port the session's DHT socket listens on (its UDP listen socket), or None by the deadline."""
    while time.monotonic() < deadline:
        ses.wait_for_alert(50)
        for a in ses.pop_alerts():
            if isinstance(a, lt.listen_succeeded_alert) and "udp" in str(a.socket_type).lower():
                return a.port
            if isinstance(a, lt.listen_failed_alert):
                say("error", "listen failed:", a.message())
                return None
    return None


def table_sizes(sessions):
    """Nodes in each session's routing table (buckets only, not replacements), from one dht_stats_alert each."""
    for ses in sessions:
        ses.post_dht_stats()
    sizes = []
    for ses in sessions:
        size = None
        deadline = time.monotonic() + 2
        while size is None and time.monotonic() < deadline:
            ses.wait_for_alert(50)
            for a in ses.pop_alerts():
                if isinstance(a, lt.dht_stats_alert):
                    size = sum(b["num_nodes"] for b in a.routing_table)
        sizes.append(size or 0)
    return sizes


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=50)
    p.add_argument("--min-table", type=int, default=4)
    p.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args(argv)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    deadline = time.monotonic() + args.timeout
    sessions, ports = [], []
    for i in range(args.nodes):
        ses = lt.session(settings())
        port = udp_port(ses, deadline)
        if port is None:
            say("error", f"node {i} is not listening")
            return 1
        for j in random.sample(range(i), min(i, 2)):
            ses.add_dht_node(("127.0.0.1", ports[j]))
        sessions.append(ses)
        ports.append(port)
        say("node", port)

    # The earliest nodes learn of the later ones only through their queries: wait until every table has filled a bit.
    sizes = []
    while not stop:
        sizes = table_sizes(sessions)
        if min(sizes) >= args.min_table:
            say("ready", "tables", min(sizes), "to", max(sizes), "nodes")
            break
        if time.monotonic() > deadline:
            say("error", f"routing tables not filled after {args.timeout} s: {sizes}")
            return 1
        time.sleep(0.5)

    while not stop:
        # Drain the alert queues so they do not grow for as long as the bench runs.
        for ses in sessions:
            ses.pop_alerts()
        time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
