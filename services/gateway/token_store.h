/*  token_store — who may call the gateway, read from gateway/tokens.

    One line per token: `TOKEN NAME TYPES`, fields separated by blanks;
    TYPES is `*` (every type) or a comma-separated list of event types and
    type prefixes ending in '.' (`lead.` = every lead.* type); `#` starts a
    comment. NAME (1-64 bytes of the id charset) is the default `src` of
    what the token publishes. A token is 16-256 printable non-blank bytes.

    A store is an immutable snapshot with a reference count: SIGHUP loads a
    new one and swaps it in while requests still hold the old one. Lookup
    compares SHA-256 digests with CRYPTO_memcmp against every entry, with
    no early exit, so its time does not depend on how much of a token
    matched or which entry it is.
*/
#ifndef TOKEN_STORE_H_INCLUDED
#define TOKEN_STORE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

typedef struct _token_store_t token_store_t;
typedef struct _token_t token_t;

//  Loads a file; NULL and a message in error (naming the line) if any line
//  is malformed: a bad file never half-applies.
token_store_t *
    token_store_load (const char *path, char *error, size_t error_size);
//  The same from text (tests).
token_store_t *
    token_store_parse (const char *text, char *error, size_t error_size);

//  Reference counting: ref returns self; unref destroys at zero and nulls
//  the caller's pointer.
token_store_t *
    token_store_ref (token_store_t *self);
void
    token_store_unref (token_store_t **self_p);

size_t
    token_store_size (token_store_t *self);

//  The entry for a presented token, NULL if none (valid while the caller
//  holds a reference to the store).
const token_t *
    token_store_find (token_store_t *self, const char *token, size_t size);

const char *
    token_name (const token_t *token);
//  True if the token may publish this event type.
bool
    token_may_publish (const token_t *token, const char *type);

void
    token_store_test (bool verbose);

#endif
