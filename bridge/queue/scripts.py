"""The queue's Lua scripts, each run through FastScript (→ queue).

Every script that adds a ready job (the ingest, the enqueue, a finish that puts a job back)
pushes a wake token in the same step; the claim and the finish replace arq's round trips
(bridge/queue/worker.py, docs/queue.md).
"""

from __future__ import annotations

from bridge.events import MAX_ID_LENGTH
from bridge.queue.codec import job_lua
from bridge.queue.keys import ARQ_JOB_PREFIX, WAKE_SUFFIX

# Workers wait on `<queue>:wake` for a token rather than polling: every script that adds
# ready jobs pushes one (bridge/queue/worker.py). A few tokens are kept, enough to wake every
# worker; a token without a job costs a worker one empty claim.
WAKE_TOKENS = 64
# The list is trimmed only when a push takes it past WAKE_TOKENS (LPUSH returns the length),
# so it never holds more, as when every push trimmed it.
WAKE_LUA = f"""
if redis.call('LPUSH', KEYS[1] .. '{WAKE_SUFFIX}', '1') > {WAKE_TOKENS} then
  redis.call('LTRIM', KEYS[1] .. '{WAKE_SUFFIX}', 0, {WAKE_TOKENS - 1})
end
"""

# `zadd_all(key, {score, member, ...})`: the members added with one ZADD (in chunks of 2,000
# pairs: Lua's unpack takes some 8,000 values at most).
ZADD_ALL_LUA = """
local function zadd_all(key, pairs)
  for i = 1, #pairs, 4000 do
    redis.call('ZADD', key, unpack(pairs, i, math.min(i + 3999, #pairs)))
  end
end
"""

# The ingest script. Duplicates are recognised per source (CloudEvents: source + id identify
# an event): `seen:<stored id>` holds the source that owns the id. An event whose id another
# source already owns is stored under `<source>:<id>` instead (hashed when long), so no
# sender can pre-empt another's events; and should that be taken too (a sender sent it on
# purpose), under a fresh id remembered in `alias:<sha1 of source and id>`, a key no sender
# names. Either way the caller learns the id each event is stored under.
#
# A new event whose id no one holds takes a fast path: one EXISTS finds neither its
# source-qualified id nor its alias, and `SET seen:<id> NX` takes the plain id (2 commands
# instead of 3 GETs and a SET). When either finds something, the slow path below looks at
# every id, as before.
#
# KEYS: queue, events index. ARGV: key prefix, dedup ttl s, event ttl s, now ms, job expiry
# ms, '1' to trim the events index of entries older than the event ttl (Store does it at
# most once a minute) or '0', then (source, id, event json) per event; the json opens with
# its specversion and id. Returns (1 stored | 0 duplicate, stored id) per event.
INGEST = (
    """
local prefix = ARGV[1]
local dedup_ttl = ARGV[2]
local now = ARGV[4]
local out = {}
local indexed, queued = {}, {}
if ARGV[6] == '1' then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(now) - tonumber(ARGV[3]) * 1000)
end
local function bounded(id)
  if #id > """
    + str(MAX_ID_LENGTH)
    + """ then return 'evt_' .. string.sub(redis.sha1hex(id), 1, 32) end
  return id
end
-- The stored id for one event: {id, true} when new, {id, false} when a duplicate.
-- Every id this source may already own is looked at before a free one is taken: another
-- source's claim on the plain id can expire first, and a redelivery must still be known.
local function claim(source, id)
  local qualified = bounded(source .. ':' .. id)
  local alias = prefix .. 'alias:' .. redis.sha1hex(source .. '\\n' .. id)
  if redis.call('EXISTS', prefix .. 'seen:' .. qualified, alias) == 0
      and redis.call('SET', prefix .. 'seen:' .. id, source, 'NX', 'EX', dedup_ttl) then
    return id, true
  end
  local candidates = {id, qualified}
  local owners = {}
  for i, candidate in ipairs(candidates) do
    local owner = redis.call('GET', prefix .. 'seen:' .. candidate)
    owners[i] = owner
    -- '1' marks ids stored before duplicates were told apart by source.
    if owner == source or (i == 1 and owner == '1') then return candidate, false end
  end
  local known = redis.call('GET', alias)
  if known then return known, false end
  for i, candidate in ipairs(candidates) do
    if not owners[i] then
      redis.call('SET', prefix .. 'seen:' .. candidate, source, 'EX', dedup_ttl)
      return candidate, true
    end
  end
  for _ = 1, 16 do
    local n = redis.call('INCR', prefix .. 'alias:next')
    redis.call('EXPIRE', prefix .. 'alias:next', dedup_ttl)
    local candidate = 'evt_' .. string.sub(redis.sha1hex(alias .. '#' .. n), 1, 32)
    local seen = prefix .. 'seen:' .. candidate
    if redis.call('SET', seen, source, 'NX', 'EX', dedup_ttl) then
      redis.call('SET', alias, candidate, 'EX', dedup_ttl)
      return candidate, true
    end
  end
  return nil, false
end
"""
    + ZADD_ALL_LUA
    + """
-- The events index and the queue each get one ZADD for the whole call (below).
local function add_all()
  zadd_all(KEYS[2], indexed)
  zadd_all(KEYS[1], queued)
  if #queued > 0 then
"""
    + WAKE_LUA
    + """
  end
end
for a = 7, #ARGV, 3 do
  local source, id, event = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local stored_id, new = claim(source, id)
  if not stored_id then
    -- Not stored: never answer this event as a duplicate. The events before it in the
    -- call are stored (and queued); the sender's retry finds them as duplicates.
    add_all()
    return redis.error_reply('no free id for event ' .. id .. ' from ' .. source)
  end
  if new then
    if stored_id ~= id then
      -- The same event under its stored id: the id is the second attribute.
      local rest = string.find(event, ',"source":', 1, true)
      event = '{"specversion":"1.0","id":' .. cjson.encode(stored_id) .. string.sub(event, rest)
    end
    local job_id = prefix .. 'handle:' .. stored_id
    redis.call('SET', prefix .. 'event:' .. stored_id, event, 'EX', ARGV[3])
    redis.call('PSETEX', '"""
    + ARQ_JOB_PREFIX
    + """' .. job_id, ARGV[5],
      """
    + job_lua("handle_event", "'[' .. event .. ']'", "now")
    + """)
    indexed[#indexed + 1] = now
    indexed[#indexed + 1] = stored_id
    queued[#queued + 1] = now
    queued[#queued + 1] = job_id
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
  out[#out + 1] = stored_id
end
add_all()
return out
"""
)

# KEYS: queue, then (job key, result key) per job. ARGV: job expiry ms, then (job id, score,
# payload) per job. A job whose id is queued, running or has a kept result is skipped.
ENQUEUE = (
    ZADD_ALL_LUA
    + """
local out = {}
local queued = {}
local n = (#KEYS - 1) / 2
for i = 0, n - 1 do
  local a = 2 + i * 3
  if redis.call('EXISTS', KEYS[2 + i * 2], KEYS[3 + i * 2]) == 0 then
    redis.call('PSETEX', KEYS[2 + i * 2], ARGV[1], ARGV[a + 2])
    queued[#queued + 1] = ARGV[a + 1]
    queued[#queued + 1] = ARGV[a]
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
-- One ZADD for every job queued.
zadd_all(KEYS[1], queued)
if #queued > 0 then
"""
    + WAKE_LUA
    + """
end
return out
"""
)


# KEYS[1]: a hash. ARGV: field, value, ttl s.
PUT = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
"""

# KEYS[1]: the queue. ARGV: now ms, how many to take, in-progress ms, ids to look at at
# most, then the in-progress, retry and job key prefixes, the retry counter's ttl, and how
# far ahead (ms) the caller wants to know the next due job. Returns (id, score, payload or
# nil, try) per claimed job, then the score of the earliest job due after now and within
# that horizon, or nil.
#
# A job is taken with `SET in-progress 1 PX … NX` (one command: a job in progress anywhere
# is skipped by the same SET); its try is counted with `SET retry 1 EX … NX` on its first
# pickup, else INCR and EXPIRE as arq does. The pages run to the end of the horizon, so the
# first id not due yet gives the next due score without a query of its own; a short page is
# the last.
#
# A claimed job is re-scored to when its in-progress key expires (now + in-progress ms): a
# running job is then not due, so the claims made while it runs do not look at it again,
# and should its worker die it falls due when its in-progress key expires, when arq's rule
# lets another worker take it. The finish removes it, or puts it back under the score it
# was claimed with (plus a retry's defer). The payloads come in one MGET and the re-scores
# in one ZADD.
CLAIM = """
local out = {}
local now = tonumber(ARGV[1])
local wanted = tonumber(ARGV[2])
local scan = tonumber(ARGV[4])
local horizon = now + tonumber(ARGV[9])
local busy = now + tonumber(ARGV[3])
local claimed, offset, later = 0, 0, false
local jobs, rescored = {}, {}
while claimed < wanted and offset < scan and not later do
  local page = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', horizon, 'WITHSCORES',
                          'LIMIT', offset, 64)
  for i = 1, #page, 2 do
    local id = page[i]
    if tonumber(page[i + 1]) > now then
      later = page[i + 1]
      break
    end
    if redis.call('SET', ARGV[5] .. id, '1', 'PX', ARGV[3], 'NX') then
      local retry = ARGV[6] .. id
      local try = 1
      if not redis.call('SET', retry, '1', 'EX', ARGV[8], 'NX') then
        try = redis.call('INCR', retry)
        redis.call('EXPIRE', retry, ARGV[8])
      end
      out[#out + 1] = id
      out[#out + 1] = page[i + 1]
      out[#out + 1] = false
      out[#out + 1] = try
      jobs[#jobs + 1] = ARGV[7] .. id
      rescored[#rescored + 1] = busy
      rescored[#rescored + 1] = id
      claimed = claimed + 1
      if claimed >= wanted then break end
    end
  end
  if #page < 128 then break end
  offset = offset + 64
end
if not later and claimed < wanted and offset >= scan then
  -- Every id looked at is in progress: the next due score lies further on.
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, horizon, 'WITHSCORES',
                         'LIMIT', 0, 1)
  later = due[2] or false
end
for i = 1, #jobs, 1000 do
  local payloads = redis.call('MGET', unpack(jobs, i, math.min(i + 999, #jobs)))
  for j = 1, #payloads do
    out[(i + j - 2) * 4 + 3] = payloads[j]
  end
end
for i = 1, #rescored, 4000 do
  redis.call('ZADD', KEYS[1], unpack(rescored, i, math.min(i + 3999, #rescored)))
end
out[#out + 1] = later
return out
"""

# KEYS: queue, in-progress key, job key, retry key, result key. ARGV: job id, 'done' or
# 'again', result payload ('' for none), result ttl ms, score increment ms ('0': none),
# keep the in-progress key for ms ('0': delete it), the score the job was claimed with.
# 'again' puts the job back under that score plus the increment (the claim re-scored it):
# a cancelled job is due at once, a retry `defer` after now, as with arq's ZINCRBY.
FINISH = (
    """
-- The lists the job hands over (KEYS[6…]): per list, in ARGV from 8 on, its ttl s, how
-- many values, the values.
local a = 8
for k = 6, #KEYS do
  local n = tonumber(ARGV[a + 1])
  if n > 0 then
    redis.call('RPUSH', KEYS[k], unpack(ARGV, a + 2, a + 1 + n))
    redis.call('EXPIRE', KEYS[k], ARGV[a])
  end
  a = a + 2 + n
end
local keep = ARGV[6] ~= '0'
if keep then
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
end
if ARGV[2] == 'done' then
  if ARGV[3] ~= '' then
    redis.call('SET', KEYS[5], ARGV[3], 'PX', ARGV[4])
  end
  -- One DEL for the in-progress (unless kept), job and retry keys.
  if keep then
    redis.call('DEL', KEYS[3], KEYS[4])
  else
    redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
  end
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  if not keep then
    redis.call('DEL', KEYS[2])
  end
  if ARGV[5] ~= '0' then
    redis.call('ZADD', KEYS[1], tonumber(ARGV[7]) + tonumber(ARGV[5]), ARGV[1])
  else
    -- XX: a job taken off the queue while it ran stays off, as before.
    redis.call('ZADD', KEYS[1], 'XX', ARGV[7], ARGV[1])
  end
  -- Back on the queue, now (cancelled) or later (a retry): a waiting worker takes it, or
  -- learns when it is due.
"""
    + WAKE_LUA
    + """
end
return 1
"""
)
