-- Unit tests of services/campaign/attribution.lua (run from the source root).
local attribution = dofile ('tests/unit/lua_module.lua') ('services/campaign/attribution.lua', 'attribution')

local U = attribution.UNITS
local DAY = 86400000
local HL = 7 * DAY
local FIRST, LAST, LINEAR, POSITION, DECAY = 1, 2, 3, 4, 5

local function near (a, b, eps) return math.abs (a - b) <= (eps or 1e-9) end
local function touch (ts, c, b) return { ts = ts, c = c, b = b or 1 } end
local function sum (credits, slot)
    local s = 0
    for _, v in pairs (credits) do s = s + (v[slot] or 0) end
    return s
end

-- History encoding round-trips, compactly
local h = { touch (1700000000000, 1, 2), touch (1700000000123, 12, 3) }
local text = attribution.encode (h)
assert (#text < 30, text)
local back = attribution.decode (text)
assert (#back == 2 and back[2].ts == 1700000000123 and back[2].c == 12 and back[2].b == 3)
assert (#attribution.decode (nil) == 0 and #attribution.decode ('') == 0)
assert (attribution.decode (attribution.encode ({ touch (0, 1, 1) }))[1].ts == 0)

-- Insert keeps time order (late touches slot in), arrival order on ties, newest max
local list = {}
assert (attribution.insert (list, touch (30, 1), 3))
assert (attribution.insert (list, touch (10, 2), 3))
assert (attribution.insert (list, touch (20, 3), 3))
assert (attribution.insert (list, touch (20, 4), 3))      -- drops ts 10
assert (#list == 3 and list[1].c == 3 and list[2].c == 4 and list[3].c == 1)
assert (attribution.insert (list, touch (5, 9), 3) == false)  -- older than a full history
assert (#list == 3 and list[1].c == 3)

-- Weights per model: each sums to 1
local ts = { touch (0, 1), touch (DAY, 2), touch (2 * DAY, 3), touch (3 * DAY, 4) }
local w = attribution.weights (ts, 3 * DAY, HL)
for m = 1, 5 do
    local s = 0
    for i = 1, 4 do s = s + w[m][i] end
    assert (near (s, 1), 'model ' .. m)
end
assert (w[FIRST][1] == 1 and w[FIRST][4] == 0)
assert (w[LAST][4] == 1 and w[LAST][1] == 0)
assert (near (w[LINEAR][2], 0.25))
assert (near (w[POSITION][1], 0.4) and near (w[POSITION][4], 0.4) and near (w[POSITION][2], 0.1))
-- time decay: a touch one half-life older earns half as much
local w2 = attribution.weights ({ touch (0, 1), touch (HL, 2) }, HL, HL)
assert (near (w2[DECAY][1], 1 / 3) and near (w2[DECAY][2], 2 / 3))
assert (near (w2[POSITION][1], 0.5))            -- two touches: 50/50
assert (attribution.weights ({ touch (5, 1) }, 9, HL)[POSITION][1] == 1)

-- Largest remainder: parts sum exactly to the total, ties by key
local parts = attribution.allocate ({ 'a', 'b', 'c' }, { a = 1 / 3, b = 1 / 3, c = 1 / 3 }, 100)
assert (parts.a == 34 and parts.b == 33 and parts.c == 33)
parts = attribution.allocate ({ 'a', 'b' }, { a = 0.5, b = 0.5 }, 1)
assert (parts.a + parts.b == 1 and parts.a == 1)

-- Credits of one conversion: touches after it do not count
local history = { touch (0, 1, 1), touch (DAY, 2, 1), touch (2 * DAY, 3, 2), touch (9 * DAY, 4, 2) }
local cr = attribution.credit (history, 2 * DAY, HL, 0)
assert (cr['4:2'] == nil)
assert (cr['1:1'][FIRST] == U and cr['2:1'][FIRST] == 0 and cr['3:2'][FIRST] == 0)
assert (cr['3:2'][LAST] == U and cr['1:1'][LAST] == 0)
assert (cr['1:1'][LINEAR] == 333334 and cr['2:1'][LINEAR] == 333333 and cr['3:2'][LINEAR] == 333333)
assert (cr['1:1'][POSITION] == 400000 and cr['2:1'][POSITION] == 200000 and cr['3:2'][POSITION] == 400000)
assert (cr['1:1'][6] == nil)                     -- no amount: no revenue slots
for m = 1, 5 do assert (sum (cr, m) == U, 'model ' .. m) end
assert (cr['3:2'][DECAY] > cr['2:1'][DECAY] and cr['2:1'][DECAY] > cr['1:1'][DECAY])

-- Revenue: cents split by the same weights, summing to the amount exactly
cr = attribution.credit (history, 2 * DAY, HL, 1001)
for m = 1, 5 do assert (sum (cr, 5 + m) == 1001, 'revenue model ' .. m) end
-- 400.4 + 200.2 + 400.4: the one cent left goes to the tied first key
assert (cr['1:1'][5 + FIRST] == 1001 and cr['1:1'][5 + POSITION] == 401)
assert (cr['2:1'][5 + POSITION] == 200 and cr['3:2'][5 + POSITION] == 400)

-- Several touches of one campaign and bucket aggregate into one key
cr = attribution.credit ({ touch (1, 7, 3), touch (2, 7, 3), touch (3, 8, 3) }, 3, HL, 0)
assert (cr['7:3'][LINEAR] == 666667 and cr['8:3'][LINEAR] == 333333)
assert (cr['7:3'][POSITION] == 600000)

-- No touch before the conversion: nothing to credit
assert (next (attribution.credit (history, -1, HL, 500)) == nil)
assert (next (attribution.credit ({}, 100, HL, 0)) == nil)

-- A late touch re-attributes: diff is exactly what changes
local before = attribution.credit ({ touch (10, 1, 1) }, 100, HL, 0)
local after = attribution.credit ({ touch (5, 2, 1), touch (10, 1, 1) }, 100, HL, 0)
local d = attribution.diff (before, after)
assert (d['2:1'][FIRST] == U and d['1:1'][FIRST] == -U)
assert (d['1:1'][LAST] == nil and d['2:1'][LAST] == nil)   -- last touch unchanged
assert (d['1:1'][LINEAR] == -U / 2 and d['2:1'][LINEAR] == U / 2)
assert (next (attribution.diff (after, after)) == nil)
-- Applying the diff to the old credits gives the new ones, model by model
for m = 1, 5 do
    assert (sum (before, m) + sum (d, m) == sum (after, m))
end

print ('test_campaign_attribution: all passed')
