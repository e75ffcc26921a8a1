#!/usr/bin/env bash
# Magnet link to done, on 127.0.0.1: toybt against libtorrent, and toybt's magnet download against the same download
# from the .torrent file (issue 11: "a magnet download's total time within 5 % of the same download from the file").
#
# Usage: benches/magnet_compare.sh [-h|--help]
# Knobs (environment): RUNS (5), SIZE_MIB (256), DIR (scratch, default /tmp/toybt-magnet-compare), TIMEOUT (120 s
#   per download and per wait), TOYBT (binary; built in release, under CARGO_TARGET_DIR if set, when unset),
#   CLIENTS (default "toybt libtorrent toybt-file"), TRACKER (an announce URL put in the torrent and so in the
#   magnet link, e.g. a dead http://127.0.0.1:1/announce; default none: a trackerless torrent), TOYBT_LOG (RUST_LOG of
#   the toybt leeches, default info; debug shows dials and announces), KEEP_LOGS=1 (keep every client's log under
#   DIR/logs), KEEP_DATA=1 (keep the generated file under DIR/data for the next invocation).
#
# One toybt seed (`toybt seed --bind 127.0.0.1 --port 0`) of a SIZE_MIB file of random bytes in 256 KiB pieces
# serves every download. Each run downloads it once with every client in CLIENTS, round after round so that a drift
# of the machine's load spreads over every client alike; run r starts with the r-th client of the list (rotated: A B C,
# B C A, C A B, ...) so that no client always comes right after the same other one. Each download goes into an empty
# folder, after a `sync` so that none shares the disk with the previous one's writeback:
#   toybt        `toybt leech 'MAGNET&x.pe=127.0.0.1:SEEDPORT' --seed-time 0` (MAGNET from `toybt info --magnet`)
#   libtorrent   benches/lt_magnet.py: the same magnet link (libtorrent dials its x.pe peer), settings from
#                INTEROP.md (plain TCP on loopback, no DHT, LSD, UPnP, NAT-PMP, PEX)
#   toybt-file   `toybt leech FILE.torrent --peer 127.0.0.1:SEEDPORT --seed-time 0`: no metadata to fetch
# What is measured, in seconds from the moment the script starts the leech process (so a client's own start-up
# counts; for libtorrent that includes Python importing libtorrent, ~0.1 s):
#   metadata     toybt: its log line "metadata complete"; libtorrent: metadata_received_alert
#   1st piece    toybt: "first piece verified (N)"; libtorrent: the first piece_finished_alert (hash checked)
#   done         toybt: "download complete" (logged when the last piece is verified, before the final fsync);
#                libtorrent: torrent_finished_alert (every piece verified; its writes may still be in its cache)
#   exit         the process has exited (toybt with --seed-time 0 stops on its next 1 s tick after done;
#                lt_magnet.py exits at torrent_finished_alert, tearing its session down)
# toybt's times are read from its log's millisecond timestamps, libtorrent's from the wall-clock times lt_magnet.py
# prints when it pops each alert (it waits on alerts, so no polling delay). The table shows the median and the range
# over RUNS; the last lines give toybt's magnet/file ratio of the medians of done (and of exit), and split the
# difference: what the magnet link costs before the first piece (metadata, keeping it, dialling the seed again) and
# the data phase (1st piece -> done, the same code for both, so a gap there is the machine's noise: raise RUNS).
# Every process started here is stopped by PID (TERM, then KILL after 5 s) on exit, also on Ctrl-C.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
DIR=${DIR:-/tmp/toybt-magnet-compare}
SIZE_MIB=${SIZE_MIB:-256}
RUNS=${RUNS:-5}
TIMEOUT=${TIMEOUT:-120}
CLIENTS=${CLIENTS:-toybt libtorrent toybt-file}
TRACKER=${TRACKER:-}
TOYBT_LOG=${TOYBT_LOG:-info}
LT_PY=/usr/bin/python3
LT_MAGNET="$here/lt_magnet.py"

die() { echo "magnet_compare: $*" >&2; exit 1; }
say() { echo "magnet_compare: $*" >&2; }

case ${1:-} in
    "") ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (try --help; the knobs are environment variables)" ;;
esac
case $RUNS in [1-9] | [1-9][0-9]) ;; *) die "RUNS must be 1-99" ;; esac
case $SIZE_MIB in [1-9] | [1-9][0-9]*) ;; *) die "SIZE_MIB must be a positive number" ;; esac
for c in $CLIENTS; do
    case $c in toybt | libtorrent | toybt-file) ;; *) die "unknown client $c in CLIENTS (toybt, libtorrent, toybt-file)" ;; esac
done

# --- processes (benches/common.sh) -----------------------------------------------------------------------------------
# shellcheck source=benches/common.sh
source "$here/common.sh"
cleanup() {
    stop_all
    if [ -n "${RUN:-}" ]; then
        if [ "${KEEP_LOGS:-0}" = 1 ]; then
            rm -rf "$DIR/logs" && mkdir -p "$DIR/logs" && cp "$RUN"/*.log "$DIR/logs/" 2>/dev/null
            echo "magnet_compare: logs kept in $DIR/logs" >&2
        fi
        rm -rf "$RUN"
    fi
    [ "${KEEP_DATA:-0}" = 1 ] || rm -rf "$DIR/data"
    rmdir "$DIR" 2>/dev/null
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$DIR"
RUN=$(mktemp -d "$DIR/run.XXXXXX")
open_snooze "$RUN"

# --- the binary, the data, the seed -----------------------------------------------------------------------------------
if [ -z "${TOYBT:-}" ]; then
    (cd "$root" && cargo build --release --quiet --bin toybt) || die "cargo build --release failed"
    TOYBT="${CARGO_TARGET_DIR:-$root/target}/release/toybt"
fi
[ -x "$TOYBT" ] || die "$TOYBT is not executable"
case " $CLIENTS " in *" libtorrent "*) "$LT_PY" -c 'import libtorrent' 2>/dev/null || die "python3-libtorrent missing" ;; esac

DATA="$DIR/data/$SIZE_MIB"
if [ ! -s "$DATA/payload.bin" ] || [ "$(stat -c %s "$DATA/payload.bin")" != $((SIZE_MIB << 20)) ]; then
    avail=$(df -Pk "$DIR" | awk 'NR == 2 {print int($4 / 1024)}')
    [ "$avail" -gt $((2 * SIZE_MIB + 512)) ] || die "need $((2 * SIZE_MIB + 512)) MiB free under $DIR, have $avail"
    say "writing $SIZE_MIB MiB of random data to $DATA"
    mkdir -p "$DATA"
    rm -f "$DATA/payload.bin.toybt"
    head -c $((SIZE_MIB << 20)) /dev/urandom >"$DATA/payload.bin.tmp" && mv "$DATA/payload.bin.tmp" "$DATA/payload.bin"
fi
TORRENT="$RUN/payload.torrent"
create=("$TOYBT" create "$DATA/payload.bin" -l 262144 -d -o "$TORRENT")
[ -n "$TRACKER" ] && create+=(-t "$TRACKER")
"${create[@]}" >"$RUN/create.log" 2>&1 || die "toybt create failed: $(cat "$RUN/create.log")"
MAGNET=$("$TOYBT" info --magnet "$TORRENT") || die "toybt info --magnet failed"

start seed "$TOYBT" seed "$TORRENT" "$DATA/payload.bin" --bind 127.0.0.1 --port 0 --no-dht
SEED_PID=$LAST_PID
wait_log "$RUN/seed.log" "peer listening on" "$TIMEOUT" "$SEED_PID" ||
    die "the toybt seed did not start: $(tail -c 600 "$RUN/seed.log")"
SEED_PORT=$(grep -ao 'peer listening on [0-9.]*:[0-9]*' "$RUN/seed.log" | head -1 | sed 's/.*://')
PEER="127.0.0.1:$SEED_PORT"
LINK="$MAGNET&x.pe=$PEER"

echo "magnet_compare: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); $SIZE_MIB MiB, 256 KiB pieces, $RUNS run(s)"
echo "  seed: toybt on $PEER; tracker: ${TRACKER:-none}; link: $LINK"

# --- one download -------------------------------------------------------------------------------------------------
RESULTS="$RUN/results.tsv" # client run metadata first_piece done exit (seconds from the process start; - if none)
: >"$RESULTS"

lt_us() { # LOG EVENT -> US: the epoch microseconds lt_magnet.py printed for EVENT ("" if none)
    US=$(awk -v e="$2" '$1 == e {sub(/\./, "", $2); print $2; exit}' "$1")
}

# download CLIENT RUN: one download from the seed; appends a line to RESULTS.
download() {
    local client=$1 run=$2 name="$1-$2" out="$RUN/out-$1-$2" t0 pid deadline ok=0 t_exit="" done_pat
    rm -rf "$out"
    mkdir -p "$out"
    sync
    now_us; t0=$NOW
    case $client in
        toybt)
            start "$name" env RUST_LOG="$TOYBT_LOG" "$TOYBT" leech "$LINK" -o "$out" --bind 127.0.0.1 --port 0 --seed-time 0 --no-dht
            done_pat="download complete" ;;
        toybt-file)
            start "$name" env RUST_LOG="$TOYBT_LOG" "$TOYBT" leech "$TORRENT" -o "$out" --bind 127.0.0.1 --port 0 --no-dht \
                --peer "$PEER" --seed-time 0
            done_pat="download complete" ;;
        libtorrent)
            start "$name" "$LT_PY" "$LT_MAGNET" "$LINK" "$out" --port 0 --max-seconds "$TIMEOUT"
            done_pat="^finished" ;;
    esac
    pid=$LAST_PID
    deadline=$((t0 + TIMEOUT * 1000000))
    # Done, then exit (a toybt leech with --seed-time 0 exits on its own; so does lt_magnet.py), each bounded.
    while :; do
        now_us
        if ! alive "$pid"; then t_exit=$NOW; break; fi
        [ "$NOW" -gt "$deadline" ] && { say "$name: not exited after $TIMEOUT s"; break; }
        snooze 0.02
    done
    grep -aq -- "$done_pat" "$RUN/$name.log" && ok=1
    local rc=124
    if [ -n "$t_exit" ]; then wait "$pid"; rc=$?; fi
    forget "$pid"
    alive "$SEED_PID" || die "the seed exited: $(tail -c 600 "$RUN/seed.log")"
    rm -rf "$out"
    if [ "$ok" != 1 ] || [ -z "$t_exit" ] || [ "$rc" != 0 ]; then
        say "$name failed (exit status $rc): $(tail -c 800 "$RUN/$name.log")"
        return 1
    fi
    local meta="" first="" fin=""
    case $client in
        toybt | toybt-file)
            [ "$client" = toybt ] && { log_ms "$RUN/$name.log" "metadata complete"; meta=$MS; }
            log_ms "$RUN/$name.log" "first piece verified"; first=$MS
            log_ms "$RUN/$name.log" "download complete"; fin=$MS
            meta=${meta:+${meta}000}; first=${first:+${first}000}; fin=${fin:+${fin}000} ;;
        libtorrent)
            lt_us "$RUN/$name.log" metadata; meta=$US
            lt_us "$RUN/$name.log" first_piece; first=$US
            lt_us "$RUN/$name.log" finished; fin=$US ;;
    esac
    awk -v OFS='\t' -v c="$client" -v r="$run" -v t0="$t0" -v m="$meta" -v f="$first" -v d="$fin" -v x="$t_exit" '
        function rel(t) { return t == "" ? "-" : sprintf("%.3f", (t - t0) / 1e6) }
        BEGIN { print c, r, rel(m), rel(f), rel(d), rel(x) }' >>"$RESULTS"
    tail -1 "$RESULTS" | awk -F'\t' '{printf "  %-11s run %s: metadata %6s s, 1st piece %6s s, done %6s s, exit %6s s\n",
        $1, $2, $3, $4, $5, $6}' >&2
}

read -r -a order <<<"$CLIENTS"
for ((r = 1; r <= RUNS; r++)); do
    # Run r starts with the r-th client (rotated), so no client always follows the same other one.
    for ((i = 0; i < ${#order[@]}; i++)); do
        c=${order[$(((r - 1 + i) % ${#order[@]}))]}
        download "$c" "$r" || say "$c run $r failed"
    done
done
forget "$SEED_PID"

# --- the table ----------------------------------------------------------------------------------------------------
[ -s "$RESULTS" ] || die "no download finished"
echo
awk -F'\t' -v size="$SIZE_MIB" '
    function sorted(list, a,    n, i, j, t) {
        n = split(list, a, " ")
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
        return n
    }
    function median(list,    a, n) {
        n = sorted(list, a); if (n == 0) return ""
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function cell(list,    a, n) { # "median (lo-hi)"
        n = sorted(list, a)
        if (n == 0) return "-"
        return sprintf("%.3f (%.3f-%.3f)", median(list), a[1], a[n])
    }
    function add(k, col, v) { if (v != "-") vals[k, col] = vals[k, col] " " v }
    {
        if (!($1 in seen)) { order[++n] = $1; seen[$1] = 1 }
        runs[$1]++
        add($1, 3, $3); add($1, 4, $4); add($1, 5, $5); add($1, 6, $6)
        if ($4 != "-" && $5 != "-") add($1, 7, sprintf("%.3f", $5 - $4))
    }
    END {
        printf "%-22s %4s %23s %23s %23s %23s\n", "client (" size " MiB)", "runs", "metadata s", "1st piece s", "done s", "exit s"
        for (i = 1; i <= n; i++) {
            k = order[i]
            label = k == "toybt" ? "toybt, magnet" : k == "libtorrent" ? "libtorrent, magnet" : "toybt, .torrent file"
            printf "%-22s %4d %23s %23s %23s %23s\n", label, runs[k], cell(vals[k, 3]), cell(vals[k, 4]), cell(vals[k, 5]),
                cell(vals[k, 6])
        }
        printf "seconds from the process start: median (min-max)\n"
        if (("toybt" in seen) && ("toybt-file" in seen)) {
            md = median(vals["toybt", 5]); fd = median(vals["toybt-file", 5])
            me = median(vals["toybt", 6]); fe = median(vals["toybt-file", 6])
            printf "toybt magnet/file, done: %.3f s / %.3f s = %.3f (%+.1f %%; goal: within 5 %%)\n", md, fd, md / fd, 100 * (md / fd - 1)
            printf "toybt magnet/file, exit: %.3f s / %.3f s = %.3f (%+.1f %%)\n", me, fe, me / fe, 100 * (me / fe - 1)
            mf = median(vals["toybt", 4]); ff = median(vals["toybt-file", 4])
            printf "  before the 1st piece: magnet %.3f s, file %.3f s: the link costs %+.0f ms (%+.1f %% of done from the file)\n",
                mf, ff, 1000 * (mf - ff), 100 * (mf - ff) / fd
            printf "  1st piece -> done:    magnet %s s, file %s s (medians; the same code for both)\n",
                median(vals["toybt", 7]), median(vals["toybt-file", 7])
        }
    }' "$RESULTS"
