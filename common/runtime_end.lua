-- runtime_end.lua — mode dispatch and commit; appended after the rules.
--
-- Modes (ARGV[1]) and their replies (a Redis array, first element the
-- status "ok" or "err"; an "err" carries a packed {code, message[, index]}):
--   publish  ARGV[5] "1" if a batch, ARGV[6] the client's certificate name
--            ("" = none), ARGV[7..] events (6 ARGV each, see read_events)
--            -> ok, reply body, then the outputs (commit)
--   consume  ARGV[5] upstream, ARGV[6] last seq seen, ARGV[7..] events
--            -> ok, packed summary, then the outputs
--   tick     -> ok, packed summary, then the outputs
--   query    ARGV[5] GET body -> ok, packed reply
--   replay   ARGV[5] from, ARGV[6] limit -> ok, first, next, events
--            (seq and stored entry each; see the outbox below)
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

-- The value is who published the event (its `by`), '1' if anonymous.
local function dedup_record (ids, by)
    if #ids == 0 then return end
    local period = dedup_period ()
    local key = P .. 'ids:' .. num2s (period)
    local args = { 'HSET', key }
    for i = 1, #ids do
        args[#args + 1] = ids[i]
        args[#args + 1] = by or '1'
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

-- The outbox: output events by seq, for REPLAY. One hash per 1000 seqs
-- (<prefix>ob:<seq div 1000>, field <seq>), each entry one string
-- "id NUL type NUL cause NUL ts NUL cause_ts NUL [by NUL] data" (none but
-- data holds a NUL; data, msgpack, is last; `by`, only when a certificate
-- name caused it, is ASCII, so it never starts like a msgpack map does). A batch's outputs are one or two HSETs instead
-- of a stream XADD per event, and whole buckets are dropped past the
-- retention. <prefix>ob_first is the oldest seq still held.
local OB_BUCKET = 1000

local function outbox_key (seq)
    return P .. 'ob:' .. num2s (math.floor (seq / OB_BUCKET))
end

-- Drops whole buckets that lie entirely before the last `retention` seqs.
local function outbox_trim (last)
    local first = tonumber (redis.call ('GET', P .. 'ob_first')) or 1
    local keep = math.floor ((last - RT.retention + 1) / OB_BUCKET) * OB_BUCKET
    if keep <= first then return end
    for b = math.floor (first / OB_BUCKET), keep / OB_BUCKET - 1 do
        redis.call ('DEL', P .. 'ob:' .. num2s (b))
    end
    redis.call ('SET', P .. 'ob_first', num2s (keep))
end

-- Writes every queued change, then appends outputs to the outbox with the
-- next contiguous seqs. The C side assembles envelopes (far cheaper than
-- packing here). Returns the reply tail: first seq, ts, then the stored
-- entry of each event (one string each: fewer reply elements to convert).
local function commit ()
    flush_overlay ()
    local published = {}
    if #outputs == 0 then return published end
    local seq = tonumber (redis.call ('GET', P .. 'seq')) or 0
    local ts = num2s (NOW)
    published[1], published[2] = seq + 1, NOW
    local hset, key = nil, nil
    for i = 1, #outputs do
        local o = outputs[i]
        seq = seq + 1
        if outbox_key (seq) ~= key then
            if hset then redis.call (unpack (hset)) end
            key = outbox_key (seq)
            hset = { 'HSET', key }
        end
        -- cmsgpack packs an empty table as an array (0x90), but data must be
        -- a map: subscribers would drop the event as malformed.
        local data = next (o.data or {}) == nil and '\128' or cmsgpack.pack (o.data)
        local entry = o.id .. '\0' .. o.type .. '\0' .. (o.cause or '') .. '\0' ..
                      ts .. '\0' .. (o.cause_ts and num2s (o.cause_ts) or '') .. '\0' ..
                      (o.by and (o.by .. '\0') or '') .. data
        hset[#hset + 1] = num2s (seq)
        hset[#hset + 1] = entry
        published[#published + 1] = entry
    end
    redis.call (unpack (hset))
    redis.call ('SET', P .. 'seq', num2s (seq))
    outbox_trim (seq)
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
    BY = ARGV[6] ~= '' and ARGV[6] or nil
    local events = read_events (7)
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
    dedup_record (applied, BY)
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
    CONSUMING = true
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
                    if #errors < 20 then    -- the log needs a sample, not all
                        errors[#errors + 1] = ev.type .. ' ' .. tostring (ev.id) ..
                                              ': ' .. r.err .. ': ' .. r.message
                    end
                else
                    applied = applied + 1
                end
            end
            ckpt = seq
        end
    end
    CONSUMING = false
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

-- -> ok, first (0: nothing held), next (0: no events), then seq/entry per
-- event (entry as stored, split by the C side).
local function do_replay ()
    local last = tonumber (redis.call ('GET', P .. 'seq')) or 0
    local first = 0
    if last > 0 then
        first = tonumber (redis.call ('GET', P .. 'ob_first')) or 1
    end
    local r = { 'ok', first, 0 }
    -- A from of 16 digits or more is beyond any seq held (and beyond what a
    -- Lua number holds exactly): no events, the C side answers next = from
    if #ARGV[5] > 15 then return r end
    local from = math.max (tonumber (ARGV[5]), first, 1)
    local to = math.min (from + tonumber (ARGV[6]) - 1, last)
    local seq = from
    while seq <= to do
        local stop = math.min (to, (math.floor (seq / OB_BUCKET) + 1) * OB_BUCKET - 1)
        local fields = {}
        for s = seq, stop do fields[#fields + 1] = num2s (s) end
        local entries = redis.call ('HMGET', outbox_key (seq), unpack (fields))
        for i = 1, #fields do
            if entries[i] then
                r[#r + 1] = seq + i - 1
                r[#r + 1] = entries[i]
                r[3] = seq + i
            end
        end
        seq = stop + 1
    end
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
