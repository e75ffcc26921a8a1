#!/usr/bin/env bash
# Restart cost of a complete seed, on one large file in the page cache:
#   toybt    first start (no record: full check), restart with a valid record (the goal: under 1 s, no hashing),
#            --recheck, and the time from `toybt seed` starting to serving;
#   sha1     sha1_smol throughput from the hashing bench (the ceiling of any check);
#   libtorrent and Transmission on the same data: first start (full check) and restart with their own resume data.
#
# Usage: benches/restart.sh [SIZE_GIB]      (default 8; knobs: RUNS=5 TOYBT=path WORK_PARENT=/tmp
#                                            CLIENTS=0 to skip libtorrent/Transmission, SHA1_BENCH=0 to skip criterion)
# Needs: hyperfine, openssl, python3-libtorrent (/usr/bin/python3), transmission-cli, ~SIZE+1 GiB free, a release build
# of toybt (built here if TOYBT is unset). The data stays in the page cache (it was just written), so the figures are
# hashing and bookkeeping, not the disk: a cold cache adds the disk's read time to every full check.
set -euo pipefail

SIZE_GIB=${1:-8}
RUNS=${RUNS:-5}
CLIENTS=${CLIENTS:-1}
SHA1_BENCH=${SHA1_BENCH:-1}
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")

die() { echo "restart: $*" >&2; exit 1; }
for tool in hyperfine openssl python3; do command -v "$tool" >/dev/null || die "$tool is not installed"; done
if [ -z "${TOYBT:-}" ]; then
    (cd "$root" && cargo build --release --quiet)
    TOYBT="$root/target/release/toybt"
fi

work=$(mktemp -d "${WORK_PARENT:-/tmp}/toybt-restart.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

need=$(( (SIZE_GIB + 1) * 1024 * 1024 * 1024 ))
avail=$(df --output=avail -B1 "$work" | tail -1)
[ "$avail" -ge "$need" ] || die "$SIZE_GIB GiB of data needs $need bytes free in $work, only $avail are"

bytes=$(( SIZE_GIB * 1024 * 1024 * 1024 ))
echo "== $SIZE_GIB GiB of data in $work"
# AES-CTR of zeros: incompressible and far faster than /dev/urandom. openssl ends on SIGPIPE when head has enough.
{ openssl enc -aes-128-ctr -nosalt -pass pass:toybt -pbkdf2 -in /dev/zero 2>/dev/null || true; } |
    head -c "$bytes" >"$work/data.bin"
[ "$(stat -c %s "$work/data.bin")" = "$bytes" ] || die "could not write $bytes bytes of data"
"$TOYBT" create "$work/data.bin" -d -o "$work/data.torrent" 2>&1 | grep '^wrote' || true
sync

mib_s() { python3 -c "import sys; print(f'{$bytes / float(sys.argv[1]) / 2**20:.0f} MiB/s')" "$1"; }

# A complete download restarted with --seed-time 0 checks its data, finds it complete and exits (trackerless, so no
# tracker to tell): the whole restart as one command hyperfine can time.
restart_cmd="$TOYBT leech $work/data.torrent -o $work --seed-time 0 --port 0 --bind 127.0.0.1 --no-dht"
export RUST_LOG=info
# The resume record lives in the state folder: this run's own, removed with the rest of the work folder.
export XDG_STATE_HOME="$work/state"

echo "== toybt"
start=$(date +%s.%N)
$restart_cmd 2>"$work/first.log"
first=$(python3 -c "import time, sys; print(f'{time.time() - float(sys.argv[1]):.2f}')" "$start")
echo "first start, no record (full check): ${first} s ($(mib_s "$first")); $(grep -o 're-hashed [0-9]* piece(s)' "$work/first.log")"
$restart_cmd 2>"$work/again.log"
echo "restart with the record: $(grep -o 're-hashed.*' "$work/again.log")"
hyperfine -N --runs "$RUNS" --warmup 1 --export-json "$work/restart.json" "$restart_cmd" >/dev/null
hyperfine -N --runs 2 --export-json "$work/recheck.json" "$restart_cmd --recheck" >/dev/null
read -r restart_mean restart_sd < <(python3 -c "import json; r = json.load(open('$work/restart.json'))['results'][0]; print(r['mean'], r['stddev'] or 0)")
recheck_mean=$(python3 -c "import json; print(json.load(open('$work/recheck.json'))['results'][0]['mean'])")
printf 'restart with a valid record: %.3f s +- %.3f (mean of %d)\n' "$restart_mean" "$restart_sd" "$RUNS"
printf -- '--recheck (full check): %.2f s (%s)\n' "$recheck_mean" "$(mib_s "$recheck_mean")"

# The seed's view: from `toybt seed` starting to `peer listening on` (serving), with the record written above.
seed_ready=$(python3 - "$TOYBT" "$work" <<'PY'
import os, signal, subprocess, sys, time
toybt, work = sys.argv[1], sys.argv[2]
t0 = time.monotonic()
p = subprocess.Popen([toybt, "seed", f"{work}/data.torrent", f"{work}/data.bin", "--port", "0", "--bind", "127.0.0.1", "--no-dht"],
                     stderr=subprocess.PIPE, text=True)
rehashed = "?"
for line in p.stderr:
    if "re-hashed" in line:
        rehashed = line.split("re-hashed ")[1].split(" piece")[0]
    if "peer listening on" in line:
        print(f"{time.monotonic() - t0:.3f} s ({rehashed} pieces hashed)")
        break
p.send_signal(signal.SIGTERM)
p.communicate(timeout=30)
PY
)
echo "seed restart, start to serving: $seed_ready"

if [ "$SHA1_BENCH" = 1 ]; then
    echo "== sha1_smol (cargo bench --bench hashing -- verify_piece)"
    (cd "$root" && cargo bench --quiet --bench hashing -- verify_piece --warm-up-time 1 --measurement-time 3 2>/dev/null) |
        grep -E '^verify_piece|thrpt' | paste - - | sed -E 's/ +/ /g; s/time:.*thrpt: */thrpt: /'
fi

[ "$CLIENTS" = 1 ] || exit 0

echo "== libtorrent (python3-libtorrent, default settings, in-process timing from add_torrent to seeding)"
/usr/bin/python3 - "$work" <<'PY'
import sys, time
import libtorrent as lt
work = sys.argv[1]
ses = lt.session({"listen_interfaces": "127.0.0.1:0", "enable_dht": False, "enable_lsd": False,
                  "enable_upnp": False, "enable_natpmp": False,
                  "alert_mask": lt.alert.category_t.status_notification | lt.alert.category_t.storage_notification})
info = lt.torrent_info(f"{work}/data.torrent")

def until_seeding(params):
    t0 = time.monotonic()
    h = ses.add_torrent(params)
    while h.status().state != lt.torrent_status.seeding:
        time.sleep(0.002)
    return h, time.monotonic() - t0

def fresh():
    p = lt.add_torrent_params()
    p.ti = info
    p.save_path = work
    return p

h, full = until_seeding(fresh())
print(f"first start, no resume data (full check): {full:.2f} s")
h.save_resume_data(lt.torrent_handle.save_info_dict)
resume = None
deadline = time.monotonic() + 30
while resume is None and time.monotonic() < deadline:
    ses.wait_for_alert(1000)
    for a in ses.pop_alerts():
        if isinstance(a, lt.save_resume_data_alert):
            resume = lt.write_resume_data_buf(a.params)
ses.remove_torrent(h)
time.sleep(0.5)
times = []
for _ in range(3):
    p = lt.read_resume_data(resume)
    p.save_path = work
    h, t = until_seeding(p)
    times.append(t)
    ses.remove_torrent(h)
    time.sleep(0.5)
print(f"restart with resume data: {min(times):.3f} s (best of 3: {', '.join(f'{t:.3f}' for t in times)})")
PY

echo "== Transmission (transmission-cli 3.00: exec to its first 'Seeding' status line, which it prints ~2.7 s after start)"
python3 - "$work" <<'PY'
import json, os, select, signal, socket, subprocess, sys, time
work = sys.argv[1]
cfg = f"{work}/transmission"
os.makedirs(cfg, exist_ok=True)
with open(f"{cfg}/settings.json", "w") as f:
    json.dump({"dht-enabled": False, "lpd-enabled": False, "pex-enabled": False, "port-forwarding-enabled": False,
               "blocklist-enabled": False, "utp-enabled": False, "bind-address-ipv4": "127.0.0.1",
               "rpc-enabled": False}, f)

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port

def until_seeding():
    # transmission-cli writes its status line only to a terminal.
    master, slave = os.openpty()
    t0 = time.monotonic()
    port = str(free_port())
    p = subprocess.Popen(["transmission-cli", "-g", cfg, "-w", work, "-p", port, f"{work}/data.torrent"],
                         stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    seen, took = b"", None
    while took is None and time.monotonic() - t0 < 600:
        if select.select([master], [], [], 1.0)[0]:
            try:
                seen += os.read(master, 65536)
            except OSError:
                break
            if b"Seeding" in seen:
                took = time.monotonic() - t0
    p.send_signal(signal.SIGINT)  # it saves its resume file on the way out after SIGINT (not after SIGTERM)
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
    os.close(master)
    return took

full = until_seeding()
print(f"first start, no resume file (full check): {full:.2f} s")
times = [until_seeding() for _ in range(3)]
print(f"restart with its resume file: {min(times):.2f} s (best of 3: {', '.join(f'{t:.2f}' for t in times)})")
PY
