-- Allocate vm N, later release vm N, alternating: one pair is two requests.
-- wrk gives no per-connection state and keeps many requests in flight, so the release of vm N
-- is sent LAG requests after its allocate, well after the allocate has been answered; the first
-- LAG requests are allocations only. About LAG addresses stay allocated at any time.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "report.lua")

local LAG = tonumber(os.getenv("BENCH_LAG") or "256")
local next_alloc, next_release, alloc_turn = 1, 1, true
local primed = false

local function allocate(n)
  return wrk.format("POST", "/api/v1/ip/allocate", json_headers, '{"vm_id":"' .. vm_id(n) .. '"}')
end

function request()
  -- wrk calls request() once to inspect it without sending it: that call must not advance.
  if not primed then
    primed = true
    return allocate(next_alloc)
  end
  if alloc_turn or next_alloc - next_release < LAG then
    alloc_turn = false
    next_alloc = next_alloc + 1
    return allocate(next_alloc - 1)
  end
  alloc_turn = true
  next_release = next_release + 1
  return wrk.format("DELETE", "/api/v1/ip/release/" .. vm_id(next_release - 1))
end
