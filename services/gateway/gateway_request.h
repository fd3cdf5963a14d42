/*  gateway_request — HTTP/JSON requests to service requests, and back.

    Pure translation, no sockets: what POST /v1/events and GET
    /v1/{service}/{kind} become on the wire (proto/gateway.md), and which
    HTTP status a contract error code maps to.

    Ingest: the body is one JSON event (a single PUBLISH), a JSON array of
    1..1000 events, or NDJSON (one event per line, always a batch). Each
    event gets `v` 1, `ts` now and `src` the token's name when absent (or
    null); `id` is required unless an Idempotency-Key is given, which names
    a single event `KEY` and element N of a batch `KEY.N`. Each element is
    checked in order: a JSON object, an id, a string type that some service
    accepts (unknown_type), that the token may publish (forbidden), of the
    same service as element 0 (invalid); the first that fails is the error's
    index. Everything else is the service's to check.
*/
#ifndef GATEWAY_REQUEST_H_INCLUDED
#define GATEWAY_REQUEST_H_INCLUDED

#include <jansson.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>
#include "funnel_error.h"
#include "token_store.h"

#define GATEWAY_ERR_FORBIDDEN    "forbidden"
#define GATEWAY_ERR_UNAUTHORIZED "unauthorized"
#define GATEWAY_ERR_NO_ROUTE     "not_found"

typedef struct {
    const char *body;               //  Not NUL-terminated
    size_t size;
    bool ndjson;                    //  Content-Type application/x-ndjson
    const char *idempotency_key;    //  NULL if no header
    const token_t *token;
    int64_t now_ms;
} gateway_ingest_t;

//  Builds the PUBLISH body into out (an initialised sbuffer, appended to)
//  and names the service that gets it (a static string). 0 on success,
//  else -1 with err (code, message, index: the element, -1 for the body).
int
    gateway_ingest_build (const gateway_ingest_t *request, const char **service,
                          msgpack_sbuffer *out, funnel_error_t *err);

//  A query-string value as it goes into a GET body: `id` and `kind` are
//  always strings; any other value that is a JSON text (5, -2, 1.5, true,
//  "007", {"age_min": 18}) is that JSON value, anything else (linear,
//  L-1) the string as given. NULL if out of memory.
json_t *
    gateway_query_value (const char *key, const char *value);

//  The HTTP status for an error code: 400, 401, 403, 404, 409, 413, 503;
//  500 for internal, 502 for a code the gateway does not know.
int
    gateway_http_status (const char *code);

//  The JSON error body {"code", "message"[, "index"]}, compact, malloc'd.
char *
    gateway_error_json (const funnel_error_t *err);

void
    gateway_request_test (bool verbose);

#endif
