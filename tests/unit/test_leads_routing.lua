-- Unit tests of services/leads/routing.lua (territory, weighted round-robin).
local routing = dofile ('tests/unit/lua_module.lua') ('services/leads/routing.lua', 'routing')

local function rep (name, region, capacity, open, away)
    return { name = name, region = region, capacity = capacity, open = open or 0,
             away = away or false, cur = 0 }
end

-- Runs n picks, applying the new curs and loads; returns counts per rep.
local function run (reps, region, n, keep_load)
    local got = {}
    for _ = 1, n do
        local name, curs = routing.pick (reps, region)
        got[name or 'none'] = (got[name or 'none'] or 0) + 1
        for _, r in ipairs (reps) do
            if curs[r.name] then r.cur = curs[r.name] end
            if r.name == name and keep_load then r.open = r.open + 1 end
        end
    end
    return got
end

-- territory wins: emea leads go to the emea rep only
local reps = { rep ('alice', 'emea', 10), rep ('bob', 'amer', 5) }
local got = run (reps, 'emea', 6)
assert (got.alice == 6 and got.bob == nil)
-- no rep in the region: all reps, weighted by capacity (10:5)
reps = { rep ('alice', 'emea', 10), rep ('bob', 'amer', 5) }
got = run (reps, 'apac', 15)
assert (got.alice == 10 and got.bob == 5, (got.alice or 0) .. ':' .. (got.bob or 0))
-- smooth: bob is not starved at the start
reps = { rep ('alice', 'emea', 10), rep ('bob', 'amer', 5) }
local first = {}
for i = 1, 3 do
    local name, curs = routing.pick (reps, nil)
    first[i] = name
    for _, r in ipairs (reps) do r.cur = curs[r.name] or r.cur end
end
assert (first[1] == 'alice' and (first[2] == 'bob' or first[3] == 'bob'))
-- live load: a rep with no room left is passed over
reps = { rep ('alice', '', 10, 10), rep ('bob', '', 5, 0) }
got = run (reps, nil, 3, true)
assert (got.bob == 3 and got.alice == nil)
-- load fills in proportion to free room: equal free room → alternate
reps = { rep ('a', '', 4, 2), rep ('b', '', 2, 0) }
got = run (reps, nil, 2, true)
assert (got.a == 1 and got.b == 1)
-- everyone full: overflow shared by capacity
reps = { rep ('a', '', 2, 2), rep ('b', '', 1, 1) }
got = run (reps, nil, 3, true)
assert (got.a == 2 and got.b == 1)
-- away reps never get leads; a region whose reps are away falls back
reps = { rep ('alice', 'emea', 10, 0, true), rep ('bob', 'amer', 5) }
got = run (reps, 'emea', 4)
assert (got.bob == 4 and got.alice == nil)
-- the territory's rep is full: a rep with room elsewhere takes it
reps = { rep ('alice', 'emea', 10, 0), rep ('bob', 'amer', 1, 1) }
got = run (reps, 'amer', 2, true)
assert (got.alice == 2 and got.bob == nil)
-- everyone full: the territory takes the overflow
reps = { rep ('alice', 'emea', 1, 1), rep ('bob', 'amer', 1, 1) }
got = run (reps, 'amer', 2, true)
assert (got.bob == 2)
-- all away: nobody
reps = { rep ('alice', 'emea', 10, 0, true) }
assert (routing.pick (reps, 'emea') == nil)
-- deterministic: same state, same choice
local r1 = routing.pick ({ rep ('x', '', 3), rep ('y', '', 3) }, nil)
local r2 = routing.pick ({ rep ('x', '', 3), rep ('y', '', 3) }, nil)
assert (r1 == 'x' and r2 == 'x')

-- sticky owner
assert (routing.sticky (rep ('a', '', 3, 2)))
assert (not routing.sticky (rep ('a', '', 3, 3)))
assert (not routing.sticky (rep ('a', '', 3, 0, true)))
assert (not routing.sticky (nil))

print ('test_leads_routing: all passed')
