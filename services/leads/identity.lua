-- identity.lua — normalised identity fields of a lead, pure.
--
-- The same person typed twice must be the same lead: e-mail addresses are
-- compared without case or spaces, names and companies without stray
-- whitespace, phone numbers by their digits.

local identity = {}

local function squeeze (s)
    return (string.gsub (string.gsub (s, '^%s+', ''), '%s+$', ''))
end

-- A normalised e-mail, or nil when it is not name@domain.tld.
function identity.email (s)
    local e = string.lower (string.gsub (s, '%s', ''))
    local user, domain = string.match (e, '^([^@]+)@([^@]+)$')
    if not user or not string.find (domain, '^[%w%-]+%.[%w%-%.]*%w$') then
        return nil
    end
    return e
end

-- Trimmed, inner runs of whitespace made one space; nil if nothing left.
function identity.text (s)
    local t = string.gsub (squeeze (s), '%s+', ' ')
    if t == '' then return nil end
    return t
end

-- Digits with an optional leading +; nil when fewer than 5 digits.
function identity.phone (s)
    local plus = string.match (squeeze (s), '^%+') and '+' or ''
    local digits = string.gsub (s, '%D', '')
    if #digits < 5 then return nil end
    return plus .. digits
end
