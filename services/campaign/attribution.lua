-- attribution — which campaigns earn a conversion, under five models.
--
-- Pure functions (unit-tested in tests/unit/test_campaign_attribution.lua). A
-- contact's touch history is a list of {ts, c, b} (event time in ms,
-- campaign number, channel×segment bucket number), oldest first, kept as
-- one compact string. A conversion at time `at` is credited to the touches
-- at or before it; every model's credit is split in integer units (UNITS
-- per conversion, and the amount's cents for revenue) with the largest
-- remainder method, so each conversion adds exactly 1 and exactly its
-- amount to the totals, whatever the rounding: reports stay exact and
-- re-attribution (subtract old, add new) never drifts.

local attribution = {}

attribution.MODELS = { 'first_touch', 'last_touch', 'linear', 'position', 'time_decay' }
attribution.UNITS = 1000000

local B36 = '0123456789abcdefghijklmnopqrstuvwxyz'

local function base36 (n)
    n = math.floor (n)
    if n <= 0 then return '0' end
    local out = ''
    while n > 0 do
        local d = n % 36
        out = string.sub (B36, d + 1, d + 1) .. out
        n = (n - d) / 36
    end
    return out
end

-- "ts36,c,b;ts36,c,b..." (ts in base 36 keeps ~5 bytes per touch).
function attribution.encode (list)
    local parts = {}
    for i, t in ipairs (list) do
        parts[i] = base36 (t.ts) .. ',' .. t.c .. ',' .. t.b
    end
    return table.concat (parts, ';')
end

function attribution.decode (text)
    local list = {}
    if type (text) ~= 'string' then return list end
    for ts, c, b in string.gmatch (text, '([0-9a-z]+),(%d+),(%d+)') do
        list[#list + 1] = { ts = tonumber (ts, 36), c = tonumber (c), b = tonumber (b) }
    end
    return list
end

-- Inserts a touch in time order (after equal times: arrival order) and
-- keeps the newest max. Returns false when the touch itself was the oldest
-- and fell off (a late touch older than a full history changes nothing).
function attribution.insert (list, touch, max)
    local pos = #list + 1
    while pos > 1 and list[pos - 1].ts > touch.ts do pos = pos - 1 end
    table.insert (list, pos, touch)
    local kept = true
    while #list > max do
        if pos == 1 then kept = false end
        table.remove (list, 1)
        pos = pos - 1
    end
    return kept
end

-- Each model's weight per touch (each list sums to 1) for touches[1..n].
function attribution.weights (touches, at, half_life_ms)
    local n = #touches
    local first, last, linear, position, decay = {}, {}, {}, {}, {}
    local decay_sum = 0
    for i = 1, n do
        first[i] = (i == 1) and 1 or 0
        last[i] = (i == n) and 1 or 0
        linear[i] = 1 / n
        if n == 1 then
            position[i] = 1
        elseif n == 2 then
            position[i] = 0.5
        elseif i == 1 or i == n then
            position[i] = 0.4
        else
            position[i] = 0.2 / (n - 2)
        end
        -- Half the credit for every half-life between touch and conversion
        decay[i] = 2 ^ (-(at - touches[i].ts) / half_life_ms)
        decay_sum = decay_sum + decay[i]
    end
    for i = 1, n do decay[i] = decay[i] / decay_sum end
    return { first, last, linear, position, decay }
end

-- Splits total (an integer) over keys by fractions (summing to ~1): floor
-- of each share, then one more unit to the largest remainders (ties by
-- key), so the parts always sum to total exactly.
function attribution.allocate (keys, fractions, total)
    local parts, order, given = {}, {}, 0
    for i, k in ipairs (keys) do
        local exact = fractions[k] * total
        parts[k] = math.floor (exact)
        given = given + parts[k]
        order[i] = { k = k, r = exact - parts[k] }
    end
    table.sort (order, function (a, b)
        if a.r ~= b.r then return a.r > b.r end
        return a.k < b.k
    end)
    local left = total - given
    local i = 1
    while left > 0 and #order > 0 do
        local k = order[(i - 1) % #order + 1].k
        parts[k] = parts[k] + 1
        left = left - 1
        i = i + 1
    end
    while left < 0 do   -- only if the fractions summed above 1 by rounding
        local k = order[#order - ((i - 1) % #order)].k
        if parts[k] > 0 then
            parts[k] = parts[k] - 1
            left = left + 1
        end
        i = i + 1
    end
    return parts
end

-- Credits of one conversion at time `at` worth `amount` cents (0: none):
-- {["c:b"] = {u1..u5[, v1..v5]}} with u the units of each model (in
-- MODELS order) and v its cents of revenue. {} when no touch precedes it.
function attribution.credit (history, at, half_life_ms, amount)
    local touches = {}
    for _, t in ipairs (history) do
        if t.ts <= at then touches[#touches + 1] = t end
    end
    local out = {}
    if #touches == 0 then return out end
    local weights = attribution.weights (touches, at, half_life_ms)
    local keys, seen = {}, {}
    for _, t in ipairs (touches) do
        local k = t.c .. ':' .. t.b
        if not seen[k] then
            seen[k] = true
            keys[#keys + 1] = k
        end
    end
    table.sort (keys)
    for k in pairs (seen) do out[k] = {} end
    for m = 1, #attribution.MODELS do
        local fractions = {}
        for _, k in ipairs (keys) do fractions[k] = 0 end
        for i, t in ipairs (touches) do
            local k = t.c .. ':' .. t.b
            fractions[k] = fractions[k] + weights[m][i]
        end
        local units = attribution.allocate (keys, fractions, attribution.UNITS)
        local cents = amount and amount > 0 and attribution.allocate (keys, fractions, amount)
        for _, k in ipairs (keys) do
            out[k][m] = units[k]
            if cents then out[k][#attribution.MODELS + m] = cents[k] end
        end
    end
    return out
end

-- new minus old, per key and slot, without zeros: what re-attribution adds.
function attribution.diff (old, new)
    local d = {}
    local function add (tbl, sign)
        for k, v in pairs (tbl) do
            for i = 1, 2 * #attribution.MODELS do
                local x = (v[i] or 0) * sign
                if x ~= 0 then
                    d[k] = d[k] or {}
                    d[k][i] = (d[k][i] or 0) + x
                end
            end
        end
    end
    add (old, -1)
    add (new, 1)
    for k, v in pairs (d) do
        local any = false
        for i = 1, 2 * #attribution.MODELS do
            if v[i] == 0 then v[i] = nil elseif v[i] then any = true end
        end
        if not any then d[k] = nil end
    end
    return d
end
