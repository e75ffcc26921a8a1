#!/usr/bin/python3
"""Download one magnet link with python3-libtorrent on 127.0.0.1, printing when each stage is reached.

Usage: lt_magnet.py MAGNET_URI SAVE_DIR --port PORT [--peer HOST:PORT]... [--max-seconds S]

For benches/magnet_compare.sh. The link's x.pe peers are dialled (libtorrent's parse_magnet_uri keeps them), and so is
every --peer (connect_peer as soon as the torrent is added; libtorrent drops a duplicate endpoint). Settings as in
/work/shared/INTEROP.md: plain TCP on 127.0.0.1, no DHT, LSD, UPnP, NAT-PMP, uTP or PEX.

Prints one line per event on stdout (flushed); T is the wall clock (time.time(), seconds since the epoch) when the
alert was popped, so the caller can measure from when it started the process (Python's start-up and the import of
libtorrent included):
  started T                  the session exists and the magnet has been added
  metadata T BYTES           metadata_received_alert (BYTES: the size of the info dictionary)
  first_piece T INDEX        the first piece_finished_alert (the piece passed its hash check)
  finished T                 torrent_finished_alert (every piece verified; libtorrent may still be writing)
  error KIND DETAIL          hash_failed, file_error, torrent_error, metadata_failed, listen_failed, timeout
Exits 0 after `finished`, 1 on a timeout (--max-seconds, default 600).
"""

import argparse
import sys
import time

import libtorrent as lt


def say(*words):
    print(*words, flush=True)


def parse_peer(text):
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"bad --peer {text!r}: expected HOST:PORT")
    return (host, int(port))


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("magnet")
    p.add_argument("save_dir")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--peer", action="append", default=[], help="HOST:PORT to dial besides the link's x.pe peers")
    p.add_argument("--max-seconds", type=float, default=600.0)
    args = p.parse_args(argv)
    peers = [parse_peer(x) for x in args.peer]

    ses = lt.session({
        "listen_interfaces": f"127.0.0.1:{args.port}",
        "outgoing_interfaces": "127.0.0.1",
        "allow_multiple_connections_per_ip": True,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "unchoke_slots_limit": -1,
        "stop_tracker_timeout": 1,
        "alert_mask": (
            lt.alert.category_t.error_notification
            | lt.alert.category_t.status_notification
            | lt.alert.category_t.storage_notification
            | lt.alert.category_t.piece_progress_notification
        ),
    })
    atp = lt.parse_magnet_uri(args.magnet)
    atp.save_path = args.save_dir
    flags = atp.flags
    flags &= ~lt.torrent_flags.auto_managed
    flags &= ~lt.torrent_flags.paused
    flags |= lt.torrent_flags.disable_pex | lt.torrent_flags.disable_dht | lt.torrent_flags.disable_lsd
    atp.flags = flags
    handle = ses.add_torrent(atp)
    for peer in peers:
        handle.connect_peer(peer)
    say("started", f"{time.time():.6f}")

    first_piece = False
    give_up = time.monotonic() + args.max_seconds
    while time.monotonic() < give_up:
        ses.wait_for_alert(100)
        for a in ses.pop_alerts():
            t = f"{time.time():.6f}"
            if isinstance(a, lt.metadata_received_alert):
                ti = handle.torrent_file()
                say("metadata", t, len(ti.info_section()) if ti else 0)
            elif isinstance(a, lt.piece_finished_alert) and not first_piece:
                first_piece = True
                say("first_piece", t, a.piece_index)
            elif isinstance(a, lt.torrent_finished_alert):
                say("finished", t)
                return 0
            elif isinstance(a, lt.hash_failed_alert):
                say("error hash_failed piece", a.piece_index)
            elif isinstance(a, lt.metadata_failed_alert):
                say("error metadata_failed", a.message())
            elif isinstance(a, (lt.file_error_alert, lt.torrent_error_alert, lt.listen_failed_alert)):
                say("error", type(a).__name__, a.message())
    say("error timeout", f"not finished after {args.max_seconds} s")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
