-- cohort.lua — onboarding-month cohorts: the month of a time and the
-- shares reported by GET cohorts. Pure functions, unit-tested in
-- tests/unit/test_retention_cohort.lua.

local cohort = {}

-- 'YYYY-MM' (UTC) of a time in ms since the epoch. Redis's Lua has no
-- os.date, so this is the civil-from-days conversion (proleptic Gregorian).
function cohort.month (ms)
    local z = math.floor (ms / 86400000) + 719468
    local era = math.floor (z / 146097)
    local doe = z - era * 146097
    local yoe = math.floor ((doe - math.floor (doe / 1460) + math.floor (doe / 36524)
                             - math.floor (doe / 146096)) / 365)
    local doy = doe - (365 * yoe + math.floor (yoe / 4) - math.floor (yoe / 100))
    local mp = math.floor ((5 * doy + 2) / 153)
    local m = mp < 10 and mp + 3 or mp - 9
    local y = yoe + era * 400 + (m <= 2 and 1 or 0)
    return string.format ('%04d-%02d', y, m)
end

-- part / whole rounded to 4 decimals; 0 for an empty whole.
function cohort.share (part, whole)
    if whole <= 0 then return 0 end
    return math.floor (part / whole * 10000 + 0.5) / 10000
end

-- Average lifetime value in cents, rounded; 0 with no customers.
function cohort.ltv (revenue, customers)
    if customers <= 0 then return 0 end
    return math.floor (revenue / customers + 0.5)
end
