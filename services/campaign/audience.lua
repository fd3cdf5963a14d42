-- audience — who a campaign targets, and whether a touch's person is in it.
--
-- Pure functions (unit-tested in tests/unit/test_campaign_audience.lua):
--   audience.matches (aud, attrs)  -> true when every rule the audience sets
--                                     holds for the touch's attrs
--   audience.segment (aud)         -> the segment label "age/region/interest"
-- aud = {age_min?, age_max?, regions?, interests?} (a campaign's audience),
-- attrs = {age?, region?, interests?} (a touch's), either may be nil.

local audience = {}

local function lower_set (list)
    local set, any = {}, false
    for _, v in ipairs (list or {}) do
        if type (v) == 'string' then
            set[string.lower (v)] = true
            any = true
        end
    end
    return set, any
end

-- A rule the audience does not set always holds; a rule it sets needs the
-- attribute on the touch (an unknown age is not "18-24"). Strings compare
-- case-insensitively; interests need one in common.
function audience.matches (aud, attrs)
    if type (aud) ~= 'table' then return true end
    attrs = type (attrs) == 'table' and attrs or {}
    if aud.age_min or aud.age_max then
        local age = tonumber (attrs.age)
        if not age then return false end
        if aud.age_min and age < aud.age_min then return false end
        if aud.age_max and age > aud.age_max then return false end
    end
    local regions, has_regions = lower_set (aud.regions)
    if has_regions then
        if type (attrs.region) ~= 'string' or not regions[string.lower (attrs.region)] then
            return false
        end
    end
    local interests, has_interests = lower_set (aud.interests)
    if has_interests then
        local hit = false
        for _, v in ipairs (type (attrs.interests) == 'table' and attrs.interests or {}) do
            if type (v) == 'string' and interests[string.lower (v)] then
                hit = true
                break
            end
        end
        if not hit then return false end
    end
    return true
end

-- One label part: lowercase, [a-z0-9.+-] kept, anything else '_', at most
-- 24 bytes, so labels are short and safe inside "channel/segment" names.
function audience.clean (s)
    local out = string.gsub (string.lower (string.sub (s, 1, 24)), '[^a-z0-9.+-]', '_')
    return out
end

-- "18-24", "65+", "0-17" (max only) or "any".
function audience.age_band (min, max)
    if min and max then return string.format ('%d-%d', min, max) end
    if min then return string.format ('%d+', min) end
    if max then return string.format ('0-%d', max) end
    return 'any'
end

-- The segment a campaign addresses: age band, first region, first
-- interest, each "any" when the audience leaves it open.
function audience.segment (aud)
    aud = type (aud) == 'table' and aud or {}
    local region = type (aud.regions) == 'table' and aud.regions[1]
    local interest = type (aud.interests) == 'table' and aud.interests[1]
    return audience.age_band (aud.age_min, aud.age_max) .. '/' ..
           (type (region) == 'string' and audience.clean (region) or 'any') .. '/' ..
           (type (interest) == 'string' and audience.clean (interest) or 'any')
end
