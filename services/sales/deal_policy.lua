-- deal_policy.lua — the pure rules of a deal: its state machine, the
-- discount policy, forecast math and rep rotation. No state, no Redis:
-- sales.lua asks, this answers (unit test: tests/unit/test_deal_policy.lua).

local deal_policy = {}

-- Open deals sit in one of these stages, in pipeline order.
deal_policy.STAGES = { 'discovery', 'proposal', 'negotiation', 'commit' }
deal_policy.FIRST_STAGE = 'discovery'

-- What each status allows. A deal is open until closed won or lost; a won
-- deal may be delivered once; lost and delivered deals are final.
local ALLOWED = {
    open = { interaction = true, offer = true, approve = true, stage = true,
             close = true },
    won = { deliver = true },
    lost = {},
    delivered = {}
}

-- Why an action needs another status, for the conflict message.
local NEEDS = {
    interaction = 'an open deal', offer = 'an open deal',
    approve = 'an open deal', stage = 'an open deal', close = 'an open deal',
    deliver = 'a won deal'
}

-- nil if the action is allowed in status, else the rule it breaks.
function deal_policy.check (status, action)
    local allowed = ALLOWED[status]
    if allowed and allowed[action] then return nil end
    if action == 'deliver' and status == 'delivered' then
        return 'deal is already delivered'
    end
    return 'deal is ' .. tostring (status) .. '; ' .. action .. ' needs ' ..
           (NEEDS[action] or 'another state')
end

-- nil if an open deal may move from stage `from` to `to`, else the rule.
-- Stages may move back (a commit can slip), but not to where they are.
function deal_policy.stage_change (from, to)
    if from == to then return 'deal is already in stage ' .. to end
    return nil
end

-- True when a discount needs a manager's approval before closing won.
function deal_policy.needs_approval (discount_pct, max_pct)
    return (tonumber (discount_pct) or 0) > max_pct
end

-- nil if a deal may close won: its latest offer's discount is within the
-- policy or that offer was approved; else the message (approval_required).
function deal_policy.close_won (discount_pct, approved, max_pct)
    if deal_policy.needs_approval (discount_pct, max_pct) and not approved then
        return 'approval_required: the latest offer is ' ..
               tostring (discount_pct) .. '% off, above the ' ..
               tostring (max_pct) .. '% maximum, and not approved (deal.approve)'
    end
    return nil
end

-- Weighted forecast: sum of each stage's open amount times its win
-- probability (percent); integer cents, rounded down.
function deal_policy.forecast (amounts, probabilities)
    local total = 0
    for _, stage in ipairs (deal_policy.STAGES) do
        total = total + (amounts[stage] or 0) * (probabilities[stage] or 0) / 100
    end
    return math.floor (total)
end

-- Won / (won + lost) as a fraction 0..1 (0 when nothing closed yet).
function deal_policy.win_rate (won, lost)
    if won + lost == 0 then return 0 end
    return won / (won + lost)
end

-- Integer mean (0 for none).
function deal_policy.mean (sum, n)
    if n <= 0 then return 0 end
    return math.floor (sum / n)
end

-- The next available rep after `current` in rotation order: `turn` is a
-- counter that grows by one per choice, so load spreads over the pool.
-- Returns current (or nil) when no other rep is available.
function deal_policy.next_rep (reps, current, turn)
    local others = {}
    for _, rep in ipairs (reps) do
        if rep ~= current then others[#others + 1] = rep end
    end
    if #others == 0 then return current end
    return others[(turn % #others) + 1]
end

-- Deal id for the n-th deal of an entity: prefix .. entity .. '-' .. n.
-- The suffix after the last '-' is all digits, so ids of two entities never
-- collide; an entity too long for a 64-byte id is replaced by its digest.
function deal_policy.deal_id (prefix, entity, n, digest)
    local id = prefix .. entity .. '-' .. n
    if #id > 64 then
        id = prefix .. string.sub (digest (entity), 1, 40) .. '-' .. n
    end
    return id
end

-- A lost reason as a report key: trimmed, lower case, at most 64 bytes.
function deal_policy.reason_key (reason)
    local r = string.lower (tostring (reason or ''))
    r = string.gsub (r, '^%s+', '')
    r = string.gsub (r, '%s+$', '')
    if r == '' then r = 'unspecified' end
    return string.sub (r, 1, 64)
end
