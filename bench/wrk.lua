-- The one wrk script of bench/run.py. Requests come from a file, results leave as JSON from
-- done(), so run.py never quotes a request nor parses wrk's text.
--   BENCH_REQUESTS  one request per line: PATH <TAB> Name: value <TAB> ... <TAB> BODY (BODY may be
--                   empty). One line: wrk builds that request once. Several: each wrk thread takes
--                   every BENCH_THREADS-th line and goes round them (a token per user, an event per
--                   pay, ...).
--   BENCH_METHOD    GET (default) or POST
--   BENCH_THREADS   wrk's -t
--   BENCH_ONCE      "1": every line is sent once (write routes: each request uses up what it
--                   was given), again later only if it was shed (429); a thread stops when all
--                   its lines are answered and leaves a file in BENCH_DONE_DIR, so run.py can end
--                   wrk early
--   BENCH_ANSWERS   with BENCH_ONCE: a directory where each thread writes the answers' bodies,
--                   one a line (what seeding requests made: pay ids, charges)
--   BENCH_RESULT    the JSON file done() writes

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clock_id, bench_timespec *tp);
]]
local clock = ffi.new("bench_timespec")
local function now()
   ffi.C.clock_gettime(1, clock) -- CLOCK_MONOTONIC: one clock for every thread
   return tonumber(clock.tv_sec) + tonumber(clock.tv_nsec) * 1e-9
end

local function split(line)
   local fields, start = {}, 1
   while true do
      local tab = string.find(line, "\t", start, true)
      if not tab then
         table.insert(fields, string.sub(line, start))
         return fields
      end
      table.insert(fields, string.sub(line, start, tab - 1))
      start = tab + 1
   end
end

local method = os.getenv("BENCH_METHOD") or "GET"
local once = os.getenv("BENCH_ONCE") == "1"
local lines = {}
for line in io.lines(os.getenv("BENCH_REQUESTS")) do
   if line ~= "" then
      table.insert(lines, line)
   end
end

local function parse(line)
   local fields = split(line)
   local headers = {}
   for i = 2, #fields - 1 do
      local name, value = fields[i]:match("^([^:]+):%s*(.-)%s*$")
      headers[name] = value
   end
   local body = fields[#fields]
   if #fields < 2 or body == "" then
      body = nil
   end
   return fields[1], headers, body
end

-- Per thread (wrk's thread:get reads these globals in done()).
sent, answered, shed, t0, t1 = 0, 0, 0, nil, nil

if #lines == 1 and not once then
   -- One fixed request: wrk formats it once and sends it again and again.
   wrk.method = method
   wrk.path, wrk.headers, wrk.body = parse(lines[1])
else
   local mine, owned, by_id, tries, next_one, checked = {}, 0, {}, {}, 1, false

   function init(args)
      local total = tonumber(os.getenv("BENCH_THREADS")) or 1
      for i, line in ipairs(lines) do
         if (i - 1) % total == thread_index then
            local path, headers, body = parse(line)
            -- payapi echoes X-Request-Id: it tells which request an answer is for.
            local id = "bench-" .. thread_index .. "-" .. i
            headers["X-Request-Id"] = id
            by_id[id] = wrk.format(method, path, headers, body)
            tries[id] = 0
            table.insert(mine, by_id[id])
         end
      end
      owned = #mine
   end

   function request()
      if not checked and thread_index == 0 then
         checked = true -- wrk calls request() once in thread 0 to check the script; it is not sent
         return mine[1]
      end
      if next_one > #mine then
         if once then
            return "" -- all sent: the connection waits, sending nothing, until the thread stops
         end
         next_one = 1
      end
      t0 = t0 or now()
      sent = sent + 1
      next_one = next_one + 1
      return mine[next_one - 1]
   end

   if once then
      local keep, answers = os.getenv("BENCH_ANSWERS"), nil

      function response(status, headers, body)
         local id = headers["X-Request-Id"] or headers["x-request-id"]
         if status == 429 and id and tries[id] < 100 then
            -- Shed (906, "busy, retry"): sent again after the others, as a client would.
            shed = shed + 1
            tries[id] = tries[id] + 1
            table.insert(mine, by_id[id])
            return
         end
         answered = answered + 1
         if keep and keep ~= "" then
            answers = answers or assert(io.open(keep .. "/" .. thread_index, "w"))
            answers:write(body, "\n")
         end
         if answered >= owned then
            t1 = now()
            if answers then
               answers:close()
            end
            local f = io.open(os.getenv("BENCH_DONE_DIR") .. "/" .. thread_index, "w")
            f:close()
            wrk.thread:stop()
         end
      end
   end
end

local threads = {}

function setup(thread)
   thread:set("thread_index", #threads)
   table.insert(threads, thread)
end

local function encode(value)
   local kind = type(value)
   if kind == "table" then
      local parts = {}
      if #value > 0 then
         for _, item in ipairs(value) do
            table.insert(parts, encode(item))
         end
         return "[" .. table.concat(parts, ",") .. "]"
      end
      for key, item in pairs(value) do
         table.insert(parts, string.format("%q:%s", key, encode(item)))
      end
      return "{" .. table.concat(parts, ",") .. "}"
   elseif kind == "number" then
      if value ~= value or value == math.huge or value == -math.huge then
         return "null" -- no answer at all: wrk's mean is NaN
      end
      return string.format("%.17g", value)
   elseif kind == "nil" then
      return "null"
   end
   return string.format("%q", tostring(value))
end

function done(summary, latency, requests)
   local per_thread = {}
   for _, thread in ipairs(threads) do
      table.insert(per_thread, {sent = thread:get("sent"), answered = thread:get("answered"),
                                shed = thread:get("shed"), t0 = thread:get("t0"), t1 = thread:get("t1")})
   end
   local ms = function(us) return us / 1000 end
   local result = {
      requests = summary.requests,
      duration_s = summary.duration / 1e6,
      bytes = summary.bytes,
      errors = summary.errors, -- connect, read, write, timeout; status: non-2xx/3xx answers
      latency_ms = {mean = ms(latency.mean), stdev = ms(latency.stdev), min = ms(latency.min), max = ms(latency.max),
                    p50 = ms(latency:percentile(50)), p75 = ms(latency:percentile(75)),
                    p90 = ms(latency:percentile(90)), p99 = ms(latency:percentile(99))},
      threads = per_thread,
      lines = #lines,
   }
   local f = assert(io.open(os.getenv("BENCH_RESULT"), "w"))
   f:write(encode(result))
   f:close()
end
