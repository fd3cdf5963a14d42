-- sales.lua — the sales stage: on lead.sql, open a deal; work it through
-- interactions, offers and stages; close it won or lost; deliver it.
-- Field shapes were checked in C (sales_rules.c); here only state.
-- Key layout and event shapes: proto/sales.md.

local MAX_DISCOUNT = tonumber (RULES.max_discount_pct) or 20
local SLA_MS = math.floor ((tonumber (RULES.sla_s) or 1800) * 1000)
local STALE_MS = math.floor ((tonumber (RULES.stale_days) or 14) * 86400000)
local SWEEP_LIMIT = tonumber (RULES.sweep_limit) or 200
local PROBABILITY = RULES.probability or {}
local REPS = RULES.reps or {}           -- available reps, in config order
local FIRST = deal_policy.FIRST_STAGE
local DAY_MS = 86400000

-- The monitor's counters, listed by STATS as 0 before their first event
declare_counters ('deals', 'won', 'lost', 'expansion', 'revenue', 'delivered',
                  'won_expansion', 'revenue_expansion')
-- Over time (GET series), per the deal's campaign; expansion deals are also
-- counted apart (deals, won and revenue include them, as the contract says)
declare_series ('deals', 'expansion', 'won', 'won_expansion', 'lost', 'revenue',
                'revenue_expansion')

--------------------------------------------------------------- helpers --

local function load (id)
    local deal = st.hgetall (K ('deal', id))
    if not deal.status then return nil end
    return deal
end

-- The deal if it exists and allows the action, else nil and the refusal.
local function need (id, action)
    local deal = load (id)
    if not deal then
        return nil, fail ('not_found', 'deal: no deal ' .. id)
    end
    local why = deal_policy.check (deal.status, action)
    if why then
        return nil, fail ('conflict', 'deal: ' .. id .. ': ' .. why)
    end
    return deal
end

-- One small history entry per change, in the deal's list, bounded to the
-- last HISTORY_MAX entries (what GET deal returns).
local HISTORY_MAX = 1000
local function history (id, entry)
    entry.at = NOW
    st.rpush (K ('deal', id, 'log'), cmsgpack.pack (entry))
    st.ltrim (K ('deal', id, 'log'), -HISTORY_MAX, -1)
end

-- Open deals counted by stage and by rep (count and amount), so the
-- pipeline report reads two small hashes instead of scanning deals.
local function tally_stage (stage, n, value)
    st.hincr (K ('bystage'), 'n:' .. stage, n)
    st.hincr (K ('bystage'), 'a:' .. stage, value)
end

local function tally_rep (rep, n, value)
    st.hincr (K ('byrep'), 'n:' .. rep, n)
    st.hincr (K ('byrep'), 'a:' .. rep, value)
end

-- Time spent in a stage, summed for the report's average.
local function stage_time (stage, since)
    st.hincr (K ('agg'), 'ms:' .. stage, NOW - since)
    st.hincr (K ('agg'), 'n:' .. stage, 1)
end

-- A rep from the configured pool other than current (rotating); current
-- itself when the pool has no one else; nil with no pool and no current.
local function pool_rep (current)
    if #REPS == 0 then return current end
    local turn = st.incr (K ('rr')) - 1
    return deal_policy.next_rep (REPS, current, turn)
end

local function short_id (v)
    return type (v) == 'string' and #v >= 1 and #v <= 64
end

-- The next free deal id for an entity (lead or customer), counted in its hash.
local function next_deal_id (prefix, entity, key)
    local id
    repeat
        local n = st.hincr (key, 'n')
        id = deal_policy.deal_id (prefix, entity, n, redis.sha1hex)
    until not load (id)
    return id
end

local function open_deal (id, f)
    st.hmset (K ('deal', id), {
        lead = f.lead, rep = f.rep, kind = f.kind, src = f.src,
        status = 'open', stage = FIRST, amt = f.amount, val = f.amount,
        t0 = NOW, ts = NOW, camp = f.campaign })
    tally_stage (FIRST, 1, f.amount)
    tally_rep (f.rep, 1, f.amount)
    st.zadd (K ('idle'), NOW, id)
    if f.src == 'sql' and SLA_MS > 0 then
        st.zadd (K ('sla'), NOW + SLA_MS, id)
    end
    history (id, { e = 'open', rep = f.rep, kind = f.kind, src = f.src,
                   amount = f.amount, nps = f.nps, health = f.health })
    count_stage ('deals', f.at, f.campaign)
    if f.kind == 'expansion' then count_stage ('expansion', f.at, f.campaign) end
    emit ('deal.opened', { deal = id, lead = f.lead, rep = f.rep, kind = f.kind,
                           amount = f.amount })
end

-------------------------------------------------- consumed from upstreams --

-- leads qualified a lead: open one deal per qualification event (a lead
-- recycled and qualified again gets a new deal, L<lead>-<n>).
consume['lead.sql'] = function (ev, d)
    if not short_id (d.lead) then
        return fail ('invalid', 'data.lead: required id is missing')
    end
    local lkey = K ('lead', d.lead)
    if st.hget (lkey, 'q:' .. ev.id) then
        count ('sql_duplicates')
        return nil
    end
    local id = next_deal_id ('L', d.lead, lkey)
    st.hset (lkey, 'q:' .. ev.id, 1)
    local rep = short_id (d.rep) and d.rep or pool_rep (nil) or 'unassigned'
    st.hset (lkey, 'rep', rep)
    local campaign = short_id (d.campaign) and d.campaign or st.hget (lkey, 'camp')
    if campaign then st.hset (lkey, 'camp', campaign) end
    open_deal (id, { lead = d.lead, rep = rep, kind = 'new', src = 'sql',
                     amount = 0, campaign = campaign, at = event_time (ev) })
end

-- retention sees room to grow a customer: open an expansion deal, unless
-- one is already open for that customer.
consume['customer.upsell'] = function (ev, d)
    if not short_id (d.customer) then
        return fail ('invalid', 'data.customer: required id is missing')
    end
    local ckey = K ('cust', d.customer)
    if st.hget (ckey, 'q:' .. ev.id) then return nil end
    st.hset (ckey, 'q:' .. ev.id, 1)
    local open = st.hget (ckey, 'open')
    if open and st.hget (K ('deal', open), 'status') == 'open' then
        count ('upsell_skipped')
        return nil
    end
    local id = next_deal_id ('X', d.customer, ckey)
    st.hset (ckey, 'open', id)
    local lead = st.hgetall (K ('lead', d.customer))
    open_deal (id, { lead = d.customer, rep = lead.rep or pool_rep (nil) or 'unassigned',
                     kind = 'expansion', src = 'upsell', amount = 0,
                     campaign = lead.camp, nps = tonumber (d.nps),
                     health = tonumber (d.health), at = event_time (ev) })
end

--------------------------------------------------------------- commands --

on['deal.open'] = function (ev, d)
    if load (d.deal) then
        return fail ('conflict', 'deal: ' .. d.deal .. ' already exists')
    end
    local lead = st.hgetall (K ('lead', d.lead))
    open_deal (d.deal, { lead = d.lead, rep = d.rep or lead.rep or pool_rep (nil) or 'unassigned',
                         kind = 'new', src = 'api', amount = d.amount or 0,
                         campaign = lead.camp, at = ev.ts })
end

on['deal.interaction'] = function (ev, d)
    local deal, refused = need (d.deal, 'interaction')
    if not deal then return refused end
    local key = K ('deal', d.deal)
    if not deal.t1 then
        -- The first contact answers the speed-to-lead timer
        st.hset (key, 't1', NOW)
        st.zrem (K ('sla'), d.deal)
        if deal.src == 'sql' then
            st.hincr (K ('agg'), 'stl_ms', NOW - tonumber (deal.t0))
            st.hincr (K ('agg'), 'stl_n', 1)
        end
    end
    st.hset (key, 'tl', NOW)
    if deal.stalled then st.hdel (key, 'stalled') end
    st.zadd (K ('idle'), NOW, d.deal)
    local seen = {}
    for _, o in ipairs (d.objections or {}) do
        if not seen[o] then
            seen[o] = true
            st.zincr (K ('objections'), 1, o)
        end
    end
    history (d.deal, { e = 'interaction', kind = d.kind, outcome = d.outcome,
                       objections = d.objections, text = d.text })
    count ('interactions')
end

on['deal.offer'] = function (ev, d)
    local deal, refused = need (d.deal, 'offer')
    if not deal then return refused end
    local pct = d.discount_pct or 0
    local delta = d.amount - (tonumber (deal.val) or 0)
    tally_stage (deal.stage, 0, delta)
    tally_rep (deal.rep, 0, delta)
    st.hmset (K ('deal', d.deal), { val = d.amount, disc = pct, appr = 0 })
    history (d.deal, { e = 'offer', amount = d.amount, discount_pct = pct })
    count ('offers')
    emit ('deal.offer_made', { deal = d.deal, amount = d.amount, discount_pct = pct })
    if deal_policy.needs_approval (pct, MAX_DISCOUNT) then
        count ('approvals_required')
        emit ('deal.approval_required', { deal = d.deal, discount_pct = pct,
                                          max_pct = MAX_DISCOUNT })
    end
end

on['deal.approve'] = function (ev, d)
    local deal, refused = need (d.deal, 'approve')
    if not deal then return refused end
    local pct = tonumber (deal.disc) or 0
    if not deal_policy.needs_approval (pct, MAX_DISCOUNT) then
        return fail ('conflict', 'deal: ' .. d.deal .. ': approve: the latest offer (' ..
                     pct .. '% off) needs no approval; the maximum is ' .. MAX_DISCOUNT .. '%')
    end
    if deal.appr == '1' then
        return fail ('conflict', 'deal: ' .. d.deal .. ': approve: the latest offer is already approved')
    end
    st.hset (K ('deal', d.deal), 'appr', 1)
    history (d.deal, { e = 'approve', by = d.by, discount_pct = pct })
    count ('approved')
    emit ('deal.approved', { deal = d.deal, by = d.by, discount_pct = pct })
end

on['deal.stage'] = function (ev, d)
    local deal, refused = need (d.deal, 'stage')
    if not deal then return refused end
    local why = deal_policy.stage_change (deal.stage, d.stage)
    if why then
        return fail ('conflict', 'stage: deal ' .. d.deal .. ': ' .. why)
    end
    local value = tonumber (deal.val) or 0
    local since = tonumber (deal.ts)
    stage_time (deal.stage, since)
    tally_stage (deal.stage, -1, -value)
    tally_stage (d.stage, 1, value)
    st.hmset (K ('deal', d.deal), { stage = d.stage, ts = NOW })
    history (d.deal, { e = 'stage', from = deal.stage, to = d.stage, ms = NOW - since })
    count ('stage_changes')
    emit ('deal.stage_changed', { deal = d.deal, from = deal.stage, to = d.stage })
end

on['deal.close'] = function (ev, d)
    local deal, refused = need (d.deal, 'close')
    if not deal then return refused end
    local won = d.outcome == 'won'
    if won then
        local why = deal_policy.close_won (tonumber (deal.disc) or 0, deal.appr == '1',
                                           MAX_DISCOUNT)
        if why then return fail ('conflict', 'outcome: deal ' .. d.deal .. ': ' .. why) end
    end
    local key = K ('deal', d.deal)
    local value = tonumber (deal.val) or 0
    stage_time (deal.stage, tonumber (deal.ts))
    tally_stage (deal.stage, -1, -value)
    tally_rep (deal.rep, -1, -value)
    st.zrem (K ('idle'), d.deal)
    st.zrem (K ('sla'), d.deal)
    st.hmset (key, { status = d.outcome, tc = NOW })
    if won then
        count_stage ('won', ev.ts, deal.camp)
        count_stage ('revenue', ev.ts, deal.camp, value)
        if deal.kind == 'expansion' then
            count_stage ('won_expansion', ev.ts, deal.camp)
            count_stage ('revenue_expansion', ev.ts, deal.camp, value)
        end
        st.hincr (K ('agg'), 'cycle_ms', NOW - tonumber (deal.t0))
        st.hincr (K ('agg'), 'cycle_n', 1)
        history (d.deal, { e = 'close', outcome = 'won', amount = value, reason = d.reason })
        emit ('deal.won', { deal = d.deal, lead = deal.lead, amount = value,
                            campaign = deal.camp, kind = deal.kind, rep = deal.rep,
                            at = ev.ts })
    else
        local reason = d.reason or 'unspecified'
        st.hset (key, 'why', reason)
        st.zincr (K ('reasons'), 1, deal_policy.reason_key (reason))
        count_stage ('lost', ev.ts, deal.camp)
        history (d.deal, { e = 'close', outcome = 'lost', amount = value, reason = reason })
        emit ('deal.lost', { deal = d.deal, lead = deal.lead, reason = reason })
    end
end

on['deal.deliver'] = function (ev, d)
    local deal, refused = need (d.deal, 'deliver')
    if not deal then return refused end
    st.hmset (K ('deal', d.deal), { status = 'delivered', td = NOW })
    history (d.deal, { e = 'deliver' })
    count ('delivered')
    emit ('deal.delivered', { deal = d.deal, lead = deal.lead,
                              amount = tonumber (deal.val) or 0 })
end

----------------------------------------------------------------- timers --

-- Speed to lead: a deal from lead.sql with no first interaction by its due
-- time goes to another available rep. Due times are a sorted set: each
-- tick reads only what is due, at most SWEEP_LIMIT of it.
ticks[#ticks + 1] = function (now)
    local due = st.zdue (K ('sla'), now, SWEEP_LIMIT)
    local fired = 0
    for i = 1, #due, 2 do
        local id = due[i]
        st.zrem (K ('sla'), id)
        local deal = load (id)
        if deal and deal.status == 'open' and not deal.t1 then
            local new_rep = pool_rep (deal.rep)
            local value = tonumber (deal.val) or 0
            if new_rep ~= deal.rep then
                tally_rep (deal.rep, -1, -value)
                tally_rep (new_rep, 1, value)
                st.hset (K ('deal', id), 'rep', new_rep)
                count ('reassigned')
            end
            st.hset (K ('deal', id), 'sla', 1)
            history (id, { e = 'sla_breached', rep = deal.rep, new_rep = new_rep })
            count ('sla_breached')
            emit ('deal.sla_breached', { deal = id, lead = deal.lead, rep = deal.rep,
                                         new_rep = new_rep }, 'sla|' .. id)
            fired = fired + 1
        end
    end
    return fired
end

-- Stale deals: open deals by last interaction time; the oldest below the
-- cut-off are reported once per idle spell (an interaction re-arms them).
ticks[#ticks + 1] = function (now)
    local due = st.zdue (K ('idle'), now - STALE_MS, SWEEP_LIMIT)
    local fired = 0
    for i = 1, #due, 2 do
        local id, since = due[i], tonumber (due[i + 1])
        st.zrem (K ('idle'), id)
        local deal = load (id)
        if deal and deal.status == 'open' then
            local days = math.floor ((now - since) / DAY_MS)
            st.hset (K ('deal', id), 'stalled', 1)
            history (id, { e = 'stalled', days = days })
            count ('stalled')
            emit ('deal.stalled', { deal = id, lead = deal.lead, rep = deal.rep, days = days },
                  'stalled|' .. id .. '|' .. due[i + 1])
            fired = fired + 1
        end
    end
    return fired
end

---------------------------------------------------------------- reports --

local function num (v) return tonumber (v) or 0 end

-- A sorted set's top entries as [{name, count}] (a plain read).
local function top (key, name, n)
    local flat = redis.call ('ZREVRANGE', key, 0, n - 1, 'WITHSCORES')
    local out = {}
    for i = 1, #flat, 2 do
        out[#out + 1] = { [name] = flat[i], count = tonumber (flat[i + 1]) }
    end
    return out
end

query['deal'] = function (req)
    if not short_id (req.id) then
        return fail ('invalid', 'id: required deal id (1-64 bytes) is missing')
    end
    local deal = load (req.id)
    if not deal then return fail ('not_found', 'id: no deal ' .. req.id) end
    local t0 = num (deal.t0)
    local entries = redis.call ('LRANGE', K ('deal', req.id, 'log'), -HISTORY_MAX, -1)
    local hist, interactions, offers, objections = {}, {}, {}, {}
    local stages = { { stage = FIRST, since = t0 } }
    for i = 1, #entries do
        local e = cmsgpack.unpack (entries[i])
        hist[#hist + 1] = e
        if e.e == 'interaction' then
            interactions[#interactions + 1] = e
            -- A repeat within one interaction counts once (as in the report)
            local seen = {}
            for _, o in ipairs (e.objections or {}) do
                if not seen[o] then
                    seen[o] = true
                    objections[o] = (objections[o] or 0) + 1
                end
            end
        elseif e.e == 'offer' then
            offers[#offers + 1] = e
        elseif e.e == 'stage' then
            stages[#stages].ms = e.at - stages[#stages].since
            stages[#stages + 1] = { stage = e.to, since = e.at }
        end
    end
    local last = stages[#stages]
    last.ms = (deal.tc and num (deal.tc) or NOW) - last.since
    local pct = tonumber (deal.disc)
    return {
        deal = req.id, lead = deal.lead, rep = deal.rep, kind = deal.kind,
        source = deal.src, status = deal.status,
        stage = deal.status == 'open' and deal.stage or nil,
        last_stage = deal.stage,
        amount = num (deal.val), open_amount = num (deal.amt),
        discount_pct = pct, approved = deal.appr == '1',
        approval_required = deal_policy.needs_approval (pct, MAX_DISCOUNT) and deal.appr ~= '1',
        campaign = deal.camp, lost_reason = deal.why,
        opened_at = t0, stage_since = num (deal.ts),
        time_in_stage_ms = last.ms,
        first_interaction_at = tonumber (deal.t1), last_interaction_at = tonumber (deal.tl),
        closed_at = tonumber (deal.tc), delivered_at = tonumber (deal.td),
        sla_breached = deal.sla == '1', stalled = deal.stalled == '1',
        history = hist, interactions = interactions, offers = offers,
        stages = stages, objections = next (objections) and objections or nil
    }
end

query['pipeline'] = function (req)
    local bystage = st.hgetall (K ('bystage'))
    local agg = st.hgetall (K ('agg'))
    local stages, amounts, open, open_amount = {}, {}, 0, 0
    for _, s in ipairs (deal_policy.STAGES) do
        local n, a = num (bystage['n:' .. s]), num (bystage['a:' .. s])
        amounts[s] = a
        open, open_amount = open + n, open_amount + a
        stages[#stages + 1] = {
            stage = s, count = n, amount = a, probability = num (PROBABILITY[s]),
            weighted = deal_policy.forecast ({ [s] = a }, PROBABILITY),
            avg_time_in_stage_ms = deal_policy.mean (num (agg['ms:' .. s]), num (agg['n:' .. s])) }
    end
    local reps = {}
    for f, v in pairs (st.hgetall (K ('byrep'))) do
        local rep = string.match (f, '^n:(.*)$')
        if rep and num (v) > 0 then
            reps[#reps + 1] = { rep = rep, count = num (v),
                                amount = num (st.hget (K ('byrep'), 'a:' .. rep)) }
        end
    end
    table.sort (reps, function (a, b) return a.rep < b.rep end)
    local won, lost = counter ('won'), counter ('lost')
    return {
        open = open, open_amount = open_amount, stages = stages, reps = reps,
        forecast = deal_policy.forecast (amounts, PROBABILITY),
        won = won, lost = lost, revenue = counter ('revenue'),
        win_rate = deal_policy.win_rate (won, lost),
        avg_cycle_ms = deal_policy.mean (num (agg.cycle_ms), num (agg.cycle_n)),
        avg_speed_to_lead_ms = deal_policy.mean (num (agg.stl_ms), num (agg.stl_n)),
        top_objections = top (K ('objections'), 'objection', 10),
        lost_reasons = top (K ('reasons'), 'reason', 10)
    }
end
