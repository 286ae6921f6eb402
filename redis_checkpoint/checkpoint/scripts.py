"""Lua scripts: each runs one operation on one thread's two keys in a single round trip.

KEYS[1] is the thread's index sorted set and KEYS[2] its data hash (same hash slot, see keys.py).
Only Redis >= 6.2 built-ins are used (cmsgpack, struct): no modules. ``memory.py`` implements the
same scripts in Python for the in-memory fallback tier; tests run both and compare.
"""

from __future__ import annotations

from redis_checkpoint.steps import Script

PRELUDE = r"""
local idx, data = KEYS[1], KEYS[2]
local S, E = '\0', '\1'

local function apply_ttl(default_ms)
  local t = redis.call('HGET', data, 't')
  local ms = tonumber(t or default_ms)
  if ms > 0 then
    redis.call('PEXPIRE', idx, ms)
    redis.call('PEXPIRE', data, ms)
  else
    redis.call('PERSIST', idx)
    redis.call('PERSIST', data)
  end
  return ms
end

local function chunked(cmd, key, items)
  -- Lua's unpack() has a stack limit: send long argument lists in slices (of even length).
  local out = {}
  for i = 1, #items, 400 do
    local part = redis.call(cmd, key, unpack(items, i, math.min(i + 399, #items)))
    if type(part) == 'table' then
      for j = 1, #part do out[#out + 1] = part[j] end
    end
  end
  return out
end

local function printable(text)
  -- An error reply ends at its first NUL: show control and non-ASCII bytes as \xNN.
  return (string.gsub(text, '[%z\1-\31\127-\255\\]', function(c)
    return string.format('\\x%02x', string.byte(c))
  end))
end

local function record(member, raw)
  local ok, r = pcall(cmsgpack.unpack, raw)
  if not ok or type(r) ~= 'table' or type(r[1]) ~= 'number' or r[1] < 2 or r[1] > 4
     or type(r[7]) ~= 'table' then
    -- A string, not a table: Redis 6.2 cannot report a table.
    error('CORRUPT checkpoint record ' .. printable(member))
  end
  return r
end

local function field_token(token)
  -- A record names the Agent Server's 32-digit versions without the leading zeros ('z'); the
  -- blob's field spells them out (keys.field_token).
  -- Any other 'z' token (not one the saver wrote) is spelled by the same rule, as Python does.
  if string.sub(token, 1, 1) ~= 'z' then return token end
  local dot = string.find(token, '.', 2, true)
  local digits = string.sub(token, 2, (dot or #token + 1) - 1)
  local rest = dot and string.sub(token, dot + 1) or ''
  return 's' .. string.rep('0', 32 - #digits) .. digits .. '.' .. rest
end

local function blob_pairs(r)
  -- Format 4 shows (channel, version) pairs of the channels whose value is in a blob; formats 2
  -- and 3 show (channel, version, inline) triples, inline '' for those channels.
  local out = {}
  if r[1] >= 4 then
    for i = 1, #r[7], 2 do out[#out + 1] = {r[7][i], field_token(r[7][i + 1])} end
  else
    for i = 1, #r[7], 3 do
      if r[7][i + 2] == '' then out[#out + 1] = {r[7][i], field_token(r[7][i + 1])} end
    end
  end
  return out
end

local function blob_fields(member, r)
  -- A blob channel's value lives in the field 'b' S ns S channel S version.
  local head = 'b' .. string.sub(member, 2, string.find(member, S, 3, true))
  local out = {}
  for _, p in ipairs(blob_pairs(r)) do out[#out + 1] = head .. p[1] .. S .. p[2] end
  return out
end

local function list_ref(blob)
  -- An 'R' list blob (see codec.py): the writes field it refers to, and its frames' digests.
  local n = struct.unpack('>I2', blob, 2)
  local at = 8 + n
  local w = struct.unpack('>I2', blob, at)
  local field = string.sub(blob, at + 2, at + 1 + w)
  at = at + 2 + w
  local digests = {}
  for k = 0, string.byte(blob, at) - 1 do
    digests[#digests + 1] = string.sub(blob, at + 1 + k * 18, at + 16 + k * 18)
  end
  return field, digests
end

local function referred_ok(blob)
  -- The frames an 'R' blob refers to are in the writes field (frames are only ever appended).
  local field, digests = list_ref(blob)
  local v = redis.call('HGET', data, field)
  local first = v and string.sub(v, 1, 1)
  if first ~= 'W' and first ~= 'X' and first ~= 'M' then return false end
  local have, pos = {}, 1
  while pos <= #v do
    local size = struct.unpack('>I4', v, pos + 1)
    have[string.sub(redis.sha1hex(string.sub(v, pos, pos + 4 + size)), 1, 16)] = true
    pos = pos + 5 + size
  end
  for _, d in ipairs(digests) do
    if not have[d] then return false end
  end
  return true
end

local function add_chain(field, out, seen)
  -- A list blob and its bases back to one the client knows, with the writes 'R' blobs refer to.
  local cur = field
  while cur and not seen[cur] do
    seen[cur] = true
    local v = redis.call('HGET', data, cur)
    out[#out + 1] = cur
    out[#out + 1] = v or ''
    cur = nil
    local kind = v and string.sub(v, 1, 1)
    if kind == 'R' then
      local w = list_ref(v)
      if not seen[w] then
        seen[w] = true
        out[#out + 1] = w
        out[#out + 1] = redis.call('HGET', data, w) or ''
      end
    end
    if kind == 'L' or kind == 'R' then
      local n = struct.unpack('>I2', v, 2)
      if n > 0 then cur = string.sub(v, 4, 3 + n) end
    end
  end
end

local function writes_field(member)
  return 'w' .. string.sub(member, 2)
end

local function namespace_head(member)
  -- 'c' S ns S: what every checkpoint member of that namespace starts with.
  return string.sub(member, 1, string.find(member, S, 3, true))
end

local function keyframe_path(member, r)
  -- A keyed record (r[9] = depth) was compressed against the record 'depth' parents up its
  -- chain: the members on the way there, the keyframe last, and the keyframe's raw record.
  local path, raw = {}, nil
  local depth = r[9]
  if not depth or depth == 0 then return path, nil end
  local head = namespace_head(member)
  for _ = 1, depth do
    if not r[2] then return path, false end
    local m = head .. r[2]
    path[#path + 1] = m
    raw = redis.call('HGET', data, m)
    if not raw then return path, false end
    r = record(m, raw)
  end
  return path, raw
end

local function add_keyframe(member, r, out, seen)
  -- Adds the (member, raw) of a keyed record's keyframe to out; returns its member or false.
  local path, raw = keyframe_path(member, r)
  if not raw then return false end
  local m = path[#path]
  if not seen[m] then
    seen[m] = true
    out[#out + 1] = m
    out[#out + 1] = raw
  end
  return m
end

local function is_member(m)
  -- Records of pruned checkpoints that kept ones were compressed against stay in the hash,
  -- out of the index: only the index says which checkpoints exist.
  return redis.call('ZSCORE', idx, m) ~= false
end

local function target_member(ns, cid)
  -- The checkpoint a read names ('' = the namespace's latest), or nil when it does not exist.
  if cid ~= '' then
    local m = 'c' .. S .. ns .. S .. cid
    if is_member(m) then return m end
    return nil
  end
  local r = redis.call('ZREVRANGEBYLEX', idx, '(c' .. S .. ns .. E, '[c' .. S .. ns .. S,
                       'LIMIT', 0, 1)
  return r[1]
end

local function namespace_heads()
  local heads, seen = {}, {}
  for _, m in ipairs(redis.call('ZRANGE', idx, 0, -1)) do
    local head = namespace_head(m)
    if not seen[head] then
      seen[head] = true
      heads[#heads + 1] = head
    end
  end
  return heads
end

local function keep_with_delta_ancestors(head, m, keep)
  -- m, and the ancestors a DeltaChannel rebuilds its value from (back to one whose metadata
  -- has no counters since a snapshot).
  local cur = m
  while cur and not keep[cur] do
    keep[cur] = true
    local raw = redis.call('HGET', data, cur)
    if not raw then break end
    local r = record(cur, raw)
    cur = nil
    if r[8]['counters_since_delta_snapshot'] and r[2] then cur = head .. r[2] end
  end
end

local function trim_namespace(head, n)
  -- Keeps a namespace's newest n checkpoints and their DeltaChannel ancestors in the index;
  -- returns how many left it (collect_garbage then drops what only they reached).
  local lo, hi = '[' .. head, '(' .. string.sub(head, 1, -2) .. E
  if redis.call('ZLEXCOUNT', idx, lo, hi) <= n then return 0 end
  local members = redis.call('ZRANGEBYLEX', idx, lo, hi)
  local keep = {}
  for i = #members, #members - n + 1, -1 do keep_with_delta_ancestors(head, members[i], keep) end
  local dead = {}
  for _, m in ipairs(members) do
    if not keep[m] then dead[#dead + 1] = m end
  end
  if #dead > 0 then chunked('ZREM', idx, dead) end
  return #dead
end

local function history_limit(default)
  -- The thread's own limit (field 'h', '0' = keep all) or the saver's.
  return tonumber(redis.call('HGET', data, 'h') or default)
end

local function collect_garbage()
  -- Drop the blobs no kept checkpoint reaches, the writes of vanished checkpoints unless a kept
  -- list refers to them, and the records of vanished checkpoints unless a kept record was
  -- compressed against them (or is on the way to one). Writes of a checkpoint newer than its
  -- namespace's newest are kept: LangGraph may send them before that checkpoint's put.
  local reach, keep, needed, newest = {}, {}, {}, {}
  local cps = redis.call('ZRANGE', idx, 0, -1)
  for _, m in ipairs(cps) do
    keep[m] = true
    newest[namespace_head(m)] = m
    local raw = redis.call('HGET', data, m)
    if raw then
      local r = record(m, raw)
      local chain = {}
      for _, f in ipairs(blob_fields(m, r)) do add_chain(f, chain, reach) end
      for _, p in ipairs(keyframe_path(m, r)) do needed[p] = true end
    end
  end
  local dead = {}
  for _, f in ipairs(redis.call('HKEYS', data)) do
    local kind = string.sub(f, 1, 2)
    local orphan_blob = kind == 'b' .. S and not reach[f]
    local owner = 'c' .. string.sub(f, 2)
    local orphan_writes = kind == 'w' .. S and not keep[owner] and not reach[f]
      and (newest[namespace_head(owner)] or owner) > owner
    local orphan_record = kind == 'c' .. S and not keep[f] and not needed[f]
    local stale_reference = kind == 'r' .. S
    if orphan_blob or orphan_writes or orphan_record or stale_reference then
      dead[#dead + 1] = f
    end
  end
  dead[#dead + 1] = 'g'
  chunked('HDEL', data, dead)
  if #cps == 0 then
    redis.call('DEL', idx, data)
    return 0
  end
  return #cps
end
"""

# ARGV: ns, checkpoint id ('' = latest), refresh ('1'/'0'), default ttl ms, then the blob fields
# the client already knows (list chains stop there: a read carries only what is new to it)
GET = r"""
local ns, cid = ARGV[1], ARGV[2]
local member = target_member(ns, cid)
if not member then return false end
local raw = redis.call('HGET', data, member)
if not raw then return false end
local blobs, seen = {}, {}
for i = 5, #ARGV do seen[ARGV[i]] = true end
local r = record(member, raw)
for _, f in ipairs(blob_fields(member, r)) do add_chain(f, blobs, seen) end
local keyframes = {}
add_keyframe(member, r, keyframes, {})
local writes = redis.call('HGET', data, writes_field(member))
if ARGV[3] == '1' then apply_ttl(ARGV[4]) end
return {member, raw, blobs, writes, keyframes}
"""

# ARGV: ns given ('1'/'0'), ns, before id, exact id, limit (0 = none), cursor member,
#       refresh, default ttl ms, count of known blob fields, known fields..., filter pairs...
LIST = r"""
local has_ns, ns, before, exact = ARGV[1] == '1', ARGV[2], ARGV[3], ARGV[4]
local limit, cursor = tonumber(ARGV[5]), ARGV[6]
local known = tonumber(ARGV[9])
local filters = {}
for i = 10 + known, #ARGV, 2 do filters[ARGV[i]] = ARGV[i + 1] end
local lo, hi
if has_ns then
  lo, hi = '[c' .. S .. ns .. S, '(c' .. S .. ns .. E
  if before ~= '' then hi = '(c' .. S .. ns .. S .. before end
else
  lo, hi = '[c' .. S, '(c' .. E
end
if cursor ~= '' then hi = '(' .. cursor end
local found, blobs, seen, keyframes, kseen = {}, {}, {}, {}, {}
for i = 10, 9 + known do seen[ARGV[i]] = true end
local scanned, last, done = 0, nil, false
while not done do
  local page = redis.call('ZREVRANGEBYLEX', idx, hi, lo, 'LIMIT', 0, 100)
  if #page == 0 then break end
  for _, m in ipairs(page) do
    last = m
    scanned = scanned + 1
    local cid = string.sub(m, string.find(m, S, 3, true) + 1)
    local ok = (exact == '' or cid == exact) and (before == '' or cid < before)
    local raw = ok and redis.call('HGET', data, m)
    if raw then
      local r = record(m, raw)
      for k, v in pairs(filters) do
        local have = r[8][k] or 'null'
        if v ~= '?' and have ~= '?' and have ~= v then ok = false break end
      end
      if ok then
        for _, f in ipairs(blob_fields(m, r)) do add_chain(f, blobs, seen) end
        local kf = add_keyframe(m, r, keyframes, kseen)
        found[#found + 1] = {m, raw, redis.call('HGET', data, writes_field(m)), kf}
        if limit > 0 and #found >= limit then done = true break end
      end
    end
    if scanned >= 2000 then done = true break end
  end
  if #page < 100 then break end
  hi = '(' .. last
end
if ARGV[7] == '1' then apply_ttl(ARGV[8]) end
local more = false
if done and last then more = last end
return {found, blobs, more, keyframes}
"""

# ARGV: member, record, default ttl ms, thread id, the keyframe member of a keyed record ('' if
# none), the saver's history limit (0 = keep all), then (field, blob, base, alternative) quads:
# an 'R' blob whose writes are not (yet) here is stored as its alternative, the items. Returns
# {0, fields whose base is missing, 1 if the keyframe is not where the record says} (and changes
# nothing) or {1, ttl, 1 if this created the thread, checkpoints pruned by the history limit}.
PUT = r"""
local keyframe_gone = 0
if ARGV[5] ~= '' then
  local path, raw = keyframe_path(ARGV[1], record(ARGV[1], ARGV[2]))
  if not raw or path[#path] ~= ARGV[5] then keyframe_gone = 1 end
end
local fresh = {}
for i = 7, #ARGV, 4 do fresh[ARGV[i]] = true end
local missing = {}
for i = 7, #ARGV, 4 do
  local base = ARGV[i + 2]
  if base ~= '' and not fresh[base] and redis.call('HEXISTS', data, base) == 0 then
    missing[#missing + 1] = ARGV[i]
  end
end
if #missing > 0 or keyframe_gone == 1 then return {0, missing, keyframe_gone} end
local args = {ARGV[1], ARGV[2]}
for i = 7, #ARGV, 4 do
  local blob = ARGV[i + 1]
  local waiting = 'r' .. string.sub(ARGV[i], 2)
  local reference = redis.call('HGET', data, waiting)
  if reference then
    -- The writes holding these items came first (see PUT_WRITES).
    redis.call('HDEL', data, waiting)
    if string.sub(reference, 1, 16) == string.sub(redis.sha1hex(blob), 1, 16) then
      blob = string.sub(reference, 17)
    end
  end
  if string.sub(blob, 1, 1) == 'R' and not referred_ok(blob) then blob = ARGV[i + 3] end
  args[#args + 1] = ARGV[i]
  args[#args + 1] = blob
end
chunked('HSET', data, args)
local created = redis.call('HSETNX', data, 'id', ARGV[4])
redis.call('ZADD', idx, 0, ARGV[1])
local limit, pruned = history_limit(ARGV[6]), 0
if limit > 0 then
  pruned = trim_namespace(namespace_head(ARGV[1]), limit)
  -- The collector reads the whole thread: run it once per batch of pruned checkpoints (field
  -- 'g' counts them; 8 is thread.py's GARBAGE_BATCH), so that a put costs O(thread / batch).
  if pruned > 0 and redis.call('HINCRBY', data, 'g', pruned) >= math.max(limit, 8) then
    collect_garbage()
  end
end
return {1, apply_ttl(ARGV[3]), created, pruned}
"""

# ARGV: writes field, default ttl ms, thread id, frame (see codec.py: the scripts only append;
# readers resolve repeated keys), then (blob field, digest, R blob) triples: a list blob a put
# stored with the items this frame holds becomes a reference to them, if it is still that blob
# (if it is not there yet, the reference waits in field 'r' S ... for the put).
# A field in the earlier one-map format becomes an 'M' frame.
PUT_WRITES = r"""
local f = ARGV[1]
if ARGV[4] ~= '' then
  local cur = redis.call('HGET', data, f) or ''
  local first = string.byte(cur, 1)
  if first and ((first >= 0x80 and first <= 0x8f) or first == 0xde or first == 0xdf) then
    cur = 'M' .. struct.pack('>I4', #cur) .. cur
  end
  redis.call('HSET', data, f, cur .. ARGV[4])
end
for i = 5, #ARGV, 3 do
  local blob = redis.call('HGET', data, ARGV[i])
  if not blob then
    -- The put that stores this list is still on its way: leave the reference for it.
    redis.call('HSET', data, 'r' .. string.sub(ARGV[i], 2), ARGV[i + 1] .. ARGV[i + 2])
  elseif string.sub(redis.sha1hex(blob), 1, 16) == ARGV[i + 1] then
    redis.call('HSET', data, ARGV[i], ARGV[i + 2])
  end
end
local created = redis.call('HSETNX', data, 'id', ARGV[3])
return {apply_ttl(ARGV[2]), created}
"""

# ARGV: ns, checkpoint id ('' = latest), then escaped channel names.
# Walks the parent chain of the target; per ancestor returns its record and writes, and stops
# once every channel has met a stored (non-empty) blob.
HISTORY = r"""
local ns, cid = ARGV[1], ARGV[2]
local member = target_member(ns, cid)
if not member then return {{}, {}, {}} end
local raw = redis.call('HGET', data, member)
if not raw then return {{}, {}, {}} end
local remaining, left = {}, 0
for i = 3, #ARGV do remaining[ARGV[i]] = true left = left + 1 end
local parent = record(member, raw)[2]
local steps, blobs, seen, keyframes, kseen = {}, {}, {}, {}, {}
while parent and left > 0 do
  local m = 'c' .. S .. ns .. S .. parent
  raw = is_member(m) and redis.call('HGET', data, m)
  if not raw then break end
  local r = record(m, raw)
  local kf = add_keyframe(m, r, keyframes, kseen)
  steps[#steps + 1] = {m, raw, redis.call('HGET', data, writes_field(m)), kf}
  if r[1] <= 3 then
    -- Formats 2 and 3 show inline values (3 as the marker 'I'): the channel has its value here.
    -- Format 4 hides them; the client stops at them, the walk here may go a little further.
    for i = 1, #r[7], 3 do
      local inline = r[7][i + 2]
      if remaining[r[7][i]] and inline ~= '' and inline ~= 'E' then
        remaining[r[7][i]] = nil
        left = left - 1
      end
    end
  end
  for _, p in ipairs(blob_pairs(r)) do
    local ch = p[1]
    if remaining[ch] then
      local f = 'b' .. S .. ns .. S .. ch .. S .. p[2]
      local v = redis.call('HGET', data, f)
      if v and v ~= 'E' then
        add_chain(f, blobs, seen)
        remaining[ch] = nil
        left = left - 1
      end
    end
  end
  parent = r[2]
end
return {steps, blobs, keyframes}
"""

# Keeps the newest checkpoint of each namespace, and the ancestors a DeltaChannel needs to
# rebuild its value.
PRUNE = r"""
local dead = 0
for _, head in ipairs(namespace_heads()) do dead = dead + trim_namespace(head, 1) end
return {dead, collect_garbage()}
"""

# ARGV: the thread's history limit ('' = the saver's, '0' = keep all), the saver's limit.
# Stores the thread's limit and trims every namespace to it now; returns the checkpoints that
# went, or -2 when the thread has none.
LIMIT_HISTORY = r"""
if redis.call('EXISTS', idx) == 0 then return -2 end
if ARGV[1] == '' then
  redis.call('HDEL', data, 'h')
else
  redis.call('HSET', data, 'h', ARGV[1])
end
local limit, gone = history_limit(ARGV[2]), 0
if limit > 0 then
  for _, head in ipairs(namespace_heads()) do gone = gone + trim_namespace(head, limit) end
  if gone > 0 then collect_garbage() end
end
return gone
"""

# ARGV: canonical run ids. Deletes checkpoints whose metadata run_id is one of them.
DELETE_RUNS = r"""
local runs = {}
for i = 1, #ARGV do runs[ARGV[i]] = true end
local dead = {}
for _, m in ipairs(redis.call('ZRANGE', idx, 0, -1)) do
  local raw = redis.call('HGET', data, m)
  if raw then
    local run = record(m, raw)[8]['run_id']
    if run and runs[run] then dead[#dead + 1] = m end
  end
end
if #dead == 0 then return {0, -1} end
chunked('ZREM', idx, dead)
return {#dead, collect_garbage()}
"""

# Everything of a thread but its settings, to copy it elsewhere.
DUMP = r"""
local members = redis.call('ZRANGE', idx, 0, -1)
local fields = {}
for _, f in ipairs(redis.call('HKEYS', data)) do
  if f ~= 't' and f ~= 'h' and f ~= 'g' and f ~= 'id' then fields[#fields + 1] = f end
end
local values = {}
if #fields > 0 then values = chunked('HMGET', data, fields) end
return {members, fields, values}
"""

# ARGV: default ttl ms, thread id, replace ('1' drops what the thread had), member count,
#       members..., count of fields to delete, those fields..., then field/value pairs
RESTORE = r"""
if ARGV[3] == '1' then redis.call('DEL', idx, data) end
local n = tonumber(ARGV[4])
if n > 0 then
  local z = {}
  for i = 5, 4 + n do z[#z + 1] = 0 z[#z + 1] = ARGV[i] end
  chunked('ZADD', idx, z)
end
local r = tonumber(ARGV[5 + n])
if r > 0 then
  local gone = {}
  for i = 6 + n, 5 + n + r do
    gone[#gone + 1] = ARGV[i]
    -- A record the tier dropped is of a checkpoint it pruned: out of the index as well.
    if string.sub(ARGV[i], 1, 2) == 'c' .. S then redis.call('ZREM', idx, ARGV[i]) end
  end
  chunked('HDEL', data, gone)
end
local pairs_ = {}
for i = 6 + n + r, #ARGV do pairs_[#pairs_ + 1] = ARGV[i] end
if #pairs_ > 0 then chunked('HSET', data, pairs_) end
if redis.call('EXISTS', idx) == 0 then
  redis.call('DEL', data)
  return -2
end
redis.call('HSETNX', data, 'id', ARGV[2])
return apply_ttl(ARGV[1])
"""

# ARGV: mode ('pin' | 'unpin' | 'set' | 'get'), ttl ms for 'set', default ttl ms
TTL = r"""
if redis.call('EXISTS', idx) == 0 then return -2 end
local mode = ARGV[1]
if mode == 'pin' then
  redis.call('HSET', data, 't', '0')
elseif mode == 'unpin' then
  redis.call('HDEL', data, 't')
elseif mode == 'set' then
  redis.call('HSET', data, 't', ARGV[2])
end
if mode ~= 'get' then apply_ttl(ARGV[3]) end
return redis.call('PTTL', data)
"""


def _script(name: str, body: str) -> Script:
    return Script(name, PRELUDE + body)


SCRIPTS: dict[str, Script] = {
    script.name: script
    for script in (
        _script("get", GET),
        _script("list", LIST),
        _script("put", PUT),
        _script("put_writes", PUT_WRITES),
        _script("history", HISTORY),
        _script("prune", PRUNE),
        _script("limit_history", LIMIT_HISTORY),
        _script("delete_runs", DELETE_RUNS),
        _script("dump", DUMP),
        _script("restore", RESTORE),
        _script("ttl", TTL),
    )
}
