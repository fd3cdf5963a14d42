-- runtime.lua — the atomic apply that every Funnel service shares.
--
-- One EVALSHA = one atomic step (DESIGN "Delivery guarantees"): dedup by
-- event id, the service's state change, outbox append with the next
-- contiguous seq, and the upstream checkpoint. A service's rules (its own
-- .lua) are appended after this prelude and before runtime_end.lua.
--
-- Why an overlay: a PUBLISH batch is all or nothing and later events see
-- earlier ones' effects, but Redis does not roll back a script's writes.
-- So handlers never call redis.call to write: they read and write through
-- the overlay below, which caches reads, queues writes and keeps an undo
-- log. Nothing reaches Redis until commit(), after every event passed. A
-- Lua error before commit therefore changes nothing at all.
--
-- Call: KEYS[1] = <prefix>seq (the prefix carries the service's hash tag),
-- ARGV[1] mode, ARGV[2] now (ms), ARGV[3] service name, ARGV[4] msgpack
-- {retention, dedup_ttl, rules}, ARGV[5..] mode arguments (runtime_end.lua).

local P = string.sub(KEYS[1], 1, -4)
local NOW = tonumber(ARGV[2])
local SVC = ARGV[3]
local RT = cmsgpack.unpack(ARGV[4])
local RULES = RT.rules or {}

-- Numbers go to Redis as exact decimal strings: Redis would format a Lua
-- number with %.14g and lose digits of large integers.
local function num2s (n)
    if type (n) ~= 'number' then return n end
    if n == math.floor (n) and math.abs (n) < 9007199254740992 then
        return string.format ('%d', n)
    end
    return string.format ('%.17g', n)
end

-- Builds a key under this service's prefix: K('lead', id) = P..'lead:'..id
local function K (...)
    local parts = {...}
    for i = 1, #parts do parts[i] = num2s (parts[i]) end
    return P .. table.concat (parts, ':')
end

---------------------------------------------------------------- overlay --
local cache_s, cache_h, cache_hall, cache_m, cache_z = {}, {}, {}, {}, {}
local writes, undo, outputs = {}, {}, {}
local NIL = {}      -- undo marker for "was not cached"

local function remember (tbl, key, old)
    undo[#undo + 1] = { tbl, key, old == nil and NIL or old }
end

local function sub (tbl, key)
    local t = tbl[key]
    if not t then
        t = {}
        tbl[key] = t
    end
    return t
end

local function write (...)
    writes[#writes + 1] = {...}
end

local st = {}

function st.get (key)
    local v = cache_s[key]
    if v == nil then
        v = redis.call ('GET', key)
        cache_s[key] = v
    end
    return v or nil
end

function st.set (key, value, ttl_s)
    remember (cache_s, key, cache_s[key])
    cache_s[key] = num2s (value)
    if ttl_s then
        write ('SET', key, num2s (value), 'EX', num2s (ttl_s))
    else
        write ('SET', key, num2s (value))
    end
end

function st.incr (key, n)
    local v = (tonumber (st.get (key)) or 0) + (n or 1)
    remember (cache_s, key, cache_s[key])
    cache_s[key] = num2s (v)
    write ('INCRBY', key, num2s (n or 1))
    return v
end

function st.hget (key, field)
    local t = sub (cache_h, key)
    local v = t[field]
    if v == nil and not cache_hall[key] then
        v = redis.call ('HGET', key, field)
        t[field] = v
    end
    return v or nil
end

function st.hset (key, field, value)
    local t = sub (cache_h, key)
    remember (t, field, t[field])
    t[field] = num2s (value)
    write ('HSET', key, field, num2s (value))
end

-- Sets several fields: st.hmset(key, {f = v, ...}); nil values are skipped.
function st.hmset (key, fields)
    for f, v in pairs (fields) do
        if v ~= nil then st.hset (key, f, v) end
    end
end

function st.hdel (key, field)
    local t = sub (cache_h, key)
    remember (t, field, t[field])
    t[field] = false
    write ('HDEL', key, field)
end

function st.hincr (key, field, n)
    local v = (tonumber (st.hget (key, field)) or 0) + (n or 1)
    local t = cache_h[key]
    remember (t, field, t[field])
    t[field] = num2s (v)
    write ('HINCRBY', key, field, num2s (n or 1))
    return v
end

-- The whole hash as a Lua table (field -> string), overlay applied.
function st.hgetall (key)
    local t = sub (cache_h, key)
    if not cache_hall[key] then
        local flat = redis.call ('HGETALL', key)
        for i = 1, #flat, 2 do
            if t[flat[i]] == nil then t[flat[i]] = flat[i + 1] end
        end
        remember (cache_hall, key, nil)
        cache_hall[key] = true
    end
    local out = {}
    for f, v in pairs (t) do
        if v then out[f] = v end
    end
    return out
end

function st.exists (key)
    return next (st.hgetall (key)) ~= nil
end

function st.sismember (key, member)
    local t = sub (cache_m, key)
    local v = t[member]
    if v == nil then
        v = redis.call ('SISMEMBER', key, member) == 1
        t[member] = v
    end
    return v
end

-- Adds member; true if it was new (overlay aware, so exact within a batch).
function st.sadd (key, member)
    if st.sismember (key, member) then return false end
    local t = cache_m[key]
    remember (t, member, false)
    t[member] = true
    write ('SADD', key, member)
    return true
end

function st.srem (key, member)
    if not st.sismember (key, member) then return false end
    local t = cache_m[key]
    remember (t, member, true)
    t[member] = false
    write ('SREM', key, member)
    return true
end

function st.zscore (key, member)
    local t = sub (cache_z, key)
    local v = t[member]
    if v == nil then
        v = tonumber (redis.call ('ZSCORE', key, member)) or false
        t[member] = v
    end
    return v or nil
end

function st.zadd (key, score, member)
    local t = sub (cache_z, key)
    remember (t, member, t[member])
    t[member] = score
    write ('ZADD', key, num2s (score), member)
end

function st.zincr (key, n, member)
    local v = (st.zscore (key, member) or 0) + n
    st.zadd (key, v, member)
    return v
end

function st.zrem (key, member)
    local t = sub (cache_z, key)
    remember (t, member, t[member])
    t[member] = false
    write ('ZREM', key, member)
end

-- Appends to a list (histories). Reads of lists see committed state only.
function st.rpush (key, value)
    write ('RPUSH', key, value)
end

function st.expire (key, ttl_s)
    write ('EXPIRE', key, num2s (ttl_s))
end

-- Members of a sorted set due by score (timers), committed state only.
function st.zdue (key, max_score, limit)
    return redis.call ('ZRANGEBYSCORE', key, '-inf', num2s (max_score),
                       'WITHSCORES', 'LIMIT', '0', num2s (limit or 100))
end

local function savepoint ()
    return { #writes, #undo, #outputs }
end

local function rollback (sp)
    for i = #undo, sp[2] + 1, -1 do
        local u = undo[i]
        if u[3] == NIL then u[1][u[2]] = nil else u[1][u[2]] = u[3] end
        undo[i] = nil
    end
    for i = #writes, sp[1] + 1, -1 do writes[i] = nil end
    for i = #outputs, sp[3] + 1, -1 do outputs[i] = nil end
end

------------------------------------------------------- handler toolkit --
-- The event being handled (set by the runtime): handlers read CAUSE.
local CAUSE = nil
local EMITS = 0

-- A handler returns nil on success or fail(code, message) to refuse.
local function fail (code, message)
    return { err = code, message = message }
end

-- Queues an output event; its id is deterministic (same cause, same id).
-- key: optional seed replacing the cause id (timers, sweeps).
local function emit (etype, data, key)
    EMITS = EMITS + 1
    local seed = key or ((CAUSE and CAUSE.id or 'tick') .. '|' .. EMITS)
    outputs[#outputs + 1] = {
        type = etype, data = data,
        id = SVC .. ':' .. string.sub (redis.sha1hex (seed .. '|' .. etype), 1, 40),
        cause = CAUSE and CAUSE.id or nil
    }
end

-- Service counters, read by STATS and the monitor.
local function count (name, n)
    st.hincr (P .. 'stats', name, n or 1)
end

local function counter (name)
    return tonumber (st.hget (P .. 'stats', name)) or 0
end

-- A field of a hash as a number (0 when absent).
local function hnum (key, field)
    return tonumber (st.hget (key, field)) or 0
end

-- Tables the service fills in: on[type] for PUBLISH, consume[type] for
-- upstream events, query[kind] for GET, ticks[] run by the timer.
local on, consume, query, ticks = {}, {}, {}, {}
