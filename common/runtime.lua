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

-- One part of a key: ids may hold ':' (the charset allows it), so '%' and
-- ':' are written %25 and %3A — K('deal', 'X:log') can then never be
-- K('deal', 'X', 'log') (the encoding is injective). Ids without either
-- character keep the key they always had.
local function kpart (s)
    s = num2s (s)
    if type (s) == 'string' and string.find (s, '[:%%]') then
        s = string.gsub (string.gsub (s, '%%', '%%25'), ':', '%%3A')
    end
    return s
end

-- Builds a key under this service's prefix: K('lead', id) = P..'lead:'..id
local function K (a, b, ...)
    if ... == nil then         -- the common one- and two-part keys, no table
        if b == nil then return P .. kpart (a) end
        return P .. kpart (a) .. ':' .. kpart (b)
    end
    local parts = { a, b, ... }
    for i = 1, #parts do parts[i] = kpart (parts[i]) end
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
local expire_at = {}                -- key -> unix s: one EXPIREAT each at commit
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
    -- After the hashes: EXPIREAT on a key no write created is a no-op
    for key, at in pairs (expire_at) do
        redis.call ('EXPIREAT', key, num2s (at))
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
-- The certificate name of the client whose PUBLISH is being applied (nil
-- without CURVE, and when consuming or ticking): recorded as `by` with
-- every output it causes (proto/security.md)
local BY = nil

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
        cause = CAUSE and CAUSE.id or nil, cause_ts = CAUSE and CAUSE.ts or nil,
        by = CAUSE and BY or nil
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

---------------------------------------------------------- stage series --
-- Stage counts over time (proto/monitor.md, "Series"): every stage counted
-- with count_stage also lands in a UTC hour bucket and a UTC day bucket of
-- the moment the entity reached the stage, as a whole and per campaign:
--   <prefix>ser:<h|d>:<bucket>            hash stage -> n
--   <prefix>ser:<h|d>:<bucket>:<campaign> hash stage -> n
-- bucket = floor(t / 3600000) (h) or floor(t / 86400000) (d), t in ms.
-- Each key expires keep seconds after its bucket ends (RT.series_hour_s,
-- default 90 days; RT.series_day_s, default 1096 days), and never later
-- than keep + one bucket from now, so a far-future t cannot pin a key.
-- A t whose bucket is already past its keep writes nothing. Written through
-- the overlay, so a refused event or failed batch leaves no trace; one
-- HINCRBY per field and one EXPIREAT per key per commit.
local SERIES_STEPS = {
    hour = { code = 'h', ms = 3600000, keep = tonumber (RT.series_hour_s) or 90 * 86400 },
    day = { code = 'd', ms = 86400000, keep = tonumber (RT.series_day_s) or 1096 * 86400 }
}
-- Per call: bucket -> { key, expiry } (false: past its keep), so a batch
-- builds each bucket's key and expiry once, not per event
local SERIES_MEMO = { {}, {} }
local SERIES_ORDER = { SERIES_STEPS.hour, SERIES_STEPS.day }
local SERIES_MAX_BUCKETS = 2200
local SERIES_NAMES = {}             -- declare_series: what GET series reads

local function valid_id (s)
    return type (s) == 'string' and #s >= 1 and #s <= 64
       and not string.find (s, '[^A-Za-z0-9._:@+-]')
end

local function valid_ms (t)
    return type (t) == 'number' and t >= 0 and t <= 9007199254740992 and t == math.floor (t)
end

local function series_key (step, bucket, campaign)
    local key = P .. 'ser:' .. step.code .. ':' .. num2s (bucket)
    if campaign then key = key .. ':' .. campaign end
    return key
end

-- Adds n to stage `name` in the buckets holding t (ms), for the whole
-- funnel (campaign nil) or one campaign (a valid id; anything else: none).
local SERIES_VALID = {}             -- campaign ids checked in this call
local function series_add (name, t, campaign, n)
    n = n or 1
    if n == 0 or not valid_ms (t) then return end
    if campaign ~= nil then
        local ok = SERIES_VALID[campaign]
        if ok == nil then
            ok = valid_id (campaign)
            SERIES_VALID[campaign] = ok
        end
        if not ok then return end
    end
    for i = 1, 2 do
        local step = SERIES_ORDER[i]
        local bucket = math.floor (t / step.ms)
        local base = SERIES_MEMO[i][bucket]
        if base == nil then
            local now_s = math.floor (NOW / 1000)
            local at = (bucket + 1) * (step.ms / 1000) + step.keep
            base = at > now_s and { series_key (step, bucket),
                                    math.min (at, now_s + step.keep + step.ms / 1000), {} }
            SERIES_MEMO[i][bucket] = base
        end
        if base then
            local key = base[1]
            if campaign then
                key = base[3][campaign]
                if not key then
                    key = base[1] .. ':' .. campaign
                    base[3][campaign] = key
                end
            end
            st.hadd (key, name, n)
            if (expire_at[key] or 0) < base[2] then
                remember (expire_at, key, expire_at[key])
                expire_at[key] = base[2]
            end
        end
    end
end

-- A stage reached at event time t: the STATS counter (as count) plus the
-- series, whole and for the entity's campaign (nil when it has none).
local function count_stage (name, t, campaign, n)
    count (name, n)
    series_add (name, t, nil, n)
    if campaign ~= nil then series_add (name, t, campaign, n) end
end

-- Stages GET series returns (top level): declare_series('leads', 'mql').
local function declare_series (...)
    for _, name in ipairs ({...}) do SERIES_NAMES[#SERIES_NAMES + 1] = name end
end

-- The moment an event stands for: for an upstream event, data.at when the
-- upstream carried its own cause's moment along (stage events do), else
-- ts; for a PUBLISHed event always its ts (set by CONSUMING).
local CONSUMING = false
local function event_time (ev)
    local at = ev.data and ev.data.at
    if CONSUMING and valid_ms (at) then return at end
    return ev.ts
end

-- A field of a hash as a number (0 when absent).
local function hnum (key, field)
    return tonumber (st.hget (key, field)) or 0
end

-- Tables the service fills in: on[type] for PUBLISH, consume[type] for
-- upstream events, query[kind] for GET, ticks[] run by the timer.
local on, consume, query, ticks = {}, {}, {}, {}

-- GET {"kind": "series", "from": ms, "to": ms, "step": "hour"|"day",
-- "campaign"?: id} -> {step, first (ms of the first bucket), n, series =
-- {name = [n per bucket]}}: every declared stage, one count per bucket from
-- the one holding from to the one holding to, inclusive (at most 2200).
query['series'] = function (req)
    local step = SERIES_STEPS[req.step or 'hour']
    if not step then return fail ('invalid', 'step: must be hour or day') end
    if not valid_ms (req.from) then return fail ('invalid', 'from: must be an integer ms 0..2^53') end
    if not valid_ms (req.to) then return fail ('invalid', 'to: must be an integer ms 0..2^53') end
    if req.to < req.from then return fail ('invalid', 'to: must not be before from') end
    if req.campaign ~= nil and not valid_id (req.campaign) then
        return fail ('invalid', 'campaign: must be 1-64 bytes of [A-Za-z0-9._:@+-]')
    end
    local b0, b1 = math.floor (req.from / step.ms), math.floor (req.to / step.ms)
    if b1 - b0 + 1 > SERIES_MAX_BUCKETS then
        return fail ('invalid', 'to: the range holds ' .. num2s (b1 - b0 + 1) ..
                     ' buckets; at most ' .. SERIES_MAX_BUCKETS)
    end
    local series = {}
    for i = 1, #SERIES_NAMES do series[SERIES_NAMES[i]] = {} end
    if #SERIES_NAMES > 0 then
        for b = b0, b1 do
            local vals = rcall ('HMGET', series_key (step, b, req.campaign), unpack (SERIES_NAMES))
            for i = 1, #SERIES_NAMES do
                local a = series[SERIES_NAMES[i]]
                a[#a + 1] = tonumber (vals[i]) or 0
            end
        end
    end
    return { step = req.step or 'hour', first = b0 * step.ms, n = b1 - b0 + 1,
             series = #SERIES_NAMES > 0 and series or nil }
end
