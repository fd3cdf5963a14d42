-- Unit tests of services/leads/score.lua (engagement decay, fit, stages).
local score = dofile ('tests/unit/lua_module.lua') ('services/leads/score.lua', 'score')

local function near (a, b, eps)
    return math.abs (a - b) <= (eps or 1e-9)
end

local HL = 1000
-- decay: one half-life halves, two quarter, never grows before t0
assert (near (score.at (8, 0, 1000, HL), 4))
assert (near (score.at (8, 0, 2000, HL), 2))
assert (score.at (8, 5000, 1000, HL) == 8)
assert (score.at (0, 0, 99999, HL) == 0)

-- touches in any order give the same value at the same time
local v1, t1 = 0, 0
v1, t1 = score.add (v1, t1, 10, 1000, HL)
v1, t1 = score.add (v1, t1, 3, 2000, HL)
local v2, t2 = 0, 0
v2, t2 = score.add (v2, t2, 3, 2000, HL)
v2, t2 = score.add (v2, t2, 10, 1000, HL)
assert (t1 == 2000 and t2 == 2000)
assert (near (v1, 8) and near (v2, 8), v1 .. ' ' .. v2)
assert (near (score.at (v1, t1, 3000, HL), 4))

-- merging two sums equals adding all touches to one
local a, ta = score.add (0, 0, 10, 1000, HL)
local b, tb = score.add (0, 0, 3, 2000, HL)
local m, tm = score.merge (a, ta, b, tb, HL)
assert (tm == 2000 and near (m, 8))
m, tm = score.merge (b, tb, a, ta, HL)
assert (tm == 2000 and near (m, 8))

-- crossing: first ms strictly below need
local t = score.crossing (8, 0, 4, HL)
assert (t == 1001, t)
assert (score.at (8, 0, t, HL) < 4)
assert (score.at (8, 0, t - 2, HL) >= 4)
assert (score.crossing (8, 0, 0, HL) == nil)
assert (score.crossing (8, 0, -5, HL) == nil)
assert (score.crossing (3, 700, 4, HL) == 700)
local t3 = score.crossing (25, 123456, 7.5, 1209600000)
assert (score.at (25, 123456, t3, 1209600000) < 7.5)
assert (score.at (25, 123456, t3 - 1, 1209600000) >= 7.5 - 1e-9)

assert (score.round (84.6) == 85 and score.round (84.4) == 84)
assert (score.round (1.234, 2) == 1.23)

-- fit: the default rules of proto/leads.md
local rules = {
    mql = 40, sql = 80, sql_fit_min = 30, in_audience_fit = 5,
    bant = { budget = 15, authority = 15, need = 15, timeline = 15,
             budget_min = 1, timeline_days_max = 90 },
    icp = { { name = 'size', attr = 'employees', min = 50, points = 10 },
            { name = 'industry', attr = 'industry', values = { 'saas', 'fintech' }, points = 10 },
            { name = 'gov', attr = 'public', points = 5 } }
}
local fit, parts = score.fit ({}, false, rules)
assert (fit == 0 and parts.budget == 0 and parts['icp.size'] == 0)
fit, parts = score.fit ({ budget = 5000, authority = true, need = true, timeline_days = 90 }, false, rules)
assert (fit == 60, fit)
assert (parts.budget == 15 and parts.timeline == 15)
fit = score.fit ({ budget = 0, authority = false, need = true, timeline_days = 91 }, false, rules)
assert (fit == 15, fit)
fit, parts = score.fit ({ employees = 50, industry = 'SaaS', public = true }, true, rules)
assert (fit == 30, fit)
assert (parts['icp.size'] == 10 and parts['icp.industry'] == 10 and parts.audience == 5)
fit = score.fit ({ employees = '500', industry = 7, public = false }, false, rules)
assert (fit == 0, fit)

-- stages: the contract's guarantee (proto/leads.md) under the default points (form 10, click 3)
local eng = 0
local tt = 0
eng, tt = score.add (eng, tt, 10, 1000, 1209600000)
for i = 1, 5 do eng, tt = score.add (eng, tt, 3, 1000 + i * 500, 1209600000) end
local total = 60 + score.at (eng, tt, 10000, 1209600000)
assert (score.stage_for (total, 60, rules) == 'sql', total)
assert (score.stage_for (0, 0, rules) == 'nurture')
assert (score.stage_for (40, 0, rules) == 'mql')
assert (score.stage_for (95, 20, rules) == 'mql')   -- engagement alone is not SQL
assert (score.stage_for (39.999, 39.999, rules) == 'nurture')

print ('test_leads_score: all passed')
