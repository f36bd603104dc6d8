package session

import "github.com/redis/go-redis/v9"

// Every script touches exactly one key (see "Atomicity" in the package
// doc). Times are Unix milliseconds, index scores Unix microseconds; all
// fit a Lua double exactly. Numbers are written with %d so Redis never
// stores exponent notation.

// lookupScript reads a record, decides whether it is expired and, when
// ARGV[6] is "1" and the last refresh is at least the refresh interval
// ago, slides the idle expiry and the key's TTL.
//
//	KEYS[1] record
//	ARGV    now, idle, refresh interval, absolute timeout, grace, slide
//	reply   nil (absent) | {state, sub, cl, md, c, ls, ie, ae}
//	        state 0 expired, 1 live, 2 live and refreshed
var lookupScript = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'sub', 'cl', 'md', 'c', 'ls', 'ie', 'ae')
if not v[1] then return false end
local now = tonumber(ARGV[1])
local c, ls, ie, ae = tonumber(v[4]), tonumber(v[5]), tonumber(v[6]), tonumber(v[7])
if not (c and ls and ie and ae) then
  return redis.error_reply('ERR tollgate: corrupt session record')
end
local cap = c + tonumber(ARGV[4])
if cap > ae then cap = ae end
local st = 1
if now >= ie or now >= cap then
  st = 0
elseif ARGV[6] == '1' and now - ls >= tonumber(ARGV[3]) then
  ls = now
  ie = now + tonumber(ARGV[2])
  if ie > cap then ie = cap end
  redis.call('HSET', KEYS[1], 'ls', string.format('%d', ls), 'ie', string.format('%d', ie))
  redis.call('PEXPIRE', KEYS[1], string.format('%d', ie - now + tonumber(ARGV[5])))
  st = 2
end
return {st, v[1], v[2] or '', v[3] or '', string.format('%d', c), string.format('%d', ls),
  string.format('%d', ie), string.format('%d', ae)}
`)

// createScript writes a new record unless the key exists.
//
//	KEYS[1] record
//	ARGV    sub, cl, md, c, ls, ie, ae, ttl
//	reply   1 created | 0 key exists
var createScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'sub', ARGV[1], 'cl', ARGV[2], 'md', ARGV[3], 'c', ARGV[4],
  'ls', ARGV[5], 'ie', ARGV[6], 'ae', ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[8])
return 1
`)

// indexScript adds a session to its subject's index: it prunes entries
// created before ARGV[3] (certainly expired), adds ARGV[1], makes the key
// live at least ARGV[5] ms and, when ARGV[4] > 0, returns the oldest
// members beyond that many, never ARGV[1] itself.
//
//	KEYS[1] subject index
//	ARGV    member, score, prune-before score, max, ttl
//	reply   members to evict
var indexScript = redis.NewScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[5]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
local max = tonumber(ARGV[4])
if max <= 0 then return {} end
local n = redis.call('ZCARD', KEYS[1])
if n <= max then return {} end
local cand = redis.call('ZRANGE', KEYS[1], 0, n - max)
local out = {}
for i = 1, #cand do
  if cand[i] ~= ARGV[1] and #out < n - max then out[#out + 1] = cand[i] end
end
return out
`)

// revokeScript deletes a record and publishes its hash on the
// invalidation channel.
//
//	KEYS[1] record
//	ARGV    now, absolute timeout, channel, payload
//	reply   nil (absent) | {live, sub}
var revokeScript = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'sub', 'c', 'ie', 'ae')
if not v[1] then return false end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[3], ARGV[4])
local now = tonumber(ARGV[1])
local c, ie, ae = tonumber(v[2]) or 0, tonumber(v[3]) or 0, tonumber(v[4]) or 0
local cap = c + tonumber(ARGV[2])
if cap > ae then cap = ae end
local live = 1
if now >= ie or now >= cap then live = 0 end
return {live, v[1]}
`)
