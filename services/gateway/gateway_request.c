/*  gateway_request — see gateway_request.h for why. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "event_codec.h"
#include "event_routes.h"
#include "gateway_request.h"
#include "json_msgpack.h"

//  Events of a request, the parsed form
typedef struct {
    json_t *events;                 //  Array of the elements, as parsed
    bool batch;
} parsed_t;

static int
s_parse_json (const gateway_ingest_t *req, parsed_t *parsed, funnel_error_t *err)
{
    json_error_t jerr;
    json_t *root = json_loadb (req->body, req->size, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY,
                               &jerr);
    if (!root)
        return funnel_error_set (err, FUNNEL_ERR_BAD_REQUEST,
                                 "body: not JSON: %s (line %d, column %d)",
                                 jerr.text, jerr.line, jerr.column);
    if (json_is_object (root)) {
        parsed->events = json_array ();
        json_array_append_new (parsed->events, root);
        parsed->batch = false;
        return 0;
    }
    if (!json_is_array (root)) {
        json_decref (root);
        return funnel_error_set (err, FUNNEL_ERR_BAD_REQUEST,
                                 "body: must be an event object or an array of events");
    }
    parsed->events = root;
    parsed->batch = true;
    return 0;
}

static int
s_parse_ndjson (const gateway_ingest_t *req, parsed_t *parsed, funnel_error_t *err)
{
    parsed->events = json_array ();
    parsed->batch = true;
    const char *p = req->body, *end = req->body + req->size;
    for (int line = 1; p < end; line++) {
        const char *eol = memchr (p, '\n', (size_t) (end - p));
        const char *stop = eol ? eol : end;
        const char *q = p;
        while (q < stop && isspace ((unsigned char) *q))
            q++;
        if (q < stop) {
            if (json_array_size (parsed->events) == FUNNEL_BATCH_MAX)
                return funnel_error_set (err, FUNNEL_ERR_TOO_LARGE,
                                         "body: more than %d events", FUNNEL_BATCH_MAX);
            json_error_t jerr;
            json_t *event = json_loadb (p, (size_t) (stop - p), JSON_REJECT_DUPLICATES, &jerr);
            if (!event) {
                err->index = (int) json_array_size (parsed->events);
                return funnel_error_set (err, FUNNEL_ERR_BAD_REQUEST,
                                         "line %d: not JSON: %s (column %d)",
                                         line, jerr.text, jerr.column);
            }
            json_array_append_new (parsed->events, event);
        }
        p = stop + 1;
    }
    return 0;
}

//  Fills the envelope defaults and the id of element index.
static int
s_complete (const gateway_ingest_t *req, json_t *event, size_t index, bool batch,
            funnel_error_t *err)
{
    if (!json_is_object (event))
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "event: must be a JSON object");
    json_t *id = json_object_get (event, "id");
    if (!id || json_is_null (id)) {
        if (!req->idempotency_key)
            return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                     "id: required (or send an Idempotency-Key header)");
        char text [FUNNEL_ID_MAX + 32];
        if (batch)
            snprintf (text, sizeof text, "%s.%zu", req->idempotency_key, index);
        else
            snprintf (text, sizeof text, "%s", req->idempotency_key);
        if (!event_codec_id_valid (text, strlen (text)))
            return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                     "Idempotency-Key: '%s' must make ids of 1-64 bytes of "
                                     "[A-Za-z0-9._:@+-]", text);
        json_object_set_new (event, "id", json_string (text));
    }
    json_t *v = json_object_get (event, "v");
    if (!v || json_is_null (v))
        json_object_set_new (event, "v", json_integer (1));
    json_t *ts = json_object_get (event, "ts");
    if (!ts || json_is_null (ts))
        json_object_set_new (event, "ts", json_integer (req->now_ms));
    json_t *src = json_object_get (event, "src");
    if (!src || json_is_null (src))
        json_object_set_new (event, "src", json_string (token_name (req->token)));
    return 0;
}

//  Routes element index; the first element's service is *service.
static int
s_route (const gateway_ingest_t *req, json_t *event, size_t index, const char **service,
         funnel_error_t *err)
{
    json_t *type = json_object_get (event, "type");
    if (!type || json_is_null (type))
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "type: required");
    if (!json_is_string (type))
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "type: must be a string");
    const char *name = json_string_value (type);
    const char *owner = event_routes_service (name);
    if (!owner)
        return funnel_error_set (err, FUNNEL_ERR_UNKNOWN_TYPE,
                                 "type: no service accepts '%.64s' by PUBLISH", name);
    if (!token_may_publish (req->token, name))
        return funnel_error_set (err, GATEWAY_ERR_FORBIDDEN,
                                 "type: token '%s' may not publish '%.64s'",
                                 token_name (req->token), name);
    if (index == 0)
        *service = owner;
    else
    if (strcmp (owner, *service) != 0)
        return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                 "type: '%.64s' goes to %s but element 0 goes to %s; "
                                 "one request carries one service's events",
                                 name, owner, *service);
    return 0;
}

int
gateway_ingest_build (const gateway_ingest_t *req, const char **service,
                      msgpack_sbuffer *out, funnel_error_t *err)
{
    funnel_error_clear (err);
    if (req->size == 0)
        return funnel_error_set (err, FUNNEL_ERR_BAD_REQUEST, "body: empty");
    if (req->idempotency_key && !event_codec_id_valid (req->idempotency_key,
                                                  strlen (req->idempotency_key)))
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "Idempotency-Key: must be "
                                 "1-64 bytes of [A-Za-z0-9._:@+-]");
    parsed_t parsed = { NULL, false };
    int rc = req->ndjson ? s_parse_ndjson (req, &parsed, err)
                         : s_parse_json (req, &parsed, err);
    size_t count = parsed.events ? json_array_size (parsed.events) : 0;
    if (rc == 0 && count == 0)
        rc = funnel_error_set (err, FUNNEL_ERR_INVALID, "body: an empty batch");
    if (rc == 0 && count > FUNNEL_BATCH_MAX)
        rc = funnel_error_set (err, FUNNEL_ERR_TOO_LARGE, "body: %zu events, at most %d",
                               count, FUNNEL_BATCH_MAX);
    for (size_t i = 0; rc == 0 && i < count; i++) {
        json_t *event = json_array_get (parsed.events, i);
        rc = s_complete (req, event, i, parsed.batch, err);
        if (rc == 0)
            rc = s_route (req, event, i, service, err);
        if (rc && parsed.batch)
            err->index = (int) i;
    }
    if (rc == 0) {
        msgpack_packer pk;
        msgpack_packer_init (&pk, out, msgpack_sbuffer_write);
        const json_t *body = parsed.batch ? parsed.events : json_array_get (parsed.events, 0);
        if (json_to_msgpack (body, &pk))
            rc = funnel_error_set (err, FUNNEL_ERR_INVALID, "body: nested too deep");
    }
    json_decref (parsed.events);
    return rc;
}

json_t *
gateway_query_value (const char *key, const char *value)
{
    if (strcmp (key, "id") != 0 && strcmp (key, "kind") != 0) {
        json_t *parsed = json_loads (value, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
        if (parsed)
            return parsed;
    }
    return json_string (value);
}

int
gateway_http_status (const char *code)
{
    static const struct { const char *code; int status; } s_map [] = {
        { FUNNEL_ERR_BAD_REQUEST, 400 }, { FUNNEL_ERR_INVALID, 400 },
        { FUNNEL_ERR_UNKNOWN_TYPE, 400 }, { GATEWAY_ERR_UNAUTHORIZED, 401 },
        { GATEWAY_ERR_FORBIDDEN, 403 }, { FUNNEL_ERR_NOT_FOUND, 404 },
        { FUNNEL_ERR_CONFLICT, 409 }, { FUNNEL_ERR_TOO_LARGE, 413 },
        { FUNNEL_ERR_UNAVAILABLE, 503 }, { FUNNEL_ERR_INTERNAL, 500 },
        { "method_not_allowed", 405 }, { "unsupported_media_type", 415 }
    };
    for (size_t i = 0; code && i < sizeof s_map / sizeof s_map [0]; i++)
        if (strcmp (s_map [i].code, code) == 0)
            return s_map [i].status;
    return 502;
}

char *
gateway_error_json (const funnel_error_t *err)
{
    json_t *body = json_pack ("{s:s, s:s}", "code", err->code ? err->code : "internal",
                              "message", err->message);
    if (body && err->index >= 0)
        json_object_set_new (body, "index", json_integer (err->index));
    char *text = body ? json_dumps (body, JSON_COMPACT) : NULL;
    json_decref (body);
    return text;
}

//  --------------------------------------------------------------------------
//  Self test

#include "funnel_check.h"

//  Builds and returns the body as JSON (NULL on error, err filled).
static json_t *
s_test_build (const char *body, bool ndjson, const char *key, const token_t *token,
              const char **service, funnel_error_t *err)
{
    gateway_ingest_t req = { body, strlen (body), ndjson, key, token, 1700000000000 };
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    json_t *result = NULL;
    if (gateway_ingest_build (&req, service, &sbuf, err) == 0) {
        msgpack_unpacked unpacked;
        msgpack_unpacked_init (&unpacked);
        check (msgpack_unpack_next (&unpacked, sbuf.data, sbuf.size, NULL) == MSGPACK_UNPACK_SUCCESS);
        result = json_from_msgpack (&unpacked.data);
        msgpack_unpacked_destroy (&unpacked);
    }
    msgpack_sbuffer_destroy (&sbuf);
    return result;
}

static void
s_test_error (const char *body, bool ndjson, const char *key, const token_t *token,
              const char *code, int index, const char *text)
{
    const char *service = NULL;
    funnel_error_t err;
    json_t *result = s_test_build (body, ndjson, key, token, &service, &err);
    if (result || strcmp (err.code, code) || err.index != index || !strstr (err.message, text))
        fprintf (stderr, "%s -> %s [%d] %s\n", body, result ? "ok" : err.code, err.index,
                 err.message);
    check (!result);
    check (strcmp (err.code, code) == 0 && err.index == index && strstr (err.message, text));
}

void
gateway_request_test (bool verbose)
{
    (void) verbose;
    char error [256];
    token_store_t *store = token_store_parse (
        "all-0123456789abcdef web *\n"
        "few-0123456789abcdef forms lead.capture,touch\n", error, sizeof error);
    check (store);
    const token_t *all = token_store_find (store, "all-0123456789abcdef", 20);
    const token_t *few = token_store_find (store, "few-0123456789abcdef", 20);
    check (all && few);
    const char *service = NULL;
    funnel_error_t err;

    //  One event: defaults filled, given fields kept
    json_t *body = s_test_build ("{\"id\":\"e1\",\"type\":\"lead.capture\",\"data\":{\"lead\":\"L1\"}}",
                                 false, NULL, all, &service, &err);
    check (body && json_is_object (body) && strcmp (service, "leads") == 0);
    check (json_integer_value (json_object_get (body, "v")) == 1);
    check (json_integer_value (json_object_get (body, "ts")) == 1700000000000);
    check (strcmp (json_string_value (json_object_get (body, "src")), "web") == 0);
    check (strcmp (json_string_value (json_object_get (body, "id")), "e1") == 0);
    json_decref (body);
    body = s_test_build ("{\"type\":\"touch\",\"ts\":5,\"src\":\"site\",\"v\":1,\"data\":{}}",
                         false, "K-1", few, &service, &err);
    check (body && strcmp (service, "campaign") == 0);
    check (strcmp (json_string_value (json_object_get (body, "id")), "K-1") == 0);
    check (json_integer_value (json_object_get (body, "ts")) == 5);
    check (strcmp (json_string_value (json_object_get (body, "src")), "site") == 0);
    json_decref (body);

    //  A batch: KEY.N for elements without an id; an array goes as an array
    body = s_test_build ("[{\"type\":\"deal.open\",\"data\":{}},{\"id\":\"own\",\"type\":\"deal.close\"}]",
                         false, "b7", all, &service, &err);
    check (body && json_array_size (body) == 2 && strcmp (service, "sales") == 0);
    check (strcmp (json_string_value (json_object_get (json_array_get (body, 0), "id")), "b7.0") == 0);
    check (strcmp (json_string_value (json_object_get (json_array_get (body, 1), "id")), "own") == 0);
    json_decref (body);
    //  NDJSON: always a batch, blank lines skipped
    body = s_test_build ("{\"type\":\"touch\"}\n\n  \r\n{\"type\":\"touch\"}\n", true, "n",
                         few, &service, &err);
    check (body && json_array_size (body) == 2);
    check (strcmp (json_string_value (json_object_get (json_array_get (body, 1), "id")), "n.1") == 0);
    json_decref (body);

    //  Errors, with the element that failed
    s_test_error ("", false, NULL, all, "bad_request", -1, "empty");
    s_test_error ("{\"id\":", false, NULL, all, "bad_request", -1, "not JSON");
    s_test_error ("{\"id\":\"a\",\"id\":\"b\",\"type\":\"touch\"}", false, NULL, all, "bad_request", -1, "duplicate");
    s_test_error ("17", false, NULL, all, "bad_request", -1, "must be an event object");
    s_test_error ("[]", false, NULL, all, "invalid", -1, "empty batch");
    s_test_error ("{\"type\":\"touch\"}", false, NULL, all, "invalid", -1, "id: required");
    s_test_error ("[{\"id\":\"a\",\"type\":\"touch\"},5]", false, NULL, all, "invalid", 1, "JSON object");
    s_test_error ("{\"id\":\"a\"}", false, NULL, all, "invalid", -1, "type: required");
    s_test_error ("{\"id\":\"a\",\"type\":7}", false, NULL, all, "invalid", -1, "type: must be a string");
    s_test_error ("{\"id\":\"a\",\"type\":\"lead.sql\"}", false, NULL, all, "unknown_type", -1, "lead.sql");
    s_test_error ("[{\"id\":\"a\",\"type\":\"touch\"},{\"id\":\"b\",\"type\":\"lead.qualify\"}]",
                  false, NULL, few, "forbidden", 1, "may not publish 'lead.qualify'");
    s_test_error ("[{\"id\":\"a\",\"type\":\"touch\"},{\"id\":\"b\",\"type\":\"lead.capture\"}]",
                  false, NULL, all, "invalid", 1, "goes to leads but element 0 goes to campaign");
    s_test_error ("{\"type\":\"touch\"}", false, "bad key!", all, "invalid", -1, "Idempotency-Key");
    s_test_error ("{\"type\":\"touch\"}\nnope\n", true, NULL, all, "bad_request", 1, "line 2: not JSON");
    char key [FUNNEL_ID_MAX + 1];
    memset (key, 'k', FUNNEL_ID_MAX);
    key [FUNNEL_ID_MAX] = 0;
    s_test_error ("[{\"type\":\"touch\"}]", false, key, all, "invalid", 0, "Idempotency-Key");
    //  Over 1000 events
    size_t size = 1001 * 20 + 3;
    char *big = malloc (size);
    strcpy (big, "[");
    for (int i = 0; i < 1001; i++)
        strcat (big, i ? ",{\"type\":\"touch\"}" : "{\"type\":\"touch\"}");
    strcat (big, "]");
    s_test_error (big, false, "k", all, "too_large", -1, "at most 1000");
    for (char *p = big; *p; p++)
        if (*p == ',')
            *p = '\n';
    s_test_error (big + 1, true, "k", all, "too_large", -1, "more than 1000");
    free (big);

    //  Query values
    json_t *value = gateway_query_value ("id", "123");
    check (json_is_string (value) && strcmp (json_string_value (value), "123") == 0);
    json_decref (value);
    value = gateway_query_value ("limit", "5");
    check (json_is_integer (value) && json_integer_value (value) == 5);
    json_decref (value);
    value = gateway_query_value ("campaign", "\"007\"");
    check (json_is_string (value) && strcmp (json_string_value (value), "007") == 0);
    json_decref (value);
    value = gateway_query_value ("model", "linear");
    check (json_is_string (value) && strcmp (json_string_value (value), "linear") == 0);
    json_decref (value);
    value = gateway_query_value ("audience", "{\"age_min\":18}");
    check (json_is_object (value));
    json_decref (value);

    //  Status mapping and the error body
    check (gateway_http_status ("invalid") == 400 && gateway_http_status ("unknown_type") == 400);
    check (gateway_http_status ("forbidden") == 403 && gateway_http_status ("too_large") == 413);
    check (gateway_http_status ("unavailable") == 503 && gateway_http_status ("conflict") == 409);
    check (gateway_http_status ("not_found") == 404 && gateway_http_status ("moved") == 502);
    funnel_error_set (&err, "invalid", "data.x: \"quoted\"");
    err.index = 3;
    char *text = gateway_error_json (&err);
    check (strcmp (text, "{\"code\":\"invalid\",\"message\":\"data.x: \\\"quoted\\\"\",\"index\":3}") == 0);
    free (text);
    token_store_unref (&store);
}
