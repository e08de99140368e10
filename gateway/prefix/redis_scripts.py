"""Lua scripts of the Redis prefix index (one round trip per lookup, record, truncate, sync).

Chain scripts get KEYS[1] = the chain's base key ``<prefix>{<h_1 hex>}``, ARGV[1] = the chain as
packed big-endian u64s, ARGV[2] = G (marker stride) and ARGV[3] = H (exact head length).

* Marker ``KEYS[1] .. <raw 8 bytes of h_i> .. <backend>`` = last recorded time in ms: the
  backend held the chain through block i (1-based). Written for every *marked* block (i <= H or
  i a multiple of G) and for the last block of each recorded chain.
* End bits ``KEYS[1] .. "e" .. <raw 8 bytes of h_q> .. <backend>``: a bitmap (SETBIT) with bit r
  set when a chain through marked block q ended at block q + r (0 < r < G), so lookups only
  check the chain ends that exist instead of every block up to the next mark.

A chain hash implies its whole prefix, so markers are monotone along a chain: the longest held
prefix is a binary search over marked positions, then a check of the recorded ends after the
last held mark. Every key a script touches shares KEYS[1]'s hash tag (one Cluster slot).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

_CHAIN_PRELUDE = """
local base = KEYS[1]
local blob = ARGV[1]
local G = tonumber(ARGV[2])
local H = tonumber(ARGV[3])
local n = math.floor(#blob / 8)
local sub = string.sub
local function hash_at(i) return sub(blob, 8 * i - 7, 8 * i) end
local marks = {}
for i = 1, math.min(H, n) do marks[#marks + 1] = i end
for i = (math.floor(H / G) + 1) * G, n, G do marks[#marks + 1] = i end
local function longest(ok, upto)
  if upto < 1 or not ok(1) then return 0 end
  if ok(upto) then return upto end
  local lo, hi = 1, upto - 1
  while lo < hi do
    local mid = math.floor((lo + hi + 1) / 2)
    if ok(mid) then lo = mid else hi = mid - 1 end
  end
  return lo
end
local function after(k) return (marks[k + 1] or (n + 1)) - 1 end
local function ends_key(i, be) return base .. 'e' .. hash_at(i) .. be end
local function set_bits(bits, from, upto)
  local found = {}
  if not bits then return found end
  for r = 1, math.min(upto - from, #bits * 8 - 1) do
    local byte = string.byte(bits, math.floor(r / 8) + 1)
    if bit.band(bit.rshift(byte, 7 - r % 8), 1) == 1 then found[#found + 1] = from + r end
  end
  return found
end
local function last_mark_before(i)
  local q = 0
  for k = 1, #marks do
    if marks[k] < i then q = marks[k] else break end
  end
  return q
end
"""

# ARGV[4..]: backend, cutoff_ms pairs. Returns one matched-block count per backend, in order.
LOOKUP_LUA = (
    _CHAIN_PRELUDE
    + """
local m = (#ARGV - 3) / 2
local bes, cuts, heads = {}, {}, {}
for j = 1, m do
  bes[j] = ARGV[2 + 2 * j]
  cuts[j] = tonumber(ARGV[3 + 2 * j])
  heads[j] = base .. hash_at(1) .. bes[j]
end
if m == 0 or n == 0 then return {} end
heads = redis.call('MGET', unpack(heads))
local out, held, mask_keys, mask_owner = {}, {}, {}, {}
for j = 1, m do
  local cut, be = cuts[j], bes[j]
  local k = 0
  if heads[j] and tonumber(heads[j]) >= cut then
    k = longest(function(k)
      if k == 1 then return true end
      local v = redis.call('GET', base .. hash_at(marks[k]) .. be)
      return v and tonumber(v) >= cut
    end, #marks)
  end
  held[j] = k
  out[j] = k > 0 and marks[k] or 0
  if k > 0 and after(k) > marks[k] then
    mask_keys[#mask_keys + 1] = ends_key(marks[k], be)
    mask_owner[#mask_keys] = j
  end
end
if #mask_keys > 0 then
  local masks = redis.call('MGET', unpack(mask_keys))
  local keys, owner, pos = {}, {}, {}
  for q = 1, #mask_keys do
    local j = mask_owner[q]
    for _, i in ipairs(set_bits(masks[q], marks[held[j]], after(held[j]))) do
      keys[#keys + 1] = base .. hash_at(i) .. bes[j]
      owner[#keys] = j
      pos[#keys] = i
    end
  end
  if #keys > 0 then
    local vals = redis.call('MGET', unpack(keys))
    for q = 1, #keys do
      local v, j = vals[q], owner[q]
      if v and tonumber(v) >= cuts[j] and pos[q] > out[j] then out[j] = pos[q] end
    end
  end
end
return out
"""
)

# ARGV: 4 backend, 5 now_ms, 6 ttl_ms, 7 live cutoff_ms, 8 fresh cutoff_ms.
# Returns the blocks newly inserted (not held live before this record).
RECORD_LUA = (
    _CHAIN_PRELUDE
    + """
local be = ARGV[4]
local now = ARGV[5]
local ttl = ARGV[6]
local live_cut = tonumber(ARGV[7])
local fresh_cut = math.max(tonumber(ARGV[8]), live_cut)
local function key_of(i) return base .. hash_at(i) .. be end
local stamps = {}
local function stamp(k)
  local v = stamps[k]
  if v == nil then
    v = tonumber(redis.call('GET', key_of(marks[k]))) or false
    stamps[k] = v
  end
  return v
end
local k_live = longest(function(k) local v = stamp(k); return v and v >= live_cut end, #marks)
local live = k_live > 0 and marks[k_live] or 0
if k_live > 0 and after(k_live) > live then
  local q = marks[k_live]
  local ends = set_bits(redis.call('GET', ends_key(q, be)), q, after(k_live))
  if #ends > 0 then
    local keys = {}
    for t = 1, #ends do keys[t] = key_of(ends[t]) end
    local vals = redis.call('MGET', unpack(keys))
    for t = 1, #ends do
      local v = tonumber(vals[t])
      if v and v >= live_cut and ends[t] > live then live = ends[t] end
    end
  end
end
local k_fresh = longest(function(k) local v = stamp(k); return v and v >= fresh_cut end, k_live)
for k = k_fresh + 1, #marks do
  redis.call('SET', key_of(marks[k]), now, 'PX', ttl)
end
if n > 0 and marks[#marks] ~= n then
  redis.call('SET', key_of(n), now, 'PX', ttl)
  local q = last_mark_before(n)
  local ek = ends_key(q, be)
  redis.call('SETBIT', ek, n - q, 1)
  redis.call('PEXPIRE', ek, ttl)
end
return n - live
"""
)

# ARGV: 4 backend, 5 keep_blocks, 6 now_ms, 7 ttl_ms. Deletes the backend's markers (and end
# bits) for blocks keep+1..n and marks block ``keep`` as the end of what it holds.
TRUNCATE_LUA = (
    _CHAIN_PRELUDE
    + """
local be = ARGV[4]
local keep = math.max(tonumber(ARGV[5]), 0)
local keys = {}
for i = keep + 1, n do
  keys[#keys + 1] = base .. hash_at(i) .. be
  keys[#keys + 1] = ends_key(i, be)
  if #keys >= 256 then
    redis.call('DEL', unpack(keys))
    keys = {}
  end
end
if #keys > 0 then redis.call('DEL', unpack(keys)) end
if keep >= 1 and keep <= n then
  redis.call('SET', base .. hash_at(keep) .. be, ARGV[6], 'PX', ARGV[7])
  local q = last_mark_before(keep)
  local is_mark = keep <= H or keep % G == 0
  if q > 0 and not is_mark then
    local ek = ends_key(q, be)
    redis.call('SETBIT', ek, keep - q, 1)
    redis.call('PEXPIRE', ek, ARGV[7])
  end
end
return 0
"""
)

# KEYS[1] = the shared state HASH. ARGV: 1 ttl_ms, 2 number of epoch pairs, then backend,
# epoch_ms pairs (raised, never lowered), then backend, inserted-blocks delta pairs.
# Returns HGETALL: fields e:<backend> (epoch ms) and n:<backend> (inserted blocks counter).
SYNC_LUA = """
local key = KEYS[1]
local epochs = tonumber(ARGV[2])
local q = 3
for _ = 1, epochs do
  local f = 'e:' .. ARGV[q]
  local cur = tonumber(redis.call('HGET', key, f))
  if cur == nil or cur < tonumber(ARGV[q + 1]) then redis.call('HSET', key, f, ARGV[q + 1]) end
  q = q + 2
end
while q < #ARGV do
  redis.call('HINCRBY', key, 'n:' .. ARGV[q], ARGV[q + 1])
  q = q + 2
end
redis.call('PEXPIRE', key, ARGV[1])
return redis.call('HGETALL', key)
"""


@dataclass(frozen=True, slots=True)
class LuaScript:
    """A script's source and SHA1 (for EVALSHA)."""

    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha1(self.source.encode("utf-8"), usedforsecurity=False).hexdigest()
        object.__setattr__(self, "sha", digest)


LOOKUP = LuaScript(LOOKUP_LUA)
RECORD = LuaScript(RECORD_LUA)
TRUNCATE = LuaScript(TRUNCATE_LUA)
SYNC = LuaScript(SYNC_LUA)
