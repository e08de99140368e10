-- Open loop at a fixed rate: each wrk thread keeps its own schedule of send times spaced
-- 1/RATE apart, and every connection that becomes free claims the next slot and waits for it
-- (delay()). A send whose slot has already passed goes out at once (late), so the arrival rate
-- does not drop when responses slow down, as long as a connection is free.
-- request() runs right before each send and records how late it is against its slot.
-- Usage: wrk -s overhead_open.lua URL -- STREAM MAX_TOKENS MODEL SYSTEM_BYTES RATE_PER_THREAD THREADS
local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
local common = dofile(here .. "overhead_common.lua")
local ffi = require("ffi")

ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } overhead_timespec;
int clock_gettime(int clk_id, overhead_timespec *tp);
]])
local CLOCK_MONOTONIC = 1
local ts = ffi.new("overhead_timespec")

local function now_ms()
   ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
   return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local threads = {}
local interval_ms = 0
local thread_count = 1
local next_slot = nil
local slots = {}
local head, tail = 1, 0
local req = nil
-- Per-thread pacing statistics, read by done() through thread:get().
sends, late_1ms, late_sum_ms, late_max_ms, first_ms, last_ms = 0, 0, 0, 0, 0, 0

function setup(thread)
   thread:set("thread_index", #threads)
   threads[#threads + 1] = thread
end

function init(args)
   common.configure(args)
   local rate = tonumber(args[5])
   if not rate or rate <= 0 then
      error("overhead_open.lua: the 5th argument must be the per-thread rate in req/s")
   end
   interval_ms = 1000 / rate
   thread_count = math.max(tonumber(args[6]) or 1, 1)
   req = wrk.format()
end

function delay()
   local now = now_ms()
   if next_slot == nil then
      -- Stagger the threads' schedules so that their sends interleave evenly.
      next_slot = now + interval_ms * (1 + (thread_index or 0) / thread_count)
   else
      next_slot = next_slot + interval_ms
   end
   tail = tail + 1
   slots[tail] = next_slot
   local wait = next_slot - now
   if wait < 0 then
      return 0
   end
   return math.floor(wait + 0.5)
end

function request()
   local now = now_ms()
   if head <= tail then
      local late = now - slots[head]
      slots[head] = nil
      head = head + 1
      if late > 0 then
         late_sum_ms = late_sum_ms + late
         if late > late_max_ms then
            late_max_ms = late
         end
         if late > 1 then
            late_1ms = late_1ms + 1
         end
      end
   end
   if sends == 0 then
      first_ms = now
   end
   last_ms = now
   sends = sends + 1
   return req
end

function done(summary, latency, requests)
   local n, late1, late_sum, late_max, first, last = 0, 0, 0, 0, nil, nil
   for _, thread in ipairs(threads) do
      local s = thread:get("sends") or 0
      n = n + s
      late1 = late1 + (thread:get("late_1ms") or 0)
      late_sum = late_sum + (thread:get("late_sum_ms") or 0)
      late_max = math.max(late_max, thread:get("late_max_ms") or 0)
      if s > 0 then
         local f, l = thread:get("first_ms"), thread:get("last_ms")
         first = first and math.min(first, f) or f
         last = last and math.max(last, l) or l
      end
   end
   local span = (first and last and last > first) and (last - first) / 1000 or 0
   local extra = string.format(
      '"pacing":{"sends":%d,"late_over_1ms":%d,"late_mean_ms":%.3f,"late_max_ms":%.3f,'
         .. '"send_span_s":%.3f,"send_rate":%.3f}',
      n, late1, n > 0 and late_sum / n or 0, late_max, span, span > 0 and (n - 1) / span or 0)
   common.report(summary, latency, extra)
end
