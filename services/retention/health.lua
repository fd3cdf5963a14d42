-- health.lua — a customer's health score, risk band and silence due time.
--
-- Pure functions of their arguments (no st, no redis), unit-tested in
-- tests/unit/test_retention_health.lua. `cfg` is RULES as packed by
-- retention_rules.c; every setting is documented in proto/retention.md.
--
-- score = round (Σ weight_i · sub_i / Σ weight_i), each sub-score 0..100:
--   recency   100 · max (0, 1 − days since last order or activity / recency_days),
--             idle time counted in whole hours
--   frequency 100 · min (orders, frequency_orders) / frequency_orders
--   monetary  100 · min (revenue, monetary_ref) / monetary_ref
--   nps       nps · 10, or 50 (neutral) when the customer never answered
--   tickets   max (0, 100 − Σ penalty[severity] per open ticket)
-- Dividing by the weights' sum makes weights relative: (3, 2, ...) and
-- (30, 20, ...) mean the same, and the score stays within 0..100.

local health = {}

local DAY_MS = 86400000
-- A fixed order, so the float sum is the same on every run
local PARTS = { 'recency', 'frequency', 'monetary', 'nps', 'tickets' }
local SEVERITIES = { 'low', 'normal', 'high', 'urgent' }

local function clamp01 (x)
    if x < 0 then return 0 end
    if x > 1 then return 1 end
    return x
end

-- The five sub-scores (0..100) of a customer. c: {now, last, orders,
-- revenue, nps (nil if none), open = {low, normal, high, urgent}}.
function health.parts (c, cfg)
    -- Idle time in whole hours: events milliseconds apart rate the same
    local hours = math.floor (math.max (0, c.now - (c.last or c.now)) / 3600000)
    local days = hours / 24
    local penalty = 0
    local open = c.open or {}
    for _, sev in ipairs (SEVERITIES) do
        penalty = penalty + (open[sev] or 0) * (cfg.penalty[sev] or 0)
    end
    return {
        recency = 100 * clamp01 (1 - days / cfg.recency_days),
        frequency = 100 * clamp01 ((c.orders or 0) / cfg.frequency_orders),
        monetary = 100 * clamp01 ((c.revenue or 0) / cfg.monetary_ref),
        nps = c.nps and c.nps * 10 or 50,
        tickets = math.max (0, 100 - penalty)
    }
end

-- The weighted score, an integer 0..100.
function health.score (c, cfg)
    local parts = health.parts (c, cfg)
    local sum, wsum = 0, 0
    for _, name in ipairs (PARTS) do
        local w = cfg.weights[name] or 0
        sum = sum + w * parts[name]
        wsum = wsum + w
    end
    if wsum <= 0 then return 50 end
    return math.floor (sum / wsum + 0.5)
end

-- 'high' below risk.high, 'medium' below risk.medium, else 'low'; a
-- customer whose next order is overdue is 'high' whatever the score.
function health.risk (score, overdue, cfg)
    if overdue or score < cfg.risk.high then return 'high' end
    if score < cfg.risk.medium then return 'medium' end
    return 'low'
end

-- When silence makes a customer at risk: the usual gap between orders is
-- the mean one, (last − first) / (orders − 1), floored at min_gap_days so
-- a burst of same-day orders does not flag a customer at once; the next
-- order is due within silence_factor × that gap after the last. nil with
-- fewer than two orders (no gap to learn from yet).
function health.due_at (first, last, orders, cfg)
    if orders < 2 then return nil end
    local gap = math.max ((last - first) / (orders - 1), cfg.silence_min_gap_days * DAY_MS)
    return math.floor (last + cfg.silence_factor * gap + 0.5), math.floor (gap + 0.5)
end

-- Whole days between two ms times (for customer.churned's days_inactive).
function health.days (from, to)
    return math.floor (math.max (0, to - from) / DAY_MS)
end

-- Healthy promoter due an upsell: NPS and health high enough, and none
-- offered within the period (last_ms nil = never).
function health.upsell_due (nps, score, last_ms, now, cfg)
    if not nps or nps < cfg.upsell.nps or score < cfg.upsell.health then return false end
    return last_ms == nil or now - last_ms >= cfg.upsell.period_days * DAY_MS
end
