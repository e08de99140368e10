-- Closed loop: every connection sends its next request as soon as the previous one is answered.
-- Usage: wrk -s overhead_closed.lua URL -- STREAM MAX_TOKENS MODEL SYSTEM_BYTES
local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
local common = dofile(here .. "overhead_common.lua")

function init(args)
   common.configure(args)
end

function done(summary, latency, requests)
   common.report(summary, latency, nil)
end
