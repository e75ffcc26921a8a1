#!/usr/bin/python3
"""Joins two BitTorrent clients that both wait to be dialled, so they can trade on 127.0.0.1.

Usage: splice_peers.py INFO_HASH_HEX SEED_PORT LEECH_PORT [--timeout S] [--conns N]

Transmission drops the 127.x peers a tracker hands it and never dials them, so two Transmissions on loopback never
meet. Each does accept incoming connections, though, and an accepting client waits for the dialler's handshake. So
this dials both: it greets the seed with a handshake of its own (same reserved bits as the seed's, learnt with a
first probe if the guess was wrong), passes the seed's handshake on to the leecher as if the seed had dialled it,
drops the leecher's reply (the seed already has one), and from then on moves bytes both ways with splice(2) through a
pipe, so the payload is not copied through this process.

--conns N joins them over N connections instead of one. Transmission keeps one peer per address, so connection k
dials both clients from its own loopback source address, 127.0.0.(k+1): each client sees N distinct peers.

Prints `joined N` once every handshake is done, `closed DIRECTION BYTES` when a direction ends, and `cpu SECONDS`
(user + system, all threads) when all have, then exits.
"""

import fcntl
import os
import resource
import socket
import sys
import threading
import time

PROTOCOL = b"\x13BitTorrent protocol"
# Transmission 3.00 with DHT off: the extension protocol (BEP 10) and the fast extension (BEP 6).
GUESS_RESERVED = bytes([0, 0, 0, 0, 0, 0x10, 0, 0x04])
# A pipe as big as an unprivileged process may make (fs.pipe-max-size, 1 MiB by default): fewer, larger splices.
PIPE_SIZE = 1 << 20


def dial(port, source, deadline):
    """Connects to 127.0.0.1:port from the address source, retrying while the client is still starting."""
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
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


def peer_id():
    return b"-SP0001-" + os.urandom(6).hex().encode()


def greet(port, source, info_hash, reserved, deadline):
    sock = dial(port, source, deadline)
    sock.sendall(PROTOCOL + reserved + info_hash + peer_id())
    reply = read_exact(sock, 68)
    if reply[:20] != PROTOCOL or reply[28:48] != info_hash:
        raise ConnectionError(f"port {port} answered with something other than our torrent's handshake")
    return sock, reply


def pump(src, dst, name):
    """Moves bytes src -> dst through a pipe until src ends, then half-closes dst."""
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass  # the default 64 KiB pipe still works, with more calls
    total = 0
    try:
        while True:
            n = os.splice(src.fileno(), w, PIPE_SIZE, flags=os.SPLICE_F_MOVE)
            if n == 0:
                break
            total += n
            while n:
                n -= os.splice(r, dst.fileno(), n, flags=os.SPLICE_F_MOVE)
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


def join(info_hash, seed_port, leech_port, source, reserved, deadline):
    """One spliced connection from source; returns (seed socket, leech socket, the seed's reserved bits)."""
    seed, seed_hs = greet(seed_port, source, info_hash, reserved, deadline)
    if seed_hs[20:28] != reserved:
        # Claim exactly the seed's extensions, or it would send the leecher messages the leecher did not expect.
        seed.close()
        reserved = seed_hs[20:28]
        seed, seed_hs = greet(seed_port, source, info_hash, reserved, deadline)
    leech = dial(leech_port, source, deadline)
    leech.sendall(seed_hs)
    read_exact(leech, 68)
    for s in (seed, leech):
        s.settimeout(None)
    return seed, leech, reserved


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    info_hash = bytes.fromhex(argv[0])
    seed_port, leech_port = int(argv[1]), int(argv[2])
    opts = dict(zip(argv[3::2], argv[4::2]))
    timeout = float(opts.get("--timeout", 30.0))
    conns = int(opts.get("--conns", 1))
    if not 1 <= conns <= 250:
        sys.exit("--conns must be 1-250")
    deadline = time.monotonic() + timeout
    reserved = GUESS_RESERVED
    threads = []
    for k in range(conns):
        seed, leech, reserved = join(info_hash, seed_port, leech_port, f"127.0.0.{k + 1}", reserved, deadline)
        threads += [
            threading.Thread(target=pump, args=(seed, leech, f"seed->leech#{k}")),
            threading.Thread(target=pump, args=(leech, seed, f"leech->seed#{k}")),
        ]
        for t in threads[-2:]:
            t.start()
    print("joined", conns, flush=True)
    for t in threads:
        t.join()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print("cpu", f"{usage.ru_utime + usage.ru_stime:.2f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
