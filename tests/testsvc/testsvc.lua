-- Rules of the test service (see testsvc.c).

declare_series ('added')

on['test.add'] = function (ev, d)
    st.hadd (K ('counter', d.key), 'total', d.n)
    -- The last 10 ids per counter: a sub-key of the counter, so an id
    -- shaped like it ('X:log') tests that keys cannot collide
    st.rpush (K ('counter', d.key, 'log'), ev.id)
    st.ltrim (K ('counter', d.key, 'log'), -10, -1)
    -- A stage over time too (the benchmark measures the series' cost)
    count_stage ('added', ev.ts, string.sub (d.key, 1, 2), d.n)
    emit ('test.added', { key = d.key, n = d.n })
end

on['test.need'] = function (ev, d)
    local total = tonumber (st.hget (K ('counter', d.key), 'total'))
    if not total then
        return fail ('not_found', 'key: no counter ' .. d.key)
    end
    if total % 2 == 1 then
        return fail ('conflict', 'key: counter ' .. d.key .. ' is odd')
    end
    count ('needed')
end

consume['test.added'] = function (ev, d)
    st.hincr (K ('mirror', d.key), 'total', d.n)
    count ('mirrored', d.n)
    emit ('test.mirrored', { key = d.key, n = d.n })
end

query['counter'] = function (req)
    if type (req.id) ~= 'string' then
        return fail ('invalid', 'id: required string is missing')
    end
    local c = st.hget (K ('counter', req.id), 'total')
    local m = st.hget (K ('mirror', req.id), 'total')
    if not c and not m then
        return fail ('not_found', 'id: no counter ' .. req.id)
    end
    return { key = req.id, total = tonumber (c) or 0, mirror = tonumber (m) or 0 }
end
