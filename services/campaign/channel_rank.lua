-- channel_rank — which channel to spend on next, with the evidence.
--
-- Pure functions (unit-tested in tests/unit/test_campaign_channel_rank.lua). Each
-- channel's conversion rate gets a Beta-Binomial posterior: prior
-- Beta(alpha, beta), `successes` conversions (attribution credit, may be
-- fractional) out of `trials` contacts reached. Channels are ranked by the
-- posterior's lower bound (mean - z·sd, a normal approximation): a channel
-- must show both a good rate and enough evidence to lead, so three lucky
-- contacts do not outrank three hundred steady ones.

local channel_rank = {}

local function round6 (x)
    return math.floor (x * 1e6 + 0.5) / 1e6
end

function channel_rank.posterior (successes, trials, alpha, beta, z)
    local s = math.max (0, math.min (successes, trials))
    local a = alpha + s
    local b = beta + (trials - s)
    local mean = a / (a + b)
    local sd = math.sqrt (a * b / ((a + b) ^ 2 * (a + b + 1)))
    return {
        alpha = round6 (a), beta = round6 (b),
        mean = round6 (mean), sd = round6 (sd),
        lower = round6 (math.max (0, mean - z * sd)),
        upper = round6 (math.min (1, mean + z * sd))
    }
end

-- rows: {channel, successes, trials, ...}; returns them ranked, each with
-- its posterior fields and rank (1 = spend here next).
function channel_rank.rank (rows, alpha, beta, z)
    for _, row in ipairs (rows) do
        local p = channel_rank.posterior (row.successes, row.trials, alpha, beta, z)
        for k, v in pairs (p) do row[k] = v end
        row.rate = row.trials > 0 and round6 (math.min (1, row.successes / row.trials)) or 0
    end
    table.sort (rows, function (x, y)
        if x.lower ~= y.lower then return x.lower > y.lower end
        if x.mean ~= y.mean then return x.mean > y.mean end
        return x.channel < y.channel
    end)
    for i, row in ipairs (rows) do row.rank = i end
    return rows
end
