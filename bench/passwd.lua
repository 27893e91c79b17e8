-- POST /rest/pay/passwd {"passwd":P,"old_passwd":P} rotating over many users.
-- One user for all connections would make parallel changes of the same password collide on
-- payapi's compare-and-set (910 "设置已被修改"), which measures the conflict, not bcrypt. Each wrk
-- thread takes its own slice of the users and cycles through it, so a user is (almost) never
-- changed by two requests at once; run.py gives every wrk run users no earlier run touched (a
-- finished run may leave requests queued in the server).
--   BENCH_TOKENS_FILE   one JWT per line (each user has pay password P)
--   BENCH_BODY_FILE     the JSON body
--   BENCH_HEADERS_FILE  common headers, "Name: value" per line (no auth)
--   BENCH_THREADS       wrk's -t

local thread_count = 0
local threads = {}

function setup(thread)
   thread:set("thread_index", thread_count)
   thread:set("sent", 0)
   thread_count = thread_count + 1
   table.insert(threads, thread)
end

local tokens = {}
for line in io.lines(os.getenv("BENCH_TOKENS_FILE")) do
   if line ~= "" then
      table.insert(tokens, line)
   end
end

local f = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
local body = f:read("*a")
f:close()

local headers = {}
local headers_file = os.getenv("BENCH_HEADERS_FILE")
if headers_file and headers_file ~= "" then
   for line in io.lines(headers_file) do
      local name, value = line:match("^([^:]+):%s*(.-)%s*$")
      if name then
         headers[name] = value
      end
   end
end

local mine = {}
local next_one = 1

function init(args)
   -- wrk's -t count, from run.py (the thread index comes from setup() above).
   local total = tonumber(os.getenv("BENCH_THREADS")) or 1
   for i, token in ipairs(tokens) do
      if (i - 1) % total == thread_index then
         table.insert(mine, token)
      end
   end
   if #mine == 0 then
      mine = tokens
   end
end

local verified = false

function request()
   headers["auth"] = mine[next_one]
   next_one = next_one % #mine + 1
   if thread_index == 0 and not verified then
      verified = true  -- wrk calls request() once in thread 0 to check the script; nothing is sent
   else
      sent = sent + 1
   end
   return wrk.format("POST", nil, headers, body)
end

-- How many requests were sent: run.py waits until the server has answered (logged) them all,
-- since a finished run leaves its bcrypt requests queued in the server.
function done(summary, latency, requests)
   local total = 0
   for _, thread in ipairs(threads) do
      total = total + thread:get("sent")
   end
   io.write(string.format("bench-sent: %d\n", total))
end
