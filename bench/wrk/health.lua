-- GET /api/v1/health: the HTTP stack alone, no store access.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "report.lua")

wrk.method = "GET"
wrk.path = "/api/v1/health"
