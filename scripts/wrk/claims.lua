-- wrk script: flash-sale claims with real user tokens, as an outside client sends them.
-- Reads TEMPLATES (comma-separated ids) and TOKENS_FILE (one "user token" per line) from the
-- environment. Each request claims the next template for a random user (as in a real sale:
-- user ids in order would make the database's index inserts unrealistically local), with a fresh
-- Idempotency-Key. wrk counts the answers that were not 2xx; p50/p99 are printed at the end.
local templates, tokens = {}, {}
for id in string.gmatch(os.getenv("TEMPLATES") or "", "[^,]+") do
  templates[#templates + 1] = id
end
for line in io.lines(os.getenv("TOKENS_FILE")) do
  tokens[#tokens + 1] = line
end

local counter, threads = 0, 0

-- Runs in the main state: numbers the threads so keys are unique across them.
function setup(thread)
  threads = threads + 1
  thread:set("id", "t" .. threads)
end

function request()
  counter = counter + 1
  local tok = tokens[math.random(#tokens)]
  local tpl = templates[(counter % #templates) + 1]
  return wrk.format("POST", "/api/v1/templates/" .. tpl .. "/claim", {
    ["Authorization"] = "Bearer " .. tok,
    ["Idempotency-Key"] = id .. "-" .. counter,
  }, "")
end

function done(summary, latency, requests)
  io.write(string.format("p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
