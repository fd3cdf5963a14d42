-- Loads a rules module file (which declares `local NAME = {}` and ends
-- without a return, since services concatenate their files into one
-- script) and returns the table, for unit tests under lua5.1.
--   local attribution = dofile ('tests/unit/lua_module.lua') ('services/campaign/attribution.lua', 'attribution')
return function (path, name)
    local f = assert (io.open (path))
    local source = f:read ('*a')
    f:close ()
    return assert (loadstring (source .. '\nreturn ' .. name, '@' .. path)) ()
end
