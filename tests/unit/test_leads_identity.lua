-- Unit tests of services/leads/identity.lua (normalised identity fields).
local identity = dofile ('tests/unit/lua_module.lua') ('services/leads/identity.lua', 'identity')

assert (identity.email (' Ann.Lee@Example.COM ') == 'ann.lee@example.com')
assert (identity.email ('ann lee@exa mple.com') == 'annlee@example.com')
assert (identity.email ('a+tag@sub.example.co.uk') == 'a+tag@sub.example.co.uk')
assert (identity.email ('no-at-sign') == nil)
assert (identity.email ('two@@example.com') == nil)
assert (identity.email ('a@b@example.com') == nil)
assert (identity.email ('a@localhost') == nil)
assert (identity.email ('@example.com') == nil)
assert (identity.email ('a@example.') == nil)
assert (identity.email ('   ') == nil)

assert (identity.text ('  Ann   Lee ') == 'Ann Lee')
assert (identity.text ('\tAcme\nCorp') == 'Acme Corp')
assert (identity.text ('   ') == nil)

assert (identity.phone ('+44 (20) 7946-0018') == '+442079460018')
assert (identity.phone (' 020 7946 0018') == '02079460018')
assert (identity.phone ('12') == nil)

print ('test_leads_identity: all passed')
