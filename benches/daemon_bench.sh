#!/usr/bin/env bash
# `toybt daemon` with many torrents (issue 14): SMALL small torrents (20 KB each) and LARGE large ones (64 MiB each),
# all complete in the download folder, seeded by one daemon. Measures:
#   start-up   restart of the daemon with its records: from launch to `rpc listening` with every torrent restored
#              (no hashing);
#   idle CPU   utime+stime of the process (all threads) over IDLE_SECS with no peer and no RPC client;
#   memory     VmRSS and VmHWM after the idle period, and the number of threads;
#   torrent-get  the RPC call transmission-remote -l makes, for every torrent, timed by curl (after the 409
#              session-id exchange), GETS times.
# Goals from the issue: start <= 1 s, idle CPU ~ 0, RSS <= 64 MiB, torrent-get <= 50 ms.
#
# Usage: benches/daemon_bench.sh     (knobs: SMALL=1000 LARGE=10 LARGE_MIB=64 IDLE_SECS=60 GETS=10 TOYBT=path
#                                     WORK_PARENT=/tmp)
# Needs: curl, jq, ~LARGE*LARGE_MIB MiB free, a release build of toybt (built here if TOYBT is unset). Loopback only,
# no DHT, no trackers: the torrents have none, so the idle figure is the daemon's own timers.
set -euo pipefail

SMALL=${SMALL:-1000}
LARGE=${LARGE:-10}
LARGE_MIB=${LARGE_MIB:-64}
IDLE_SECS=${IDLE_SECS:-60}
GETS=${GETS:-10}
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")

die() { echo "daemon_bench: $*" >&2; exit 1; }
for tool in curl jq; do command -v "$tool" >/dev/null || die "$tool is not installed"; done
if [ -z "${TOYBT:-}" ]; then
    (cd "$root" && cargo build --release --quiet)
    TOYBT="$root/target/release/toybt"
fi

work=$(mktemp -d "${WORK_PARENT:-/tmp}/toybt-daemon-bench.XXXXXX")
daemon_pid=""
cleanup() {
    if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

dl="$work/dl" watch="$work/watch" state="$work/state" made="$work/torrents"
mkdir -p "$dl" "$watch" "$state" "$made"
total=$((SMALL + LARGE))

echo "== making $SMALL torrents of 20 KB and $LARGE of $LARGE_MIB MiB in $work"
for i in $(seq 1 "$SMALL"); do
    head -c 20000 /dev/urandom >"$dl/small-$i.bin"
    "$TOYBT" create "$dl/small-$i.bin" -o "$made/small-$i.torrent" -l 16K --no-date >/dev/null 2>&1 ||
        die "toybt create failed on small-$i.bin"
done
for i in $(seq 1 "$LARGE"); do
    head -c $((LARGE_MIB << 20)) /dev/urandom >"$dl/large-$i.bin"
    "$TOYBT" create "$dl/large-$i.bin" -o "$made/large-$i.torrent" --no-date >/dev/null 2>&1 ||
        die "toybt create failed on large-$i.bin"
done

# Starts the daemon (log in $1), sets daemon_pid and rpc_port once it prints where the RPC listens.
start_daemon() {
    local log=$1
    "$TOYBT" daemon --bind 127.0.0.1 --port 0 --rpc-port 0 --no-dht --state-dir "$state" --download-dir "$dl" \
        --watch "$watch" 2>"$log" &
    daemon_pid=$!
    local tries=0
    until grep -q "rpc listening on" "$log"; do
        kill -0 "$daemon_pid" 2>/dev/null || die "the daemon exited: $(cat "$log")"
        tries=$((tries + 1))
        [ "$tries" -lt 6000 ] || die "no 'rpc listening' line within 60 s"
        sleep 0.01
    done
    rpc_port=$(grep -m1 "rpc listening on" "$log" | sed -E 's/.*rpc listening on [^ ]*:([0-9]+).*/\1/')
}

stop_daemon() {
    kill -TERM "$daemon_pid"
    wait "$daemon_pid" || true
    daemon_pid=""
}

# The session id the RPC hands out with its 409.
session_id() {
    curl -s -o /dev/null -D - -X POST "http://127.0.0.1:$rpc_port/transmission/rpc" |
        tr -d '\r' | sed -n 's/^X-Transmission-Session-Id: //Ip'
}

rpc() {
    curl -s -X POST -H "X-Transmission-Session-Id: $sid" -d "$1" "http://127.0.0.1:$rpc_port/transmission/rpc"
}

done_count() {
    rpc '{"method":"torrent-get","arguments":{"fields":["id","percentDone"]}}' |
        jq '[.arguments.torrents[] | select(.percentDone == 1)] | length'
}

echo "== first start: every torrent added through the watch folder and checked once"
mv "$made"/*.torrent "$watch"/
start_daemon "$work/first.log"
sid=$(session_id)
start=$(date +%s)
until [ "$(done_count)" -eq "$total" ]; do
    [ $(($(date +%s) - start)) -lt 900 ] || die "not every torrent was complete within 900 s"
    sleep 1
done
echo "all $total torrents added and complete after $(($(date +%s) - start)) s"
stop_daemon

echo "== restart with $total records"
t0=$(date +%s%N)
start_daemon "$work/second.log"
t1=$(date +%s%N)
sid=$(session_id)
restored=$(done_count)
[ "$restored" -eq "$total" ] || die "only $restored of $total torrents came back complete"
rehashed=$(grep -c "re-hashed [1-9]" "$work/second.log" || true)
start_ms=$(((t1 - t0) / 1000000))
echo "start-up: ${start_ms} ms to 'rpc listening' with $restored/$total torrents restored complete" \
    "($rehashed re-hashed any piece; $(grep -m1 -o '[0-9]* torrent(s) restored' "$work/second.log"))"

echo "== idle for $IDLE_SECS s"
hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$daemon_pid/stat"; }
switches() { awk '/^voluntary_ctxt_switches/ {print $2}' "/proc/$daemon_pid/status"; }
c0=$(cpu_ticks) s0=$(switches)
sleep "$IDLE_SECS"
c1=$(cpu_ticks) s1=$(switches)
idle_cpu=$(awk -v t=$((c1 - c0)) -v hz="$hz" -v s="$IDLE_SECS" 'BEGIN { printf "%.2f", 100 * t / hz / s }')
wakeups=$(awk -v n=$((s1 - s0)) -v s="$IDLE_SECS" 'BEGIN { printf "%.1f", n / s }')
echo "idle CPU: ${idle_cpu}% of one core ($((c1 - c0)) ticks of 1/$hz s in $IDLE_SECS s);" \
    "main thread wakes ${wakeups}/s (voluntary context switches)"
rss=$(awk '/^VmRSS/ {print $2}' "/proc/$daemon_pid/status")
hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$daemon_pid/status")
threads=$(awk '/^Threads/ {print $2}' "/proc/$daemon_pid/status")
echo "memory: VmRSS $((rss / 1024)) MiB, VmHWM $((hwm / 1024)) MiB, $threads threads"

echo "== torrent-get of all $total torrents (the fields transmission-remote -l asks for), $GETS times"
body='{"method":"torrent-get","arguments":{"fields":["error","errorString","eta","id","isFinished",
"leftUntilDone","name","peersGettingFromUs","peersSendingToUs","rateDownload","rateUpload","sizeWhenDone",
"status","uploadRatio"]}}'
got=$(rpc "$body" | jq '.arguments.torrents | length')
[ "$got" -eq "$total" ] || die "torrent-get listed $got torrents, not $total"
times=()
for _ in $(seq 1 "$GETS"); do
    times+=("$(curl -s -o /dev/null -w '%{time_total}' -X POST -H "X-Transmission-Session-Id: $sid" -d "$body" \
        "http://127.0.0.1:$rpc_port/transmission/rpc")")
done
bytes=$(rpc "$body" | wc -c)
printf '%s\n' "${times[@]}" | sort -n | awk -v b="$bytes" '
    { t[NR] = $1 * 1000 }
    END { printf "torrent-get: min %.1f ms, median %.1f ms, max %.1f ms (%d bytes)\n", t[1], t[int((NR + 1) / 2)], t[NR], b }'

echo "== summary (goals: start <= 1000 ms, idle CPU ~ 0, RSS <= 64 MiB, torrent-get <= 50 ms)"
echo "torrents=$total start_ms=$start_ms idle_cpu_pct=$idle_cpu rss_mib=$((rss / 1024)) hwm_mib=$((hwm / 1024))" \
    "threads=$threads"
stop_daemon
