-- Requests of scripts/bench.sh for wrk 4 (one Lua state per wrk thread).
--
--   wrk … -s wrk.lua -H 'Authorization: Bearer …' URL -- MODE RUN REPLAY_SET REPLAY_KEYS
--
-- MODE:
--   new     a fresh Idempotency-Key per request: n-RUN-<thread>-<counter>
--   replay  keys r-REPLAY_SET-<i>, 0 <= i < REPLAY_KEYS, completed beforehand with the
--           same bodies (scripts/bench.sh seeds them), so every answer is a replay
--   mixed   7 of every 10 requests new, 3 replays
--   plain   the new-write body without a key (the ungated server, the bare ceiling)
-- Bodies are createCustomer bodies; a key's body is a function of the key alone.
--
-- Every answer's status is counted; done() prints one line for scripts/bench.sh:
--   wrk-result s200=… s201=… other=… last_other=… socket_errors=… secs=… p50_us=… p99_us=…

local threads = {}

function setup(thread)
   thread:set("tid", #threads)
   table.insert(threads, thread)
end

local mode, run, set, nkeys
local n = 0
s200, s201, other, last_other = 0, 0, 0, 0

function init(args)
   mode = args[1] or "new"
   run = args[2] or "run"
   set = args[3] or "set"
   nkeys = tonumber(args[4] or "1000")
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
end

local function body(key, tag)
   return '{"name":"Customer ' .. key .. '","email":"' .. tag .. '@example.com"}'
end

local function new_write()
   local key = "n-" .. run .. "-" .. tid .. "-" .. n
   wrk.headers["Idempotency-Key"] = key
   return wrk.format(nil, nil, nil, body(key, "c" .. n))
end

local function replay()
   local i = (tid * 7919 + n) % nkeys
   local key = "r-" .. set .. "-" .. i
   wrk.headers["Idempotency-Key"] = key
   return wrk.format(nil, nil, nil, body(key, "r" .. i))
end

function request()
   n = n + 1
   if mode == "new" then
      return new_write()
   elseif mode == "replay" then
      return replay()
   elseif mode == "mixed" then
      if n % 10 < 3 then
         return replay()
      end
      return new_write()
   end
   wrk.headers["Idempotency-Key"] = nil
   return wrk.format(nil, nil, nil, body("p-" .. run .. "-" .. tid .. "-" .. n, "c" .. n))
end

function response(status, headers, body)
   if status == 200 then
      s200 = s200 + 1
   elseif status == 201 then
      s201 = s201 + 1
   else
      other = other + 1
      last_other = status
   end
end

function done(summary, latency, requests)
   local c200, c201, cother, last = 0, 0, 0, 0
   for _, t in ipairs(threads) do
      c200 = c200 + t:get("s200")
      c201 = c201 + t:get("s201")
      cother = cother + t:get("other")
      if t:get("last_other") ~= 0 then
         last = t:get("last_other")
      end
   end
   local e = summary.errors
   io.write(string.format(
      "wrk-result s200=%d s201=%d other=%d last_other=%d socket_errors=%d secs=%.3f p50_us=%d p99_us=%d\n",
      c200, c201, cother, last, e.connect + e.read + e.write + e.timeout,
      summary.duration / 1e6, latency:percentile(50), latency:percentile(99)))
end
