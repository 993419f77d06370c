"""Lua run by the worker inside Redis: version-guarded writes of many keys in one call.

APPLY takes, for each write i (see pygen/sync/plan.py, script_args()):

    KEYS[2i-1]  the data key             KEYS[2i]  its version key (plan.version_key())
    ARGV        op, version, ttl_ms, n, then n values:
                op "s": SET key value            (values: the JSON text)
                op "h": DEL key + HSET key f v.. (values: field, value, ...; n = 0: key absent)
                op "d": DEL key                  (ttl_ms: the tombstone's lifetime)
                version "" = unguarded: written as is, the version key is left alone.

A guarded write is skipped when the version key holds a strictly larger version; an equal
version is written again (a retried job must be idempotent, not refused). After a guarded
write the version key holds the write's version: with the data's TTL for an upsert (none
without --ttl: SET also clears a tombstone's TTL), with ttl_ms for a delete, so a delete
leaves a tombstone that refuses a late, older upsert. Versions are compared as decimal
strings (length first), exact past Lua's 2^53 doubles.

Redis runs a script atomically, so two workers racing on one key serialize on it. Returns
the number of writes skipped as stale.
"""
import hashlib

APPLY = r"""
local function newer(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
local skipped = 0
local a = 1
for i = 1, #KEYS, 2 do
  local key, vkey = KEYS[i], KEYS[i + 1]
  local op, ver, ttl, n = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local first = a + 4
  a = first + n
  local current = false
  if ver ~= '' then current = redis.call('GET', vkey) end
  if current and newer(current, ver) then
    skipped = skipped + 1
  else
    if op == 's' then
      if ttl > 0 then
        redis.call('SET', key, ARGV[first], 'PX', ttl)
      else
        redis.call('SET', key, ARGV[first])
      end
    elseif op == 'h' then
      redis.call('DEL', key)
      -- unpack() fails past ~8000 values (Lua's C stack): a wide row goes in chunks of pairs
      for c = first, first + n - 1, 1000 do
        redis.call('HSET', key, unpack(ARGV, c, math.min(c + 999, first + n - 1)))
      end
      if n > 0 and ttl > 0 then redis.call('PEXPIRE', key, ttl) end
    elseif op == 'd' then
      redis.call('DEL', key)
    else
      return redis.error_reply('gman apply: unknown op ' .. tostring(op))
    end
    if ver ~= '' then
      if ttl > 0 then
        redis.call('SET', vkey, ver, 'PX', ttl)
      else
        redis.call('SET', vkey, ver)
      end
    end
  end
end
return skipped
"""

APPLY_SHA = hashlib.sha1(APPLY.encode()).hexdigest()

# RESET: KEYS[1] a version key, ARGV[1] the version it held when looked at. Deletes it only if
# it still holds that version (a worker's write meanwhile is kept). `gman-udf verify --repair`
# uses it on versions ahead of gman_stamp(): no trigger stamped them, and a guarded write
# could never pass them. Returns 1 when deleted.
RESET = r"""
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
