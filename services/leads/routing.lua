-- routing.lua — which rep gets an SQL lead, pure.
--
-- Territory first (reps of the lead's region with room; else any rep
-- with room; else, everyone being full, the territory), then a smooth weighted
-- round-robin (as nginx does) over the pool: each rep's weight is its free
-- capacity (capacity - open leads), so reps fill in proportion to room and
-- a busy rep is passed over; when the whole pool is full, weights fall back
-- to capacities (overflow shared in proportion). Away reps never get leads.

local routing = {}

-- reps: array of {name, region, capacity, away, open, cur}; region: the
-- lead's region (lower case) or nil. Returns the chosen name (nil when
-- every rep is away) and {name = new cur} for the pool's reps.
function routing.pick (reps, region)
    local avail, avail_room, local_reps, local_room = {}, {}, {}, {}
    for i = 1, #reps do
        local r = reps[i]
        if not r.away then
            local room = r.open < r.capacity
            avail[#avail + 1] = r
            if room then avail_room[#avail_room + 1] = r end
            if region and r.region ~= '' and r.region == region then
                local_reps[#local_reps + 1] = r
                if room then local_room[#local_room + 1] = r end
            end
        end
    end
    if #avail == 0 then return nil, {} end
    -- The territory while it has room, then anyone with room, then overflow
    local pool = (#local_room > 0 and local_room) or (#avail_room > 0 and avail_room)
              or (#local_reps > 0 and local_reps) or avail
    local weights, room = {}, 0
    for i = 1, #pool do
        weights[i] = math.max (pool[i].capacity - pool[i].open, 0)
        room = room + weights[i]
    end
    if room == 0 then
        for i = 1, #pool do weights[i] = math.max (pool[i].capacity, 1) end
    end
    local total, best, curs = 0, nil, {}
    for i = 1, #pool do
        local cur = (pool[i].cur or 0) + weights[i]
        curs[pool[i].name] = cur
        total = total + weights[i]
        if not best or cur > curs[best] then best = pool[i].name end
    end
    curs[best] = curs[best] - total
    return best, curs
end

-- A previous owner keeps a returning lead when present and not full.
function routing.sticky (rep)
    return rep ~= nil and not rep.away and rep.open < rep.capacity
end
