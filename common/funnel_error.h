/*  funnel_error — the error every check in Funnel reports.

    A check that fails fills one of these with a contract code (proto/wire.md:
    bad_request, invalid, unknown_type, not_found, conflict, too_large,
    unavailable) and a message that names the field. The API layer turns it
    into the ERR body {"code", "message"[, "index"]}.
*/
#ifndef FUNNEL_ERROR_H_INCLUDED
#define FUNNEL_ERROR_H_INCLUDED

#include <stdarg.h>

#define FUNNEL_ERR_BAD_REQUEST  "bad_request"
#define FUNNEL_ERR_INVALID      "invalid"
#define FUNNEL_ERR_UNKNOWN_TYPE "unknown_type"
#define FUNNEL_ERR_NOT_FOUND    "not_found"
#define FUNNEL_ERR_CONFLICT     "conflict"
#define FUNNEL_ERR_TOO_LARGE    "too_large"
#define FUNNEL_ERR_UNAVAILABLE  "unavailable"
#define FUNNEL_ERR_INTERNAL     "internal"
#define FUNNEL_ERR_FORBIDDEN    "forbidden"   //  Beyond the client certificate's rights
#define FUNNEL_ERR_MOVED        "moved"       //  Another instance owns the partition (with "api")

typedef struct {
    const char *code;       //  One of the FUNNEL_ERR_* constants, NULL = no error
    char message [256];     //  Human-readable, names the field
    int index;              //  Element of a batch that failed, -1 if none
} funnel_error_t;

//  Sets code and a printf-style message; always returns -1 so checks can
//  `return funnel_error_set (err, ...)`. err may be NULL.
int
    funnel_error_set (funnel_error_t *err, const char *code, const char *format, ...)
    __attribute__ ((format (printf, 3, 4)));

//  Clears the error (code NULL, index -1).
void
    funnel_error_clear (funnel_error_t *err);

#endif
