#!/usr/bin/env bash
# Whole-process transfer comparison on 127.0.0.1: toybt against libtorrent, aria2 and Transmission, in one run.
#
# Usage: benches/swarm_compare.sh [--quick] [--big] [--no-swarm] [--pairs "SEED:LEECH[:CONNS] ..."] [--runs N]
#   --quick     toybt -> toybt only, no swarm
#   --big       also an 8 GiB toybt -> toybt transfer, for the memory figure (needs ~17 GiB free under DIR)
#   --no-swarm  skip the 1 seed + 8 leechers swarms (--pairs "" runs only the swarms)
#   --pairs     pairs to run (default: toybt:toybt libtorrent:libtorrent aria2:aria2 transmission:transmission
#               transmission:transmission:16 toybt:libtorrent libtorrent:toybt); CONNS (default 1) joins a
#               Transmission leech to its seed over that many connections (see below)
#   --runs N    run every pair N times; the table shows medians and the range of the rate
# Knobs (environment): DIR (data and scratch, default /tmp/toybt-swarm-compare), SIZE_MIB (1024), SWARM_MIB (256),
#   SWARM_LEECHES (8), SWARM_KINDS (leeches of the swarms: "toybt libtorrent"), BIG_MIB (8192), TIMEOUT (300 s per transfer), TOYBT (binary; built in release if unset),
#   SHA1_MBS (skip the hashing bench and use this ceiling), KEEP_BIG=1 (keep the 8 GiB file).
#
# What is measured, for every SEED -> LEECH pair on the same SIZE_MIB file:
#   MB/s        10^6 bytes per second over the data window: from the moment the leech has written its first MiB
#               to the file to the last moment it was still writing (sampled every 20 ms from the leech's
#               /proc/PID/io write_bytes, which counts pwrite and mapped writes alike). The same clock for every
#               client; it leaves out start-up and Transmission's ~10 s wait before it unchokes a new peer.
#   wall        leech started -> leech says it is done (toybt: "download complete"; libtorrent: "finished" after its
#               cache flush; aria2 and Transmission: their completion hooks). Clients poll at different rates,
#               so this has ~0.3 s of slack.
#   exit        the whole process: leech started -> leech exited, as /usr/bin/time counts it. toybt and libtorrent
#               leeches exit once done (toybt --seed-time 0: after its final fsync and resume record; libtorrent
#               --exit-when-done: after its cache flush); aria2 and Transmission leeches keep seeding ("-").
#   CPU s       user + system seconds: the leech's whole life (to exit where it exits, from /usr/bin/time; else to
#               done, /proc/PID/stat); the seed's from the leech's start to done (its own start-up check left out).
#   RSS         peak resident set (/usr/bin/time's maximum for a leech that exits, else VmHWM when done). libtorrent
#               maps files, so its RSS counts the mapped pages; its process is Python with libtorrent loaded.
#   % sha1      MB/s as a share of single-core sha1_smol throughput (`cargo bench --bench hashing`, 256 KiB
#               pieces, run at the start): the ceiling issue 6 sets, since a leech hashes every byte on one thread.
#               toybt hashes with the CPU's SHA extensions when it has them (its rate is printed too), so it can
#               pass that line; TOYBT_SHA1=portable makes the toybt processes use sha1_smol instead.
# Transmission never dials the 127.x peers a tracker gives it, and two Transmissions only wait for each other, so
# benches/splice_peers.py dials both and splices their sockets together (zero-copy); its CPU is reported apart.
# Every Transmission leech is joined to its seed that way (a toybt seed too, so the proxy's share can be checked
# against a toybt seed that dials it: the same rate). Transmission 3.00 caps ONE connection well below what the
# processes can move: a leech asks a peer for at most the peer's `reqq` blocks of 16 KiB (Transmission's is 512,
# toybt's 1024), queues requests on one 500 ms pulse and sends them on the next, and a Transmission seed answers
# requests on its own 500 ms pulse — so a round trip takes about 1 s whatever the link: 512 x 16 KiB/s = 8.4 MB/s
# from a Transmission seed, 16.8 MB/s from a toybt one. That is Transmission's real per-peer rate (on a fast link as
# here), not the proxy's. SEED:LEECH:CONNS shows what the processes can do past it: CONNS connections, each from its
# own 127.0.0.x (Transmission keeps one peer per address), as if the leech had CONNS peers; the row says so.
# Every process started here is stopped by PID (TERM, then KILL after 5 s) on exit, also on Ctrl-C.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
DIR=${DIR:-/tmp/toybt-swarm-compare}
SIZE_MIB=${SIZE_MIB:-1024}
SWARM_MIB=${SWARM_MIB:-256}
SWARM_LEECHES=${SWARM_LEECHES:-8}
SWARM_KINDS=${SWARM_KINDS:-toybt libtorrent}
BIG_MIB=${BIG_MIB:-8192}
TIMEOUT=${TIMEOUT:-300}
RUNS=1
CONNS=1 # connections a Transmission leech gets to its seed (set per pair)
BIG=0
SWARM=1
PAIRS="toybt:toybt libtorrent:libtorrent aria2:aria2 transmission:transmission transmission:transmission:16 toybt:libtorrent
    libtorrent:toybt"
LT_PY=/usr/bin/python3
LT_CLIENT="$root/tests/support/lt_client.py"
SPLICE="$here/splice_peers.py"

die() { echo "swarm_compare: $*" >&2; exit 1; }
say() { echo "swarm_compare: $*" >&2; }

while [ $# -gt 0 ]; do
    case $1 in
        --quick) PAIRS="toybt:toybt"; SWARM=0 ;;
        --big) BIG=1 ;;
        --no-swarm) SWARM=0 ;;
        --pairs) PAIRS=$2; shift ;;
        --runs) RUNS=$2; shift ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (try --help)" ;;
    esac
    shift
done

# --- processes (benches/common.sh) -------------------------------------------------------------------------------
# shellcheck source=benches/common.sh
source "$here/common.sh"
cleanup() {
    stop_all
    [ -n "${RUN:-}" ] && rm -rf "$RUN"
    [ "$BIG" = 1 ] && [ "${KEEP_BIG:-0}" != 1 ] && rm -rf "$DIR/data/$BIG_MIB"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- measuring without forking (the loop samples every 20 ms on a machine the measured processes share) ------------
mkdir -p "$DIR"
RUN=$(mktemp -d "$DIR/run.XXXXXX")
open_snooze "$RUN"
CLK=$(getconf CLK_TCK)
cpu_ticks() { # PID -> TICKS (utime + stime); our processes have no spaces in their names
    local f
    TICKS=0
    { read -r -a f <"/proc/$1/stat"; } 2>/dev/null || return 1
    TICKS=$((f[13] + f[14]))
}
written() { # PID -> WRITTEN: bytes the process has dirtied in files (pwrite or a mapping; sockets do not count)
    local k v
    WRITTEN=0
    { while read -r k v; do [ "$k" = write_bytes: ] && WRITTEN=$v; done <"/proc/$1/io"; } 2>/dev/null
}
hwm_kib() { # PID -> HWM
    local k v
    HWM=0
    { while read -r k v _; do [ "$k" = VmHWM: ] && HWM=$v; done <"/proc/$1/status"; } 2>/dev/null
}

# --- the data ---------------------------------------------------------------------------------------------------
if [ -z "${TOYBT:-}" ]; then
    (cd "$root" && cargo build --release --quiet) || die "cargo build --release failed"
    TOYBT="$root/target/release/toybt"
fi
[ -x "$TOYBT" ] || die "$TOYBT is not executable"
need() { command -v "$1" >/dev/null || die "$1 is not installed"; }
case " $PAIRS " in *libtorrent*) "$LT_PY" -c 'import libtorrent' 2>/dev/null || die "python3-libtorrent missing" ;; esac
case " $PAIRS " in *aria2*) need aria2c ;; esac
case " $PAIRS " in *transmission*) need transmission-cli; need stdbuf ;; esac

# make_data MIB: $DIR/data/MIB/payload.bin of random bytes, made once and kept.
make_data() {
    local d="$DIR/data/$1"
    if [ ! -s "$d/payload.bin" ] || [ "$(stat -c %s "$d/payload.bin")" != $(($1 << 20)) ]; then
        local avail
        avail=$(df -Pk "$DIR" | awk 'NR == 2 {print int($4 / 1024)}')
        [ "$avail" -gt $((3 * $1 + 1024)) ] || die "need $((3 * $1 + 1024)) MiB free under $DIR for $1 MiB, have $avail"
        say "writing $1 MiB of random data to $d"
        mkdir -p "$d"
        head -c $(($1 << 20)) /dev/urandom >"$d/payload.bin.tmp" && mv "$d/payload.bin.tmp" "$d/payload.bin"
    fi
}

# One tracker for every swarm: aria2 finds peers only through one.
start tracker "$TOYBT" tracker --open --bind 127.0.0.1 --port 0
TRACKER_PID=$LAST_PID
# The whole line: its announce URL is read next.
wait_log "$RUN/tracker.log" "/announce)" 10 "$TRACKER_PID" || die "toybt tracker did not start: $(cat "$RUN/tracker.log")"
ANNOUNCE=$(grep -ao 'announce http://[^)]*' "$RUN/tracker.log" | head -1 | cut -d' ' -f2)

# torrent_for MIB -> TORRENT, HASH: a 256 KiB-piece torrent of the data announcing to our tracker.
torrent_for() {
    make_data "$1"
    TORRENT="$RUN/payload-$1.torrent"
    if [ ! -e "$TORRENT" ]; then
        "$TOYBT" create "$DIR/data/$1/payload.bin" -t "$ANNOUNCE" -l 256K -d -o "$TORRENT" >"$RUN/create.log" 2>&1 ||
            die "toybt create failed: $(cat "$RUN/create.log")"
    fi
    HASH=$("$TOYBT" info "$TORRENT" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["info_hash"])')
}

# --- the clients ------------------------------------------------------------------------------------------------
# seed KIND MIB NAME: starts a seed of the MIB data and waits until it serves; sets SEED_PID, SEED_PORT.
seed() {
    local kind=$1 mib=$2 name=$3 data="$DIR/data/$2" ready
    SEED_PORT=$(free_port)
    case $kind in
        toybt)
            start "$name" "$TOYBT" seed "$TORRENT" "$data/payload.bin" --bind 127.0.0.1 --port 0 --no-dht
            ready="peer listening on" ;;
        libtorrent)
            start "$name" "$LT_PY" "$LT_CLIENT" seed "$TORRENT" "$data" --port "$SEED_PORT" --max-seconds $((TIMEOUT * 3))
            ready="seeding" ;;
        aria2)
            start "$name" aria2c "${ARIA2_OPTS[@]}" --listen-port="$SEED_PORT" --dir="$data" --check-integrity=true \
                "$TORRENT"
            ready="listening on TCP port" ;;
        transmission)
            transmission_config "$name" "$SEED_PORT"
            start "$name" stdbuf -o0 transmission-cli -g "$RUN/$name.cfg" -w "$data" -p "$SEED_PORT" -M -B -D -U -et -v \
                "$TORRENT"
            ready="Seeding" ;;
    esac
    SEED_PID=$LAST_PID
    wait_log "$RUN/$name.log" "$ready" "$TIMEOUT" "$SEED_PID" || { say "$kind seed did not start: $(tail -c 600 "$RUN/$name.log")"; return 1; }
    [ "$kind" = toybt ] && SEED_PORT=$(grep -ao 'peer listening on [0-9.]*:[0-9]*' "$RUN/$name.log" | head -1 | sed 's/.*://')
    return 0
}

ARIA2_OPTS=(--no-conf=true --interface=127.0.0.1 --disable-ipv6=true --enable-dht=false --enable-dht6=false
    --bt-enable-lpd=false --enable-peer-exchange=false --file-allocation=falloc --auto-file-renaming=false
    --summary-interval=0 --enable-color=false --console-log-level=notice --seed-ratio=0.0 --stop="$((TIMEOUT * 3))")

# transmission_config NAME PORT: a config folder keeping Transmission on 127.0.0.1 and plain TCP, no limits. Its
# default of 14 upload slots would leave peers of a many-connection pair choked: room for the 99 CONNS allows.
transmission_config() {
    mkdir -p "$RUN/$1.cfg"
    cat >"$RUN/$1.cfg/settings.json" <<EOF
{"bind-address-ipv4": "127.0.0.1", "bind-address-ipv6": "::1", "blocklist-enabled": false, "dht-enabled": false,
 "idle-seeding-limit-enabled": false, "lpd-enabled": false, "peer-port": $2, "peer-port-random-on-start": false,
 "pex-enabled": false, "port-forwarding-enabled": false, "ratio-limit-enabled": false, "rpc-enabled": false,
 "speed-limit-down-enabled": false, "speed-limit-up-enabled": false, "utp-enabled": false,
 "upload-slots-per-torrent": 100, "peer-limit-per-torrent": 120, "peer-limit-global": 240}
EOF
}

done_hook() { # NAME -> HOOK (a script that creates $RUN/NAME.done)
    HOOK="$RUN/$1.hook"
    printf '#!/bin/sh\ntouch "%s"\n' "$RUN/$1.done" >"$HOOK"
    chmod +x "$HOOK"
}

# leech KIND NAME OUT_DIR [EXIT]: starts a leech of TORRENT that dials the seed on SEED_PORT where it can (a
# Transmission leech is joined to it by the splice proxy over CONNS connections); sets LEECH_PID. With EXIT=1 a toybt
# or libtorrent leech exits once done, under /usr/bin/time (TIME_PID, figures in $RUN/NAME.time; LEECH_PID is the
# client itself).
leech() {
    local kind=$1 name=$2 out=$3 exit=${4:-0} port=${LEECH_PORT:-} timed=() lt_exit=()
    mkdir -p "$out"
    [ -n "$port" ] || port=$(free_port)
    TIME_PID=""
    case $kind in toybt | libtorrent) [ "$exit" = 1 ] && timed=(/usr/bin/time -o "$RUN/$name.time" -f '%e %U %S %M') ;; esac
    [ "$exit" = 1 ] && lt_exit=(--exit-when-done)
    case $kind in
        toybt)
            start "$name" "${timed[@]}" env RUST_LOG=info "$TOYBT" leech "$TORRENT" -o "$out" --bind 127.0.0.1 --port 0 \
                --no-dht --seed-time "$([ "$exit" = 1 ] && echo 0 || echo 3600)" --peer "127.0.0.1:$SEED_PORT" ;;
        libtorrent)
            start "$name" "${timed[@]}" "$LT_PY" "$LT_CLIENT" leech "$TORRENT" "$out" --port "$port" \
                --peer "127.0.0.1:$SEED_PORT" --max-seconds $((TIMEOUT * 3)) "${lt_exit[@]}" ;;
        aria2)
            done_hook "$name"
            start "$name" aria2c "${ARIA2_OPTS[@]}" --listen-port="$port" --dir="$out" \
                --on-bt-download-complete="$HOOK" "$TORRENT" ;;
        transmission)
            done_hook "$name"
            transmission_config "$name" "$port"
            start "$name" stdbuf -o0 transmission-cli -g "$RUN/$name.cfg" -w "$out" -p "$port" -M -B -D -U -et \
                -f "$HOOK" "$TORRENT"
            LEECH_PID=$LAST_PID
            start "$name.splice" "$LT_PY" "$SPLICE" "$HASH" "$SEED_PORT" "$port" --timeout 30 --conns "$CONNS"
            SPLICE_PID=$LAST_PID
            return 0 ;;
    esac
    LEECH_PID=$LAST_PID
    if [ ${#timed[@]} -gt 0 ]; then
        # The client is /usr/bin/time's only child (env execs the binary, keeping its PID).
        TIME_PID=$LAST_PID
        local i child=""
        for ((i = 0; i < 200; i++)); do
            read -r child _ <"/proc/$TIME_PID/task/$TIME_PID/children" 2>/dev/null
            [ -n "$child" ] && break
            snooze 0.005
        done
        [ -n "$child" ] && LEECH_PID=$child
    fi
}

# Read by the shell itself: a swarm polls 8 logs every 0.1 s, and a grep process per look took CPU from the swarm.
log_has() { # LOG GLOB: a line of LOG matches GLOB
    local line
    # shellcheck disable=SC2053 # $2 is a glob on purpose
    { while IFS= read -r line; do [[ $line == $2 ]] && return 0; done <"$1"; } 2>/dev/null
    return 1
}
leech_done() { # KIND NAME
    case $1 in
        toybt) log_has "$RUN/$2.log" "*download complete*" ;;
        libtorrent) log_has "$RUN/$2.log" "finished*" ;;
        aria2 | transmission) [ -e "$RUN/$2.done" ] ;;
    esac
}

# The previous transfer's GiB is still being written back by the kernel when it ends (every client leaves it to the
# page cache); without this the next pair would share the disk and a core with that writeback, which is whichever
# pair comes next in the round rather than the pair's own cost.
settle_disk() { sync; }

# --- one transfer -----------------------------------------------------------------------------------------------
RESULTS="$RUN/results.tsv" # pair run mbs wall seed_cpu leech_cpu seed_kib leech_kib mib extra exit
: >"$RESULTS"

# transfer SEED_KIND LEECH_KIND MIB LABEL RUN [CONNS]: one seed -> leech transfer; appends a line to RESULTS.
transfer() {
    local sk=$1 lk=$2 mib=$3 label=$4 run=$5 bytes=$(($3 << 20)) pair="$1 -> $2"
    CONNS=${6:-1}
    [ "$CONNS" != 1 ] && pair="$pair x$CONNS"
    local sname="$label-seed-$run" lname="$label-leech-$run" out="$RUN/out-$label-$run"
    SPLICE_PID=""
    torrent_for "$mib"
    settle_disk
    seed "$sk" "$mib" "$sname" || return 1
    local seed_pid=$SEED_PID t0 c0 first="" last="" prev=0 w i=0 ok=0 t_done
    now_us; t0=$NOW
    cpu_ticks "$seed_pid"; c0=$TICKS
    leech "$lk" "$lname" "$out" 1
    local leech_pid=$LEECH_PID time_pid=$TIME_PID deadline=$((t0 + TIMEOUT * 1000000)) t_exit=""
    while :; do
        now_us
        written "$leech_pid"
        w=$WRITTEN
        [ -z "$first" ] && [ "$w" -ge 1048576 ] && first=$NOW
        [ $((w - prev)) -gt 0 ] && last=$NOW
        prev=$w
        if [ "$ok" = 1 ]; then
            # Done; an exiting leech is followed to its exit (its writes until then count for the data window).
            alive "$time_pid" || { t_exit=$NOW; break; }
            [ "$NOW" -gt "$deadline" ] && { say "$label: the leech did not exit after $TIMEOUT s"; break; }
        elif ((i++ % 10 == 0)); then
            if leech_done "$lk" "$lname"; then
                ok=1
                t_done=$NOW
                [ -n "$time_pid" ] && continue
                break
            fi
            alive "$leech_pid" || { say "$label: the $lk leech exited: $(tail -c 600 "$RUN/$lname.log")"; break; }
            alive "$seed_pid" || { say "$label: the $sk seed exited: $(tail -c 600 "$RUN/$sname.log")"; break; }
            [ "$NOW" -gt "$deadline" ] && { say "$label: not done after $TIMEOUT s"; break; }
        fi
        snooze 0.02
    done
    [ -z "$t_done" ] && t_done=$NOW
    # Writes may go on a little after the done signal (a cache flush): follow them to the end.
    for ((i = 0; i < 10; i++)); do
        snooze 0.02
        written "$leech_pid"
        [ $((WRITTEN - prev)) -gt 0 ] && { now_us; last=$NOW; }
        prev=$WRITTEN
    done
    cpu_ticks "$leech_pid"; local lc=$TICKS
    hwm_kib "$leech_pid"; local lh=$HWM
    local exit_s=-
    if [ -n "$time_pid" ]; then
        wait "$time_pid" 2>/dev/null
        local tf
        read -r -a tf <"$RUN/$lname.time" 2>/dev/null
        # /usr/bin/time: elapsed, user, system seconds, max RSS KiB (for a leech that did not exit: nothing).
        if [ -n "$t_exit" ] && [ "${#tf[@]}" = 4 ]; then
            exit_s=${tf[0]}
            lc=$(awk -v u="${tf[1]}" -v s="${tf[2]}" -v k="$CLK" 'BEGIN {printf "%d", (u + s) * k + 0.5}')
            lh=${tf[3]}
        fi
    fi
    cpu_ticks "$seed_pid"; local sc=$((TICKS - c0))
    hwm_kib "$seed_pid"; local sh=$HWM
    local extra=""
    if [ -n "$SPLICE_PID" ]; then
        # Running: its /proc figures; gone (the clients hung up once done): what it printed on the way out.
        if alive "$SPLICE_PID" && cpu_ticks "$SPLICE_PID"; then
            extra="splice CPU $(awk -v t="$TICKS" -v k="$CLK" 'BEGIN {printf "%.2f s", t / k}')"
        else
            extra="splice CPU $(awk '$1 == "cpu" {print $2 " s"}' "$RUN/$lname.splice.log")"
        fi
        extra="$extra, $CONNS conn$([ "$CONNS" != 1 ] && echo s)"
        forget "$SPLICE_PID"
    fi
    forget "$leech_pid"
    [ -n "$time_pid" ] && forget "$time_pid"
    forget "$seed_pid"
    rm -rf "$out"
    [ "$ok" = 1 ] && [ -n "$first" ] && [ -n "$last" ] || return 1
    awk -v OFS='\t' -v p="$pair" -v r="$run" -v b="$bytes" -v t0="$t0" -v f="$first" -v l="$last" -v d="$t_done" \
        -v sc="$sc" -v lc="$lc" -v sh="$sh" -v lh="$lh" -v k="$CLK" -v x="$extra" -v m="$mib" -v e="$exit_s" \
        'BEGIN {
            span = (l - f) / 1e6; if (span <= 0) span = 0.02
            print p, r, b / span / 1e6, (d - t0) / 1e6, sc / k, lc / k, sh, lh, m, x, e
        }' >>"$RESULTS"
    tail -1 "$RESULTS" | awk -F'\t' '{printf "  %-32s run %s: %7.1f MB/s, wall %5.1f s, exit %s s, CPU seed %5.2f s leech %5.2f s, RSS seed %s KiB leech %s KiB %s (load %s)\n", $1, $2, $3, $4, $11, $5, $6, $7, $8, $10, load}' load="$(cut -d' ' -f1 /proc/loadavg)" >&2
}

# --- the ceiling --------------------------------------------------------------------------------------------------
# sha1_smol is the ceiling the issue sets (a leech hashes every byte on one thread); toybt's own SHA-1 uses the CPU's
# SHA extensions when it has them, and its rate is printed beside it.
TOYBT_SHA1_MBS=${TOYBT_SHA1_MBS:-?}
if [ -z "${SHA1_MBS:-}" ]; then
    say "measuring single-core SHA-1 throughput (cargo bench --bench hashing -- sha1_256KiB: sha1_smol, toybt)"
    rates=$(cd "$root" && cargo bench --quiet --bench hashing -- --noplot 'sha1_256KiB' 2>/dev/null |
        awk '/^sha1_256KiB\// {name = $1} /thrpt:/ && name != "" {
                 gsub(/\[/, ""); v = $4; if ($5 == "GB/s") v *= 1000; if ($5 == "KB/s") v /= 1000
                 print name, v; name = "" }')
    SHA1_MBS=$(awk '$1 == "sha1_256KiB/sha1_smol" {printf "%.1f", $2}' <<<"$rates")
    TOYBT_SHA1_MBS=$(awk '$1 == "sha1_256KiB/toybt" {printf "%.1f", $2}' <<<"$rates")
    [ -n "$SHA1_MBS" ] || die "could not read the hashing bench's throughput (set SHA1_MBS to skip it)"
fi

echo "swarm_compare: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), sha1_smol ${SHA1_MBS} MB/s single-core, toybt's SHA-1 ${TOYBT_SHA1_MBS} MB/s"
echo "  files: $SIZE_MIB MiB, 256 KiB pieces, under $DIR; tracker $ANNOUNCE"

# --- pairs ----------------------------------------------------------------------------------------------------------
# Round after round of every pair, rather than all runs of one pair in a row: the machine's load drifts, and a
# drift should spread over every pair alike.
for ((r = 1; r <= RUNS; r++)); do
    for pair in $PAIRS; do
        IFS=: read -r sk lk conns <<<"$pair"
        conns=${conns:-1}
        case $conns in [1-9] | [1-9][0-9]) ;; *) die "$pair: CONNS must be 1-99" ;; esac
        [ "$conns" = 1 ] || [ "$lk" = transmission ] || die "$pair: CONNS applies to a Transmission leech only"
        transfer "$sk" "$lk" "$SIZE_MIB" "$sk-$lk-$conns" "$r" "$conns" || say "$pair run $r failed"
    done
done

if [ "$BIG" = 1 ]; then
    transfer toybt toybt "$BIG_MIB" "big-toybt-toybt" 1 || say "the $BIG_MIB MiB transfer failed"
fi

# --- the table ----------------------------------------------------------------------------------------------------
[ -s "$RESULTS" ] && echo && printf '%-32s %9s %9s %7s %8s %8s %8s %8s %9s %9s %9s %9s %s\n' "pair ($SIZE_MIB MiB)" "MB/s" "range" "% sha1" "wall s" \
    "exit s" "range" "vs toybt" "seed CPU" "leech CPU" "seed RSS" "leech RSS" ""
awk -F'\t' -v sha="$SHA1_MBS" -v size="$SIZE_MIB" '
    function median(list,    n, a, i, j, t) {
        n = split(list, a, " ")
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function lo(list,    n, a, i, m) { n = split(list, a, " "); m = a[1]; for (i = 2; i <= n; i++) if (a[i] + 0 < m + 0) m = a[i]; return m }
    function hi(list,    n, a, i, m) { n = split(list, a, " "); m = a[1]; for (i = 2; i <= n; i++) if (a[i] + 0 > m + 0) m = a[i]; return m }
    {
        key = $1 ($9 != size ? " [" $9 " MiB]" : "")
        if (!(key in seen)) { order[++n] = key; seen[key] = 1 }
        mbs[key] = mbs[key] " " $3; wall[key] = wall[key] " " $4; sc[key] = sc[key] " " $5; lc[key] = lc[key] " " $6
        sh[key] = sh[key] " " $7; lh[key] = lh[key] " " $8; x[key] = $10
        if ($11 != "-" && $11 != "") ex[key] = ex[key] " " $11
    }
    END {
        base = ("toybt -> toybt" in seen) ? median(mbs["toybt -> toybt"]) : 0
        for (i = 1; i <= n; i++) {
            k = order[i]; m = median(mbs[k])
            e = (k in ex) ? sprintf("%8.2f %3.1f-%-4.1f", median(ex[k]), lo(ex[k]), hi(ex[k])) : sprintf("%8s %8s", "-", "")
            printf "%-32s %9.1f %4.0f-%-4.0f %6.0f%% %8.1f %s %8s %7.2f s %7.2f s %6.1f MiB %6.1f MiB %s\n", k, m, lo(mbs[k]),
                hi(mbs[k]), 100 * m / sha, median(wall[k]), e, base ? sprintf("%.2fx", m / base) : "-", median(sc[k]),
                median(lc[k]), median(sh[k]) / 1024, median(lh[k]) / 1024, x[k]
        }
    }' "$RESULTS"
[ -s "$RESULTS" ] &&
    echo "exit: leech start -> exit (whole process). CPU: seed from the leech's start to done, leech its whole life (to exit where it exits); RSS: peak. MB/s = 10^6 B/s."

# --- swarms -------------------------------------------------------------------------------------------------------
# swarm LEECH_KIND: one toybt seed, SWARM_LEECHES leeches of LEECH_KIND that find each other through the tracker.
swarm() {
    local lk=$1 bytes=$((SWARM_MIB << 20)) pids=() names=() i t0 n_done t_end ok=0
    torrent_for "$SWARM_MIB"
    settle_disk
    seed toybt "$SWARM_MIB" "swarm-$lk-seed" || return 1
    local seed_pid=$SEED_PID seed_c0 ports=() done_at=()
    # Ports are found before the clock starts: a Python start-up per leecher (~50 ms) is the harness's time, not the
    # swarm's.
    for ((i = 1; i <= SWARM_LEECHES; i++)); do ports+=("$(free_port)"); done
    cpu_ticks "$seed_pid"; seed_c0=$TICKS
    now_us; t0=$NOW
    for ((i = 1; i <= SWARM_LEECHES; i++)); do
        LEECH_PORT=${ports[$((i - 1))]} leech "$lk" "swarm-$lk-$i" "$RUN/swarm-$lk-out-$i"
        pids+=("$LEECH_PID")
        names+=("swarm-$lk-$i")
    done
    local deadline=$((t0 + TIMEOUT * 1000000))
    while :; do
        n_done=0
        for i in "${!names[@]}"; do
            [ -n "${done_at[$i]:-}" ] || { leech_done "$lk" "${names[$i]}" && done_at[i]=1; }
            [ -n "${done_at[$i]:-}" ] && n_done=$((n_done + 1))
        done
        now_us
        [ "$n_done" = "$SWARM_LEECHES" ] && { ok=1; break; }
        [ "$NOW" -gt "$deadline" ] && { say "swarm of $lk: $n_done of $SWARM_LEECHES done after $TIMEOUT s"; break; }
        alive "$seed_pid" || { say "swarm of $lk: the seed exited"; break; }
        snooze 0.02 # "all done" to 20 ms; a look reads the logs of the leeches not done yet, with no process started
    done
    t_end=$NOW
    local sent hw=0 cpu=0
    for i in "${!pids[@]}"; do
        hwm_kib "${pids[$i]}"; [ "$HWM" -gt "$hw" ] && hw=$HWM
        cpu_ticks "${pids[$i]}"; cpu=$((cpu + TICKS))
    done
    cpu_ticks "$seed_pid"; cpu=$((cpu + TICKS - seed_c0))
    for i in "${!pids[@]}"; do forget "${pids[$i]}"; done
    forget "$seed_pid"
    sent=$(grep -ao 'uploaded=[0-9]*' "$RUN/swarm-$lk-seed.log" | tail -1 | cut -d= -f2)
    rm -rf "$RUN"/swarm-"$lk"-out-*
    [ "$ok" = 1 ] || return 1
    awk -v lk="$lk" -v n="$SWARM_LEECHES" -v b="$bytes" -v s="$sent" -v t="$(((t_end - t0) / 1000))" -v h="$hw" \
        -v c="$cpu" -v k="$CLK" -v cores="$(nproc)" 'BEGIN {
        printf "%-12s %8d %12.1f %12.1f %10.0f%% %12.2f %12.2f %10.2fx %10.1f MiB\n", lk, n, n * b / 1048576, s / 1048576,
            100 * s / (n * b), t / 1000, c / k, (t / 1000) / (c / k / cores), h / 1024 }'
}

if [ "$SWARM" = 1 ]; then
    echo
    echo "1 toybt seed -> $SWARM_LEECHES leeches, $SWARM_MIB MiB, through the tracker (seed sent: its own upload total)"
    printf '%-12s %8s %12s %12s %11s %12s %12s %11s %14s\n' "leeches" "count" "down MiB" "seed sent" "seed share" \
        "all done s" "CPU s, all" "vs bound" "leech RSS max"
    for kind in $SWARM_KINDS; do swarm "$kind" || say "the $kind swarm failed"; done
    echo "vs bound: all done / (CPU s, all / $(nproc) cores), the CPU bound; 1.00x would leave no core idle."
fi
