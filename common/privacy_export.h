/*  privacy_export — one person's export across the services: each
    service's GET {"kind": "export", "lead": ID} merged into one JSON
    document (proto/privacy.md), the same for funnelctl export and the
    gateway's GET /v1/people/{id}/export.

        {"lead": ID, "complete": bool,
         "services": {"leads": {...}, "campaign": {...}, ...}}

    A service that did not answer is {"unreachable": true} and makes the
    document incomplete; one that answered ERR is {"error": {code, message}}.
*/
#ifndef PRIVACY_EXPORT_H_INCLUDED
#define PRIVACY_EXPORT_H_INCLUDED

#include <jansson.h>
#include <stdbool.h>

typedef enum { PRIVACY_EXPORT_OK, PRIVACY_EXPORT_ERR, PRIVACY_EXPORT_DOWN } privacy_export_status_t;

//  A new document for lead (no service yet).
json_t *
    privacy_export_new (const char *lead);
//  Adds one service's answer (reply: its OK or ERR body, borrowed; NULL
//  when down).
void
    privacy_export_add (json_t *doc, const char *service, privacy_export_status_t status,
                        json_t *reply);
//  True when every service added answered OK.
bool
    privacy_export_complete (json_t *doc);

void
    privacy_export_test (bool verbose);

#endif
