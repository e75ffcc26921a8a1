# shellcheck shell=bash
# Process helpers for the benches that start clients and wait on their logs (dht_compare.sh, magnet_compare.sh,
# swarm_compare.sh): sourced, not run. Every process goes through `start`, so the script's cleanup can stop them all
# by PID with `stop_all`; waits are bounded and poll by reading a FIFO with a timeout, so no `sleep` process is forked
# on each turn (the loops sample while the measured processes share the machine).
# The functions that return a value set a variable named in their comment (LAST_PID, NOW, MS), not stdout.
# shellcheck disable=SC2034 # LAST_PID, NOW, MS and SLEEP_FD are read by the scripts that source this file.

PIDS=()
alive() { # PID: running (not gone, not a zombie)
    local k v
    [ -r "/proc/$1/status" ] || return 1
    { while read -r k v _; do
        [ "$k" = State: ] && { [ "$v" != Z ]; return; }
    done <"/proc/$1/status"; } 2>/dev/null
    return 1
}
stop_pid() { # PID: TERM, then KILL after 5 s
    local p=$1 i
    if alive "$p"; then
        kill -TERM "$p" 2>/dev/null
        for ((i = 0; i < 50; i++)); do alive "$p" || break; snooze 0.1; done
        alive "$p" && kill -KILL "$p" 2>/dev/null
    fi
    wait "$p" 2>/dev/null
    return 0
}
stop_all() { # every process `start` started and `forget` has not stopped yet
    local p
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    PIDS=()
}
# start NAME CMD...: runs CMD in the background, output in $RUN/NAME.log; the PID is in LAST_PID.
start() {
    local name=$1
    shift
    "$@" >"$RUN/$name.log" 2>&1 </dev/null &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}
forget() { # PID: stop it and drop it from the cleanup list
    local p keep=()
    stop_pid "$1"
    for p in "${PIDS[@]}"; do [ "$p" != "$1" ] && keep+=("$p"); done
    PIDS=("${keep[@]}")
}

open_snooze() { # DIR: the FIFO in DIR that snooze reads from (nothing ever writes to it); call once RUN exists
    mkfifo "$1/.sleep"
    exec {SLEEP_FD}<>"$1/.sleep"
}
snooze() { read -r -t "$1" -u "$SLEEP_FD" _ || true; }
now_us() { NOW=${EPOCHREALTIME/./}; }
wait_log() { # LOG PATTERN SECONDS [PID]: true once LOG contains PATTERN
    local deadline=$((${EPOCHREALTIME/./} + $3 * 1000000))
    while ! grep -aq -- "$2" "$1" 2>/dev/null; do
        now_us
        [ "$NOW" -gt "$deadline" ] && return 1
        [ -n "${4:-}" ] && ! alive "$4" && return 1
        snooze 0.05
    done
}
wait_exit() { # PID SECONDS: true once PID has exited
    local deadline=$((${EPOCHREALTIME/./} + $2 * 1000000))
    while alive "$1"; do
        now_us
        [ "$NOW" -gt "$deadline" ] && return 1
        snooze 0.05
    done
}
log_ms() { # LOG PATTERN -> MS: the epoch milliseconds of the first toybt log line matching PATTERN ("" if none)
    local ts
    MS=""
    ts=$(grep -a -m1 -- "$2" "$1" | sed -n 's/^\[\([0-9T:.-]*Z\) .*/\1/p')
    [ -n "$ts" ] && MS=$(date -u -d "$ts" +%s%3N)
}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
