#!/usr/bin/env bash
# Idle cost of many seeding torrents in one `toybt daemon` (issue 14: idle CPU ≈ 0, RSS ≤ 64 MiB): N tiny private
# torrents (one 4 KiB file each, announcing to a `toybt tracker` on loopback) are dropped in the watch folder; once
# every one is added, the daemon's CPU ticks (utime + stime, /proc/PID/stat fields 14 and 15) are counted over
# SECONDS_IDLE s after a restart from the state folder, with its thread count and RSS (/proc/PID/status).
#
# Usage: benches/idle_seeds.sh [N]     (default 1000; knobs: SECONDS_IDLE=30 TOYBT=path WORK_PARENT=/tmp WAKEUPS=0)
# Needs a release (or ci) build of toybt (built here if TOYBT is unset). Loopback only.
set -euo pipefail

N=${1:-1000}
IDLE=${SECONDS_IDLE:-30}
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
if [ -z "${TOYBT:-}" ]; then
    (cd "$root" && cargo build --release --quiet)
    TOYBT="$root/target/release/toybt"
fi

work=$(mktemp -d "${WORK_PARENT:-/tmp}/toybt-idle.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/data" "$work/watch" "$work/state" "$work/torrents"

"$TOYBT" tracker --port 0 --no-udp --open --interval 1800 2>"$work/tracker.log" &
pids+=($!)
for _ in $(seq 100); do
    port=$(grep -om1 'listening on [^ ]*' "$work/tracker.log" | grep -o '[0-9]*$' || true)
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "$port" ] || { echo "idle_seeds: the tracker did not start" >&2; cat "$work/tracker.log" >&2; exit 1; }

for i in $(seq "$N"); do
    head -c 4096 /dev/urandom >"$work/data/f$i.bin"
    "$TOYBT" create "$work/data/f$i.bin" -t "http://127.0.0.1:$port/announce" -p -d -o "$work/torrents/f$i.torrent" \
        >/dev/null
done

"$TOYBT" daemon --port 0 --rpc-port 0 --download-dir "$work/data" --state-dir "$work/state" --watch "$work/watch" \
    2>"$work/daemon.log" &
daemon=$!
pids+=("$daemon")
start=$(date +%s.%N)
mv "$work"/torrents/*.torrent "$work/watch/"
for _ in $(seq 600); do
    [ "$(find "$work/watch" -name '*.added' | wc -l)" -ge "$N" ] && break
    sleep 0.1
done
added=$(date +%s.%N)
echo "added $(find "$work/watch" -name '*.added' | wc -l) torrents in $(echo "$added - $start" | bc) s"
# Restarted without the watch folder (its scan is a wake-up of its own): every torrent comes back from the state
# folder, and only the torrents are left to wake the loop.
kill -TERM "$daemon"
wait "$daemon" || true
"$TOYBT" daemon --port 0 --rpc-port 0 --download-dir "$work/data" --state-dir "$work/state" 2>"$work/daemon.log" &
daemon=$!
pids+=("$daemon")
start=$(date +%s.%N)
for _ in $(seq 600); do
    grep -q 'rpc listening' "$work/daemon.log" && break
    sleep 0.05
done
echo "restart: rpc listening after $(echo "$(date +%s.%N) - $start" | bc) s"
# Let the first announces and checks settle before counting.
sleep 5
ticks() { awk '{print $14 + $15}' "/proc/$daemon/stat"; }
before=$(ticks)
sleep "$IDLE"
after=$(ticks)
hz=$(getconf CLK_TCK)
echo "idle CPU over ${IDLE}s: $((after - before)) ticks (${hz}/s) = $(echo "scale=2; 100 * ($after - $before) / $hz / $IDLE" | bc) %"
grep -E '^(Threads|VmRSS|VmHWM)' "/proc/$daemon/status"
# The loop's wake-ups: epoll_wait calls of the daemon's main thread over 10 s (WAKEUPS=0 to skip; needs strace).
if [ "${WAKEUPS:-1}" = 1 ] && command -v strace >/dev/null; then
    timeout -s INT 10 strace -e trace=epoll_wait -o "$work/strace.txt" -p "$daemon" 2>/dev/null || true
    echo "loop wake-ups over 10 s: $(grep -c 'epoll_wait(' "$work/strace.txt" || true)"
fi
