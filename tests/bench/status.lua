-- wrk script: GET /status (the public status page), paced at WRK_RATE requests/s in all
-- (the same send-slot schedule as load.lua), as a browser asks for it (gzip accepted).
local nthreads = 0
function setup(thread)
  nthreads = nthreads + 1
  thread:set("thread_id", nthreads)
end

local rate = tonumber(os.getenv("WRK_RATE") or "0")
local threads = tonumber(os.getenv("WRK_THREADS") or "1")

function init(args)
  wrk.method = "GET"
  wrk.path = os.getenv("WRK_PATH") or "/status"
  wrk.headers["Accept-Encoding"] = "gzip, deflate, br"  -- what every browser sends
end

if rate > 0 then
  local ffi = require("ffi")
  ffi.cdef[[
    typedef struct { long tv_sec; long tv_usec; } status_timeval;
    int gettimeofday(status_timeval *tv, void *tz);
  ]]
  local tv = ffi.new("status_timeval")
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
