-- wrk script for benches/tracker_load.sh: announces from PEERS distinct peers spread over the swarms listed in a file.
-- Usage: wrk ... -s tracker_load.lua URL -- HASHES_FILE PEERS [close]
--   HASHES_FILE  one 40-hex info hash per line (the swarms)
--   PEERS        how many distinct peers (distinct port and peer_id; every peer is 127.0.0.1)
--   close        send `Connection: close`, so every announce is a new TCP connection
-- Half the peers of each swarm are seeds (left=0). Each wrk thread starts at a different peer so threads do not repeat each other.

local threads = {}

local function url_encode_hex(hex)
  return (hex:gsub("%x%x", function(b) return "%" .. b:upper() end))
end

local function read_hashes(path)
  local hashes = {}
  for line in io.lines(path) do
    local h = line:match("^(%x+)$")
    if h and #h == 40 then
      hashes[#hashes + 1] = url_encode_hex(h)
    end
  end
  assert(#hashes > 0, "no info hashes in " .. path)
  return hashes
end

function setup(thread)
  thread:set("id", #threads)
  threads[#threads + 1] = thread
end

function init(args)
  local hashes = read_hashes(args[1])
  local peers = tonumber(args[2])
  assert(peers and peers >= 1 and peers <= 50000, "PEERS must be 1..50000 (ports 10000 + n)")
  local headers = {}
  if args[3] == "close" then
    headers["Connection"] = "close"
  end
  -- Every peer's request is built once here, so that per request wrk spends its time on the connection, not on
  -- string formatting in Lua: the load generator shares a 2-core machine with the server it measures.
  requests = {}
  for p = 0, peers - 1 do
    local swarm = hashes[(p % #hashes) + 1]
    -- Seed or not by the peer's rank within its swarm, so every swarm has both.
    local left = (math.floor(p / #hashes) % 2 == 0) and 0 or 1048576
    local path = string.format(
      "/announce?info_hash=%s&peer_id=-BENCH-%013d&port=%d&uploaded=0&downloaded=0&left=%d&compact=1&numwant=50",
      swarm, p, 10000 + p, left)
    requests[p + 1] = wrk.format("GET", path, headers)
  end
  count = peers
  -- Spread the threads over the peer space; `id` is set by setup().
  counter = (tonumber(id) or 0) * 7919
end

function request()
  counter = counter + 1
  return requests[(counter % count) + 1]
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format("RESULT announces_per_s=%.0f p50_ms=%.3f p99_ms=%.3f requests=%d non2xx=%d "
    .. "connect_err=%d read_err=%d write_err=%d timeouts=%d\n",
    summary.requests / seconds, latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.requests,
    e.status, e.connect, e.read, e.write, e.timeout))
end
