-- One fixed request for wrk, described by files so run.py never has to quote anything:
--   BENCH_METHOD        GET (default) or POST
--   BENCH_BODY_FILE     raw body, sent byte for byte (e.g. a signed webhook event)
--   BENCH_HEADERS_FILE  one "Name: value" per line (auth token, Content-Type, signature, ...)
-- Usage: BENCH_METHOD=POST BENCH_BODY_FILE=... wrk -s bench/request.lua http://127.0.0.1:PORT/path

wrk.method = os.getenv("BENCH_METHOD") or "GET"

local body_file = os.getenv("BENCH_BODY_FILE")
if body_file and body_file ~= "" then
   local f = assert(io.open(body_file, "rb"))
   wrk.body = f:read("*a")
   f:close()
end

local headers_file = os.getenv("BENCH_HEADERS_FILE")
if headers_file and headers_file ~= "" then
   for line in io.lines(headers_file) do
      local name, value = line:match("^([^:]+):%s*(.-)%s*$")
      if name then
         wrk.headers[name] = value
      end
   end
end
