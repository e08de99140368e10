-- Shared by overhead_closed.lua and overhead_open.lua (bench/overhead.py runs them with wrk).
-- Script arguments (after `--`): stream (0|1), max_tokens, model, system_bytes (a system message
-- of that many bytes goes first when > 0, so that the prompt spans whole prefix blocks), then
-- for the open loop the per-thread rate in requests per second and the number of threads.
-- done() prints one line "OVERHEAD_JSON {...}" with exact percentiles (microseconds),
-- counts and errors, which bench/overhead.py parses instead of wrk's text.

local common = {}

local FILLER = "You are a helpful assistant. "

function common.body(args)
   local stream = args[1] == "1"
   local max_tokens = tonumber(args[2]) or 8
   local model = args[3] or "sim-llama-8b"
   local system_bytes = tonumber(args[4]) or 0
   local system = ""
   if system_bytes > 0 then
      local text = string.rep(FILLER, math.ceil(system_bytes / #FILLER)):sub(1, system_bytes)
      system = '{"role":"system","content":"' .. text .. '"},'
   end
   local body = string.format(
      '{"model":"%s","messages":[%s{"role":"user","content":"Hello, how are you today?"}],'
         .. '"max_tokens":%d',
      model, system, max_tokens)
   if stream then
      body = body .. ',"stream":true'
   end
   return body .. "}"
end

function common.configure(args)
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
   wrk.body = common.body(args)
end

local function num(x)
   return string.format("%.3f", tonumber(x) or 0)
end

function common.report(summary, latency, extra)
   local e = summary.errors
   local parts = {
      '"requests":' .. num(summary.requests),
      '"duration_us":' .. num(summary.duration),
      '"bytes":' .. num(summary.bytes),
      '"errors":{"connect":' .. num(e.connect) .. ',"read":' .. num(e.read)
         .. ',"write":' .. num(e.write) .. ',"status":' .. num(e.status)
         .. ',"timeout":' .. num(e.timeout) .. '}',
      '"latency_us":{"min":' .. num(latency.min) .. ',"max":' .. num(latency.max)
         .. ',"mean":' .. num(latency.mean) .. ',"stdev":' .. num(latency.stdev)
         .. ',"p50":' .. num(latency:percentile(50)) .. ',"p75":' .. num(latency:percentile(75))
         .. ',"p90":' .. num(latency:percentile(90)) .. ',"p99":' .. num(latency:percentile(99))
         .. ',"p99_9":' .. num(latency:percentile(99.9)) .. '}',
   }
   if extra then
      parts[#parts + 1] = extra
   end
   io.write("OVERHEAD_JSON {" .. table.concat(parts, ",") .. "}\n")
end

return common
