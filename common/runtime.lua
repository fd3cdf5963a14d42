-- runtime.lua — the atomic apply that every Funnel service shares.
--
-- One EVALSHA = one atomic step (proto/wire.md, "Delivery"): dedup by
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
local function K (a, b, ...)
    if ... == nil then         -- the common one- and two-part keys, no table
        if b == nil then return P .. num2s (a) end
        return P .. num2s (a) .. ':' .. num2s (b)
    end
    local parts = { a, b, ... }
    for i = 1, #parts do parts[i] = num2s (parts[i]) end
    return P .. table.concat (parts, ':')
end

---------------------------------------------------------------- overlay --
-- Reads are cached per key and field; writes change only the cache and
-- mark the key dirty. commit() then writes each dirty key's final value
-- once (one HSET per hash with all its changed fields, one SADD per set…),
-- so ten increments of a counter in a batch cost one write, not ten.
-- A rollback restores cached values from the undo log; a key left marked
-- dirty by a rolled-back event is written with its restored value, which
-- is what Redis (or an earlier event of the batch) already has: harmless.
local cache_s, cache_h, cache_hall, cache_m, cache_z = {}, {}, {}, {}, {}
local delta_h = {}  -- blind increments of hash fields whose value is unread
local dirty_s, dirty_h, dirty_m, dirty_z = {}, {}, {}, {}
local writes, outputs = {}, {}      -- writes: ordered (lists, expiry)
local undo_t, undo_k, undo_v, undo_n = {}, {}, {}, 0
local NIL = {}      -- undo marker for "was not cached"
local rcall = redis.call

local function remember (tbl, key, old)
    undo_n = undo_n + 1
    undo_t[undo_n], undo_k[undo_n] = tbl, key
    if old == nil then undo_v[undo_n] = NIL else undo_v[undo_n] = old end
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
        v = rcall ('GET', key)
        cache_s[key] = v
    end
    return v or nil
end

-- ttl_s: expiry in seconds; without it an existing expiry is kept.
function st.set (key, value, ttl_s)
    remember (cache_s, key, cache_s[key])
    -- The dirty mark carries the ttl: undo it with the value, or a refused
    -- event's ttl would reach a key that an earlier event (or Redis) keeps.
    remember (dirty_s, key, dirty_s[key])
    cache_s[key] = num2s (value)
    if ttl_s or not dirty_s[key] then dirty_s[key] = ttl_s or true end
end

function st.incr (key, n)
    local v = (tonumber (st.get (key)) or 0) + (n or 1)
    st.set (key, v)
    return v
end

-- Folds a pending blind increment into a freshly read value. On rollback
-- the field goes back to unread with its old delta: still consistent.
local function fold_delta (t, key, field, base)
    local d = delta_h[key]
    local n = d and d[field]
    if n then
        remember (d, field, n)
        d[field] = nil
        remember (t, field, nil)
        return num2s ((tonumber (base) or 0) + n)
    end
    return base
end

function st.hget (key, field)
    local t = sub (cache_h, key)
    local v = t[field]
    if v == nil and not cache_hall[key] then
        v = fold_delta (t, key, field, rcall ('HGET', key, field))
        t[field] = v
    end
    return v or nil
end

function st.hset (key, field, value)
    local t = sub (cache_h, key)
    remember (t, field, t[field])
    t[field] = num2s (value)
    sub (dirty_h, key)[field] = true
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
    sub (dirty_h, key)[field] = true
end

-- Adds n to a field and returns the new value (reads it).
function st.hincr (key, field, n)
    local v = (tonumber (st.hget (key, field)) or 0) + (n or 1)
    st.hset (key, field, v)
    return v
end

-- Adds n to a field without reading it (counters): one HINCRBY at commit.
function st.hadd (key, field, n)
    local t = cache_h[key]
    if (t and t[field] ~= nil) or cache_hall[key] then
        st.hincr (key, field, n)
        return
    end
    local d = sub (delta_h, key)
    remember (d, field, d[field])
    d[field] = (d[field] or 0) + (n or 1)
    sub (dirty_h, key)[field] = true
end

-- The whole hash as a Lua table (field -> string), overlay applied.
function st.hgetall (key)
    local t = sub (cache_h, key)
    if not cache_hall[key] then
        local flat = rcall ('HGETALL', key)
        for i = 1, #flat, 2 do
            if t[flat[i]] == nil then
                t[flat[i]] = fold_delta (t, key, flat[i], flat[i + 1])
            end
        end
        for field, n in pairs (delta_h[key] or {}) do
            if t[field] == nil then t[field] = fold_delta (t, key, field, false) end
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
        v = rcall ('SISMEMBER', key, member) == 1
        t[member] = v
    end
    return v
end

local function set_member (key, member, present)
    local t = cache_m[key]
    remember (t, member, not present)
    t[member] = present
    sub (dirty_m, key)[member] = true
end

-- Adds member; true if it was new (overlay aware, so exact within a batch).
function st.sadd (key, member)
    if st.sismember (key, member) then return false end
    set_member (key, member, true)
    return true
end

function st.srem (key, member)
    if not st.sismember (key, member) then return false end
    set_member (key, member, false)
    return true
end

function st.zscore (key, member)
    local t = sub (cache_z, key)
    local v = t[member]
    if v == nil then
        v = tonumber (rcall ('ZSCORE', key, member)) or false
        t[member] = v
    end
    return v or nil
end

function st.zadd (key, score, member)
    local t = sub (cache_z, key)
    remember (t, member, t[member])
    t[member] = score
    sub (dirty_z, key)[member] = true
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
    sub (dirty_z, key)[member] = true
end

-- Appends to a list (histories). Reads of lists see committed state only.
function st.rpush (key, value)
    write ('RPUSH', key, value)
end

-- Keeps only elements start..stop of a list (bounded histories).
function st.ltrim (key, start, stop)
    write ('LTRIM', key, num2s (start), num2s (stop))
end

function st.expire (key, ttl_s)
    write ('EXPIRE', key, num2s (ttl_s))
end

-- Members of a sorted set due by score (timers), committed state only.
function st.zdue (key, max_score, limit)
    return redis.call ('ZRANGEBYSCORE', key, '-inf', num2s (max_score),
                       'WITHSCORES', 'LIMIT', '0', num2s (limit or 100))
end

-- Writes every dirty key's final value, then the ordered writes.
local function flush_overlay ()
    for key, ttl in pairs (dirty_s) do
        local v = cache_s[key]
        if v then
            if ttl == true then
                redis.call ('SET', key, v, 'KEEPTTL')
            else
                redis.call ('SET', key, v, 'EX', num2s (ttl))
            end
        end
    end
    for key, fields in pairs (dirty_h) do
        local t, set, del = cache_h[key] or {}, { 'HSET', key }, { 'HDEL', key }
        local d = delta_h[key]
        for f in pairs (fields) do
            local v = t[f]
            if v then
                set[#set + 1] = f
                set[#set + 1] = v
            elseif v == false then
                del[#del + 1] = f
            elseif d and d[f] then
                -- A fractional delta, or a field holding a float, must not
                -- fail halfway through a commit: HINCRBYFLOAT then (slower,
                -- so only when HINCRBY refuses)
                local n = num2s (d[f])
                local r = redis.pcall ('HINCRBY', key, f, n)
                if type (r) == 'table' and r.err then
                    rcall ('HINCRBYFLOAT', key, f, n)
                end
            end
        end
        if #set > 2 then redis.call (unpack (set)) end
        if #del > 2 then redis.call (unpack (del)) end
    end
    for key, members in pairs (dirty_m) do
        local t, add, rem = cache_m[key], { 'SADD', key }, { 'SREM', key }
        for m in pairs (members) do
            if t[m] then add[#add + 1] = m else rem[#rem + 1] = m end
        end
        if #add > 2 then redis.call (unpack (add)) end
        if #rem > 2 then redis.call (unpack (rem)) end
    end
    for key, members in pairs (dirty_z) do
        local t, add, rem = cache_z[key], { 'ZADD', key }, { 'ZREM', key }
        for m in pairs (members) do
            local score = t[m]
            if score then
                add[#add + 1] = num2s (score)
                add[#add + 1] = m
            elseif score == false then
                rem[#rem + 1] = m
            end
        end
        if #add > 2 then redis.call (unpack (add)) end
        if #rem > 2 then redis.call (unpack (rem)) end
    end
    for i = 1, #writes do
        redis.call (unpack (writes[i]))
    end
end

local function savepoint ()
    return { #writes, undo_n, #outputs }
end

local function rollback (sp)
    for i = undo_n, sp[2] + 1, -1 do
        local old = undo_v[i]
        if old == NIL then undo_t[i][undo_k[i]] = nil else undo_t[i][undo_k[i]] = old end
        undo_t[i], undo_v[i] = nil, nil
    end
    undo_n = sp[2]
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

-- Queues an output event; its id is deterministic (same cause, same id):
-- <svc>:<cause id>:<n> for the n-th emit of the cause, or <svc>:<key>:<type>
-- with an explicit key (timers, sweeps: key and type together must be
-- unique for the service); <svc>:<sha1> of that when it would pass 64 bytes
-- or hold a character outside the id charset.
local function emit (etype, data, key)
    EMITS = EMITS + 1
    local id
    if key then
        id = SVC .. ':' .. key .. ':' .. etype
    else
        -- Without a cause (a tick), NOW keeps ids apart from other ticks'
        id = SVC .. ':' .. (CAUSE and CAUSE.id or ('tick:' .. num2s (NOW))) .. ':' .. EMITS
    end
    -- Output ids must be valid event ids (subscribers check them); a cause
    -- id is one already, so only a key can bring in another character
    if #id > 64 or (key and string.find (id, '[^%w%._:@%+%-]')) then
        id = SVC .. ':' .. redis.sha1hex (id)
    end
    outputs[#outputs + 1] = {
        type = etype, data = data, id = id,
        cause = CAUSE and CAUSE.id or nil, cause_ts = CAUSE and CAUSE.ts or nil
    }
end

-- Service counters, read by STATS and the monitor.
local function count (name, n)
    st.hadd (P .. 'stats', name, n or 1)
end

-- Counters STATS shows as 0 before their first event (the monitor reads
-- them): declare_counters('customers', 'repeat', ...) at the top level.
local DECLARED_COUNTERS = {}
local function declare_counters (...)
    for _, name in ipairs ({...}) do DECLARED_COUNTERS[#DECLARED_COUNTERS + 1] = name end
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
