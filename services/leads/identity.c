/*  identity — see identity.h. Character classes are the C locale's:
    bytes outside ASCII are neither space nor alnum. */
#include <ctype.h>
#include <string.h>
#include "identity.h"

static bool
s_space (char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static bool
s_alnum (char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

//  ^[%w%-]+%.[%w%-%.]*%w$
static bool
s_domain_ok (const char *d)
{
    size_t i = 0;
    while (s_alnum (d [i]) || d [i] == '-')
        i++;
    if (i == 0 || d [i] != '.')
        return false;
    i++;
    size_t len = strlen (d);
    if (len <= i || !s_alnum (d [len - 1]))
        return false;
    for (; i < len; i++)
        if (!(s_alnum (d [i]) || d [i] == '-' || d [i] == '.'))
            return false;
    return true;
}

bool
identity_email (const char *s, char *out, size_t size)
{
    size_t n = 0;
    for (; *s; s++)
        if (!s_space (*s)) {
            if (n + 1 >= size)
                return false;
            out [n++] = (char) tolower ((unsigned char) *s);
        }
    out [n] = 0;
    char *at = strchr (out, '@');
    if (!at || at == out || strchr (at + 1, '@') || !at [1])
        return false;
    return s_domain_ok (at + 1);
}

bool
identity_text (const char *s, char *out, size_t size)
{
    size_t n = 0;
    bool gap = false;
    while (s_space (*s))
        s++;
    for (; *s; s++) {
        if (s_space (*s)) {
            gap = true;
            continue;
        }
        if (n + 3 >= size)
            return false;
        if (gap && n > 0)
            out [n++] = ' ';
        gap = false;
        out [n++] = *s;
    }
    out [n] = 0;
    return n > 0;
}

bool
identity_phone (const char *s, char *out, size_t size)
{
    const char *p = s;
    while (s_space (*p))
        p++;
    size_t n = 0, digits = 0;
    if (*p == '+')
        out [n++] = '+';
    for (; *s; s++)
        if (*s >= '0' && *s <= '9') {
            if (n + 1 >= size)
                return false;
            out [n++] = *s;
            digits++;
        }
    out [n] = 0;
    return digits >= 5;
}

//  --------------------------------------------------------------------
//  Self-test (the rules' cases, plus edges)

#undef NDEBUG                   //  The self-test needs its asserts
#include <assert.h>

static const char *
s_email (const char *s)
{
    static char out [IDENTITY_MAX];
    return identity_email (s, out, sizeof out) ? out : NULL;
}

static const char *
s_text (const char *s)
{
    static char out [IDENTITY_MAX];
    return identity_text (s, out, sizeof out) ? out : NULL;
}

static const char *
s_phone (const char *s)
{
    static char out [IDENTITY_MAX];
    return identity_phone (s, out, sizeof out) ? out : NULL;
}

#define EQ(a, b) ((a) && strcmp ((a), (b)) == 0)

void
identity_test (bool verbose)
{
    (void) verbose;
    assert (EQ (s_email (" Ann.Lee@Example.COM "), "ann.lee@example.com"));
    assert (EQ (s_email ("ann lee@exa mple.com"), "annlee@example.com"));
    assert (EQ (s_email ("a+tag@sub.example.co.uk"), "a+tag@sub.example.co.uk"));
    assert (!s_email ("no-at-sign"));
    assert (!s_email ("two@@example.com"));
    assert (!s_email ("a@b@example.com"));
    assert (!s_email ("a@localhost"));
    assert (!s_email ("@example.com"));
    assert (!s_email ("a@example."));
    assert (!s_email ("   "));
    //  Edges: the domain's first label needs a character; hyphens are fine
    assert (!s_email ("a@.example.com"));
    assert (EQ (s_email ("a@my-host.io"), "a@my-host.io"));
    assert (!s_email ("a@ex_ample.com"));
    assert (!s_email ("a@"));

    assert (EQ (s_text ("  Ann   Lee "), "Ann Lee"));
    assert (EQ (s_text ("\tAcme\nCorp"), "Acme Corp"));
    assert (!s_text ("   "));
    assert (!s_text (""));

    assert (EQ (s_phone ("+44 (20) 7946-0018"), "+442079460018"));
    assert (EQ (s_phone (" 020 7946 0018"), "02079460018"));
    assert (!s_phone ("12"));
    //  Edges: a '+' counts only in front; five digits are enough
    assert (EQ (s_phone ("12+345"), "12345"));
    assert (EQ (s_phone ("  +1-2-3-4-5"), "+12345"));
    assert (!s_phone ("+1234"));
}
