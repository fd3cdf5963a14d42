-- leads.lua — the lead generation stage (proto/leads.md).
--
-- A lead is captured (or merged into the lead it already is), earns fit
-- from BANT and the ideal customer profile and engagement from campaign's
-- touches, becomes an MQL and then an SQL handed to a rep; it can fall
-- back to nurture when its engagement fades, be disqualified, and come
-- back. Every move is a lead.stage_changed and a line of its history.
--
-- Keys (all through K): lead:<id> hash, hist:<id> list, pend:<contact>
-- hash (touches before capture, with a TTL), email:<e-mail> and
-- alias:<id> strings (identity), rep:<name> hash (run-time rep state),
-- decay zset (when each MQL/SQL lead's score will fall below MQL).

-- STATS shows these as 0 before their first event (the monitor reads
-- leads, mql and sql from a fresh start, too)
declare_counters ('leads', 'mql', 'sql', 'disqualified', 'recycled', 'touches',
                  'touches_pending', 'in.nurture', 'in.mql', 'in.sql', 'in.disqualified')
-- Over time (GET series), at the event time of the event that made the
-- lead reach the stage, per the lead's campaign (capture or first touch)
declare_series ('leads', 'mql', 'sql')

local HL = RULES.half_life_ms
local RANK = { nurture = 0, mql = 1, sql = 2 }
local PROFILE = { 'name', 'company', 'title' }

---------------------------------------------------------------- helpers --
local function ms (t)
    return string.format ('%.0f', t)
end

-- An id given by a client or a touch, as the lead it is (aliases merged).
local function resolve (id)
    return st.get (K ('alias', id)) or id
end

-- The lead's fields as a table (strings), or nil when not captured.
local function load (id)
    local L = st.hgetall (K ('lead', id))
    if not L.stage then return nil end
    return L
end

-- Attrs live as typed fields of the lead hash ('a.<name>' = 'n50000',
-- 'b1', 's<text>' or 'j<json array>'): small fields keep the hash in
-- Redis's compact encoding, which one packed blob over 64 bytes would not.
local function attr_encode (v)
    local t = type (v)
    if t == 'number' then return 'n' .. num2s (v) end
    if t == 'boolean' then return v and 'b1' or 'b0' end
    if t == 'string' then return 's' .. v end
    return 'j' .. cjson.encode (v)
end

local function attr_decode (e)
    local tag, rest = string.sub (e, 1, 1), string.sub (e, 2)
    if tag == 'n' then return tonumber (rest) end
    if tag == 'b' then return rest == '1' end
    if tag == 'j' then return cjson.decode (rest) end
    return rest
end

local function attrs_of (L)
    local a = {}
    for f, e in pairs (L) do
        if string.sub (f, 1, 2) == 'a.' then a[string.sub (f, 3)] = attr_decode (e) end
    end
    return a
end

local function engagement (L, t)
    return score.at (tonumber (L.ev) or 0, tonumber (L.et) or 0, t, HL)
end

-- The lead's clock. Scores are judged at the time of the event being
-- handled (decay by event time), so events sent with old timestamps score
-- as they did then; between events the clock runs with the wall clock.
-- `off` is how far the lead's last event time lagged the wall clock.
local function lead_now (L)
    return NOW - (tonumber (L.off) or 0)
end

local function refit (id, L)
    local fit = score.fit (attrs_of (L), L.aud == '1', RULES)
    st.hset (K ('lead', id), 'fit', fit)
    L.fit = fit
end

-- nil for an empty table: cmsgpack would pack it as an array, not a map.
local function map_or_nil (t)
    return next (t) ~= nil and t or nil
end

-------------------------------------------------------------- lifecycle --
-- Every transition: the stage, its history line, the gauges, the event.
-- seed: for timer-made moves, which have no cause event to derive ids from.
local function move (id, L, to, reason, seed)
    local from = L.stage or 'new'
    st.hmset (K ('lead', id), { stage = to, since = NOW })
    st.rpush (K ('hist', id), ms (NOW) .. '|' .. from .. '|' .. to .. '|' .. reason)
    if from ~= 'new' then count ('in.' .. from, -1) end
    count ('in.' .. to)
    emit ('lead.stage_changed', { lead = id, from = from, to = to, reason = reason },
          seed and (seed .. ':' .. to) or nil)
    L.stage, L.since = to, ms (NOW)
end

-- Runtime state of a configured rep: the away flag and capacity may have
-- been changed by rep.update; open is its live load.
local function rep_state (r)
    local h = st.hgetall (K ('rep', r.name))
    local away = r.away
    if h.away then away = h.away == '1' end
    return { name = r.name, region = r.region, away = away,
             capacity = tonumber (h.cap) or r.capacity,
             open = tonumber (h.open) or 0, cur = tonumber (h.cur) or 0 }
end

local function rep_config (name)
    for i = 1, #RULES.reps do
        if RULES.reps[i].name == name then return RULES.reps[i] end
    end
    return nil
end

-- Picks the rep of an SQL lead and counts it in the rep's load. A lead
-- coming back to SQL keeps its previous rep while that rep has room.
local function route (id, L)
    local reps, prev = {}, nil
    for i = 1, #RULES.reps do
        reps[i] = rep_state (RULES.reps[i])
        if reps[i].name == L.rep then prev = reps[i] end
    end
    local name = prev and routing.sticky (prev) and prev.name
    if not name then
        local region = attrs_of (L).region
        local curs
        name, curs = routing.pick (reps, type (region) == 'string' and string.lower (region) or nil)
        for n, c in pairs (curs) do st.hset (K ('rep', n), 'cur', c) end
        name = name or RULES.fallback_rep
    end
    st.hincr (K ('rep', name), 'open', 1)
    count ('rep.' .. name .. '.open')
    count ('rep.' .. name .. '.sql')
    st.hmset (K ('lead', id), { rep = name, open = 1 })
    L.rep, L.open = name, '1'
    return name
end

-- A lead leaving SQL no longer weighs on its rep (the rep is remembered).
local function release (id, L)
    if L.open ~= '1' then return end
    st.hincr (K ('rep', L.rep), 'open', -1)
    count ('rep.' .. L.rep .. '.open', -1)
    st.hdel (K ('lead', id), 'open')
    L.open = nil
end

-- Stages are cumulative: reaching SQL passes MQL first. t: the event time
-- of the event that promotes (series bucket; carried as `at`).
local function promote (id, L, target, reason, t)
    local key = K ('lead', id)
    local s = score.round ((tonumber (L.fit) or 0) + engagement (L, lead_now (L)))
    if L.stage == 'nurture' or L.stage == 'disqualified' then
        move (id, L, 'mql', reason)
        if L.em ~= '1' then
            st.hset (key, 'em', 1)
            L.em = '1'
            count_stage ('mql', t, L.cmp)
        end
        emit ('lead.mql', { lead = id, score = s, at = t })
    end
    if target == 'sql' and L.stage == 'mql' then
        move (id, L, 'sql', reason)
        if L.es ~= '1' then
            st.hset (key, 'es', 1)
            L.es = '1'
            count_stage ('sql', t, L.cmp)
        end
        local rep = route (id, L)
        emit ('lead.sql', { lead = id, score = s, rep = rep, campaign = L.cmp, at = t })
    end
end

local function recycle (id, L, reason, seed)
    release (id, L)
    move (id, L, 'nurture', reason, seed)
    count ('recycled')
end

-- The decay timer: the first ms at which an MQL/SQL lead's score will be
-- below MQL (fit is constant between events, engagement only decays).
-- Manually qualified leads keep their stage until disqualified.
local function schedule (id, L)
    local t
    if RANK[L.stage] and RANK[L.stage] > 0 and L.man ~= '1' then
        t = score.crossing (tonumber (L.ev) or 0, tonumber (L.et) or 0,
                            RULES.mql - (tonumber (L.fit) or 0), HL)
    end
    if t then
        st.zadd (K ('decay'), t + (tonumber (L.off) or 0), id)     -- wall clock
    elseif st.zscore (K ('decay'), id) then
        st.zrem (K ('decay'), id)
    end
end

-- Score at the event's time; lead.scored when the published score
-- changes; stage moves. t_event: the time of the event being handled.
local function evaluate (id, L, t_event)
    local off = math.max (0, NOW - (tonumber (t_event) or NOW))
    if num2s (off) ~= (L.off or '0') then
        st.hset (K ('lead', id), 'off', off)
        L.off = num2s (off)
    end
    local fit = tonumber (L.fit) or 0
    local eng = engagement (L, lead_now (L))
    local total = fit + eng
    local s = score.round (total)
    local old = tonumber (L.sc) or 0
    if s ~= old then
        st.hset (K ('lead', id), 'sc', s)
        L.sc = s
        emit ('lead.scored', { lead = id, score = s, delta = s - old,
                               fit = score.round (fit, 2), engagement = score.round (eng, 2) })
    end
    if RANK[L.stage] then
        local target = score.stage_for (total, fit, RULES)
        if RANK[target] > RANK[L.stage] then
            promote (id, L, target, 'score', tonumber (t_event) or NOW)
        elseif RANK[L.stage] > 0 and target == 'nurture' and L.man ~= '1' then
            recycle (id, L, 'score')
        end
    end
    schedule (id, L)
end

------------------------------------------------------------ engagement --
-- One touch into a lead or a pending contact (same fields in both).
local function touch (key, h, d, kind, t)
    local v, t0 = score.add (tonumber (h.ev) or 0, tonumber (h.et) or 0,
                             RULES.points[kind] or 0, t, HL)
    st.hmset (key, { ev = v, et = t0 })
    h.ev, h.et = v, t0
    st.hincr (key, 't.' .. kind, 1)
    st.hincr (key, 'nt', 1)
    if not h.cmp and type (d.campaign) == 'string' then
        st.hset (key, 'cmp', d.campaign)
        h.cmp = d.campaign
    end
    if d.in_audience == true and h.aud ~= '1' then
        st.hset (key, 'aud', 1)
        h.aud = '1'
    end
end

-- Touches a contact earned before its capture now count for the lead.
local function fold_pending (contact, id, L)
    local pk = K ('pend', contact)
    local p = st.hgetall (pk)
    if not p.ev then return end
    local key = K ('lead', id)
    local v, t0 = score.merge (tonumber (L.ev) or 0, tonumber (L.et) or 0,
                               tonumber (p.ev), tonumber (p.et), HL)
    st.hmset (key, { ev = v, et = t0 })
    L.ev, L.et = v, t0
    for f, n in pairs (p) do
        if f == 'nt' or string.sub (f, 1, 2) == 't.' then st.hincr (key, f, tonumber (n)) end
        st.hdel (pk, f)
    end
    if p.cmp and not L.cmp then
        st.hset (key, 'cmp', p.cmp)
        L.cmp = p.cmp
    end
    if p.aud == '1' then
        st.hset (key, 'aud', 1)
        L.aud = '1'
    end
    count ('touches_folded', tonumber (p.nt) or 0)
end

consume['prospect.touched'] = function (ev, d)
    if type (d.contact) ~= 'string' or d.contact == '' then
        return fail ('invalid', 'data.contact: required string is missing')
    end
    local kind = RULES.points[d.kind] and d.kind or 'other'
    -- The touch's own time (campaign's `at`), not when campaign applied it
    local t = tonumber (d.at) or tonumber (ev.ts) or NOW
    local id = resolve (d.contact)
    local L = load (id)
    if not L then
        local pk = K ('pend', d.contact)
        touch (pk, st.hgetall (pk), d, kind, t)
        st.expire (pk, RULES.pending_ttl_s)
        count ('touches_pending')
        return
    end
    local aud = L.aud
    touch (K ('lead', id), L, d, kind, t)
    count ('touches')
    if L.aud ~= aud then refit (id, L) end
    evaluate (id, L, t)
end

---------------------------------------------------------------- capture --
-- Normalised identity fields of a capture, or nil and the error.
local function identity_fields (d)
    local f = {}
    if d.email then
        f.email = identity.email (d.email)
        if not f.email then return nil, 'data.email: must be name@domain.tld' end
    end
    if d.phone then
        f.phone = identity.phone (d.phone)
        if not f.phone then return nil, 'data.phone: must hold at least 5 digits' end
    end
    for _, name in ipairs (PROFILE) do
        if d[name] then
            f[name] = identity.text (d[name])
            if not f[name] then return nil, 'data.' .. name .. ': must not be blank' end
        end
    end
    return f
end

-- Merges given attrs (scalars and string arrays; nested maps are not
-- kept); appends the names that changed.
local function merge_attrs (id, L, given, changed)
    for k, v in pairs (given) do
        local tv = type (v)
        if tv == 'string' or tv == 'number' or tv == 'boolean' or
           (tv == 'table' and type (v[1]) == 'string') then
            local e = attr_encode (v)
            if L['a.' .. k] ~= e then
                st.hset (K ('lead', id), 'a.' .. k, e)
                L['a.' .. k] = e
                changed[#changed + 1] = 'attrs.' .. k
            end
        end
    end
end

on['lead.capture'] = function (ev, d)
    local fields, err = identity_fields (d)
    if not fields then return fail ('invalid', err) end
    local id = resolve (d.lead)
    local L = load (id)
    if fields.email then
        local owner = st.get (K ('email', fields.email))
        if owner and owner ~= id then
            if L then
                return fail ('conflict', 'email: ' .. fields.email .. ' belongs to lead ' ..
                             owner .. ' (one e-mail, one lead)')
            end
            -- A new id with a known e-mail is that lead: the id becomes an alias
            st.set (K ('alias', d.lead), owner)
            id, L = owner, load (owner)
            count ('aliased')
            emit ('lead.merged', { lead = id, alias = d.lead })
        end
    end
    local key = K ('lead', id)
    local new = L == nil
    L = L or {}
    if new then
        st.hset (key, 'ct', NOW)
    else
        count ('merged')
    end
    local changed = {}
    for _, f in ipairs ({ 'email', 'phone', 'name', 'company', 'title' }) do
        if fields[f] and L[f] ~= fields[f] then
            st.hset (key, f, fields[f])
            L[f] = fields[f]
            if not new then changed[#changed + 1] = f end
        end
    end
    if fields.email then st.set (K ('email', fields.email), id) end
    if d.campaign and not L.cmp then
        st.hset (key, 'cmp', d.campaign)
        L.cmp = d.campaign
    end
    if d.attrs then merge_attrs (id, L, d.attrs, new and {} or changed) end
    fold_pending (d.lead, id, L)
    -- Counted once its campaign is known (the capture's, else a pending touch's)
    if new then count_stage ('leads', ev.ts, L.cmp) end
    refit (id, L)
    if new then
        emit ('lead.captured', { lead = id, campaign = L.cmp, email = L.email,
                                 company = L.company, region = attrs_of (L).region })
        move (id, L, 'nurture', 'captured')
    else
        if #changed > 0 then
            table.sort (changed)
            emit ('lead.updated', { lead = id, fields = changed })
        end
        if L.stage == 'disqualified' then
            st.hdel (key, 'dq')
            move (id, L, 'nurture', 'recaptured')
        end
    end
    evaluate (id, L, ev.ts)
end

---------------------------------------------------- manual qualification --
local function need_lead (id_given)
    local id = resolve (id_given)
    local L = load (id)
    if not L then return nil, nil, fail ('not_found', 'lead: no lead ' .. id_given) end
    return id, L
end

on['lead.qualify'] = function (ev, d)
    local id, L, err = need_lead (d.lead)
    if err then return err end
    if RANK[L.stage] and RANK[L.stage] >= RANK[d.stage] then
        return fail ('conflict', 'stage: lead ' .. id .. ' is already ' .. L.stage)
    end
    st.hset (K ('lead', id), 'man', 1)
    L.man = '1'
    st.hdel (K ('lead', id), 'dq')
    promote (id, L, d.stage, d.by and ('manual by ' .. d.by) or 'manual', ev.ts)
    schedule (id, L)
    count ('qualified_manually')
end

on['lead.disqualify'] = function (ev, d)
    local id, L, err = need_lead (d.lead)
    if err then return err end
    if L.stage == 'disqualified' then
        return fail ('conflict', 'stage: lead ' .. id .. ' is already disqualified')
    end
    release (id, L)
    st.hset (K ('lead', id), 'dq', d.reason)
    st.hdel (K ('lead', id), 'man')
    L.man = nil
    move (id, L, 'disqualified', d.reason)
    count ('disqualified')
    emit ('lead.disqualified', { lead = id, reason = d.reason })
    schedule (id, L)
end

on['rep.update'] = function (ev, d)
    if d.away == nil and d.capacity == nil then
        return fail ('invalid', 'data.away: rep.update needs away or capacity (or both)')
    end
    local r = rep_config (d.rep)
    if not r then
        return fail ('not_found', 'rep: no rep ' .. d.rep .. ' in the leads/reps settings')
    end
    local key = K ('rep', d.rep)
    if d.away ~= nil then st.hset (key, 'away', d.away and 1 or 0) end
    if d.capacity then st.hset (key, 'cap', d.capacity) end
    local s = rep_state (r)
    emit ('rep.updated', { rep = d.rep, away = s.away, capacity = s.capacity, open = s.open })
end

------------------------------------------------------------------ timer --
-- Leads whose decayed engagement has just taken them below MQL go back to
-- nurture; the zset holds each one's exact crossing time, so nothing scans.
ticks[#ticks + 1] = function (now)
    local due = st.zdue (K ('decay'), now, 200)
    local fired = 0
    for i = 1, #due, 2 do
        local id = due[i]
        local L = load (id)
        if not L then
            st.zrem (K ('decay'), id)
        else
            if RANK[L.stage] and RANK[L.stage] > 0 and L.man ~= '1'
            and (tonumber (L.fit) or 0) + engagement (L, lead_now (L)) < RULES.mql then
                recycle (id, L, 'decayed', 'decay:' .. id .. ':' .. due[i + 1])
                fired = fired + 1
            end
            schedule (id, L)
        end
    end
    return fired
end

---------------------------------------------------------------- queries --
local function history (id)
    local out = {}
    local lines = redis.call ('LRANGE', K ('hist', id), 0, -1)
    for i = 1, #lines do
        local at, from, to, reason = string.match (lines[i], '^(%d+)|([^|]*)|([^|]*)|(.*)$')
        out[i] = { at = tonumber (at), from = from, to = to, reason = reason }
    end
    return out
end

-- Entries, exits and time spent per stage, from the history.
local function time_in_stage (hist)
    local spent, entries = {}, {}
    for i = 1, #hist do
        local h = hist[i]
        local until_ms = hist[i + 1] and hist[i + 1].at or NOW
        spent[h.to] = (spent[h.to] or 0) + math.max (until_ms - h.at, 0)
        entries[h.to] = (entries[h.to] or 0) + 1
    end
    return spent, entries
end

local function touches_of (L)
    local t = {}
    for f, n in pairs (L) do
        if string.sub (f, 1, 2) == 't.' then t[string.sub (f, 3)] = tonumber (n) end
    end
    return t
end

query['lead'] = function (req)
    if type (req.id) ~= 'string' then
        return fail ('invalid', 'id: required string is missing')
    end
    local id = resolve (req.id)
    local L = load (id)
    if not L then return fail ('not_found', 'id: no lead ' .. req.id) end
    local attrs = attrs_of (L)
    local fit, parts = score.fit (attrs, L.aud == '1', RULES)
    local eng = engagement (L, lead_now (L))
    local hist = history (id)
    local spent, entries = time_in_stage (hist)
    return {
        lead = id, alias_of = req.id ~= id and req.id or nil,
        stage = L.stage, since = tonumber (L.since), created = tonumber (L.ct),
        score = score.round (fit + eng),
        profile = map_or_nil ({ email = L.email, name = L.name, company = L.company,
                                title = L.title, phone = L.phone, campaign = L.cmp }),
        attrs = map_or_nil (attrs),
        fit = { total = fit, parts = parts },
        engagement = { value = score.round (eng, 3), touches = map_or_nil (touches_of (L)),
                       total_touches = tonumber (L.nt) or 0, in_audience = L.aud == '1',
                       half_life_s = HL / 1000 },
        history = hist, time_in_stage = spent, entries = entries,
        rep = L.rep, rep_open = L.open == '1', manual = L.man == '1',
        disqualified_reason = L.dq,
        decays_at = st.zscore (K ('decay'), id)
    }
end

local function rep_report (r)
    local s = rep_state (r)
    s.cur = nil
    s.sql = counter ('rep.' .. r.name .. '.sql')
    return s
end

query['rep'] = function (req)
    if type (req.id) ~= 'string' then
        return fail ('invalid', 'id: required string is missing')
    end
    local r = rep_config (req.id)
    if not r then return fail ('not_found', 'id: no rep ' .. req.id) end
    return rep_report (r)
end

-- The whole team and the funnel's stages at a glance.
query['reps'] = function (req)
    local reps = {}
    for i = 1, #RULES.reps do reps[i] = rep_report (RULES.reps[i]) end
    return {
        reps = reps,
        leads = counter ('leads'), mql = counter ('mql'), sql = counter ('sql'),
        disqualified = counter ('disqualified'),
        now = { nurture = counter ('in.nurture'), mql = counter ('in.mql'),
                sql = counter ('in.sql'), disqualified = counter ('in.disqualified') }
    }
end
