"""The Lua scripts behind ``processors.session``: each runs atomically inside Redis.

Atomic and idempotent is what lets a reprocessed turn (same ``message_id`` after a crash) be run
again safely: a turn is appended only if its id was not in the session's id set yet.
"""

# Shared Lua helpers: a JSON turn starts with a fixed prefix so a turn is found by message id with a
# plain substring match (no JSON parsing on the hot path); rolling pops the oldest turns into the
# summary, keeping it under a byte budget and cutting only between UTF-8 characters.
LUA_HELPERS = r"""
local function utf8_head(s, k)
  if #s <= k then return s end
  while k > 0 do
    local b = string.byte(s, k + 1)
    if b < 128 or b >= 192 then break end
    k = k - 1
  end
  return string.sub(s, 1, k)
end

local function utf8_tail(s, k)
  if #s <= k then return s end
  local p = #s - k + 1
  while p <= #s do
    local b = string.byte(s, p)
    if b < 128 or b >= 192 then break end
    p = p + 1
  end
  return string.sub(s, p)
end

local function first_sentence(text, cap)
  local flat = string.gsub(text, '%s+', ' ')
  flat = string.gsub(flat, '^ ', '')
  local s = string.match(flat, '^(.-[%.!%?])%s') or flat
  s = string.gsub(s, ' $', '')
  if #s > cap then s = utf8_head(s, cap - 3) .. '...' end
  return s
end

-- A question rolls off only once its answer is recorded (its 'a:' id is in the id set), and the
-- turns behind it wait with it: otherwise a burst of questions in one session rolls its older
-- questions into the summary before their answers come, and each answer then lands without its
-- question. A question that never gets an answer (dead-lettered downstream) must not pin the window
-- for ever: beyond twice the limit the oldest turns roll whatever they are.
local function may_roll(ids, raw)
  local ok, t = pcall(cjson.decode, raw)
  if not ok or type(t) ~= 'table' or t['role'] ~= 'user' then return true end
  return redis.call('SISMEMBER', ids, 'a:' .. tostring(t['message_id'])) == 1
end

local function roll(turns, meta, ids, limit, max_chars, piece_cap)
  local len = redis.call('LLEN', turns)
  local over = len - limit
  if over <= 0 then return end
  local forced = len - 2 * limit
  local summary = redis.call('HGET', meta, 'summary') or ''
  local rolled = 0
  for i = 1, over do
    local raw = redis.call('LINDEX', turns, 0)
    if i > forced and not may_roll(ids, raw) then break end
    redis.call('LPOP', turns)
    rolled = rolled + 1
    local ok, t = pcall(cjson.decode, raw)
    if ok and type(t) == 'table' and type(t['text']) == 'string' then
      local line = tostring(t['role']) .. ': ' .. first_sentence(t['text'], piece_cap)
      if summary == '' then summary = line else summary = summary .. '\n' .. line end
    end
  end
  if rolled == 0 then return end
  while #summary > max_chars do
    local nl = string.find(summary, '\n', 1, true)
    if nl == nil then summary = utf8_tail(summary, max_chars); break end
    summary = string.sub(summary, nl + 1)
  end
  redis.call('HSET', meta, 'summary', summary)
end

local function find_turn(all, prefix)
  for i = 1, #all do
    if string.sub(all[i], 1, #prefix) == prefix then return i end
  end
  return nil
end
"""

# The user message appended once per message id (its 'u:' id in the session's id set), the window
# rolled and the session's TTL refreshed. Returns {fresh, summary, failures, history_json...}: the
# history up to the message (a reprocessed older turn sees only what came before it).
LUA_ENRICH_TURN = r"""
local function enrich_turn(turns, meta, ids, message_id, turn_json, user_prefix, n, ttl, max_chars, piece_cap)
  local all = redis.call('LRANGE', turns, 0, -1)
  local fresh = redis.call('SADD', ids, 'u:' .. message_id)
  local upto = #all
  if fresh == 1 then
    redis.call('RPUSH', turns, turn_json)
    roll(turns, meta, ids, n + 1, max_chars, piece_cap)
  else
    local i = find_turn(all, user_prefix)
    if i ~= nil then upto = i - 1 end
  end
  local m = redis.call('HMGET', meta, 'summary', 'failures')
  redis.call('EXPIRE', turns, ttl)
  redis.call('EXPIRE', meta, ttl)
  redis.call('EXPIRE', ids, ttl)
  local out = {fresh, m[1] or '', m[2] or '0'}
  for i = math.max(1, upto - n + 1), upto do out[#out + 1] = all[i] end
  return out
end
"""

# Token bucket on server time, so clients' clocks do not matter; a denial spends no token.
# Returns allowed (1 or 0), seconds until a token is available (0 when allowed).
LUA_TAKE_TOKEN = r"""
local function take_token(key, cap, rate)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  local v = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens, ts = tonumber(v[1]), tonumber(v[2])
  if tokens == nil or ts == nil then tokens, ts = cap, now end
  tokens = math.min(cap, tokens + math.max(0, now - ts) * rate)
  local allowed, retry = 0, 0
  if tokens >= 1 then
    tokens = tokens - 1
    allowed = 1
  else
    retry = (1 - tokens) / rate
  end
  redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(now))
  redis.call('EXPIRE', key, math.ceil(cap / rate) + 1)
  return allowed, retry
end
"""

# KEYS: turns, meta, ids.  ARGV: message_id, turn_json, user_prefix, n, ttl, max_chars, piece_cap,
# failure_delta ('reset' | 'incr' | 'keep').  Returns {fresh, failures}
RECORD = LUA_HELPERS + r"""
local turns, meta, ids = KEYS[1], KEYS[2], KEYS[3]
local n, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local fresh = redis.call('SADD', ids, 'a:' .. ARGV[1])
if fresh == 1 then
  -- keep conversational order: the reply goes right after its question, even when a later
  -- question of the same session was enriched while this one was still being answered
  local all = redis.call('LRANGE', turns, 0, -1)
  local i = find_turn(all, ARGV[3])
  if i ~= nil then
    redis.call('LINSERT', turns, 'AFTER', all[i], ARGV[2])
  elseif redis.call('SISMEMBER', ids, 'u:' .. ARGV[1]) == 1 then
    -- its question was forced out already: older than everything left, so it goes first
    redis.call('LPUSH', turns, ARGV[2])
  else
    redis.call('RPUSH', turns, ARGV[2])
  end
  roll(turns, meta, ids, n, tonumber(ARGV[6]), tonumber(ARGV[7]))
  if ARGV[8] == 'reset' then
    redis.call('HSET', meta, 'failures', 0)
  elseif ARGV[8] == 'incr' then
    redis.call('HINCRBY', meta, 'failures', 1)
  end
end
redis.call('EXPIRE', turns, ttl)
redis.call('EXPIRE', meta, ttl)
redis.call('EXPIRE', ids, ttl)
return {fresh, redis.call('HGET', meta, 'failures') or '0'}
"""

# Admission and enrichment of one turn in one call, what the enrich stage does per turn:
# 1. a reply marker exists: {'replied'}, nothing written (the repeat gets no second reply);
# 2. else a rate token, unless this message was admitted before (its 'u:' id is in the session's id
#    set: a redelivery after a crash, or a batch re-sent after an error, is not charged twice); no
#    token: {'rate_limited', retry_after_s as string}, the message is NOT appended;
# 3. else enrich_turn: {'admitted', fresh, summary, failures, history_json...}.
# The keys, values and TTLs are those the earlier separate scripts (EXISTS, token bucket, enrich)
# wrote, so a rolling upgrade from a release that still ran them reads and writes the same state.
# KEYS: replied, bucket, turns, meta, ids.
# ARGV: capacity, refill per second, then message_id, turn_json, user_prefix, n, ttl, max_chars, piece_cap.
ADMIT = LUA_HELPERS + LUA_ENRICH_TURN + LUA_TAKE_TOKEN + r"""
if redis.call('EXISTS', KEYS[1]) == 1 then return {'replied'} end
if redis.call('SISMEMBER', KEYS[5], 'u:' .. ARGV[3]) == 0 then
  local allowed, retry = take_token(KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2]))
  if allowed == 0 then return {'rate_limited', tostring(retry)} end
end
local out = enrich_turn(KEYS[3], KEYS[4], KEYS[5], ARGV[3], ARGV[4], ARGV[5],
                        tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]))
table.insert(out, 1, 'admitted')
return out
"""

# A per-message claim with a fencing token, taken right before a reply is produced.
# KEYS: replied, claim, token counter.  ARGV: owner, claim ttl ms, idempotency ttl s.
# Returns {token, state, wait_ms}: state 'ok' (token is ours), 'replied' (drop the turn) or
# 'held' (another owner's live claim: wait up to wait_ms, then ask again).
CLAIM_REPLY = r"""
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, 'replied', 0} end
local held = redis.call('GET', KEYS[2])
if held then
  local owner, token = string.match(held, '^(.*):(%d+)$')
  if owner == ARGV[1] then
    redis.call('PEXPIRE', KEYS[2], ARGV[2])
    return {tonumber(token), 'ok', 0}
  end
  return {0, 'held', redis.call('PTTL', KEYS[2])}
end
local token = redis.call('INCR', KEYS[3])
redis.call('EXPIRE', KEYS[3], ARGV[3])
redis.call('SET', KEYS[2], ARGV[1] .. ':' .. token, 'PX', ARGV[2])
return {token, 'ok', 0}
"""

# Marks a produced reply, checking the fencing token. KEYS: replied, claim.  ARGV: owner:token, now
# ms, idempotency ttl s.  The marker is written whatever the token says (the reply *is* on Kafka, so
# any later claimant must drop the turn); returns {still_ours, first_marker}: {0, 0} means another
# owner took over the claim and replied too, i.e. a doubled reply the caller reports.
MARK_CLAIMED = r"""
local mine = redis.call('GET', KEYS[2]) == ARGV[1]
local first = redis.call('SET', KEYS[1], ARGV[2], 'NX', 'EX', ARGV[3])
if mine then redis.call('DEL', KEYS[2]) end
return {mine and 1 or 0, first and 1 or 0}
"""
