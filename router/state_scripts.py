"""The server-side scripts of the Redis state (router.state_redis), in Lua.

Each script is one round trip and runs atomically on the server, so every
decision that several processes share — a budget reservation, a rate-limit
slot, a concurrency slot, a cooldown, the half-open probe — is taken by exactly
one of them. Times are the Redis server's clock (``TIME``, milliseconds), so
the processes' own clocks do not need to agree for leases, rates or cooldowns.

Keys (all under one hash tag, ``{prefix}``, so that they live on one shard):

- ``{p}:res`` (hash): reservation id -> ``[amount, [budget, ...]]`` (JSON), or
  ``"S"`` once settled (a marker that makes a retried settle count once).
- ``{p}:leases`` (sorted set): reservation id -> expiry (ms). An expired lease
  is reclaimed by the next script that looks: its amount leaves ``reserved``.
- ``{p}:reserved`` (hash): budget -> money reserved (nano-dollars).
- ``{p}:spent:<budget>:<period>`` (integer): settled spend of one period.
- ``{p}:p:<provider>`` (hash): ``until`` (cooldown end), ``failures``, ``probe``
  (the probe's lease end) and ``pid`` (its holder), ``nb`` (Retry-After "not
  before"), ``rt`` and ``tt`` (GCRA theoretical arrival times, requests and tokens).
- ``{p}:c:<provider>`` (sorted set): concurrency slots, id -> lease expiry.

Money is kept in whole nano-dollars (1e-9 USD), each amount rounded up.
"""

from __future__ import annotations

# Shared helpers: the server's time, and the reclaim of expired leases (a
# crashed process's reservations and settle markers).
_COMMON = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function reclaim(res, leases, reserved)
  local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, 256)
  for _, rid in ipairs(expired) do
    local rec = redis.call('HGET', res, rid)
    if rec and rec ~= 'S' then
      local r = cjson.decode(rec)
      for _, name in ipairs(r[2]) do
        redis.call('HINCRBY', reserved, name, -r[1])
      end
    end
    redis.call('HDEL', res, rid)
    redis.call('ZREM', leases, rid)
  end
end
"""

# KEYS: res, leases, reserved, provider, conc, spent key per budget
# ARGV: id, lease_ms, amount, allow_ms, rpm, tpm, tokens, conc_max, n_budgets,
#       then per budget: name, limit
# Reply: {0, wait_ms, probe, failures} admitted; {1, remaining_ms | -1} cooling down
# (-1: the probe is out); {2, wait_ms} Retry-After; {3} request over tokens_per_minute;
# {4, need_ms} requests; {5, need_ms} tokens; {6} concurrency full;
# {7, budget index, spent, reserved} a budget refuses.
ADMIT = (
    _COMMON
    + """
local id = ARGV[1]
local lease = tonumber(ARGV[2])
local amount = tonumber(ARGV[3])
local allow = tonumber(ARGV[4])
local p = redis.call('HMGET', KEYS[4], 'until', 'probe', 'nb', 'rt', 'tt', 'failures')
local probe = 0
local untl = tonumber(p[1]) or 0
if untl > 0 then
  if now < untl then return {1, untl - now} end
  if (tonumber(p[2]) or 0) > now then return {1, -1} end
  probe = 1
end
local nbud = tonumber(ARGV[9])
if amount > 0 and nbud > 0 then
  reclaim(KEYS[1], KEYS[2], KEYS[3])
  for i = 1, nbud do
    local name = ARGV[8 + 2 * i]
    local spent = tonumber(redis.call('GET', KEYS[5 + i]) or '0')
    local held = tonumber(redis.call('HGET', KEYS[3], name) or '0')
    if spent + held + amount > tonumber(ARGV[9 + 2 * i]) then
      return {7, i, spent, held}
    end
  end
end
local wait = 0
local nb = tonumber(p[3]) or 0
if nb > now then
  wait = nb - now
  if wait > allow then return {2, wait} end
end
local rpm = tonumber(ARGV[5])
local tpm = tonumber(ARGV[6])
local tokens = tonumber(ARGV[7])
if tpm > 0 and tokens > tpm then return {3} end
local rt, tt
if rpm > 0 then
  rt = math.max(tonumber(p[4]) or 0, now) + 60000 / rpm
  local need = rt - 60000 - now
  if need > allow then return {4, need} end
  if need > wait then wait = need end
end
if tpm > 0 then
  tt = math.max(tonumber(p[5]) or 0, now) + tokens * 60000 / tpm
  local need = tt - 60000 - now
  if need > allow then return {5, need} end
  if need > wait then wait = need end
end
local cmax = tonumber(ARGV[8])
if cmax > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
  if redis.call('ZCARD', KEYS[5]) >= cmax then return {6} end
  redis.call('ZADD', KEYS[5], now + lease, id)
end
if rt then redis.call('HSET', KEYS[4], 'rt', string.format('%.3f', rt)) end
if tt then redis.call('HSET', KEYS[4], 'tt', string.format('%.3f', tt)) end
if probe == 1 then redis.call('HSET', KEYS[4], 'probe', now + lease, 'pid', id) end
if amount > 0 and nbud > 0 then
  local names = {}
  for i = 1, nbud do
    names[i] = ARGV[8 + 2 * i]
    redis.call('HINCRBY', KEYS[3], names[i], ARGV[3])
  end
  redis.call('HSET', KEYS[1], id, cjson.encode({amount, names}))
  redis.call('ZADD', KEYS[2], now + lease, id)
end
return {0, math.ceil(wait), probe, tonumber(p[6]) or 0}
"""
)

# The end of an attempt, or part of it: settle (bill ``cost``) or release the
# reservation, free the concurrency slot, and apply the verdict on the provider.
# KEYS: res, leases, reserved, provider, conc, spent key per budget billed
# ARGV: id, cost (-1: release without billing; -2: the verdict only, the attempt goes
#       on), marker_ms, verdict ('', 'ok', 'fail'),
#       counts_failure, cooldown_now, retry_after_ms, cooldown_failures, cooldown_ms
# Reply: {billed (1, or 0 when this id was billed already), cooldown_started, failures}
FINISH = (
    _COMMON
    + """
local id = ARGV[1]
local cost = tonumber(ARGV[2])
local billed = 0
local rec = redis.call('HGET', KEYS[1], id)
if cost > -2 and rec ~= 'S' then
  if rec then
    local r = cjson.decode(rec)
    for _, name in ipairs(r[2]) do redis.call('HINCRBY', KEYS[3], name, -r[1]) end
    redis.call('HDEL', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
  end
  if cost >= 0 then
    if cost > 0 then
      for i = 6, #KEYS do redis.call('INCRBY', KEYS[i], cost) end
    end
    redis.call('HSET', KEYS[1], id, 'S')
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), id)
    billed = 1
  end
end
if cost > -2 then redis.call('ZREM', KEYS[5], id) end
local verdict = ARGV[4]
local started = 0
local mine = redis.call('HGET', KEYS[4], 'pid') == id
if mine then redis.call('HDEL', KEYS[4], 'probe', 'pid') end
if verdict == 'ok' then
  redis.call('HSET', KEYS[4], 'failures', 0, 'until', 0)
elseif verdict == 'fail' then
  local ra = tonumber(ARGV[7])
  if ra > 0 then
    local nb = tonumber(redis.call('HGET', KEYS[4], 'nb') or '0')
    if now + ra > nb then redis.call('HSET', KEYS[4], 'nb', now + ra) end
  end
  local counts = ARGV[5] == '1'
  local cd = tonumber(ARGV[9])
  if ARGV[6] == '1' or (mine and counts) then
    redis.call('HSET', KEYS[4], 'until', now + cd, 'failures', 0)
    started = 1
  elseif counts then
    local n = redis.call('HINCRBY', KEYS[4], 'failures', 1)
    if n >= tonumber(ARGV[8]) then
      redis.call('HSET', KEYS[4], 'until', now + cd, 'failures', 0)
      started = 1
    end
  elseif mine then
    redis.call('HSET', KEYS[4], 'until', 0)
  end
end
return {billed, started, tonumber(redis.call('HGET', KEYS[4], 'failures') or '0')}
"""
)

# Renew this process's leases, reclaim expired ones, and read what the process
# shows without a round trip: every budget's spend, every provider's health.
# KEYS: res, leases, reserved, then provider hashes, conc sets, spent keys
# ARGV: lease_ms, n_providers, n_ids, ids..., then per held slot or probe:
#       provider index, id; then budget names (one per spent key)
# Reply: {{spent, reserved} per budget}, {{until-now, failures, probe, nb-now} per provider}
SYNC = (
    _COMMON
    + """
local lease = tonumber(ARGV[1])
local np = tonumber(ARGV[2])
local nids = tonumber(ARGV[3])
reclaim(KEYS[1], KEYS[2], KEYS[3])
for i = 1, nids do
  redis.call('ZADD', KEYS[2], 'XX', now + lease, ARGV[3 + i])
end
local a = 4 + nids
local nslots = tonumber(ARGV[a])
for i = 1, nslots do
  local pi = tonumber(ARGV[a + 2 * i - 1])
  local id = ARGV[a + 2 * i]
  redis.call('ZADD', KEYS[3 + np + pi], 'XX', now + lease, id)
  if redis.call('HGET', KEYS[3 + pi], 'pid') == id then
    redis.call('HSET', KEYS[3 + pi], 'probe', now + lease)
  end
end
local budgets = {}
local b = a + 2 * nslots
for i = 4 + 2 * np, #KEYS do
  local name = ARGV[b + 1 + i - (4 + 2 * np)]
  budgets[#budgets + 1] = {
    tonumber(redis.call('GET', KEYS[i]) or '0'),
    tonumber(redis.call('HGET', KEYS[3], name) or '0'),
  }
end
local providers = {}
for i = 1, np do
  local p = redis.call('HMGET', KEYS[3 + i], 'until', 'failures', 'probe', 'nb')
  providers[i] = {
    math.max((tonumber(p[1]) or 0) - now, 0),
    tonumber(p[2]) or 0,
    ((tonumber(p[3]) or 0) > now) and 1 or 0,
    math.max((tonumber(p[4]) or 0) - now, 0),
  }
end
return {budgets, providers}
"""
)

# Add a SQLite ledger's period totals once (router spend --import-sqlite).
# KEYS: marker, spent keys; ARGV: what the marker records, amounts (one per key)
# Reply: 1 imported, 0 when this ledger was imported before.
IMPORT = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX') == false then return 0 end
for i = 2, #KEYS do redis.call('INCRBY', KEYS[i], ARGV[i]) end
return 1
"""
