#!/usr/bin/python3
"""Seed or download one torrent with python3-libtorrent on 127.0.0.1 (or --bind ADDR), for toybt's interop tests.

Usage: lt_client.py seed|leech TORRENT SAVE_DIR --port PORT [--bind ADDR] [--peer HOST:PORT]... [--exit-when-done]
                    [--max-seconds S] [--pex] [--keep-seed-links] [--upload-mode] [--dht-node HOST:PORT]...

TORRENT is a .torrent file or a magnet link (`magnet:?xt=urn:btih:...`, whose `tr` trackers and `x.pe` peers
libtorrent uses as well). --pex turns on peer exchange (BEP 11) for the torrent; --keep-seed-links keeps connections
between two peers that have nothing to fetch from each other (libtorrent closes them by default); --upload-mode serves
what the data holds and never downloads.

--dht-node HOST:PORT (repeatable) turns on libtorrent's Mainline DHT, joined through those nodes only (no public
router), with the settings a loopback DHT needs (every node is on 127.0.0.1), and leaves the torrent's DHT on: a
trackerless torrent is then announced and looked up there. Without it the DHT stays off.

--bind ADDR listens on and dials from ADDR only (default 127.0.0.1; `::1` for IPv6). An IPv6 --peer is written in
brackets: `--peer [::1]:6881`.

Prints one event per line on stdout (flushed), which the tests wait on:
  listening PORT           the TCP listen socket is bound
  checked                  the existing data has been checked (a seed is ready to serve)
  metadata                 a magnet link's metadata (the info dictionary) has arrived from a peer
  seeding                  every piece is present (a seed after its check, a leech once done)
  progress 0.53            download progress, when it changes
  upload_bytes N           payload bytes uploaded so far, whenever the figure changes
  peers N                  connected peers, whenever the count changes
  tracker_reply N          a tracker answered with N peers
  dht_listening PORT       the DHT's UDP socket is bound (with --dht-node)
  dht_reply N              a DHT node answered the torrent's get_peers with N peers (with --dht-node; a seed
                           that is the torrent's only peer hears itself once its announce is stored)
  finished                 the download is complete and flushed to disk
  error KIND DETAIL        hash_failed, file_error, tracker_error, listen_failed, torrent_error, timeout
Exits 0 after `finished` with --exit-when-done; otherwise runs until SIGTERM (sends `stopped` to trackers) or SIGKILL.
Diagnostics go to stderr.
"""

import argparse
import signal
import sys
import time

import libtorrent as lt

STATUS_INTERVAL = 0.25  # seconds between status polls; keeps `progress`/`upload_bytes` timely without busy work
DHT_REANNOUNCE = 3.0  # seconds between DHT announces until a node has answered one (see main)
FLUSH_TIMEOUT = 10.0  # bound on waiting for the disk cache flush before reporting `finished`


def say(*words):
    print(*words, flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["seed", "leech"])
    p.add_argument("torrent")
    p.add_argument("save_dir")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--bind", default="127.0.0.1", help="address to listen on and dial from (IPv4 or IPv6)")
    p.add_argument("--peer", action="append", default=[], help="HOST:PORT to dial without a tracker")
    p.add_argument("--exit-when-done", action="store_true")
    p.add_argument("--max-seconds", type=float, default=600.0, help="exit after this long, in case nobody kills us")
    p.add_argument("--pex", action="store_true", help="exchange peers (BEP 11)")
    p.add_argument("--keep-seed-links", action="store_true", help="keep connections with nothing to download")
    p.add_argument("--upload-mode", action="store_true", help="only serve what the data holds")
    p.add_argument("--dht-node", action="append", default=[], help="HOST:PORT of a DHT node to join through")
    return p.parse_args(argv)


def parse_peer(text):
    host, _, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise SystemExit(f"bad --peer {text!r}: an IPv6 address goes in brackets, [ADDR]:PORT")
    if not host or not port.isdigit():
        raise SystemExit(f"bad --peer {text!r}: expected HOST:PORT")
    return (host, int(port))


# Packets per 10 s from one address before libtorrent's DHT blocks it: on loopback every node is 127.0.0.1, so the
# default (about 50) would block the whole test network.
DHT_BLOCK_RATELIMIT = 100000


def dht_settings(dht_nodes):
    """libtorrent's DHT for a network of nodes on 127.0.0.0/8, joined only through `dht_nodes` (see INTEROP.md)."""
    if not dht_nodes:
        return {"enable_dht": False}
    return {
        "enable_dht": True,
        # No public router: the nodes are added with add_dht_node (a bootstrap node is never kept in the table).
        "dht_bootstrap_nodes": "",
        # Several nodes on one IP (and on loopback) are normal here.
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_block_ratelimit": DHT_BLOCK_RATELIMIT,
        "dht_upload_rate_limit": 1 << 20,
    }


def make_session(bind, port, keep_seed_links, dht_nodes):
    # libtorrent writes an IPv6 listen address in brackets; its outgoing interface is the bare address.
    listen = f"[{bind}]:{port}" if ":" in bind else f"{bind}:{port}"
    settings = {
        "listen_interfaces": listen,
        "outgoing_interfaces": bind,
        "allow_multiple_connections_per_ip": True,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "unchoke_slots_limit": -1,
        # A killed test should not hang on a tracker that is already gone.
        "stop_tracker_timeout": 2,
        "close_redundant_connections": not keep_seed_links,
        "alert_mask": (
            lt.alert.category_t.error_notification
            | lt.alert.category_t.status_notification
            | lt.alert.category_t.storage_notification
            | lt.alert.category_t.tracker_notification
            | lt.alert.category_t.connect_notification
            | lt.alert.category_t.dht_notification
            | lt.alert.category_t.dht_operation_notification
        ),
    }
    settings.update(dht_settings(dht_nodes))
    ses = lt.session(settings)
    for node in dht_nodes:
        ses.add_dht_node(node)
    return ses


def add_torrent(ses, torrent, save_dir, pex, upload_mode, dht):
    if torrent.startswith("magnet:"):
        atp = lt.parse_magnet_uri(torrent)
    else:
        atp = lt.add_torrent_params()
        atp.ti = lt.torrent_info(torrent)
    atp.save_path = save_dir
    flags = atp.flags
    flags &= ~lt.torrent_flags.auto_managed
    flags &= ~lt.torrent_flags.paused
    flags |= lt.torrent_flags.disable_lsd
    if dht:
        flags &= ~lt.torrent_flags.disable_dht
    else:
        flags |= lt.torrent_flags.disable_dht
    if not pex:
        flags |= lt.torrent_flags.disable_pex
    if upload_mode:
        flags |= lt.torrent_flags.upload_mode
    atp.flags = flags
    return ses.add_torrent(atp)


class Reporter:
    """Turns alerts and status polls into the event lines, printing each figure only when it changes."""

    def __init__(self):
        self.progress = None
        self.upload = None
        self.peers = None
        self.seeding = False
        self.checked = False
        self.dht_replied = False

    def alert(self, a):
        if isinstance(a, lt.listen_succeeded_alert):
            if a.socket_type == lt.socket_type_t.tcp:
                say("listening", a.port)
            elif a.socket_type == lt.socket_type_t.udp:
                say("dht_listening", a.port)
        elif isinstance(a, lt.listen_failed_alert):
            say("error listen_failed", a.message())
        elif isinstance(a, lt.hash_failed_alert):
            say("error hash_failed piece", a.piece_index)
        elif isinstance(a, lt.file_error_alert):
            say("error file_error", a.message())
        elif isinstance(a, lt.tracker_error_alert):
            say("error tracker_error", a.message())
        elif isinstance(a, lt.torrent_error_alert):
            say("error torrent_error", a.message())
        elif isinstance(a, lt.tracker_reply_alert):
            say("tracker_reply", a.num_peers)
        elif isinstance(a, lt.torrent_checked_alert):
            self.checked = True
            say("checked")
        elif isinstance(a, lt.dht_reply_alert):
            self.dht_replied = True
            say("dht_reply", a.num_peers)
        elif isinstance(a, lt.metadata_received_alert):
            say("metadata")
        elif isinstance(a, (lt.tracker_warning_alert, lt.peer_error_alert, lt.peer_disconnected_alert)):
            print(a.message(), file=sys.stderr, flush=True)

    def status(self, st):
        progress = round(st.progress, 2)
        if progress != self.progress:
            self.progress = progress
            say("progress", f"{progress:.2f}")
        if st.total_payload_upload != self.upload:
            self.upload = st.total_payload_upload
            say("upload_bytes", self.upload)
        if st.num_peers != self.peers:
            self.peers = st.num_peers
            say("peers", self.peers)
        if st.is_seeding and not self.seeding:
            self.seeding = True
            say("seeding")


def flush_to_disk(ses, handle, reporter):
    """Waits until libtorrent has written every block, so `finished` means the files are complete."""
    handle.flush_cache()
    deadline = time.monotonic() + FLUSH_TIMEOUT
    while time.monotonic() < deadline:
        ses.wait_for_alert(100)
        for a in ses.pop_alerts():
            reporter.alert(a)
            if isinstance(a, lt.cache_flushed_alert):
                return
    print("cache flush not confirmed in time", file=sys.stderr, flush=True)


def main(argv):
    args = parse_args(argv)
    peers = [parse_peer(p) for p in args.peer]
    stop = {"now": False}

    def on_term(_signo, _frame):
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    dht_nodes = [parse_peer(n) for n in args.dht_node]
    ses = make_session(args.bind, args.port, args.keep_seed_links, dht_nodes)
    handle = add_torrent(ses, args.torrent, args.save_dir, args.pex, args.upload_mode, bool(dht_nodes))
    reporter = Reporter()
    # A magnet link has no data to check before the metadata comes, and the metadata must come from a peer: dial now.
    dialled = args.torrent.startswith("magnet:")
    if dialled:
        for peer in peers:
            handle.connect_peer(peer)
    finished = False
    next_status = 0.0
    next_dht_announce = time.monotonic() + DHT_REANNOUNCE
    give_up = time.monotonic() + args.max_seconds
    while not stop["now"]:
        if time.monotonic() >= give_up:
            say("error timeout", f"still running after {args.max_seconds} s")
            break
        ses.wait_for_alert(int(STATUS_INTERVAL * 1000))
        for a in ses.pop_alerts():
            reporter.alert(a)
        # Dial only after the check: a peer met while checking may be dropped as useless before we have pieces.
        if reporter.checked and not dialled:
            dialled = True
            for peer in peers:
                handle.connect_peer(peer)
        now = time.monotonic()
        # libtorrent announces to the DHT once at start and then every 15 minutes: a first lookup that ran before
        # its routing table held a node finds nobody. Ask again every few seconds until a node has answered.
        if dht_nodes and not reporter.dht_replied and now >= next_dht_announce and (reporter.checked or dialled):
            next_dht_announce = now + DHT_REANNOUNCE
            handle.force_dht_announce()
        if now >= next_status:
            next_status = now + STATUS_INTERVAL
            reporter.status(handle.status())
        if reporter.seeding and not finished and args.mode == "leech":
            finished = True
            flush_to_disk(ses, handle, reporter)
            say("finished")
            if args.exit_when_done:
                break
    # Deleting the session sends `stopped` to the trackers, bounded by stop_tracker_timeout.
    del handle
    del ses
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
