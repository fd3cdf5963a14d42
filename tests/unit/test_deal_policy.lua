-- Unit test of the sales stage's pure rules: the deal state machine, the
-- discount policy, forecast math and rep rotation (services/sales/deal_policy.lua).
local p = dofile ('tests/unit/lua_module.lua') ('services/sales/deal_policy.lua', 'deal_policy')

-- State machine: open allows working the deal; won only delivery; final states nothing
for _, action in ipairs ({ 'interaction', 'offer', 'approve', 'stage', 'close' }) do
    assert (p.check ('open', action) == nil, action)
    assert (p.check ('won', action):find ('is won; ' .. action .. ' needs an open deal', 1, true), action)
    assert (p.check ('lost', action):find ('needs an open deal', 1, true), action)
    assert (p.check ('delivered', action), action)
end
assert (p.check ('won', 'deliver') == nil)
assert (p.check ('open', 'deliver') == 'deal is open; deliver needs a won deal')
assert (p.check ('lost', 'deliver') == 'deal is lost; deliver needs a won deal')
assert (p.check ('delivered', 'deliver') == 'deal is already delivered')
assert (p.check (nil, 'offer'))                     -- unknown status refuses
assert (p.check ('open', 'frobnicate'))             -- unknown action refuses

-- Stages: any open stage to another, back included, never to itself
assert (p.stage_change ('discovery', 'commit') == nil)
assert (p.stage_change ('commit', 'proposal') == nil)
assert (p.stage_change ('proposal', 'proposal') == 'deal is already in stage proposal')
assert (#p.STAGES == 4 and p.STAGES[1] == p.FIRST_STAGE)

-- Discount policy: strictly above the maximum needs approval
assert (p.needs_approval (20, 20) == false)
assert (p.needs_approval (20.5, 20) == true)
assert (p.needs_approval (nil, 20) == false)        -- no offer, no discount
assert (p.needs_approval (0, 0) == false)
assert (p.needs_approval (0.1, 0) == true)
assert (p.close_won (10, false, 20) == nil)
assert (p.close_won (30, true, 20) == nil)
local why = p.close_won (30, false, 20)
assert (why and why:find ('^approval_required') and why:find ('30%', 1, true) and why:find ('20%', 1, true), why)

-- Forecast: amount x probability per stage, floored to cents
local probs = { discovery = 10, proposal = 30, negotiation = 60, commit = 90 }
assert (p.forecast ({}, probs) == 0)
assert (p.forecast ({ discovery = 1000, commit = 1000 }, probs) == 1000)
assert (p.forecast ({ proposal = 333 }, probs) == 99)          -- 99.9 floored
assert (p.forecast ({ negotiation = 1e12 }, probs) == 6e11)    -- large amounts stay exact
assert (p.forecast ({ bogus = 500 }, probs) == 0)              -- only pipeline stages

-- Win rate and means
assert (p.win_rate (0, 0) == 0)
assert (p.win_rate (3, 1) == 0.75)
assert (p.mean (10, 0) == 0 and p.mean (10, 3) == 3)

-- Rep rotation: round robin over the others, never the current rep
local reps = { 'ann', 'bob', 'cy' }
assert (p.next_rep (reps, 'ann', 0) == 'bob')
assert (p.next_rep (reps, 'ann', 1) == 'cy')
assert (p.next_rep (reps, 'ann', 2) == 'bob')
assert (p.next_rep (reps, 'zed', 2) == 'cy')
assert (p.next_rep (reps, nil, 0) == 'ann')
assert (p.next_rep ({ 'ann' }, 'ann', 5) == 'ann')  -- nobody else: keep
assert (p.next_rep ({}, 'ann', 0) == 'ann')
assert (p.next_rep ({}, nil, 0) == nil)

-- Deal ids: entity-n, unique across entities, digest when too long
local function digest (s) return string.rep ('a', 40) end
assert (p.deal_id ('L', 'acme', 1, digest) == 'Lacme-1')
assert (p.deal_id ('X', 'acme-1', 2, digest) == 'Xacme-1-2')
assert (p.deal_id ('L', 'a-1', 2, digest) ~= p.deal_id ('L', 'a', 12, digest))
local long = p.deal_id ('L', string.rep ('x', 64), 3, digest)
assert (long == 'L' .. string.rep ('a', 40) .. '-3' and #long <= 64)

-- Lost reasons as report keys
assert (p.reason_key ('  Too Expensive ') == 'too expensive')
assert (p.reason_key (nil) == 'unspecified' and p.reason_key ('   ') == 'unspecified')
assert (#p.reason_key (string.rep ('x', 300)) == 64)

print ('test_deal_policy: all passed')
