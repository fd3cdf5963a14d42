-- Unit tests of services/retention/health.lua: the health formula, risk
-- bands, silence due time and upsell rule (lua5.1, as in Redis).
local health = dofile ('tests/unit/lua_module.lua') ('services/retention/health.lua', 'health')

local DAY = 86400000
local cfg = {
    weights = { recency = 30, frequency = 20, monetary = 15, nps = 20, tickets = 15 },
    penalty = { low = 5, normal = 10, high = 25, urgent = 40 },
    risk = { high = 40, medium = 70 },
    upsell = { nps = 9, health = 70, period_days = 90 },
    recency_days = 90, frequency_orders = 5, monetary_ref = 100000,
    silence_factor = 1.5, silence_min_gap_days = 1
}
local NOW = 1800000000000
local function customer (t)
    local c = { now = NOW, last = NOW, orders = 1, revenue = 0, open = {} }
    for k, v in pairs (t or {}) do c[k] = v end
    return c
end

-- Sub-scores
local p = health.parts (customer { last = NOW - 45 * DAY, orders = 2, revenue = 50000, nps = 8,
                                   open = { low = 1, urgent = 1 } }, cfg)
assert (p.recency == 50, p.recency)
assert (p.frequency == 40, p.frequency)
assert (p.monetary == 50, p.monetary)
assert (p.nps == 80, p.nps)
assert (p.tickets == 55, p.tickets)
-- Saturation and floors
p = health.parts (customer { last = NOW - 400 * DAY, orders = 50, revenue = 10 ^ 9,
                             open = { urgent = 3 } }, cfg)
assert (p.recency == 0 and p.frequency == 100 and p.monetary == 100 and p.tickets == 0)
assert (p.nps == 50, 'no NPS answer is neutral')
-- An event time after NOW counts as idle 0 days, not more than 100
assert (health.parts (customer { last = NOW + DAY }, cfg).recency == 100)
-- Idle time counts in whole hours: 59 minutes idle is as good as none
assert (health.parts (customer { last = NOW - 59 * 60000 }, cfg).recency == 100)
assert (health.parts (customer { last = NOW - 90 * DAY + 3600000 }, cfg).recency > 0)

-- The weighted score: (30*50 + 20*40 + 15*50 + 20*80 + 15*55) / 100 = 54.75 -> 55
assert (health.score (customer { last = NOW - 45 * DAY, orders = 2, revenue = 50000, nps = 8,
                                 open = { low = 1, urgent = 1 } }, cfg) == 55)
-- Best and worst customers span the range
assert (health.score (customer { orders = 9, revenue = 10 ^ 7, nps = 10 }, cfg) == 100)
assert (health.score (customer { last = NOW - 100 * DAY, orders = 0, nps = 0,
                                 open = { urgent = 5 } }, cfg) == 0)
-- Fresh customer, one 500.00 order, no feedback: 30 + 4 + 7.5 + 10 + 15 = 66.5 -> 67
assert (health.score (customer { revenue = 50000 }, cfg) == 67)
-- Weights are relative: scaling them all changes nothing
local scaled = { weights = { recency = 3, frequency = 2, monetary = 1.5, nps = 2, tickets = 1.5 } }
setmetatable (scaled, { __index = cfg })
assert (health.score (customer { revenue = 50000 }, scaled) == 67)
-- Only one weight: the score is that sub-score
local only_nps = setmetatable ({ weights = { recency = 0, frequency = 0, monetary = 0, nps = 1, tickets = 0 } },
                               { __index = cfg })
assert (health.score (customer { nps = 3 }, only_nps) == 30)
-- Ticket penalties follow the configured severities
assert (health.parts (customer { open = { normal = 2, high = 1 } }, cfg).tickets == 55)

-- Risk bands (strict "below")
assert (health.risk (39, false, cfg) == 'high')
assert (health.risk (40, false, cfg) == 'medium')
assert (health.risk (69, false, cfg) == 'medium')
assert (health.risk (70, false, cfg) == 'low')
assert (health.risk (100, true, cfg) == 'high', 'overdue is high whatever the score')

-- Silence: mean gap, factor, floor
assert (health.due_at (0, 0, 1, cfg) == nil, 'no gap from one order')
local due, gap = health.due_at (NOW, NOW + 20 * DAY, 3, cfg)
assert (gap == 10 * DAY and due == NOW + 35 * DAY, due)
due, gap = health.due_at (NOW, NOW + 1000, 2, cfg)
assert (gap == DAY and due == NOW + 1000 + 1.5 * DAY, 'gap floored at min_gap_days')
local nofloor = setmetatable ({ silence_min_gap_days = 0 }, { __index = cfg })
due = health.due_at (NOW, NOW + 2000, 2, nofloor)
assert (due == NOW + 5000, due)

-- Days
assert (health.days (NOW, NOW + 3 * DAY - 1) == 2)
assert (health.days (NOW, NOW - 5) == 0)

-- Upsell: promoter, healthy, once per period
assert (health.upsell_due (9, 70, nil, NOW, cfg))
assert (not health.upsell_due (8, 90, nil, NOW, cfg), 'passive is no promoter')
assert (not health.upsell_due (nil, 90, nil, NOW, cfg), 'no NPS, no upsell')
assert (not health.upsell_due (10, 69, nil, NOW, cfg), 'unhealthy promoter')
assert (not health.upsell_due (10, 90, NOW - 89 * DAY, NOW, cfg), 'within the period')
assert (health.upsell_due (10, 90, NOW - 90 * DAY, NOW, cfg), 'period over')

print ('test_retention_health: all passed')
