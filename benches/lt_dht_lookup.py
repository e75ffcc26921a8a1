#!/usr/bin/python3
"""Download a magnet link with python3-libtorrent found through a loopback Mainline DHT alone, for
benches/dht_compare.sh, printing when each stage is reached and what its DHT sent for the lookup.

Usage: lt_dht_lookup.py MAGNET_URI SAVE_DIR --port PORT --dht-node HOST:PORT... [--max-seconds S] [--verbose]

Settings as in /work/shared/INTEROP.md for a DHT on 127.0.0.0/8: enable_dht, no bootstrap routers, the --dht-node
nodes added with add_dht_node, dht_restrict_routing_ips and dht_restrict_search_ips off, dht_block_ratelimit raised;
plain TCP on 127.0.0.1 with several peers per IP, no LSD, UPnP, NAT-PMP, uTP or PEX.

Prints one line per event on stdout (flushed); T is the wall clock (time.time()) when the alert was popped:
  started T                  the session exists and the magnet has been added
  dht_reply T N              the first DHT answer to the torrent's get_peers that held peers (N of them)
  first_peer T               the first peer connection it made (peer_connect_alert)
  lookup_packets G A F P M   session counters at dht_reply: get_peers, announce_peer, find_node, ping and all DHT
                             messages sent (M also counts answers to other nodes' queries). libtorrent checks new
                             nodes with get_peers queries too (target 0), so G counts those as well
  finished T                 torrent_finished_alert
  final_packets G A F P M    the same counters once finished (announce_peer goes out after dht_reply)
  error KIND DETAIL          timeout
Exits 0 after `finished`, 1 on a timeout. --verbose copies libtorrent's DHT log lines about its lookups and their
timeouts to stderr, with the seconds since the start.
"""

import argparse
import sys
import time

import libtorrent as lt

COUNTERS = ["dht.dht_get_peers_out", "dht.dht_announce_peer_out", "dht.dht_find_node_out", "dht.dht_ping_out",
            "dht.dht_messages_out"]


def say(*words):
    print(*words, flush=True)


def parse_node(text):
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"bad --dht-node {text!r}: expected HOST:PORT")
    return (host, int(port))


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("magnet")
    p.add_argument("save_dir")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dht-node", action="append", default=[], required=True)
    p.add_argument("--max-seconds", type=float, default=120.0)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    ses = lt.session({
        "listen_interfaces": f"127.0.0.1:{args.port}",
        "outgoing_interfaces": "127.0.0.1",
        # Every peer is 127.0.0.1: without this libtorrent keeps one peer per IP, and when a stopped leech's address
        # came first the seed's was dropped until the next lookup a minute later.
        "allow_multiple_connections_per_ip": True,
        "enable_dht": True,
        "dht_bootstrap_nodes": "",
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_block_ratelimit": 100000,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "alert_mask": lt.alert.category_t.status_notification | lt.alert.category_t.connect_notification
        | lt.alert.category_t.tracker_notification | lt.alert.category_t.error_notification
        | lt.alert.category_t.stats_notification
        | (lt.alert.category_t.dht_log_notification if args.verbose else 0),
    })
    for node in args.dht_node:
        ses.add_dht_node(parse_node(node))
    atp = lt.parse_magnet_uri(args.magnet)
    atp.save_path = args.save_dir
    atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
    atp.flags |= lt.torrent_flags.disable_pex | lt.torrent_flags.disable_lsd
    ses.add_torrent(atp)
    started = time.time()
    say("started", f"{started:.6f}")
    index = {m.name: m.value_index for m in lt.session_stats_metrics()}
    first_peer = replied = counted = finished = False
    # What each session_stats_alert answers, in the order the requests were posted.
    labels = []
    give_up = time.monotonic() + args.max_seconds
    while time.monotonic() < give_up:
        if finished and counted:
            return 0
        ses.wait_for_alert(50)
        for a in ses.pop_alerts():
            now = f"{time.time():.6f}"
            if isinstance(a, lt.dht_log_alert):
                text = a.message()
                if any(w in text for w in ("announcing", "COMPLETED", "timeout", "NEW target")):
                    print(f"{time.time() - started:.3f}", text, file=sys.stderr, flush=True)
            elif isinstance(a, lt.peer_connect_alert) and not first_peer:
                first_peer = True
                say("first_peer", now)
            elif isinstance(a, lt.dht_reply_alert) and not replied:
                replied = True
                say("dht_reply", now, a.num_peers)
                ses.post_session_stats()
                labels.append("lookup_packets")
            elif isinstance(a, lt.session_stats_alert):
                values = a.values if isinstance(a.values, dict) else None
                counts = [values[c] if values else a.values[index[c]] for c in COUNTERS]
                label = labels.pop(0) if labels else "final_packets"
                say(label, *counts)
                counted = label == "final_packets"
            elif isinstance(a, lt.torrent_finished_alert):
                say("finished", now)
                finished = True
                ses.post_session_stats()
                labels.append("final_packets")
                # The lookup's end and its counters may still be on their way: waited for, a few seconds at most.
                give_up = min(give_up, time.monotonic() + 10)
    if finished:
        return 0
    say("error timeout", f"not finished after {args.max_seconds} s")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
