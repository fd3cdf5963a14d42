-- retention.lua — the retention stage: customers, repeat orders, health,
-- churn risk (proto/retention.md is the full spec).
--
-- Keys (all under the service prefix, see proto/retention.md):
--   c:<id>    hash, one per customer (short fields, integers), plus one
--             field '#<order id>' per order that had an id (no extra key)
--   tk:<id>   hash ticket -> severity, the customer's open tickets
--   act       zset customer -> last activity time (churn sweep)
--   due       zset customer -> time the next order is overdue (silence timer)
--   coh       hash '<month>:<c|r|x|v>' -> customers, repeat, churned, revenue
--   stats     the STATS counters

local SEVERITIES = { 'low', 'normal', 'high', 'urgent' }
local SEV_FIELD = { low = 'tl', normal = 'tn', high = 'th', urgent = 'tu' }
local DAY_MS = 86400000

-- The stage's counters, listed by STATS as 0 before the first customer
declare_counters ('customers', 'repeat', 'at_risk', 'churned', 'revenue')
-- Over time (GET series), per the customer's campaign (its first won deal's)
declare_series ('customers', 'repeat')

local function cust_key (id) return K ('c', id) end

-- Adds n to one of the customer's cohort figures (c, r, x or v); the
-- cohort is the onboarding month, derived rather than stored.
local function cohort_add (c, what, n)
    st.hincr (K ('coh'), cohort.month (tonumber (c.on)) .. ':' .. what, n)
end

-- The health inputs of a customer hash, as health.score wants them.
local function health_inputs (c, now)
    local open = {}
    for _, sev in ipairs (SEVERITIES) do
        open[sev] = tonumber (c[SEV_FIELD[sev]]) or 0
    end
    return { now = now, last = tonumber (c.la), orders = tonumber (c.n) or 0,
             revenue = tonumber (c.rev) or 0, nps = tonumber (c.nps), open = open }
end

-- Recomputes health and risk after a change; publishes customer.health on
-- change, customer.at_risk on entering high risk, customer.upsell for a
-- healthy promoter. seed: deterministic id seed for timer-driven calls.
local function refresh (id, c, now, reason, seed)
    local key = cust_key (id)
    local score = health.score (health_inputs (c, now), RULES)
    local risk = health.risk (score, c.od == '1', RULES)
    local old_h, old_r = tonumber (c.h), c.r
    if score ~= old_h or risk ~= old_r then
        st.hmset (key, { h = score, r = risk })
        c.h, c.r = tostring (score), risk
        emit ('customer.health', { customer = id, health = score, risk = risk }, seed)
    end
    if risk == 'high' and old_r ~= 'high' then
        count ('at_risk')
        emit ('customer.at_risk', { customer = id, health = score,
            reason = c.od == '1' and 'overdue' or reason }, seed)
    elseif old_r == 'high' and risk ~= 'high' then
        count ('at_risk', -1)
    end
    local nps = tonumber (c.nps)
    if health.upsell_due (nps, score, tonumber (c.up), now, RULES) then
        st.hset (key, 'up', now)
        c.up = tostring (now)
        -- at: the moment of the event that made the upsell due (sales counts
        -- the expansion deal it opens there); a timer's is now
        emit ('customer.upsell', { customer = id, nps = nps, health = score,
                                   at = CAUSE and event_time (CAUSE) or NOW }, seed)
    end
end

-- Any customer event is activity: it moves the churn clock and wins back a
-- churned customer (who leaves the churned count and is rated afresh).
local function touch (id, c, ts)
    local key = cust_key (id)
    local la = math.max (tonumber (c.la) or 0, ts)
    if c.ch then
        st.hdel (key, 'ch')
        c.ch = nil
        count ('churned', -1)
        count ('won_back')
        cohort_add (c, 'x', -1)
        -- Churn took the customer out of the at_risk count: rate afresh
        st.hdel (key, 'r')
        c.r = nil
    end
    st.hset (key, 'la', la)
    c.la = tostring (la)
    st.zadd (K ('act'), la, id)
end

-- The customer hash, or nil and a not_found failure naming the field.
local function known (field, id)
    local c = st.hgetall (cust_key (id))
    if not c.n then
        return nil, fail ('not_found', field .. ': no customer ' .. tostring (id))
    end
    return c
end

-- True if the customer already has this order id (a repeated order is a
-- no-op: OK, nothing changes).
local function has_order (c, order)
    return order ~= nil and c['#' .. order] ~= nil
end

-- Records one order at event time ts. order: its id or nil. at: the
-- moment for the series (the won deal's close for deal.won; else ts).
local function add_order (id, c, amount, order, ts, at)
    local key = cust_key (id)
    if order then
        st.hset (key, '#' .. order, 1)
        c['#' .. order] = '1'
    end
    local n = st.hincr (key, 'n', 1)
    st.hincr (key, 'rev', amount)
    local fo = math.min (tonumber (c.fo) or ts, ts)
    local lo = math.max (tonumber (c.lo) or ts, ts)
    st.hmset (key, { fo = fo, lo = lo })
    c.n, c.rev = tostring (n), tostring ((tonumber (c.rev) or 0) + amount)
    c.fo, c.lo = tostring (fo), tostring (lo)
    count ('revenue', amount)
    cohort_add (c, 'v', amount)
    if n == 2 then
        -- n grows by one per order, so this runs once per customer
        count_stage ('repeat', at or ts, c.cmp)
        cohort_add (c, 'r', 1)
        emit ('customer.repeat', { customer = id, orders = n })
    end
    -- A new order ends any silence and sets when the next one is overdue
    if c.od then
        st.hdel (key, 'od')
        c.od = nil
    end
    local due = health.due_at (fo, lo, n, RULES)
    if due then st.zadd (K ('due'), due, id) end
    return true
end

---------------------------------------------------------------- consume --

-- On deal.won, the lead becomes a customer (id = lead id) with a first
-- order; a won deal for an existing customer (expansion) is one more order.
consume['deal.won'] = function (ev, d)
    if type (d.lead) ~= 'string' or type (d.deal) ~= 'string' then
        return fail ('invalid', 'data.lead, data.deal: required strings')
    end
    local amount = tonumber (d.amount) or 0
    local id, ts = d.lead, tonumber (ev.ts) or NOW
    local key = cust_key (id)
    local c = st.hgetall (key)
    -- '/' is outside the id charset: no client order id can look like this
    local order = 'deal/' .. d.deal
    if has_order (c, order) then return end
    local at = event_time (ev)
    if not c.n then
        local campaign = valid_id (d.campaign) and d.campaign or nil
        c = { on = tostring (ts), deal = d.deal, n = '0', cmp = campaign }
        st.hmset (key, { on = ts, deal = d.deal, n = 0, cmp = campaign })
        count_stage ('customers', at, campaign)
        -- STATS lists a counter once written: make the stage's all appear
        for _, name in ipairs ({ 'repeat', 'at_risk', 'churned', 'revenue' }) do
            count (name, 0)
        end
        cohort_add (c, 'c', 1)
        emit ('customer.onboarded', { customer = id, deal = d.deal, amount = amount })
    end
    touch (id, c, ts)
    add_order (id, c, amount, order, ts, at)
    refresh (id, c, NOW, 'health')
end

-- On deal.delivered, the customer got what they bought: activity.
consume['deal.delivered'] = function (ev, d)
    if type (d.lead) ~= 'string' then
        return fail ('invalid', 'data.lead: required string')
    end
    local c, err = known ('data.lead', d.lead)
    if not c then return err end
    st.hincr (cust_key (d.lead), 'dl', 1)
    touch (d.lead, c, tonumber (ev.ts) or NOW)
    refresh (d.lead, c, NOW, 'health')
end

---------------------------------------------------------------- publish --

on['customer.order'] = function (ev, d)
    local c, err = known ('customer', d.customer)
    if not c then return err end
    if has_order (c, d.order) then return end
    touch (d.customer, c, ev.ts)
    add_order (d.customer, c, d.amount, d.order, ev.ts)
    refresh (d.customer, c, NOW, 'health')
end

on['customer.feedback'] = function (ev, d)
    local c, err = known ('customer', d.customer)
    if not c then return err end
    st.hset (cust_key (d.customer), 'nps', d.nps)
    c.nps = tostring (d.nps)
    touch (d.customer, c, ev.ts)
    refresh (d.customer, c, NOW, 'feedback')
end

-- A ticket is open until resolved; its severity sets its health penalty.
-- Resolving a ticket that is not open changes nothing but the activity.
on['customer.ticket'] = function (ev, d)
    local c, err = known ('customer', d.customer)
    if not c then return err end
    local key, tkey = cust_key (d.customer), K ('tk', d.customer)
    local was = st.hget (tkey, d.ticket)
    if was then
        st.hincr (key, SEV_FIELD[was], -1)
        c[SEV_FIELD[was]] = tostring ((tonumber (c[SEV_FIELD[was]]) or 0) - 1)
    end
    if d.status == 'open' then
        st.hset (tkey, d.ticket, d.severity)
        st.hincr (key, SEV_FIELD[d.severity], 1)
        c[SEV_FIELD[d.severity]] = tostring ((tonumber (c[SEV_FIELD[d.severity]]) or 0) + 1)
    elseif was then
        st.hdel (tkey, d.ticket)
    end
    touch (d.customer, c, ev.ts)
    refresh (d.customer, c, NOW, 'tickets')
end

on['customer.activity'] = function (ev, d)
    local c, err = known ('customer', d.customer)
    if not c then return err end
    st.hincr (cust_key (d.customer), 'na', 1)
    touch (d.customer, c, ev.ts)
    refresh (d.customer, c, NOW, 'health')
end

----------------------------------------------------------------- timers --

-- Silence: a customer whose next order is overdue becomes at risk as soon
-- as the gap passes. zdue reads committed state, so each entry is checked
-- against the overlay (an order in this same script may have moved it).
ticks[#ticks + 1] = function (now)
    local fired = 0
    local due = st.zdue (K ('due'), now, RULES.sweep_limit)
    for i = 1, #due, 2 do
        local id, at = due[i], tonumber (due[i + 1])
        if st.zscore (K ('due'), id) == at then
            st.zrem (K ('due'), id)
            local c = st.hgetall (cust_key (id))
            if c.n and not c.ch then
                st.hset (cust_key (id), 'od', 1)
                c.od = '1'
                -- The tick time keeps ids apart when a backdated order sets
                -- the same due time again after it fired
                refresh (id, c, now, 'overdue', 'overdue|' .. id .. '|' .. due[i + 1] ..
                         '|' .. num2s (now))
                fired = fired + 1
            end
        end
    end
    return fired
end

-- Churn: customers without activity for churn_days, oldest first; the
-- sorted set keeps each sweep O(log N + limit) at any customer count.
ticks[#ticks + 1] = function (now)
    local fired = 0
    local idle = st.zdue (K ('act'), now - RULES.churn_days * DAY_MS, RULES.sweep_limit)
    for i = 1, #idle, 2 do
        local id, la = idle[i], tonumber (idle[i + 1])
        local c = st.hgetall (cust_key (id))
        st.zrem (K ('act'), id)
        if c.n and not c.ch then
            local key = cust_key (id)
            st.hset (key, 'ch', now)
            count ('churned')
            cohort_add (c, 'x', 1)
            -- A churned customer is lost, no longer "at risk"
            if c.r == 'high' then count ('at_risk', -1) end
            st.zrem (K ('due'), id)
            emit ('customer.churned', { customer = id,
                days_inactive = health.days (la, now) },
                -- With the tick time: a customer won back by a backdated
                -- event keeps its last activity and may churn again
                'churn|' .. id .. '|' .. idle[i + 1] .. '|' .. num2s (now))
            fired = fired + 1
        end
    end
    return fired
end

---------------------------------------------------------------- queries --

query['customer'] = function (req)
    if type (req.id) ~= 'string' then
        return fail ('invalid', 'id: required string is missing')
    end
    local c = st.hgetall (cust_key (req.id))
    if not c.n then
        return fail ('not_found', 'id: no customer ' .. req.id)
    end
    local n = tonumber (c.n)
    local open = {}
    for _, sev in ipairs (SEVERITIES) do open[sev] = tonumber (c[SEV_FIELD[sev]]) or 0 end
    local due, gap = nil, nil
    if n >= 2 then due, gap = health.due_at (tonumber (c.fo), tonumber (c.lo), n, RULES) end
    return {
        customer = req.id, deal = c.deal, onboarded = tonumber (c.on),
        cohort = cohort.month (tonumber (c.on)),
        orders = n, revenue = tonumber (c.rev) or 0, ltv = tonumber (c.rev) or 0,
        first_order = tonumber (c.fo), last_order = tonumber (c.lo),
        last_activity = tonumber (c.la), usual_gap_ms = gap, next_order_due = due,
        overdue = c.od == '1', nps = tonumber (c.nps), open_tickets = open,
        delivered = tonumber (c.dl) or 0, activities = tonumber (c.na) or 0,
        health = tonumber (c.h), risk = c.r, churned = c.ch ~= nil,
        churned_at = tonumber (c.ch), last_upsell = tonumber (c.up)
    }
end

-- Retention by onboarding month, from the per-month figures kept on each
-- change (no scan over customers).
query['cohorts'] = function (req)
    local flat = st.hgetall (K ('coh'))
    local months, by = {}, {}
    for f, v in pairs (flat) do
        local month, what = string.match (f, '^(.+):(%a)$')
        if month then
            if not by[month] then
                by[month] = { c = 0, r = 0, x = 0, v = 0 }
                months[#months + 1] = month
            end
            by[month][what] = tonumber (v) or 0
        end
    end
    table.sort (months)
    local rows, total_c, total_v = {}, 0, 0
    for _, m in ipairs (months) do
        local f = by[m]
        rows[#rows + 1] = {
            month = m, customers = f.c, repeat_customers = f.r, churned = f.x,
            repeat_share = cohort.share (f.r, f.c), churned_share = cohort.share (f.x, f.c),
            revenue = f.v, ltv = cohort.ltv (f.v, f.c)
        }
        total_c, total_v = total_c + f.c, total_v + f.v
    end
    return { cohorts = rows, customers = total_c, revenue = total_v,
             ltv = cohort.ltv (total_v, total_c) }
end
