"""Every Lua script that touches arq's keys, beside each other so that an arq upgrade is checked
against one file. Each says what it takes (KEYS, ARGV) and answers."""

from __future__ import annotations

from chat.jobqueue.keys import (
    IN_PROGRESS_PREFIX,
    JOB_PREFIX,
    RESULT_PREFIX,
    RETRY_KEY_SECONDS,
    RETRY_PREFIX,
    WORKER_RECORD_PREFIX,
)

# A Lua function that enqueues one job the way enqueue_job does, for scripts that do more in the
# same round trip (the api's send, `chat.jobqueue.accept`). Returns 1 when enqueued, 0 when a job
# with that id is still queued, running or has a result.
LUA_ENQUEUE = f"""
local function arq_enqueue(queue, job_id, body, score, expires_ms, wake)
  local job = '{JOB_PREFIX}' .. job_id
  if redis.call('EXISTS', job, '{RESULT_PREFIX}' .. job_id) ~= 0 then return 0 end
  redis.call('PSETEX', job, expires_ms, body)
  redis.call('ZADD', queue, score, job_id)
  redis.call('PUBLISH', wake, '1')
  return 1
end
"""

# KEYS[1] the queue. ARGV: job id, body, score (ms), expiry (ms), wake channel.
ENQUEUE = (
    LUA_ENQUEUE
    + """
return arq_enqueue(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
"""
)

# KEYS[1] the queue, KEYS[2] the worker's set of held jobs. ARGV: now (ms), in-progress life (ms),
# worker id, how many to take, how many due entries to look at at most. Returns
# {next due score or -1, id, score, body or nil, tries, id, score, ...}.
CLAIM = f"""
local now = tonumber(ARGV[1])
local want = tonumber(ARGV[4])
local scan = tonumber(ARGV[5])
local out = {{-1}}
local taken, offset = 0, 0
while taken < want and offset < scan do
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', offset, 200)
  if #due == 0 then break end
  for i = 1, #due, 2 do
    local id = due[i]
    if redis.call('SET', '{IN_PROGRESS_PREFIX}' .. id, ARGV[3], 'PX', ARGV[2], 'NX') then
      local retry = '{RETRY_PREFIX}' .. id
      local tries = redis.call('INCR', retry)
      redis.call('EXPIRE', retry, {RETRY_KEY_SECONDS})
      redis.call('SADD', KEYS[2], id)
      out[#out + 1] = id
      out[#out + 1] = due[i + 1]
      out[#out + 1] = redis.call('GET', '{JOB_PREFIX}' .. id)
      out[#out + 1] = tries
      taken = taken + 1
      if taken >= want then break end
    end
  end
  offset = offset + 200
end
local later = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
if #later > 0 then out[1] = later[2] end
return out
"""

# KEYS: queue, dead-letter hash, dead-letter index. ARGV: job id, job body, now (ms), expiry (ms),
# wake channel. Returns 1 re-enqueued, 0 the job is queued or running, -1 no such dead letter.
REQUEUE = f"""
local id = ARGV[1]
if redis.call('HEXISTS', KEYS[2], id) == 0 then return -1 end
if redis.call('EXISTS', '{JOB_PREFIX}' .. id, '{IN_PROGRESS_PREFIX}' .. id) ~= 0
   or redis.call('ZSCORE', KEYS[1], id) then
  return 0
end
redis.call('DEL', '{RESULT_PREFIX}' .. id, '{RETRY_PREFIX}' .. id)
redis.call('PSETEX', '{JOB_PREFIX}' .. id, ARGV[4], ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[3], id)
redis.call('HDEL', KEYS[2], id)
redis.call('ZREM', KEYS[3], id)
redis.call('PUBLISH', ARGV[5], '1')
return 1
"""

# KEYS[1] a shard's worker registry. ARGV[1] the shard's tag ("" on one Redis), which the records
# and held sets of that shard carry (`chat.jobqueue.heartbeats`). Returns {number of dead workers,
# dead id..., released job id...}: a job is released (its in-progress key deleted, so any worker may
# claim it) only while the dead worker still holds it, never when another worker has claimed it since.
REAP = f"""
local dead, released = {{}}, {{}}
local prefix = '{WORKER_RECORD_PREFIX}' .. ARGV[1]
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if redis.call('EXISTS', prefix .. id) == 0 then
    dead[#dead + 1] = id
    local held = prefix .. id .. ':jobs'
    for _, job in ipairs(redis.call('SMEMBERS', held)) do
      local progress = '{IN_PROGRESS_PREFIX}' .. job
      if redis.call('GET', progress) == id then
        redis.call('DEL', progress)
        released[#released + 1] = job
      end
    end
    redis.call('DEL', held)
    redis.call('ZREM', KEYS[1], id)
  end
end
local out = {{#dead}}
for _, id in ipairs(dead) do out[#out + 1] = id end
for _, job in ipairs(released) do out[#out + 1] = job end
return out
"""

# KEYS[1] one worker's set of the jobs it holds from one shard. ARGV: the worker's id, then the
# ids of the jobs it knows it holds. Releases the others it holds (a claim Redis ran whose answer
# the worker never got): their in-progress key goes, and the try that claim counted is given back.
# Returns the released ids.
RELEASE_UNKNOWN = f"""
local known = {{}}
for i = 2, #ARGV do known[ARGV[i]] = true end
local released = {{}}
for _, job in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if not known[job] then
    local progress = '{IN_PROGRESS_PREFIX}' .. job
    if redis.call('GET', progress) == ARGV[1] then
      redis.call('DEL', progress)
      local retry = '{RETRY_PREFIX}' .. job
      if tonumber(redis.call('GET', retry) or '0') > 0 then redis.call('DECR', retry) end
      released[#released + 1] = job
    end
    redis.call('SREM', KEYS[1], job)
  end
end
return released
"""

# KEYS[1] the queue. ARGV: now (ms), whether to read each job's function, scan limit. Returns
# {due, deferred, in progress, oldest waiting score or -1, scanned, fn, queued, running, ...}.
# The function is read from the body's JSON by pattern (`"f":"..."`, as `codec.job_body` writes it).
COUNT = f"""
local now = tonumber(ARGV[1])
local by_function = ARGV[2] == '1'
local limit = tonumber(ARGV[3])
local due = redis.call('ZCOUNT', KEYS[1], '-inf', now)
local deferred = redis.call('ZCARD', KEYS[1]) - due
local running, oldest, scanned, offset = 0, -1, 0, 0
local fq, fr, names = {{}}, {{}}, {{}}
while offset < due and scanned < limit do
  local page = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', offset, 500)
  if #page == 0 then break end
  for i = 1, #page, 2 do
    local id = page[i]
    local held = redis.call('EXISTS', '{IN_PROGRESS_PREFIX}' .. id) == 1
    local name = '*'
    if by_function then
      local body = redis.call('GET', '{JOB_PREFIX}' .. id)
      name = (body and string.match(body, '"f":"([^"]*)"')) or 'unknown'
      if not fq[name] then names[#names + 1] = name; fq[name] = 0; fr[name] = 0 end
    end
    if held then
      running = running + 1
      if by_function then fr[name] = fr[name] + 1 end
    else
      if oldest == -1 then oldest = page[i + 1] end
      if by_function then fq[name] = fq[name] + 1 end
    end
    scanned = scanned + 1
  end
  offset = offset + 500
end
local out = {{due, deferred, running, oldest, scanned}}
for _, name in ipairs(names) do
  out[#out + 1] = name; out[#out + 1] = fq[name]; out[#out + 1] = fr[name]
end
return out
"""
