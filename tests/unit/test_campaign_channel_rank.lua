-- Unit tests of services/campaign/channel_rank.lua (run from the source root).
local channel_rank = dofile ('tests/unit/lua_module.lua') ('services/campaign/channel_rank.lua', 'channel_rank')

local function near (a, b, eps) return math.abs (a - b) <= (eps or 1e-6) end

-- Beta(1,1) prior, no data: the prior itself
local p = channel_rank.posterior (0, 0, 1, 1, 1.645)
assert (p.alpha == 1 and p.beta == 1 and near (p.mean, 0.5))
assert (near (p.sd, math.sqrt (1 / 12)))
-- 3 of 10: Beta(4, 8), mean 1/3, sd sqrt(32 / (144 * 13))
p = channel_rank.posterior (3, 10, 1, 1, 1.645)
assert (p.alpha == 4 and p.beta == 8 and near (p.mean, 1 / 3))
assert (near (p.sd, math.sqrt (32 / (144 * 13))))
assert (near (p.lower, 1 / 3 - 1.645 * math.sqrt (32 / (144 * 13))))
assert (p.lower < p.mean and p.mean < p.upper)
-- Fractional successes (attribution credit) are fine; more than trials is clamped
p = channel_rank.posterior (2.5, 10, 1, 1, 0)
assert (near (p.alpha, 3.5) and near (p.beta, 8.5) and near (p.lower, p.mean))
p = channel_rank.posterior (20, 10, 1, 1, 1)
assert (p.alpha == 11 and p.beta == 1)
-- Bounds stay in [0, 1]
p = channel_rank.posterior (0, 1, 1, 1, 10)
assert (p.lower == 0 and p.upper <= 1)

-- Evidence beats luck: 1/1 has the higher rate but 60/100 the higher lower bound
local rows = channel_rank.rank ({
    { channel = 'video', successes = 1, trials = 1 },
    { channel = 'email', successes = 60, trials = 100 },
    { channel = 'display', successes = 1, trials = 200 },
}, 1, 1, 1.645)
assert (rows[1].channel == 'email' and rows[1].rank == 1, rows[1].channel)
assert (rows[2].channel == 'video' and rows[3].channel == 'display')
assert (near (rows[1].rate, 0.6) and near (rows[2].rate, 1))
-- With z = 0 the posterior mean alone ranks: the lucky channel leads
rows = channel_rank.rank ({
    { channel = 'email', successes = 60, trials = 100 },
    { channel = 'video', successes = 1, trials = 1 },
}, 1, 1, 0)
assert (rows[1].channel == 'video')
-- Ties are broken by channel name, deterministically
rows = channel_rank.rank ({
    { channel = 'social', successes = 1, trials = 4 },
    { channel = 'email', successes = 1, trials = 4 },
}, 1, 1, 1.645)
assert (rows[1].channel == 'email' and rows[2].channel == 'social')

print ('test_campaign_channel_rank: all passed')
