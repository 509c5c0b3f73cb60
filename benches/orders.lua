-- wrk script: POST unique orders (idempotent creates) for members known by customer_no.
-- WRK_MODE=replay sends the same order every time (the idempotent retry path).
local counter = 0
-- `tid` is set per thread by setup(); each thread has its own Lua state.
local key = os.getenv("HUIYUAN_BENCH_KEY")
local members = tonumber(os.getenv("HUIYUAN_BENCH_MEMBERS") or "1000")
local replay = os.getenv("WRK_MODE") == "replay"
local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function request()
  counter = counter + 1
  local n = replay and 1 or counter
  local body = string.format(
    '{"channel":"web","order_no":"B-%d-%d","identity":{"kind":"customer_no","value":"BM%d"},' ..
    '"placed_at":"2026-11-01T10:00:00Z","lines":[{"sku":"SKU-%d","quantity":%d,"unit_price":1999},' ..
    '{"sku":"SKU-%d","quantity":1,"unit_price":5900,"discount":500}],"shipping_fee":800}',
    tid, n, (n % members) + 1, n % 200, (n % 3) + 1, (n * 7) % 200)
  return wrk.format("POST", "/v1/orders", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. key,
  }, body)
end

function done(summary, latency, requests)
  io.write(string.format("p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f requests=%d errors=%d\n",
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    summary.requests, summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
