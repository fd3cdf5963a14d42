-- score.lua — lead scoring, pure: engagement decay, fit, stage thresholds.
--
-- Engagement is a sum of touch points, each halving every half-life since
-- its event time. Such a sum is one number v at a reference time t0
-- (value at t = v * 2^-((t - t0) / hl)), so it is exact at any moment
-- without a nightly job, and touches in any order fold into it.

local score = {}

local LN2 = math.log (2)

-- Value of (v, t0) at time t; never grows before t0 (future-dated input).
function score.at (v, t0, t, hl)
    if v == 0 or t <= t0 then return v end
    return v * 2 ^ (-(t - t0) / hl)
end

-- Adds pts earned at time t to (v, t0): the reference time moves forward
-- only, so a late (older) touch adds its already decayed share.
function score.add (v, t0, pts, t, hl)
    if t >= t0 then
        return score.at (v, t0, t, hl) + pts, t
    end
    return v + score.at (pts, t, t0, hl), t0
end

-- Merges two decayed sums (pending touches into a lead, an alias into its
-- lead): both brought to the later reference time.
function score.merge (v1, t1, v2, t2, hl)
    if t1 >= t2 then
        return v1 + score.at (v2, t2, t1, hl), t1
    end
    return v2 + score.at (v1, t1, t2, hl), t2
end

-- First whole ms at which (v, t0) falls strictly below need; nil if it
-- never will (need <= 0: the fit alone holds the stage).
function score.crossing (v, t0, need, hl)
    if need <= 0 then return nil end
    if v < need then return t0 end
    -- The log is off by an ulp or so: settle on the exact first ms.
    local t = math.floor (t0 + hl * math.log (v / need) / LN2)
    while score.at (v, t0, t, hl) >= need do t = t + 1 end
    while t > t0 and score.at (v, t0, t - 1, hl) < need do t = t - 1 end
    return t
end

-- Rounds for display and events (scores are published as integers).
function score.round (x, places)
    local m = 10 ^ (places or 0)
    return math.floor (x * m + 0.5) / m
end

-- One ICP rule against attrs: numeric min/max (inclusive), a list of
-- string values (case-insensitive), or just "present and not false".
local function icp_match (rule, value)
    if value == nil or value == false then return false end
    if rule.values then
        if type (value) ~= 'string' then return false end
        local v = string.lower (value)
        for i = 1, #rule.values do
            if rule.values[i] == v then return true end
        end
        return false
    end
    if rule.min or rule.max then
        if type (value) ~= 'number' then return false end
        if rule.min and value < rule.min then return false end
        if rule.max and value > rule.max then return false end
    end
    return true
end

-- Fit from attrs: BANT (budget, authority, need, timeline) plus the ideal
-- customer profile rules, plus a bonus when a touch was in the campaign's
-- audience. Returns the total and a breakdown {name = points}.
function score.fit (attrs, audience, rules)
    local b = rules.bant
    local parts = {
        budget = (type (attrs.budget) == 'number' and attrs.budget >= b.budget_min)
                 and b.budget or 0,
        authority = attrs.authority == true and b.authority or 0,
        need = attrs.need == true and b.need or 0,
        timeline = (type (attrs.timeline_days) == 'number'
                    and attrs.timeline_days <= b.timeline_days_max) and b.timeline or 0,
        audience = audience and rules.in_audience_fit or 0
    }
    local total = parts.budget + parts.authority + parts.need + parts.timeline + parts.audience
    local icp = rules.icp or {}
    for i = 1, #icp do
        local rule = icp[i]
        local pts = icp_match (rule, attrs[rule.attr]) and rule.points or 0
        parts['icp.' .. rule.name] = pts
        total = total + pts
    end
    return total, parts
end

-- The stage a total score earns: 'sql' (score and fit both high enough),
-- 'mql', or 'nurture'.
function score.stage_for (total, fit, rules)
    if total >= rules.sql and fit >= rules.sql_fit_min then return 'sql' end
    if total >= rules.mql then return 'mql' end
    return 'nurture'
end
