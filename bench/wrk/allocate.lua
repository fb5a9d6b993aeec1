-- POST /api/v1/ip/allocate, a new vm_id on every request (each answer should be 201).
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "report.lua")

local n = 0

function request()
  n = n + 1
  return wrk.format("POST", "/api/v1/ip/allocate", json_headers, '{"vm_id":"' .. vm_id(n) .. '"}')
end
