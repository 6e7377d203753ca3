-- wrk script: POST /api/sync with unique event ids.
-- args: batch (0 = one event as the body, n = {"events": [n events]}), id prefix, occurred_at, api key.
-- env WRK_RATE > 0: paced load, about that many requests/s in all. Read at load time because wrk
-- decides whether a script has delay() before any thread's init() runs.
local nthreads = 0
function setup(thread)
  nthreads = nthreads + 1
  thread:set("thread_id", nthreads)  -- a global in that thread's own Lua state
end

local counter, batch, prefix, occurred = 0, 0, "", ""
local rate = tonumber(os.getenv("WRK_RATE") or "0")
local threads = tonumber(os.getenv("WRK_THREADS") or "2")

function init(args)
  batch = tonumber(args[1])
  prefix = args[2] .. "-" .. tostring(thread_id) .. "-"
  occurred = args[3]
  wrk.method = "POST"
  wrk.path = "/api/sync"
  wrk.headers["Content-Type"] = "application/json"
  if args[4] ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. args[4]
  end
end

-- env WRK_IDS=uuid4: random UUIDv4 event ids (what most producers send) instead of prefix-counter.
local uuid4 = os.getenv("WRK_IDS") == "uuid4"
local seeded = false
local function next_id()
  counter = counter + 1
  if not uuid4 then return prefix .. counter end
  if not seeded then math.randomseed(os.time() * 1000 + thread_id * 7919 + counter); seeded = true end
  local r = math.random
  return string.format("%04x%04x-%04x-4%03x-%04x-%04x%04x%04x", r(0, 65535), r(0, 65535), r(0, 65535),
                       r(0, 4095), 32768 + r(0, 16383), r(0, 65535), r(0, 65535), r(0, 65535))
end

-- env WRK_PROPS=meters: properties the meter scenarios' meters read (tests/bench/meters.py): tokens
-- 1-4000, model one of 100, region one of 5, user one of 20,000, ms 1-900 with 2 decimals.
local meter_props = os.getenv("WRK_PROPS") == "meters"
local regions = {"eu", "us", "ap", "sa", "af"}
local props_seeded = false
local function props()
  if not meter_props then return '{"path":"/pricing","plan":"pro","ref":"bench"}' end
  if not props_seeded then math.randomseed(thread_id * 104729 + os.time()); props_seeded = true end
  local r = math.random
  return string.format('{"path":"/pricing","tokens":%d,"model":"model-%d","region":"%s","user":"user-%d",' ..
                       '"ms":%d.%02d}', r(1, 4000), r(0, 99), regions[r(1, 5)], r(0, 19999), r(1, 899), r(0, 99))
end

local function event()
  return '{"event_id":"' .. next_id() .. '","type":"page_view","occurred_at":"' .. occurred ..
         '","quantity":1,"properties":' .. props() .. '}'
end

function request()
  local body
  if batch == 0 then
    body = event()
  else
    local parts = {}
    for i = 1, batch do parts[i] = event() end
    body = '{"events":[' .. table.concat(parts, ",") .. ']}'
  end
  return wrk.format(nil, nil, nil, body)
end

if rate > 0 then
  -- A schedule of send slots per thread, `interval` ms apart: a connection that is free takes the
  -- next slot and waits for it (or sends at once when behind). Enough connections make this open
  -- loop: the offered rate does not drop when answers slow down.
  local ffi = require("ffi")
  ffi.cdef[[
    typedef struct { long tv_sec; long tv_usec; } bench_timeval;
    int gettimeofday(bench_timeval *tv, void *tz);
  ]]
  local tv = ffi.new("bench_timeval")
  local function now_ms()
    ffi.C.gettimeofday(tv, nil)
    return tonumber(tv.tv_sec) * 1000 + tonumber(tv.tv_usec) / 1000
  end
  local interval = 1000 * threads / rate
  local next_slot = 0
  function delay()
    local t = now_ms()
    local slot = math.max(next_slot, t)
    next_slot = slot + interval
    return slot - t
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"duration_us":%d,"requests":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
