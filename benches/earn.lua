-- wrk script: POST unique paid orders that earn loyalty points, for members that exist.
-- Each request is a new order number (an idempotent create), 1 to 3 lines, placed within the last 48 hours
-- (live traffic: the return window is open, so the points are pending and nothing matures during the run),
-- for a member named by member_id on even requests and by customer_no identity on odd ones. Members are
-- 1..HUIYUAN_BENCH_MEMBERS with customer_no BM<id>.
local counter = 0
local key = os.getenv("HUIYUAN_BENCH_KEY")
local members = tonumber(os.getenv("HUIYUAN_BENCH_MEMBERS") or "1000")
local run = os.getenv("HUIYUAN_BENCH_RUN") or "E"
local threads = {}
local started = os.time()

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

local function line(n, i)
  local sku = (n * 7 + i * 13) % 500
  local qty = (n + i) % 3 + 1
  local price = 990 + ((n * 31 + i * 17) % 40) * 250
  local discount = (i == 2) and 300 or 0
  return string.format('{"sku":"SKU-%d","quantity":%d,"unit_price":%d,"discount":%d}', sku, qty, price, discount)
end

function request()
  counter = counter + 1
  local n = counter
  -- Spread buyers over all members; threads start at different offsets.
  local member = ((n * 7919 + tid * 104729) % members) + 1
  local buyer
  if n % 2 == 0 then
    buyer = string.format('"member_id":%d', member)
  else
    buyer = string.format('"identity":{"kind":"customer_no","value":"BM%d"}', member)
  end
  local lines = {}
  for i = 1, (n % 3) + 1 do
    lines[i] = line(n, i)
  end
  local placed_at = os.date("!%Y-%m-%dT%H:%M:%SZ", started - 60 - (n * 37) % (48 * 3600))
  local body = string.format(
    '{"channel":"web","order_no":"%s-%d-%d",%s,"status":"paid","placed_at":"%s","lines":[%s],"shipping_fee":800}',
    run, tid, n, buyer, placed_at, table.concat(lines, ","))
  return wrk.format("POST", "/v1/orders", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. key,
  }, body)
end

function done(summary, latency, requests)
  io.write(string.format("p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f requests=%d non2xx=%d socket_errors=%d\n",
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    summary.requests, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
