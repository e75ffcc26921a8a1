#!/usr/bin/env bash
# A trackerless magnet link found through a loopback Mainline DHT (issue 13's bench): toybt's lookup against
# libtorrent's in the same network, in a network of toybt nodes and in one of libtorrent nodes, and what the DHT
# costs a seed that sits idle.
#
# Usage: benches/dht_compare.sh [-h|--help]
# Knobs (environment): NETWORK (toybt, libtorrent or both: the network(s) below; default both), NODES (50 nodes
#   per network), RUNS (3 downloads per client and network), SIZE_MIB (16), IDLE_SECONDS (60),
#   TIMEOUT (60 s per download and per wait), DIR (scratch, default /tmp/toybt-dht-compare), TOYBT (binary; built
#   in release, under CARGO_TARGET_DIR if set, when unset), KEEP_LOGS=1 (keep every process's log under DIR/logs),
#   LT_VERBOSE=1 (libtorrent's DHT log lines on its lookups in its log).
#
# The networks, one after the other (each stopped before the next starts):
#   toybt        NODES `toybt dht` processes on 127.0.0.1, each joining through one of the nodes started before it
#   libtorrent   NODES libtorrent sessions in one Python process (benches/lt_dht_nodes.py), each add_dht_node()-ing
#                one or two nodes started before it; used once every routing table holds at least 4 nodes
# In each, a trackerless torrent of SIZE_MIB random bytes is seeded by `toybt seed` (DHT on, joining through node 0);
# the bench starts once the seed's own lookup is done and announced. Then, RUNS times, round after round:
#   toybt        `toybt leech 'magnet:?xt=urn:btih:HASH' --dht-bootstrap` three nodes, a fresh routing table each
#                time (no saved state); stopped once done and its lookup has ended
#   libtorrent   benches/lt_dht_lookup.py with the same link and the same three nodes (add_dht_node), settings from
#                INTEROP.md for a loopback DHT
# Each run uses three other nodes as its entry points. Measured, in seconds from the moment the script starts the
# leech process (a client's own start-up counts; for libtorrent that includes Python importing libtorrent):
#   peer         the lookup's first answer that held peers: toybt's first "dht: N peer(s) for HASH" log line,
#                libtorrent's first dht_reply_alert
#   dial         the first connection to a peer: toybt's first "peer ... (we fetch the metadata)" line,
#                libtorrent's first peer_connect_alert
#   done         toybt: "download complete"; libtorrent: torrent_finished_alert
#   get_peers    queries the torrent's lookup sent: toybt's "lookup get_peers HASH done: N queries" log line;
#                libtorrent's dht_get_peers_out counter when its first dht_reply_alert comes (which also counts
#                the get_peers it sends to check new nodes, where toybt pings)
#   announce     announce_peer queries at the end of that lookup (toybt: "announced to" counts the acked ones,
#                so the figure is the nodes that took it; libtorrent: dht_announce_peer_out, those sent, read when
#                it is done, as it sends them after dht_reply_alert)
#   find_node    toybt: queries of the bootstrap/refresh lookups that ended before the get_peers one;
#                libtorrent: dht_find_node_out at the same moment
# Idle cost: in each network the seed then runs IDLE_SECONDS more with nothing to do but its DHT node (answering the
# other nodes' maintenance); its CPU time (utime + stime from /proc/PID/stat) and its RSS (VmRSS) before and after.
# One table per network. Every process started here is stopped by PID (TERM, then KILL after 5 s) once its network
# is done, and on exit, also on Ctrl-C.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
DIR=${DIR:-/tmp/toybt-dht-compare}
NODES=${NODES:-50}
RUNS=${RUNS:-3}
SIZE_MIB=${SIZE_MIB:-16}
IDLE_SECONDS=${IDLE_SECONDS:-60}
TIMEOUT=${TIMEOUT:-60}
LT_PY=/usr/bin/python3
LT_LOOKUP="$here/lt_dht_lookup.py"
LT_NODES="$here/lt_dht_nodes.py"
NETWORK=${NETWORK:-both}

die() { echo "dht_compare: $*" >&2; exit 1; }
say() { echo "dht_compare: $*" >&2; }

case ${1:-} in
    "") ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (try --help; the knobs are environment variables)" ;;
esac
case $NETWORK in toybt | libtorrent) NETWORKS=("$NETWORK") ;; both) NETWORKS=(toybt libtorrent) ;;
    *) die "NETWORK must be toybt, libtorrent or both" ;; esac
case $RUNS in [1-9] | [1-9][0-9]) ;; *) die "RUNS must be 1-99" ;; esac
case $NODES in [4-9] | [1-9][0-9] | [1-4][0-9][0-9]) ;; *) die "NODES must be 4-499" ;; esac
case $SIZE_MIB in [1-9] | [1-9][0-9]*) ;; *) die "SIZE_MIB must be a positive number" ;; esac
case $IDLE_SECONDS in [1-9] | [1-9][0-9]*) ;; *) die "IDLE_SECONDS must be a positive number" ;; esac
"$LT_PY" -c 'import libtorrent' 2>/dev/null || die "python3-libtorrent missing"

# --- processes (benches/common.sh) -----------------------------------------------------------------------------------
# shellcheck source=benches/common.sh
source "$here/common.sh"
cleanup() {
    stop_all
    if [ -n "${RUN:-}" ]; then
        if [ "${KEEP_LOGS:-0}" = 1 ]; then
            rm -rf "$DIR/logs" && mkdir -p "$DIR/logs" && cp "$RUN"/*.log "$DIR/logs/" 2>/dev/null
            echo "dht_compare: logs kept in $DIR/logs" >&2
        fi
        rm -rf "$RUN"
    fi
    rmdir "$DIR" 2>/dev/null
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$DIR"
RUN=$(mktemp -d "$DIR/run.XXXXXX")
open_snooze "$RUN"
secs() { # FROM_US TO_US -> seconds with 3 decimals, "-" when TO_US is empty
    if [ -z "$2" ]; then echo -; else awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", (b - a) / 1e6}'; fi
}

# --- the binary, the torrent ------------------------------------------------------------------------------------------
if [ -z "${TOYBT:-}" ]; then
    (cd "$root" && cargo build --release --quiet --bin toybt) || die "cargo build --release failed"
    TOYBT="${CARGO_TARGET_DIR:-$root/target}/release/toybt"
fi
[ -x "$TOYBT" ] || die "$TOYBT is not executable"

DATA="$RUN/payload.bin"
head -c $((SIZE_MIB << 20)) /dev/urandom >"$DATA"
TORRENT="$RUN/payload.torrent"
"$TOYBT" create "$DATA" -l 262144 -d -o "$TORRENT" >"$RUN/create.log" 2>&1 || die "toybt create failed"
MAGNET=$("$TOYBT" info --magnet "$TORRENT") || die "toybt info --magnet failed"
case $MAGNET in *"&tr="* | *"&x.pe="*) die "the magnet link names a tracker or a peer: $MAGNET" ;; esac
HASH=$(printf '%s\n' "$MAGNET" | sed -n 's/.*xt=urn:btih:\([0-9a-fA-F]\{40\}\).*/\1/p' | tr 'A-F' 'a-f')
[ -n "$HASH" ] || die "no info hash in $MAGNET"

# --- the networks ---------------------------------------------------------------------------------------------------
# Each sets ADDRS (its nodes' HOST:PORT, in start order) and NET_PIDS (its processes).
toybt_network() {
    local i args
    ADDRS=()
    NET_PIDS=()
    for ((i = 0; i < NODES; i++)); do
        args=(dht --bind 127.0.0.1 --port 0 --state "$RUN/toybt-node-$i.dat")
        # Each node joins through an earlier one, so the network is not a star around node 0.
        [ "$i" -gt 0 ] && args+=(--bootstrap "${ADDRS[$((RANDOM % i))]}")
        start "toybt-node-$i" "$TOYBT" "${args[@]}"
        NET_PIDS+=("$LAST_PID")
        wait_log "$RUN/toybt-node-$i.log" "dht listening on" "$TIMEOUT" "$LAST_PID" || die "dht node $i did not start"
        ADDRS+=("$(grep -ao 'dht listening on [0-9.]*:[0-9]*' "$RUN/toybt-node-$i.log" | head -1 | sed 's/.* //')")
    done
}
libtorrent_network() {
    local log="$RUN/libtorrent-nodes.log"
    start libtorrent-nodes "$LT_PY" "$LT_NODES" --nodes "$NODES" --timeout "$TIMEOUT"
    NET_PIDS=("$LAST_PID")
    wait_log "$log" "^ready" $((TIMEOUT + 10)) "$LAST_PID" ||
        die "the libtorrent nodes did not get ready: $(tail -c 600 "$log")"
    mapfile -t ADDRS < <(awk '$1 == "node" {print "127.0.0.1:" $2}' "$log")
    [ "${#ADDRS[@]}" -eq "$NODES" ] || die "$NODES libtorrent nodes asked for, ${#ADDRS[@]} listed"
    say "libtorrent nodes $(grep -a '^ready' "$log")"
}

# --- the downloads --------------------------------------------------------------------------------------------------
toybt_run() { # RUN ENTRY...: one toybt leech; appends its row
    local r=$1 t0 log="$RUN/$NET-toybt-$1.log" out="$RUN/$NET-toybt-$1" peer="" dial="" done_s="" gp="-" ann="-" fn=0 q line
    shift
    local boot=()
    for a in "$@"; do boot+=(--dht-bootstrap "$a"); done
    now_us
    t0=$NOW
    # It seeds on after done until its lookup has ended too (the download can be faster than the lookup).
    start "$NET-toybt-$r" env RUST_LOG=debug "$TOYBT" leech "$MAGNET" -o "$out" --bind 127.0.0.1 --port 0 \
        --seed-time "$TIMEOUT" --dht-state "$RUN/$NET-toybt-$r-dht.dat" "${boot[@]}"
    wait_log "$log" "download complete" "$TIMEOUT" "$LAST_PID" || say "toybt run $r: not done within $TIMEOUT s"
    wait_log "$log" "lookup get_peers $HASH done" "$TIMEOUT" "$LAST_PID" || say "toybt run $r: the lookup did not end"
    forget "$LAST_PID"
    log_ms "$log" "dht: [0-9]* peer(s) for $HASH" && [ -n "$MS" ] && peer=$(secs "$t0" "${MS}000")
    log_ms "$log" "(we fetch the metadata)" && [ -n "$MS" ] && dial=$(secs "$t0" "${MS}000")
    log_ms "$log" "download complete" && [ -n "$MS" ] && done_s=$(secs "$t0" "${MS}000")
    line=$(grep -a -m1 "lookup get_peers $HASH done" "$log")
    if [ -n "$line" ]; then
        gp=$(printf '%s\n' "$line" | sed -n 's/.* done: \([0-9]*\) queries.*/\1/p')
        ann=$(printf '%s\n' "$line" | sed -n 's/.*announced to \([0-9]*\).*/\1/p')
        # find_node lookups that ended before it (the log is in order).
        while read -r q; do fn=$((fn + q)); done < <(sed -n "1,/lookup get_peers $HASH done/p" "$log" |
            grep -a 'lookup bootstrap\|lookup refresh' | sed -n 's/.* done: \([0-9]*\) queries.*/\1/p')
    fi
    cmp -s "$DATA" "$out/payload.bin" || { say "toybt run $r: the download differs from the seed's file"; done_s="-"; }
    printf 'toybt\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "${peer:--}" "${dial:--}" "${done_s:--}" "$gp" "$ann" "$fn" \
        >>"$RESULTS"
}

lt_us() { # LOG EVENT -> US: the epoch microseconds lt_dht_lookup.py printed for EVENT ("" if none)
    US=$(awk -v e="$2" '$1 == e {sub(/\./, "", $2); print $2; exit}' "$1")
}
lt_run() { # RUN ENTRY...: one libtorrent leech; appends its row
    local r=$1 t0 log="$RUN/$NET-libtorrent-$1.log" out="$RUN/$NET-libtorrent-$1" peer dial done_s counts gp ann fn
    shift
    local nodes=()
    for a in "$@"; do nodes+=(--dht-node "$a"); done
    mkdir -p "$out"
    now_us
    t0=$NOW
    [ "${LT_VERBOSE:-0}" = 1 ] && nodes+=(--verbose)
    start "$NET-libtorrent-$r" "$LT_PY" "$LT_LOOKUP" "$MAGNET" "$out" --port 0 --max-seconds "$TIMEOUT" "${nodes[@]}"
    wait_exit "$LAST_PID" $((TIMEOUT + 15)) || say "libtorrent run $r: not done within $TIMEOUT s"
    forget "$LAST_PID"
    lt_us "$log" dht_reply
    peer=$(secs "$t0" "$US")
    lt_us "$log" first_peer
    dial=$(secs "$t0" "$US")
    lt_us "$log" finished
    done_s=$(secs "$t0" "$US")
    counts=$(awk '$1 == "lookup_packets" {print $2, $4; exit}' "$log")
    read -r gp fn <<<"${counts:-- -}"
    ann=$(awk '$1 == "final_packets" {print $3; exit}' "$log")
    ann=${ann:--}
    cmp -s "$DATA" "$out/payload.bin" || { say "libtorrent run $r: the download differs from the seed's file"; done_s="-"; }
    printf 'libtorrent\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$peer" "$dial" "$done_s" "$gp" "$ann" "$fn" >>"$RESULTS"
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime, in clock ticks (fields after the name)
rss_kib() { awk '$1 == "VmRSS:" {print $2}' "/proc/$1/status"; }
TICKS_PER_S=$(getconf CLK_TCK)
median() { # COLUMN CLIENT: the median of the numeric values of COLUMN in RESULTS for CLIENT ("-" if none)
    awk -F'\t' -v c="$2" -v k="$1" '$1 == c && $k != "-" {print $k}' "$RESULTS" | sort -g |
        awk '{v[NR] = $1} END {if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

# --- one network: its nodes, the seed, the downloads, the idle seed, the table --------------------------------------
bench_network() { # NET: the network, the seed, the downloads, the idle seed, the table
    NET=$1
    local p r c l d g a f entry cpu0 cpu1 rss0 rss1 idle0 idle_s
    "${NET}_network"
    start "$NET-seed" env RUST_LOG=info "$TOYBT" seed "$TORRENT" "$DATA" --bind 127.0.0.1 --port 0 \
        --dht-bootstrap "${ADDRS[0]}" --dht-state "$RUN/$NET-seed-dht.dat"
    SEED_PID=$LAST_PID
    wait_log "$RUN/$NET-seed.log" "dht lookup for $HASH done" "$TIMEOUT" "$SEED_PID" ||
        die "the seed's lookup did not end: $(tail -c 600 "$RUN/$NET-seed.log")"
    grep -aq "dht lookup for $HASH done: .*announced to 0 node" "$RUN/$NET-seed.log" &&
        die "the seed was announced to no node"

    echo "dht_compare: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); $NODES $NET DHT nodes," \
        "$SIZE_MIB MiB, $RUNS run(s); link $MAGNET"
    RESULTS="$RUN/$NET-results.tsv" # client run peer dial done get_peers announce find_node
    : >"$RESULTS"
    for ((r = 1; r <= RUNS; r++)); do
        # Three entry points per run, different ones each time, the same for both clients.
        entry=("${ADDRS[$(((3 * r) % NODES))]}" "${ADDRS[$(((3 * r + 1) % NODES))]}" "${ADDRS[$(((3 * r + 2) % NODES))]}")
        toybt_run "$r" "${entry[@]}"
        lt_run "$r" "${entry[@]}"
    done

    # The idle cost of the seed.
    cpu0=$(cpu_ticks "$SEED_PID")
    rss0=$(rss_kib "$SEED_PID")
    now_us
    idle0=$NOW
    snooze "$IDLE_SECONDS"
    cpu1=$(cpu_ticks "$SEED_PID")
    rss1=$(rss_kib "$SEED_PID")
    now_us
    idle_s=$(secs "$idle0" "$NOW")

    # The table.
    echo
    echo "$NET network ($NODES nodes):"
    ROW='%-11s %6s %8s %8s %8s %10s %9s %10s\n'
    # shellcheck disable=SC2059 # the format is ROW, one place for the table's columns
    printf "$ROW" client run "peer s" "dial s" "done s" get_peers announce find_node
    sort -k1,1 -k2,2n "$RESULTS" | while IFS=$'\t' read -r c r p l d g a f; do
        # shellcheck disable=SC2059
        printf "$ROW" "$c" "$r" "$p" "$l" "$d" "$g" "$a" "$f"
    done
    for c in toybt libtorrent; do
        # shellcheck disable=SC2059
        printf "$ROW" "$c" median "$(median 3 "$c")" "$(median 4 "$c")" "$(median 5 "$c")" "$(median 6 "$c")" \
            "$(median 7 "$c")" "$(median 8 "$c")"
    done
    echo
    awk -v c0="$cpu0" -v c1="$cpu1" -v hz="$TICKS_PER_S" -v s="$idle_s" -v r0="$rss0" -v r1="$rss1" -v n="$NET" 'BEGIN {
        printf "idle seed (toybt, DHT on, %s network) over %.1f s:\n    CPU %.2f s (%.3f %%), RSS %d KiB -> %d KiB (%+d KiB)\n",
            n, s, (c1 - c0) / hz, 100 * (c1 - c0) / hz / s, r0, r1, r1 - r0 }'

    echo
    forget "$SEED_PID"
    for p in "${NET_PIDS[@]}"; do forget "$p"; done
}

for net in "${NETWORKS[@]}"; do bench_network "$net"; done
