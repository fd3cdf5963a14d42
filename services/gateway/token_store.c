/*  token_store — see token_store.h for why. */
#include <ctype.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "event_codec.h"
#include "token_store.h"

#define TOKEN_MIN       16
#define TOKEN_MAX       256
#define TYPES_MAX       64
#define FILE_MAX        (1024 * 1024)

struct _token_t {
    unsigned char digest [SHA256_DIGEST_LENGTH];
    char name [FUNNEL_ID_MAX + 1];
    bool all;                       //  TYPES = *
    char *types [TYPES_MAX];        //  Types, or prefixes ending in '.'
    int type_count;
};

struct _token_store_t {
    atomic_int refs;
    token_t *tokens;
    size_t count;
};

static void
s_free (token_store_t *self)
{
    for (size_t i = 0; i < self->count; i++)
        for (int t = 0; t < self->tokens [i].type_count; t++)
            free (self->tokens [i].types [t]);
    free (self->tokens);
    free (self);
}

//  Splits TYPES into the entry; -1 with a message if malformed.
static int
s_parse_types (token_t *token, char *text, char *error, size_t error_size, int line)
{
    if (strcmp (text, "*") == 0) {
        token->all = true;
        return 0;
    }
    for (char *save = NULL, *type = strtok_r (text, ",", &save); type;
         type = strtok_r (NULL, ",", &save)) {
        size_t length = strlen (type);
        if (length == 0 || length > FUNNEL_ID_MAX || strcmp (type, "*") == 0) {
            snprintf (error, error_size, "line %d: '%s' is not an event type", line, type);
            return -1;
        }
        if (token->type_count == TYPES_MAX) {
            snprintf (error, error_size, "line %d: more than %d types", line, TYPES_MAX);
            return -1;
        }
        token->types [token->type_count++] = strdup (type);
    }
    if (token->type_count == 0) {
        snprintf (error, error_size, "line %d: no event types (use * for all)", line);
        return -1;
    }
    return 0;
}

static int
s_parse_line (token_store_t *self, char *text, int line, char *error, size_t error_size)
{
    char *hash = strchr (text, '#');
    if (hash)
        *hash = 0;
    char *fields [4] = { NULL };
    int count = 0;
    for (char *save = NULL, *word = strtok_r (text, " \t\r", &save); word;
         word = strtok_r (NULL, " \t\r", &save))
        if (count < 4)
            fields [count++] = word;
        else
            count++;
    if (count == 0)
        return 0;                   //  Blank or comment
    if (count != 3) {
        snprintf (error, error_size, "line %d: expected TOKEN NAME TYPES, got %d field%s",
                  line, count, count == 1 ? "" : "s");
        return -1;
    }
    size_t length = strlen (fields [0]);
    if (length < TOKEN_MIN || length > TOKEN_MAX) {
        snprintf (error, error_size, "line %d: a token must be %d-%d bytes", line,
                  TOKEN_MIN, TOKEN_MAX);
        return -1;
    }
    for (const char *p = fields [0]; *p; p++)
        if (!isgraph ((unsigned char) *p)) {
            snprintf (error, error_size, "line %d: a token must be printable ASCII", line);
            return -1;
        }
    if (!event_codec_id_valid (fields [1], strlen (fields [1]))) {
        snprintf (error, error_size, "line %d: name '%s' must be 1-64 bytes of "
                  "[A-Za-z0-9._:@+-]", line, fields [1]);
        return -1;
    }
    token_t *tokens = realloc (self->tokens, (self->count + 1) * sizeof *tokens);
    if (!tokens) {
        snprintf (error, error_size, "out of memory");
        return -1;
    }
    self->tokens = tokens;
    token_t *token = &self->tokens [self->count++];
    memset (token, 0, sizeof *token);
    SHA256 ((const unsigned char *) fields [0], length, token->digest);
    snprintf (token->name, sizeof token->name, "%s", fields [1]);
    if (s_parse_types (token, fields [2], error, error_size, line))
        return -1;
    //  Two entries for one token would make the lookup ambiguous
    for (size_t i = 0; i + 1 < self->count; i++)
        if (memcmp (self->tokens [i].digest, token->digest, sizeof token->digest) == 0) {
            snprintf (error, error_size, "line %d: the same token appears twice", line);
            return -1;
        }
    return 0;
}

token_store_t *
token_store_parse (const char *text, char *error, size_t error_size)
{
    token_store_t *self = calloc (1, sizeof *self);
    char *copy = strdup (text);
    if (!self || !copy) {
        free (self);
        free (copy);
        snprintf (error, error_size, "out of memory");
        return NULL;
    }
    atomic_init (&self->refs, 1);
    int line = 1, rc = 0;
    for (char *start = copy; start && rc == 0; line++) {
        char *end = strchr (start, '\n');
        if (end)
            *end = 0;
        rc = s_parse_line (self, start, line, error, error_size);
        start = end ? end + 1 : NULL;
    }
    free (copy);
    if (rc) {
        s_free (self);
        return NULL;
    }
    return self;
}

token_store_t *
token_store_load (const char *path, char *error, size_t error_size)
{
    FILE *file = fopen (path, "r");
    if (!file) {
        snprintf (error, error_size, "%s: %s", path, strerror (errno));
        return NULL;
    }
    char *text = calloc (1, FILE_MAX + 1);
    size_t size = text ? fread (text, 1, FILE_MAX + 1, file) : 0;
    bool failed = !text || ferror (file);
    fclose (file);
    token_store_t *self = NULL;
    if (failed)
        snprintf (error, error_size, "%s: cannot read", path);
    else
    if (size > FILE_MAX)
        snprintf (error, error_size, "%s: larger than 1 MiB", path);
    else {
        char message [256];
        self = token_store_parse (text, message, sizeof message);
        if (!self)
            snprintf (error, error_size, "%s: %s", path, message);
    }
    free (text);
    return self;
}

token_store_t *
token_store_ref (token_store_t *self)
{
    if (self)
        atomic_fetch_add (&self->refs, 1);
    return self;
}

void
token_store_unref (token_store_t **self_p)
{
    if (*self_p) {
        if (atomic_fetch_sub (&(*self_p)->refs, 1) == 1)
            s_free (*self_p);
        *self_p = NULL;
    }
}

size_t
token_store_size (token_store_t *self)
{
    return self->count;
}

const token_t *
token_store_find (token_store_t *self, const char *token, size_t size)
{
    unsigned char digest [SHA256_DIGEST_LENGTH];
    SHA256 ((const unsigned char *) token, size, digest);
    //  Every entry is compared, whatever matched before
    const token_t *found = NULL;
    for (size_t i = 0; i < self->count; i++) {
        int differs = CRYPTO_memcmp (digest, self->tokens [i].digest, sizeof digest);
        uintptr_t mask = (uintptr_t) 0 - (uintptr_t) (differs == 0);
        found = (const token_t *) (((uintptr_t) found & ~mask)
                                 | ((uintptr_t) &self->tokens [i] & mask));
    }
    return found;
}

const char *
token_name (const token_t *token)
{
    return token->name;
}

bool
token_may_publish (const token_t *token, const char *type)
{
    if (token->all)
        return true;
    for (int t = 0; t < token->type_count; t++) {
        const char *allowed = token->types [t];
        size_t length = strlen (allowed);
        if (allowed [length - 1] == '.' ? strncmp (allowed, type, length) == 0
                                        : strcmp (allowed, type) == 0)
            return true;
    }
    return false;
}

#include "funnel_check.h"

void
token_store_test (bool verbose)
{
    (void) verbose;
    char error [256];
    token_store_t *store = token_store_parse (
        "# forms on the web site may only capture leads\n"
        "web-forms-0123456789abcdef  webforms   lead.capture   # the site\n"
        "\n"
        "crm-0123456789abcdef\tcrm\tdeal.,customer.order\n"
        "admin-0123456789abcdef admin *\n", error, sizeof error);
    check (store && token_store_size (store) == 3);
    const char *web = "web-forms-0123456789abcdef";
    const token_t *token = token_store_find (store, web, strlen (web));
    check (token && strcmp (token_name (token), "webforms") == 0);
    check (token_may_publish (token, "lead.capture"));
    check (!token_may_publish (token, "lead.qualify"));
    token = token_store_find (store, "crm-0123456789abcdef", 20);
    check (token && strcmp (token_name (token), "crm") == 0);
    check (token_may_publish (token, "deal.open") && token_may_publish (token, "deal.close"));
    check (token_may_publish (token, "customer.order"));
    check (!token_may_publish (token, "customer.orders") && !token_may_publish (token, "deal"));
    token = token_store_find (store, "admin-0123456789abcdef", 22);
    check (token && token_may_publish (token, "anything"));
    //  A prefix, a longer string or nothing is no token
    check (!token_store_find (store, web, strlen (web) - 1));
    check (!token_store_find (store, "web-forms-0123456789abcdefX", 27));
    check (!token_store_find (store, "", 0));
    //  A reference outlives the holder's
    token_store_t *held = token_store_ref (store);
    token_store_unref (&store);
    check (store == NULL && token_store_find (held, web, strlen (web)));
    token_store_unref (&held);

    //  Malformed files are refused whole, naming the line
    const char *bad [][2] = {
        { "short x *\n", "line 1: a token must be" },
        { "# c\nabcdefghijklmnopqrstuvwxyz name\n", "line 2: expected TOKEN NAME TYPES" },
        { "abcdefghijklmnopqrstuvwxyz bad/name *\n", "name 'bad/name'" },
        { "abcdefghijklmnopqrstuvwxyz a ,,\n", "line 1: no event types" },
        { "abcdefghijklmnopqrstuvwxyz a *,lead.\n", "'*' is not an event type" },
        { "abcdefghijklmnopqrstuvwxyz a *\nabcdefghijklmnopqrstuvwxyz b *\n", "line 2: the same token" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        check (token_store_parse (bad [i][0], error, sizeof error) == NULL);
        if (!strstr (error, bad [i][1]))
            fprintf (stderr, "got '%s'\n", error);
        check (strstr (error, bad [i][1]));
    }
    store = token_store_parse ("", error, sizeof error);
    check (store && token_store_size (store) == 0 && !token_store_find (store, "x", 1));
    token_store_unref (&store);
    check (!token_store_load ("/nonexistent/tokens", error, sizeof error));
    check (strstr (error, "No such file"));
}
