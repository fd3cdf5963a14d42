-- Unit tests of services/campaign/audience.lua (run from the source root).
local audience = dofile ('tests/unit/lua_module.lua') ('services/campaign/audience.lua', 'audience')

local genz = { age_min = 18, age_max = 24, regions = { 'US', 'ca' }, interests = { 'Gaming', 'music' } }

-- No audience, or an empty one: everyone is in it, attrs or not
assert (audience.matches (nil, nil) == true)
assert (audience.matches ({}, nil) == true)
assert (audience.matches ({ regions = {}, interests = {} }, { age = 80 }) == true)

-- Every rule set must hold; strings compare case-insensitively
assert (audience.matches (genz, { age = 19, region = 'us', interests = { 'MUSIC' } }) == true)
assert (audience.matches (genz, { age = 18, region = 'CA', interests = { 'x', 'gaming' } }) == true)
assert (audience.matches (genz, { age = 24, region = 'US', interests = { 'music' } }) == true)
assert (audience.matches (genz, { age = 25, region = 'US', interests = { 'music' } }) == false)
assert (audience.matches (genz, { age = 17, region = 'US', interests = { 'music' } }) == false)
assert (audience.matches (genz, { age = 20, region = 'uk', interests = { 'music' } }) == false)
assert (audience.matches (genz, { age = 20, region = 'US', interests = { 'golf' } }) == false)
assert (audience.matches (genz, { age = 20, region = 'US', interests = {} }) == false)

-- A rule the audience sets needs the attribute: unknown is not a match
assert (audience.matches (genz, nil) == false)
assert (audience.matches (genz, { region = 'US', interests = { 'music' } }) == false)
assert (audience.matches (genz, { age = 20, interests = { 'music' } }) == false)
assert (audience.matches (genz, { age = 20, region = 'US' }) == false)

-- One-sided age ranges; rules the audience leaves open are not checked
assert (audience.matches ({ age_min = 65 }, { age = 70 }) == true)
assert (audience.matches ({ age_min = 65 }, { age = 64 }) == false)
assert (audience.matches ({ age_max = 17 }, { age = 0 }) == true)
assert (audience.matches ({ regions = { 'de' } }, { region = 'DE', age = 3 }) == true)
assert (audience.matches ({ interests = { 'golf' } }, { interests = { 'Golf' } }) == true)

-- Segment labels: age band / first region / first interest, "any" if open
assert (audience.segment (nil) == 'any/any/any')
assert (audience.segment ({}) == 'any/any/any')
assert (audience.segment (genz) == '18-24/us/gaming', audience.segment (genz))
assert (audience.segment ({ age_min = 65 }) == '65+/any/any')
assert (audience.segment ({ age_max = 17, interests = { 'Board Games' } }) == '0-17/any/board_games')
assert (audience.segment ({ regions = { 'North/East|X' } }) == 'any/north_east_x/any')
-- Labels stay short whatever the input
local long = audience.segment ({ regions = { string.rep ('a', 500) } })
assert (long == 'any/' .. string.rep ('a', 24) .. '/any', long)

print ('test_campaign_audience: all passed')
