"""The store's Lua scripts: each runs on one namespace's four keys (see layout.py).

A record is a 32-byte header (created and updated, Unix ms; the item's place in its namespace;
its TTL in ms, 0 for none; big-endian doubles) followed by the msgpack of the value. An item
with a TTL has its expiry in the ``:e`` sorted set; reads skip items past it and every write
removes them, and the namespace's keys expire with their last item, so nothing expired stays.

Where the server has a search module (see knn.py), PUT_ITEMS and GET_ITEMS also keep one hash
per item vector, ``<docs base><n>:<item key>`` (fields ``v`` the vector, ``k`` the item key,
``n`` the namespace tag, ``p`` its prefixes' digests), with the item's TTL: the module's index
reads them. The docs base is '' when there is none, and then nothing of this runs.
"""

from __future__ import annotations

from typing import Final

from redis_checkpoint.steps import Script

__all__ = ["GET_ITEMS", "INDEX_VECTORS", "PUT_ITEMS", "REGISTER", "SNAPSHOT", "STORE_SCRIPTS"]

_PRELUDE = r"""
local items, vecs, exps, ver = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = tonumber(ARGV[1])
-- PUT_ITEMS and GET_ITEMS set these from ARGV[3] and ARGV[4]: see the module docstring.
local docs, width = '', 1

local function each_doc(key, action)
  if docs == '' then return end
  local vec = redis.call('HGET', vecs, key)
  if vec then
    for n = 0, #vec / width - 1 do action(docs .. n .. ':' .. key, vec, n) end
  end
end

local function drop_docs(key)
  each_doc(key, function(doc) redis.call('DEL', doc) end)
end

-- After the item's vectors are in place: one hash per vector, expiring with the item.
local function write_docs(key, tag, digests, ttl)
  each_doc(key, function(doc, vec, n)
    redis.call('HSET', doc, 'v', string.sub(vec, n * width + 1, (n + 1) * width),
      'k', key, 'n', tag, 'p', digests)
    if ttl > 0 then redis.call('PEXPIRE', doc, ttl) end
  end)
end

local function purge()
  local dead = redis.call('ZRANGEBYSCORE', exps, '-inf', now)
  for i = 1, #dead, 500 do
    local chunk = {unpack(dead, i, math.min(i + 499, #dead))}
    for _, key in ipairs(chunk) do drop_docs(key) end
    redis.call('HDEL', items, unpack(chunk))
    redis.call('HDEL', vecs, unpack(chunk))
    redis.call('ZREM', exps, unpack(chunk))
  end
end

-- The keys live as long as their last item: forever if one has no TTL.
local function fit_expiry()
  local count = redis.call('HLEN', items)
  if count == 0 then
    redis.call('DEL', items, vecs, exps, ver)
    return 0
  end
  if count > redis.call('ZCARD', exps) then
    redis.call('PERSIST', items); redis.call('PERSIST', vecs)
    redis.call('PERSIST', exps); redis.call('PERSIST', ver)
  else
    local last = redis.call('ZRANGE', exps, -1, -1, 'WITHSCORES')
    local ms = math.max(1, math.ceil(tonumber(last[2]) - now))
    redis.call('PEXPIRE', items, ms); redis.call('PEXPIRE', vecs, ms)
    redis.call('PEXPIRE', exps, ms); redis.call('PEXPIRE', ver, ms)
  end
  return count
end
"""

# ARGV: now, the number of items, docs base, vector width in bytes, namespace tag, its
# prefixes' digests, then per item: key, 'd' (delete) | key, 'p', value, vectors ('' none),
# ttl ms.
# Returns {version, items left}.
PUT_ITEMS: Final = Script(
    "store_put",
    _PRELUDE
    + r"""
docs, width = ARGV[3], tonumber(ARGV[4])
local tag, digests = ARGV[5], ARGV[6]
purge()
-- A version that is new even after the namespace was emptied and deleted: a process that
-- cached the old one must not take the new namespace for it.
if redis.call('EXISTS', ver) == 0 then
  redis.call('SET', ver, string.format('%.0f', now * 1000))
end
-- One step of the version per item, so items new in one call keep their order among themselves.
local count = tonumber(ARGV[2])
local version = redis.call('INCRBY', ver, count)
local ordinal = version - count
local i = 7
while i <= #ARGV do
  local key, kind = ARGV[i], ARGV[i + 1]
  ordinal = ordinal + 1
  drop_docs(key)
  if kind == 'd' then
    redis.call('HDEL', items, key); redis.call('HDEL', vecs, key); redis.call('ZREM', exps, key)
    i = i + 2
  else
    local body, vec, ttl = ARGV[i + 2], ARGV[i + 3], tonumber(ARGV[i + 4])
    local created, place = now, ordinal
    local old = redis.call('HGET', items, key)
    if old and #old >= 32 then
      local c, _, p = struct.unpack('>ddd', old)
      created, place = c, p
    end
    redis.call('HSET', items, key, struct.pack('>dddd', created, now, place, ttl) .. body)
    if vec ~= '' then redis.call('HSET', vecs, key, vec) else redis.call('HDEL', vecs, key) end
    write_docs(key, tag, digests, ttl)
    if ttl > 0 then redis.call('ZADD', exps, now + ttl, key) else redis.call('ZREM', exps, key) end
    i = i + 5
  end
end
return {version, fit_expiry()}
""",
)

# ARGV: now, refresh (1/0), docs base, vector width in bytes, keys... Returns the records
# (false: absent or expired). With refresh, each found item with a TTL (and its docs) gets it
# again from now.
GET_ITEMS: Final = Script(
    "store_get",
    _PRELUDE
    + r"""
local refresh = ARGV[2] == '1'
docs, width = ARGV[3], tonumber(ARGV[4])
local refreshed = false
local out = {}
for i = 5, #ARGV do
  local key = ARGV[i]
  local record = redis.call('HGET', items, key)
  local expiry = redis.call('ZSCORE', exps, key)
  if record and expiry and tonumber(expiry) <= now then record = false end
  if record and refresh and expiry and #record >= 32 then
    local _, _, _, ttl = struct.unpack('>dddd', record)
    if ttl > 0 then
      redis.call('ZADD', exps, now + ttl, key)
      each_doc(key, function(doc) redis.call('PEXPIRE', doc, ttl) end)
      refreshed = true
    end
  end
  out[#out + 1] = record or false
end
if refreshed then fit_expiry() end
return out
""",
)

# ARGV: now. Returns {version, {key, record, ...}, {key, vectors, ...}, {key, expiry, ...}},
# live items only.
SNAPSHOT: Final = Script(
    "store_snapshot",
    _PRELUDE
    + r"""
local version = redis.call('GET', ver)
if not version then return {false, {}, {}, {}} end
local dead = {}
for _, key in ipairs(redis.call('ZRANGEBYSCORE', exps, '-inf', now)) do dead[key] = true end
local records, vectors = {}, {}
local flat = redis.call('HGETALL', items)
for i = 1, #flat, 2 do
  if not dead[flat[i]] then records[#records + 1] = flat[i]; records[#records + 1] = flat[i + 1] end
end
flat = redis.call('HGETALL', vecs)
for i = 1, #flat, 2 do
  if not dead[flat[i]] then vectors[#vectors + 1] = flat[i]; vectors[#vectors + 1] = flat[i + 1] end
end
local expiries = redis.call('ZRANGEBYSCORE', exps, '(' .. now, '+inf', 'WITHSCORES')
return {version, records, vectors, expiries}
""",
)

# ARGV: now, docs base, vector width in bytes, namespace tag, its prefixes' digests. Writes
# the docs of every live item with vectors (when the module's index is new). Returns how many.
INDEX_VECTORS: Final = Script(
    "store_index_vectors",
    _PRELUDE
    + r"""
docs, width = ARGV[2], tonumber(ARGV[3])
local count = 0
for _, key in ipairs(redis.call('HKEYS', vecs)) do
  local expiry = tonumber(redis.call('ZSCORE', exps, key))
  if not expiry or expiry > now then
    write_docs(key, ARGV[4], ARGV[5], expiry and math.ceil(expiry - now) or 0)
    count = count + 1
  end
end
return count
""",
)

# KEYS: the registry. ARGV: now, then per namespace: tag, the latest expiry of its items
# ('+inf': one never expires; '' : it is empty, remove it). Members whose items all expired
# leave, and the registry itself expires with its last member.
REGISTER: Final = Script(
    "store_register",
    r"""
local registry, now = KEYS[1], tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('ZREM', registry, ARGV[i])
  else
    redis.call('ZADD', registry, 'GT', ARGV[i + 1], ARGV[i])
  end
end
redis.call('ZREMRANGEBYSCORE', registry, '-inf', '(' .. now)
local last = redis.call('ZRANGE', registry, -1, -1, 'WITHSCORES')
if #last == 0 then return 0 end
if last[2] == 'inf' then
  redis.call('PERSIST', registry)
else
  redis.call('PEXPIRE', registry, math.max(1, math.ceil(tonumber(last[2]) - now)))
end
return 1
""",
)

STORE_SCRIPTS: Final = (PUT_ITEMS, GET_ITEMS, SNAPSHOT, REGISTER, INDEX_VECTORS)
