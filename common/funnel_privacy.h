/*  funnel_privacy — erasing a person (lead.forget, proto/privacy.md): which
    fields of an output event are personal, and how an event that carried
    them is rewritten in the outbox.

    A service declares, per output type, the data fields that may hold a
    person's personal data (funnel_rules_t.personal). A rule that emits
    such an output names its person (funnel_state_personal); the engine
    keeps, in the same commit, the output's seq in that person's bounded
    index. Erasing the person (funnel_state_forget_outputs) rewrites every
    indexed entry still held in place: same id, type, seq, cause and ts;
    the personal fields removed and "redacted": true added to its data.

        static const funnel_personal_t s_personal [] = {
            { "lead.captured", { "email", "company", NULL } },
            { NULL }
        };
*/
#ifndef FUNNEL_PRIVACY_H_INCLUDED
#define FUNNEL_PRIVACY_H_INCLUDED

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include "funnel_error.h"

#define FUNNEL_PERSONAL_FIELDS  8       //  Personal fields per type, at most
#define FUNNEL_PERSONAL_INDEX   1000    //  Outbox seqs kept per person

typedef struct {
    const char *type;                   //  An output type; a table ends with { NULL }
    const char *fields [FUNNEL_PERSONAL_FIELDS];  //  NULL-terminated
} funnel_personal_t;

//  The personal fields of type in table, or NULL if it has none.
const char *const *
    funnel_privacy_fields (const funnel_personal_t *table, const char *type);

//  The msgpack map data without the keys in fields, plus "redacted": true,
//  into *out (malloc'd, *out_size bytes). Returns 1 when it removed
//  something, 0 when no field was there (nothing written), -1 if data is
//  not a msgpack map.
int
    funnel_privacy_redact (const char *data, size_t size, const char *const *fields,
                           char **out, size_t *out_size);

//  The "lead" of an export request (GET {"kind": "export", "lead": ID})
//  into lead (FUNNEL_ID_MAX + 1 bytes): 0, or -1 with err `invalid`
//  naming the field. Every service's export reads it so.
int
    funnel_privacy_export_lead (const msgpack_object *req, char *lead, funnel_error_t *err);

void
    funnel_privacy_test (bool verbose);

#endif
