-- runtime_end.lua — mode dispatch and commit; appended after the rules.
--
-- Modes (ARGV[1]) and their replies (a Redis array, first element the
-- status "ok" or "err"; an "err" carries a packed {code, message[, index]}):
--   publish  ARGV[5] "1" if a batch, ARGV[6..] events (6 ARGV each, see
--            read_events) -> ok, reply body, then the outputs (commit)
--   consume  ARGV[5] upstream, ARGV[6] last seq seen, ARGV[7..] events
--            -> ok, packed summary, then the outputs
--   tick     -> ok, packed summary, then the outputs
--   query    ARGV[5] GET body -> ok, packed reply
--   replay   ARGV[5] from, ARGV[6] limit -> ok, first, next, events
--            (seq, id, type, cause, ts, data each)
--   stats    -> ok, packed STATS reply
--   info     -> ok, seq, then upstream/checkpoint pairs

local MODE = ARGV[1]

-- Applied event ids live in hashes that each cover one dedup_ttl period
-- (<prefix>ids:<period>); a hash expires at the end of the period after
-- its own, so every id is remembered at least dedup_ttl seconds (and at
-- most twice that). A batch checks all its ids with two HMGETs (this
-- period and the last) and records them with one HSET: a few calls per
-- batch instead of two per event, and a hash field costs far less memory
-- than a key.
local function dedup_period ()
    return math.floor (NOW / 1000 / RT.dedup_ttl)
end

local function dedup_seen (ids)
    local seen = {}
    if #ids == 0 then return seen end
    local period = dedup_period ()
    for p = period - 1, period do
        local found = redis.call ('HMGET', P .. 'ids:' .. num2s (p), unpack (ids))
        for i = 1, #ids do
            if found[i] then seen[ids[i]] = true end
        end
    end
    return seen
end

local function dedup_record (ids)
    if #ids == 0 then return end
    local period = dedup_period ()
    local key = P .. 'ids:' .. num2s (period)
    local args = { 'HSET', key }
    for i = 1, #ids do
        args[#args + 1] = ids[i]
        args[#args + 1] = '1'
    end
    redis.call (unpack (args))
    redis.call ('EXPIREAT', key, num2s ((period + 2) * RT.dedup_ttl))
end

local function pack_error (code, message, index)
    return cmsgpack.pack ({ code = code, message = message, index = index })
end

-- Runs one handler inside a savepoint: a refusal leaves no trace.
local function apply_one (ev, handler)
    CAUSE = ev
    EMITS = 0
    local sp = savepoint ()
    local r = handler (ev, ev.data or {})
    if r then rollback (sp) end
    CAUSE = nil
    return r
end

-- Events arrive as 6 ARGV each (id, type, ts, src, seq, data): the C side
-- already decoded and checked the envelope, and unpacking only the data
-- map here is several times cheaper than unpacking whole envelopes.
local function read_events (first)
    local events = {}
    for i = first, #ARGV, 6 do
        events[#events + 1] = {
            id = ARGV[i], type = ARGV[i + 1], ts = tonumber (ARGV[i + 2]),
            src = ARGV[i + 3], seq = tonumber (ARGV[i + 4]),
            data = cmsgpack.unpack (ARGV[i + 5]) }
    end
    return events
end

-- Writes every queued change, then appends outputs to the outbox with the
-- next contiguous seqs (stream ids 0-<seq>, so REPLAY is one XRANGE). An
-- entry keeps the envelope's parts (i id, t type, c cause, s ts, d data);
-- the C side assembles envelopes, which is far cheaper than packing here.
-- Returns the reply tail: first seq, ts, then id/type/cause/data per event.
local function commit ()
    flush_overlay ()
    local published = {}
    if #outputs == 0 then return published end
    local seq = tonumber (redis.call ('GET', P .. 'seq')) or 0
    local outbox, ts = P .. 'outbox', num2s (NOW)
    published[1], published[2] = seq + 1, NOW
    for i = 1, #outputs do
        local o = outputs[i]
        seq = seq + 1
        -- cmsgpack packs an empty table as an array (0x90), but data must be
        -- a map: subscribers would drop the event as malformed.
        local data = next (o.data or {}) == nil and '\128' or cmsgpack.pack (o.data)
        local cause = o.cause or ''
        redis.call ('XADD', outbox, '0-' .. num2s (seq), 'i', o.id, 't', o.type,
                    'c', cause, 's', ts, 'd', data)
        local n = #published
        published[n + 1], published[n + 2], published[n + 3], published[n + 4] =
            o.id, o.type, cause, data
    end
    redis.call ('XTRIM', outbox, 'MAXLEN', '~', num2s (RT.retention))
    redis.call ('SET', P .. 'seq', num2s (seq))
    redis.call ('HINCRBY', P .. 'stats', 'events_out', num2s (#outputs))
    return published
end

local function reply (status, body, published)
    local r = { status, body }
    for i = 1, #published do r[#r + 1] = published[i] end
    return r
end

local function sorted_keys (t)
    local ks = {}
    for k in pairs (t) do ks[#ks + 1] = k end
    table.sort (ks)
    return table.concat (ks, ', ')
end

local function do_publish ()
    local batch = ARGV[5] == '1'
    local events = read_events (6)
    local ids = {}
    for i = 1, #events do ids[i] = events[i].id end
    local seen = dedup_seen (ids)
    local applied = {}
    local accepted, duplicates = 0, 0
    for i = 1, #events do
        local ev = events[i]
        local index = batch and (i - 1) or nil
        if seen[ev.id] then
            duplicates = duplicates + 1
        else
            local handler = on[ev.type]
            if not handler then
                return { 'err', pack_error ('unknown_type',
                    "type: '" .. tostring (ev.type) .. "' is not accepted by " .. SVC, index) }
            end
            local r = apply_one (ev, handler)
            if r then
                return { 'err', pack_error (r.err, r.message, index) }
            end
            seen[ev.id] = true
            applied[#applied + 1] = ev.id
            accepted = accepted + 1
        end
    end
    if accepted > 0 then count ('accepted', accepted) end
    if duplicates > 0 then count ('duplicates', duplicates) end
    dedup_record (applied)
    local body_out
    if batch then
        body_out = cmsgpack.pack ({ accepted = accepted, duplicates = duplicates })
    else
        body_out = cmsgpack.pack ({ id = events[1].id, duplicate = duplicates > 0 })
    end
    return reply ('ok', body_out, commit ())
end

local function do_consume ()
    local upstream = ARGV[5]
    local ckpt = tonumber (st.hget (P .. 'ckpt', upstream)) or 0
    local applied, skipped, rejected, errors = 0, 0, 0, {}
    local events = read_events (7)
    for i = 1, #events do
        local ev = events[i]
        local seq = ev.seq or 0
        if seq <= ckpt then
            skipped = skipped + 1
        else
            local handler = consume[ev.type]
            if handler then
                -- A Lua error in a handler (bad upstream data, a rules bug)
                -- must not fail the whole call: the C side would rewind and
                -- replay the same page forever. Nothing was written yet (the
                -- overlay), so undo the event and pass over it like a refusal.
                local sp = savepoint ()
                local ok, r = pcall (apply_one, ev, handler)
                if not ok then
                    rollback (sp)
                    CAUSE = nil
                    r = { err = 'internal', message = tostring (r) }
                end
                if r then
                    -- A consumed event cannot be refused back to its sender:
                    -- it is counted, reported to the log, and passed over.
                    rejected = rejected + 1
                    errors[#errors + 1] = ev.type .. ' ' .. tostring (ev.id) ..
                                          ': ' .. r.err .. ': ' .. r.message
                else
                    applied = applied + 1
                end
            end
            ckpt = seq
        end
    end
    local last = tonumber (ARGV[6]) or 0
    if last > ckpt then ckpt = last end
    st.hset (P .. 'ckpt', upstream, ckpt)
    if applied > 0 then count ('consumed', applied) end
    if rejected > 0 then count ('consume_rejected', rejected) end
    local summary = cmsgpack.pack ({ applied = applied, skipped = skipped,
        rejected = rejected, ckpt = ckpt, errors = errors })
    return reply ('ok', summary, commit ())
end

local function do_tick ()
    local fired = 0
    for i = 1, #ticks do
        fired = fired + (ticks[i] (NOW) or 0)
    end
    return reply ('ok', cmsgpack.pack ({ fired = fired }), commit ())
end

local function do_query ()
    local req = cmsgpack.unpack (ARGV[5])
    local handler = query[req.kind]
    if not handler then
        return { 'err', pack_error ('invalid', "kind: unknown GET kind '" ..
            tostring (req.kind) .. "' (known: " .. sorted_keys (query) .. ')') }
    end
    local r = handler (req)
    if r.err then
        return { 'err', pack_error (r.err, r.message) }
    end
    return { 'ok', cmsgpack.pack (r) }
end

local function stream_seq (entry_id)
    return tonumber (string.match (entry_id, '%-(%d+)$'))
end

-- -> ok, first (0: outbox empty), next (0: no events), then
-- seq/id/type/cause/ts/data per event.
local function do_replay ()
    -- from stays a string: tonumber would round a seq above 2^53 (wrong
    -- next) and num2s would give XRANGE an invalid id past 2^63. With no
    -- events, next is 0 and the C side answers from itself.
    local from = ARGV[5]
    local limit = tonumber (ARGV[6])
    local entries = redis.call ('XRANGE', P .. 'outbox', '0-' .. from, '+',
                                'COUNT', num2s (limit))
    local nxt = 0
    local r = { 'ok', 0, 0 }
    for i = 1, #entries do
        local seq, f = stream_seq (entries[i][1]), entries[i][2]
        nxt = seq + 1
        local n = #r
        r[n + 1], r[n + 2], r[n + 3], r[n + 4], r[n + 5], r[n + 6] =
            seq, f[2], f[4], f[6], tonumber (f[8]), f[10]
    end
    local oldest = redis.call ('XRANGE', P .. 'outbox', '-', '+', 'COUNT', '1')
    r[2] = oldest[1] and stream_seq (oldest[1][1]) or 0
    r[3] = nxt
    return r
end

local function do_stats ()
    local counters = { accepted = 0, duplicates = 0, events_out = 0 }
    for i = 1, #DECLARED_COUNTERS do counters[DECLARED_COUNTERS[i]] = 0 end
    local flat = redis.call ('HGETALL', P .. 'stats')
    for i = 1, #flat, 2 do counters[flat[i]] = tonumber (flat[i + 1]) end
    return { 'ok', cmsgpack.pack ({ svc = SVC, counters = counters }) }
end

local function do_info ()
    local r = { 'ok', tonumber (redis.call ('GET', P .. 'seq')) or 0 }
    local flat = redis.call ('HGETALL', P .. 'ckpt')
    for i = 1, #flat do r[#r + 1] = flat[i] end
    return r
end

local modes = { publish = do_publish, consume = do_consume, tick = do_tick,
                query = do_query, replay = do_replay, stats = do_stats,
                info = do_info }
local run = modes[MODE]
if not run then
    return redis.error_reply ('unknown mode ' .. tostring (MODE))
end
return run ()
