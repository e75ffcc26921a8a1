#!/usr/bin/python3
"""Joins two BitTorrent clients that both wait to be dialled, so they can trade on 127.0.0.1.

Usage: splice_peers.py INFO_HASH_HEX SEED_PORT LEECH_PORT [--timeout S]

Transmission drops the 127.x peers a tracker hands it and never dials them, so two Transmissions on loopback never
meet. Each does accept incoming connections, though, and an accepting client waits for the dialler's handshake. So
this dials both: it greets the seed with a handshake of its own (same reserved bits as the seed's, learnt with a
first probe if the guess was wrong), passes the seed's handshake on to the leecher as if the seed had dialled it,
drops the leecher's reply (the seed already has one), and from then on moves bytes both ways with splice(2) through a
pipe, so the payload is not copied through this process.

Prints `joined` once both handshakes are done, `closed DIRECTION BYTES` when a direction ends; exits when both have.
"""

import os
import socket
import sys
import threading
import time

PROTOCOL = b"\x13BitTorrent protocol"
# Transmission 3.00 with DHT off: the extension protocol (BEP 10) and the fast extension (BEP 6).
GUESS_RESERVED = bytes([0, 0, 0, 0, 0, 0x10, 0, 0x04])
CHUNK = 1 << 20


def dial(port, deadline):
    """Connects to 127.0.0.1:port, retrying while the client is still starting."""
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            raise ConnectionError(f"closed after {len(buf)} of {n} handshake bytes")
        buf += part
    return buf


def greet(port, info_hash, reserved, peer_id, deadline):
    sock = dial(port, deadline)
    sock.sendall(PROTOCOL + reserved + info_hash + peer_id)
    reply = read_exact(sock, 68)
    if reply[:20] != PROTOCOL or reply[28:48] != info_hash:
        raise ConnectionError(f"port {port} answered with something other than our torrent's handshake")
    return sock, reply


def pump(src, dst, name):
    """Moves bytes src -> dst through a pipe until src ends, then half-closes dst."""
    r, w = os.pipe()
    total = 0
    try:
        while True:
            n = os.splice(src.fileno(), w, CHUNK)
            if n == 0:
                break
            total += n
            while n:
                n -= os.splice(r, dst.fileno(), n)
    except OSError:
        pass
    finally:
        os.close(r)
        os.close(w)
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        print("closed", name, total, flush=True)


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    info_hash = bytes.fromhex(argv[0])
    seed_port, leech_port = int(argv[1]), int(argv[2])
    timeout = float(argv[4]) if len(argv) > 4 and argv[3] == "--timeout" else 30.0
    deadline = time.monotonic() + timeout
    my_id = b"-SP0001-" + os.urandom(6).hex().encode()
    seed, seed_hs = greet(seed_port, info_hash, GUESS_RESERVED, my_id, deadline)
    if seed_hs[20:28] != GUESS_RESERVED:
        # Claim exactly the seed's extensions, or it would send the leecher messages the leecher did not expect.
        seed.close()
        seed, seed_hs = greet(seed_port, info_hash, seed_hs[20:28], b"-SP0001-" + os.urandom(6).hex().encode(), deadline)
    leech = dial(leech_port, deadline)
    leech.sendall(seed_hs)
    read_exact(leech, 68)
    for s in (seed, leech):
        s.settimeout(None)
    print("joined", flush=True)
    threads = [
        threading.Thread(target=pump, args=(seed, leech, "seed->leech")),
        threading.Thread(target=pump, args=(leech, seed, "leech->seed")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main(sys.argv[1:])
