-- wrk script: POST /v1/orders with a valid order and a unique Idempotency-Key per
-- request (what a well-behaved client sends), so every request is a new order.
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
   thread:set("id", #threads)
   table.insert(threads, thread)
end

function init(args)
   thread_id = id or 0
   math.randomseed(os.time() + thread_id)
   prefix = string.format("bench-%d-%d-", os.time(), math.random(1, 1000000000))
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"customer_id":"bench-customer","currency":"EUR","lines":[' ..
   '{"sku":"SKU-1","quantity":2,"unit_price_minor":1999},' ..
   '{"sku":"SKU-2","quantity":1,"unit_price_minor":500}]}'

function request()
   counter = counter + 1
   wrk.headers["Idempotency-Key"] = prefix .. thread_id .. "-" .. counter
   return wrk.format(nil, "/v1/orders")
end
