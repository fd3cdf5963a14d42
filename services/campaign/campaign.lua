-- Rules of the marketing stage (proto/campaign.md): campaigns and their
-- audiences, touches and exact reach, attribution research, channel
-- recommendation and the win-back audience.
--
-- Keys (all via K, one hash slot):
--   cmp:<id>   campaign hash: settings, counters, credits "<model><stage>"
--   cmpn       campaign number -> id (histories hold numbers, not ids)
--   bkt:<n>    channel×segment bucket hash: name, counters, credits
--   bktn       bucket name "channel/segment" -> number
--   num        next campaign / bucket numbers
--   c:<contact> contact hash: h history, e engaged, s stage reached,
--              x conversion records, r<campaign n> / b<bucket n> reach marks
--   wbz, wb:<customer>  win-back audience (zset by time) and its details

local CFG = {
    history_max = tonumber (RULES.history_max) or 50,
    conversions_max = tonumber (RULES.conversions_max) or 20,
    half_life_ms = (tonumber (RULES.half_life_days) or 7) * 86400000,
    prior_alpha = tonumber (RULES.prior_alpha) or 1,
    prior_beta = tonumber (RULES.prior_beta) or 1,
    z = tonumber (RULES.recommend_z) or 1.645,
    stage = RULES.recommend_stage or 'sql',
    report_max = tonumber (RULES.report_max) or 1000
}

-- STATS shows these as 0 before their first event (the monitor reads
-- reached and engaged from a fresh start, too)
declare_counters ('reached', 'engaged', 'touches', 'in_audience', 'anonymous',
                  'anonymous_impressions', 'campaigns', 'spend', 'conv_lead', 'conv_mql',
                  'conv_sql', 'conv_won', 'conv_revenue', 'unattributed')
-- Over time (GET series): the whole funnel's unique contacts reached and
-- engaged, and per campaign its own unique contacts (as the report's reach)
declare_series ('reached', 'engaged')

local MODELS = attribution.MODELS
local NM = #MODELS
local MODEL_CODE = { 'f', 'l', 'n', 'p', 'd' }     -- field prefix per model
local MODEL_INDEX = {}
for i, m in ipairs (MODELS) do MODEL_INDEX[m] = i end
local STAGES = { 'lead', 'mql', 'sql', 'won' }     -- in funnel order
local STAGE_CODE = { lead = 'L', mql = 'M', sql = 'S', won = 'W' }
local REVENUE = 'R'

local function valid_id (s)
    return type (s) == 'string' and #s >= 1 and #s <= 64
       and not string.find (s, '[^A-Za-z0-9._:@+-]')
end

local function round6 (x)
    return math.floor (x * 1e6 + 0.5) / 1e6
end

------------------------------------------------------------- campaigns --

local function campaign_key (id) return K ('cmp', id) end

-- The bucket number for "channel/segment", created on first use.
local function bucket (name)
    local n = st.hget (K ('bktn'), name)
    if n then return tonumber (n) end
    n = st.hincr (K ('num'), 'bkt', 1)
    st.hset (K ('bktn'), name, n)
    st.hset (K ('bkt', n), 'name', name)
    return n
end

on['campaign.upsert'] = function (ev, d)
    local aud = d.audience
    if aud and aud.age_min and aud.age_max and aud.age_min > aud.age_max then
        return fail ('invalid', 'data.audience.age_min: must not exceed data.audience.age_max')
    end
    local key = campaign_key (d.campaign)
    local n = st.hget (key, 'n')
    local old_status = st.hget (key, 'status')
    local status = d.status or old_status or 'active'
    if old_status == 'ended' and status ~= 'ended' then
        return fail ('conflict', 'status: campaign ' .. d.campaign ..
                     ' has ended; an ended campaign cannot be reopened')
    end
    local created = n == nil
    if created then
        n = st.hincr (K ('num'), 'cmp', 1)
        st.hset (K ('cmpn'), tostring (n), d.campaign)
        st.hmset (key, { n = n, created = ev.ts })
        count ('campaigns')
    end
    -- Absent optional fields keep their stored value; only the audience's
    -- known rules are kept (unknown keys are ignored, as everywhere)
    local aud_json = st.hget (key, 'aud')
    if aud then
        aud_json = cjson.encode ({ age_min = aud.age_min, age_max = aud.age_max,
                                   regions = aud.regions, interests = aud.interests })
    end
    local segment = audience.segment (aud_json and cjson.decode (aud_json) or nil)
    local b = bucket (d.channel .. '/' .. segment)
    st.hmset (key, { name = d.name, channel = d.channel, platform = d.platform,
                     budget = d.budget, status = status, aud = aud_json,
                     seg = segment, b = b, updated = ev.ts })
    emit ('campaign.updated', { campaign = d.campaign, name = d.name, channel = d.channel,
                                status = status, segment = segment, created = created })
end

on['campaign.spend'] = function (ev, d)
    local key = campaign_key (d.campaign)
    local b = st.hget (key, 'b')
    if not b then
        return fail ('not_found', 'campaign: no campaign ' .. d.campaign)
    end
    st.hincr (key, 'spend', d.amount)
    st.hincr (K ('bkt', b), 'spend', d.amount)
    count ('spend', d.amount)
end

---------------------------------------------------------- attribution --

-- Adds (sign 1) or removes (-1) a conversion's credits to the campaigns
-- and buckets its touches belong to.
local function apply_credits (credits, stage, sign)
    local code = STAGE_CODE[stage]
    for k, v in pairs (credits) do
        local c, b = string.match (k, '^(%d+):(%d+)$')
        local ckey = campaign_key (st.hget (K ('cmpn'), c))
        local bkey = K ('bkt', b)
        for m = 1, NM do
            local units = (v[m] or 0) * sign
            if units ~= 0 then
                st.hincr (ckey, MODEL_CODE[m] .. code, units)
                st.hincr (bkey, MODEL_CODE[m] .. code, units)
            end
            local cents = (v[NM + m] or 0) * sign
            if cents ~= 0 then
                st.hincr (ckey, MODEL_CODE[m] .. REVENUE, cents)
                st.hincr (bkey, MODEL_CODE[m] .. REVENUE, cents)
            end
        end
    end
end

local function records_of (ck)
    local x = st.hget (ck, 'x')
    return x and cmsgpack.unpack (x) or {}
end

-- One conversion of a contact: credit it from the touches so far and keep
-- the record (bounded) so a late touch can re-attribute it.
local function convert (ev, contact, stage, amount)
    local ck = K ('c', contact)
    local history = attribution.decode (st.hget (ck, 'h'))
    local credits = attribution.credit (history, ev.ts, CFG.half_life_ms, amount)
    apply_credits (credits, stage, 1)
    local records = records_of (ck)
    records[#records + 1] = { s = stage, t = ev.ts, a = amount, c = credits }
    while #records > CFG.conversions_max do table.remove (records, 1) end
    st.hset (ck, 'x', cmsgpack.pack (records))
    count ('conv_' .. stage)
    if amount > 0 then count ('conv_revenue', amount) end
    if next (credits) == nil then count ('unattributed') end
end

-- A touch at ts re-attributes every kept conversion at or after ts:
-- subtract its old credits, add the new ones (only the differences are
-- written). Bounded: conversions_max records × history_max touches.
local function reattribute (ck, ts)
    local records = records_of (ck)
    if #records == 0 then return end
    local history = attribution.decode (st.hget (ck, 'h'))
    local changed = false
    for _, r in ipairs (records) do
        if r.t >= ts then
            local credits = attribution.credit (history, r.t, CFG.half_life_ms, r.a)
            apply_credits (attribution.diff (r.c, credits), r.s, 1)
            if next (r.c) == nil and next (credits) ~= nil then count ('unattributed', -1) end
            r.c = credits
            changed = true
            count ('reattributed')
        end
    end
    if changed then st.hset (ck, 'x', cmsgpack.pack (records)) end
end

---------------------------------------------------------------- touches --

-- Marks a contact reached (1) or engaged (2) in a campaign or bucket hash;
-- the mark lives in the contact's hash, so each count is exact. Returns
-- whether the contact is newly reached, newly engaged there.
local function mark_reach (ck, field, key, engaged)
    local was = tonumber (st.hget (ck, field))
    if not was then st.hincr (key, 'reach', 1) end
    if engaged and was ~= 2 then
        st.hincr (key, 'engaged', 1)
        st.hset (ck, field, 2)
    elseif not was then
        st.hset (ck, field, 1)
    end
    return not was, engaged and was ~= 2
end

on['touch'] = function (ev, d)
    local key = campaign_key (d.campaign)
    local n = st.hget (key, 'n')
    if not n then
        return fail ('not_found', 'campaign: no campaign ' .. d.campaign)
    end
    local status = st.hget (key, 'status')
    if status == 'draft' then
        return fail ('conflict', 'campaign: ' .. d.campaign ..
                     ' is a draft; touches need an active, paused or ended campaign')
    end
    local aud_json = st.hget (key, 'aud')
    local in_audience = audience.matches (aud_json and cjson.decode (aud_json) or nil, d.attrs)
    local impression = d.kind == 'impression'
    st.hincr (key, 'touches', 1)
    count ('touches')
    if in_audience then
        st.hincr (key, 'in_audience', 1)
        count ('in_audience')
    end
    if not d.contact then
        -- Anonymous: counted apart, never in reach, never published
        st.hincr (key, 'anonymous', 1)
        count ('anonymous')
        if impression then
            st.hincr (key, 'anonymous_impressions', 1)
            count ('anonymous_impressions')
        end
        return
    end
    local ck = K ('c', d.contact)
    local b = st.hget (key, 'b')
    local h = st.hget (ck, 'h')
    if not h then count_stage ('reached', ev.ts) end
    if not impression and not st.hget (ck, 'e') then
        st.hset (ck, 'e', 1)
        count_stage ('engaged', ev.ts)
    end
    local reached, engaged = mark_reach (ck, 'r' .. n, key, not impression)
    if reached then series_add ('reached', ev.ts, d.campaign) end
    if engaged then series_add ('engaged', ev.ts, d.campaign) end
    mark_reach (ck, 'b' .. b, K ('bkt', b), not impression)
    local history = attribution.decode (h)
    local kept = attribution.insert (history, { ts = ev.ts, c = tonumber (n), b = tonumber (b) },
                                     CFG.history_max)
    if kept then
        st.hset (ck, 'h', attribution.encode (history))
        reattribute (ck, ev.ts)
    end
    emit ('prospect.touched', { contact = d.contact, campaign = d.campaign,
                                channel = st.hget (key, 'channel'), kind = d.kind,
                                in_audience = in_audience, segment = st.hget (key, 'seg'),
                                at = ev.ts })
end

------------------------------------------------------ upstream events --

local function need_id (d, field)
    if not valid_id (d[field]) then
        return fail ('invalid', 'data.' .. field .. ': must be 1-64 bytes of [A-Za-z0-9._:@+-]')
    end
end

-- Stages are cumulative: reaching sql also counts lead and mql once each.
local function reach_stage (ev, d, target)
    local bad = need_id (d, 'lead')
    if bad then return bad end
    local ck = K ('c', d.lead)
    local at = tonumber (st.hget (ck, 's')) or 0
    for s = at + 1, target do convert (ev, d.lead, STAGES[s], 0) end
    if target > at then st.hset (ck, 's', target) end
end

consume['lead.captured'] = function (ev, d) return reach_stage (ev, d, 1) end
consume['lead.mql'] = function (ev, d) return reach_stage (ev, d, 2) end
consume['lead.sql'] = function (ev, d) return reach_stage (ev, d, 3) end

local function leave_winback (customer)
    local k = K ('wb', customer)
    if not st.hget (k, 'state') then return end
    for f in pairs (st.hgetall (k)) do st.hdel (k, f) end
    st.zrem (K ('wbz'), customer)
    count ('winback', -1)
    count ('won_back')
end

consume['deal.won'] = function (ev, d)
    local bad = need_id (d, 'lead')
    if bad then return bad end
    local amount = d.amount
    if amount ~= nil and (type (amount) ~= 'number' or amount < 0 or amount ~= math.floor (amount)) then
        return fail ('invalid', 'data.amount: must be an integer >= 0')
    end
    convert (ev, d.lead, 'won', amount or 0)
    leave_winback (d.lead)
end

-- Win-back: customers retention flags join the audience; churned is
-- stronger than at_risk and stays; winning a deal again takes them out.
local function join_winback (ev, d, state, fields)
    local bad = need_id (d, 'customer')
    if bad then return bad end
    local k = K ('wb', d.customer)
    local was = st.hget (k, 'state')
    if was == 'churned' and state == 'at_risk' then return end
    if not was then
        count ('winback')
        st.hset (k, 'since', ev.ts)
    end
    if was ~= state then count ('winback_' .. state) end
    st.zadd (K ('wbz'), ev.ts, d.customer)
    st.hset (k, 'state', state)
    st.hset (k, 'ts', ev.ts)
    st.hmset (k, fields)
end

consume['customer.at_risk'] = function (ev, d)
    return join_winback (ev, d, 'at_risk', {
        health = type (d.health) == 'number' and d.health or nil,
        reason = type (d.reason) == 'string' and string.sub (d.reason, 1, 200) or nil })
end

consume['customer.churned'] = function (ev, d)
    return join_winback (ev, d, 'churned', {
        days_inactive = type (d.days_inactive) == 'number' and d.days_inactive or nil })
end

---------------------------------------------------------------- queries --

-- Attributed counts of a campaign or bucket hash under model m.
local function credited (h, m)
    local code = MODEL_CODE[m]
    local out = {}
    for _, s in ipairs (STAGES) do
        out[s] = (tonumber (h[code .. STAGE_CODE[s]]) or 0) / attribution.UNITS
    end
    out.revenue = tonumber (h[code .. REVENUE]) or 0
    return out
end

-- One report row: reach, engagement, the model's conversions, money.
local function report_row (h, m)
    local cr = credited (h, m)
    local spend = tonumber (h.spend) or 0
    local row = {
        reach = tonumber (h.reach) or 0, engaged = tonumber (h.engaged) or 0,
        leads = round6 (cr.lead), mql = round6 (cr.mql), sql = round6 (cr.sql),
        won = round6 (cr.won), revenue = cr.revenue, spend = spend
    }
    -- Ratios only where they are defined (absent otherwise)
    if cr.lead > 0 then row.cost_per_lead = round6 (spend / cr.lead) end
    if cr.won > 0 then row.cost_per_acquisition = round6 (spend / cr.won) end
    if spend > 0 then row.roi = round6 ((cr.revenue - spend) / spend) end
    return row
end

local function campaign_view (id, h)
    local view = {
        campaign = id, name = h.name, channel = h.channel, platform = h.platform,
        status = h.status, segment = h.seg, budget = tonumber (h.budget),
        spend = tonumber (h.spend) or 0, reach = tonumber (h.reach) or 0,
        engaged = tonumber (h.engaged) or 0, touches = tonumber (h.touches) or 0,
        anonymous = tonumber (h.anonymous) or 0,
        anonymous_impressions = tonumber (h.anonymous_impressions) or 0,
        in_audience = tonumber (h.in_audience) or 0,
        created = tonumber (h.created), updated = tonumber (h.updated)
    }
    local aud = h.aud and cjson.decode (h.aud)
    if aud and next (aud) ~= nil then view.audience = aud end
    view.attribution = {}
    for m, name in ipairs (MODELS) do
        local row = report_row (h, m)
        view.attribution[name] = { leads = row.leads, mql = row.mql, sql = row.sql,
                                   won = row.won, revenue = row.revenue }
    end
    return view
end

query['campaign'] = function (req)
    if not valid_id (req.id) then
        return fail ('invalid', 'id: must be 1-64 bytes of [A-Za-z0-9._:@+-]')
    end
    local h = st.hgetall (campaign_key (req.id))
    if not h.n then return fail ('not_found', 'id: no campaign ' .. req.id) end
    return campaign_view (req.id, h)
end

local function model_arg (req)
    local model = req.model or 'linear'
    if not MODEL_INDEX[model] then
        return nil, fail ('invalid', 'model: must be one of ' .. table.concat (MODELS, ', '))
    end
    return model
end

local function split_bucket (name)
    return string.match (name, '^([^/]+)/(.*)$')
end

local function sorted_pairs_of (key)
    local flat = st.hgetall (key)
    local names = {}
    for k in pairs (flat) do names[#names + 1] = k end
    table.sort (names)
    return names, flat
end

query['report'] = function (req)
    local model, bad = model_arg (req)
    if bad then return bad end
    local m = MODEL_INDEX[model]
    local only_bucket
    local campaigns = {}
    if req.campaign ~= nil then
        if not valid_id (req.campaign) then
            return fail ('invalid', 'campaign: must be 1-64 bytes of [A-Za-z0-9._:@+-]')
        end
        local h = st.hgetall (campaign_key (req.campaign))
        if not h.n then return fail ('not_found', 'campaign: no campaign ' .. req.campaign) end
        campaigns[1] = req.campaign
        only_bucket = h.b
    else
        local ids = st.hgetall (K ('cmpn'))
        for _, id in pairs (ids) do campaigns[#campaigns + 1] = id end
        table.sort (campaigns)
    end
    local rows, truncated = {}, false
    for i, id in ipairs (campaigns) do
        if i > CFG.report_max then truncated = true break end
        local h = st.hgetall (campaign_key (id))
        local row = report_row (h, m)
        row.campaign, row.name, row.channel, row.segment, row.status =
            id, h.name, h.channel, h.seg, h.status
        rows[#rows + 1] = row
    end
    local segments = {}
    local names, numbers = sorted_pairs_of (K ('bktn'))
    for _, name in ipairs (names) do
        local b = numbers[name]
        if not only_bucket or b == only_bucket then
            if #segments >= CFG.report_max then truncated = true break end
            local row = report_row (st.hgetall (K ('bkt', b)), m)
            row.channel, row.segment = split_bucket (name)
            segments[#segments + 1] = row
        end
    end
    local totals = {
        reached = counter ('reached'), engaged = counter ('engaged'),
        leads = counter ('conv_lead'), mql = counter ('conv_mql'), sql = counter ('conv_sql'),
        won = counter ('conv_won'), revenue = counter ('conv_revenue'),
        spend = counter ('spend'), unattributed = counter ('unattributed'),
        anonymous = counter ('anonymous'), anonymous_impressions = counter ('anonymous_impressions')
    }
    return { model = model, campaigns = rows, segments = segments, totals = totals,
             truncated = truncated }
end

local CHANNELS = { 'email', 'social', 'search', 'display', 'video', 'event',
                   'referral', 'content', 'other' }

query['recommend'] = function (req)
    local model, bad = model_arg (req)
    if bad then return bad end
    local m = MODEL_INDEX[model]
    local stage = req.stage or CFG.stage
    if not STAGE_CODE[stage] then
        return fail ('invalid', 'stage: must be one of ' .. table.concat (STAGES, ', '))
    end
    local segment = req.segment
    if segment ~= nil and (type (segment) ~= 'string' or #segment == 0 or #segment > 100) then
        return fail ('invalid', 'segment: must be a segment label such as 18-24/us/any')
    end
    if req.audience ~= nil then
        if type (req.audience) ~= 'table' then
            return fail ('invalid', 'audience: must be a map {age_min?, age_max?, regions?, interests?}')
        end
        for _, f in ipairs ({ 'age_min', 'age_max' }) do
            local v = req.audience[f]
            if v ~= nil and (type (v) ~= 'number' or v ~= math.floor (v) or v < 0 or v > 150) then
                return fail ('invalid', 'audience.' .. f .. ': must be an integer 0..150')
            end
        end
        for _, f in ipairs ({ 'regions', 'interests' }) do
            local v = req.audience[f]
            if v ~= nil and type (v) ~= 'table' then
                return fail ('invalid', 'audience.' .. f .. ': must be an array of strings')
            end
        end
        segment = audience.segment (req.audience)
    end
    -- Sum the buckets of the segment (all segments when none is given) per channel
    local per = {}
    local names, numbers = sorted_pairs_of (K ('bktn'))
    for _, name in ipairs (names) do
        local channel, seg = split_bucket (name)
        if not segment or seg == segment then
            local h = st.hgetall (K ('bkt', numbers[name]))
            local cr = credited (h, m)
            local row = per[channel]
            if not row then
                row = { channel = channel, trials = 0, successes = 0, spend = 0, revenue = 0 }
                per[channel] = row
            end
            row.trials = row.trials + (tonumber (h.reach) or 0)
            row.successes = row.successes + cr[stage]
            row.spend = row.spend + (tonumber (h.spend) or 0)
            row.revenue = row.revenue + cr.revenue
        end
    end
    local rows, untried = {}, {}
    for _, channel in ipairs (CHANNELS) do
        local row = per[channel]
        if row and row.trials > 0 then
            row.successes = round6 (row.successes)
            if row.successes > 0 then
                row.cost_per_conversion = round6 (row.spend / row.successes)
            end
            rows[#rows + 1] = row
        else
            untried[#untried + 1] = channel
        end
    end
    channel_rank.rank (rows, CFG.prior_alpha, CFG.prior_beta, CFG.z)
    return {
        segment = segment or 'all', stage = stage, model = model,
        rule = 'rank by Beta posterior lower bound mean - z*sd',
        prior = { alpha = CFG.prior_alpha, beta = CFG.prior_beta }, z = CFG.z,
        channels = rows, untried = untried, best = rows[1] and rows[1].channel or nil
    }
end

query['winback'] = function (req)
    local limit = req.limit or 100
    if type (limit) ~= 'number' or limit ~= math.floor (limit) or limit < 1 or limit > 1000 then
        return fail ('invalid', 'limit: must be an integer 1..1000')
    end
    local offset = req.offset or 0
    if type (offset) ~= 'number' or offset ~= math.floor (offset) or offset < 0 then
        return fail ('invalid', 'offset: must be an integer >= 0')
    end
    -- Newest flagged first; GET reads committed state
    local ids = redis.call ('ZREVRANGE', K ('wbz'), offset, offset + limit - 1)
    local items = {}
    for i, id in ipairs (ids) do
        local h = st.hgetall (K ('wb', id))
        items[i] = { customer = id, state = h.state, reason = h.reason,
                     health = tonumber (h.health), days_inactive = tonumber (h.days_inactive),
                     since = tonumber (h.since), ts = tonumber (h.ts) }
    end
    local total = redis.call ('ZCARD', K ('wbz'))
    local reply = { total = total, offset = offset, items = items }
    if offset + #items < total then reply.next_offset = offset + #items end
    return reply
end
