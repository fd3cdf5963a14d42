-- Unit tests of services/retention/cohort.lua (lua5.1, as in Redis).
local cohort = dofile ('tests/unit/lua_module.lua') ('services/retention/cohort.lua', 'cohort')

assert (cohort.month (0) == '1970-01')
assert (cohort.month (951782400000) == '2000-02', cohort.month (951782400000))   -- 2000-02-29
assert (cohort.month (951868800000 - 1) == '2000-02')                           -- last ms of Feb 29
assert (cohort.month (951868800000) == '2000-03')
assert (cohort.month (1767225599999) == '2025-12')
assert (cohort.month (1767225600000) == '2026-01')
assert (cohort.month (1798761600000) == '2027-01')
assert (cohort.month (-1) == '1969-12')
-- Every month boundary of a leap year
local t, days = 1704067200000, { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }   -- 2024-01-01
for m = 1, 12 do
    assert (cohort.month (t) == string.format ('2024-%02d', m), cohort.month (t))
    t = t + days[m] * 86400000
    assert (cohort.month (t - 1) == string.format ('2024-%02d', m))
end
assert (cohort.month (t) == '2025-01')

assert (cohort.share (1, 3) == 0.3333)
assert (cohort.share (2, 3) == 0.6667)
assert (cohort.share (0, 0) == 0)
assert (cohort.share (5, 5) == 1)
assert (cohort.ltv (1000, 3) == 333)
assert (cohort.ltv (1000, 0) == 0)

print ('test_retention_cohort: all passed')
